//! Shared test helpers: fixture paths and the backends under test.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::Device;
use kanoclip::device::{BackendKind, device};

/// Run the `kanoclip` binary with `args`.
pub fn kanoclip<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args(args)
        .output()
        .expect("runs")
}

/// Fail with the command's stderr unless it succeeded.
pub fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty folder of this test process's own, `kanoclip-TAG-NAME-PID` in the temp dir.
pub fn scratch(tag: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kanoclip-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A path as a command-line argument.
pub fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Both backends. wgpu runs on lavapipe in CI; set KANOCLIP_SKIP_WGPU=1 only on a machine
/// that has no Vulkan driver at all.
pub fn backends() -> Vec<(BackendKind, Device)> {
    let mut out = vec![(
        BackendKind::Cpu,
        pollster::block_on(device(BackendKind::Cpu)).expect("flex device"),
    )];
    if std::env::var_os("KANOCLIP_SKIP_WGPU").is_none() {
        let wgpu = pollster::block_on(device(BackendKind::Wgpu))
            .expect("no wgpu adapter: install mesa-vulkan-drivers, or set KANOCLIP_SKIP_WGPU=1");
        out.push((BackendKind::Wgpu, wgpu));
    }
    out
}

/// The largest element-wise difference. Lengths must agree, and a NaN or infinity on
/// either side fails the test: `f32::max` skips NaN, so a check on output that is partly
/// NaN would otherwise pass.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    if let Some(i) = (0..a.len()).find(|&i| !a[i].is_finite() || !b[i].is_finite()) {
        panic!("non-finite value at {i}: {} vs {}", a[i], b[i]);
    }
    max_err(a.iter().zip(b).map(|(x, y)| (x - y).abs()))
}

/// `|a − b|`; a NaN or infinity on either side fails the test (`e.max(NaN)` is `e`).
pub fn abs_err(a: f32, b: f32) -> f32 {
    assert!(a.is_finite() && b.is_finite(), "non-finite: {a} vs {b}");
    (a - b).abs()
}

/// The largest of some errors (0 for none); a NaN fails the test.
pub fn max_err(errors: impl IntoIterator<Item = f32>) -> f32 {
    errors.into_iter().fold(0.0, |m, e| {
        assert!(!e.is_nan(), "a NaN error");
        m.max(e)
    })
}

/// `a` and `b` side by side; their lengths must agree (`zip` alone stops at the shorter,
/// and a result with fewer items would be checked only as far as it goes).
pub fn zip_eq<'a, A, B>(
    a: &'a [A],
    b: &'a [B],
) -> std::iter::Zip<std::slice::Iter<'a, A>, std::slice::Iter<'a, B>> {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b)
}

pub fn flatten(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(flatten).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("unexpected JSON {other}"),
    }
}

/// A named edit of a JSON document, for bad-input tables.
pub type JsonEdit = (&'static str, Box<dyn Fn(&mut serde_json::Value)>);

/// A tensor's new dtype, shape and bytes.
pub type Replacement = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A copy of a safetensors file (metadata kept) with the tensors `replace` returns swapped in.
pub fn rewrite_safetensors(
    bytes: &[u8],
    replace: impl Fn(&str, safetensors::tensor::TensorView) -> Option<Replacement>,
) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let owned: Vec<(String, Replacement)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let r = replace(&name, view.clone())
                .unwrap_or_else(|| (view.dtype(), view.shape().to_vec(), view.data().to_vec()));
            (name, r)
        })
        .collect();
    let views: Vec<_> = owned
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, header.metadata().clone()).unwrap()
}

/// The tiny model's training-free detector (industrial knowledge) on `device`.
pub fn tiny_detector(device: &Device) -> kanoclip::detect::Detector {
    use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
    use kanoclip::detect::{Detector, DetectorConfig};
    let cfg = ClipConfig::from_file(fixture("tiny_quickgelu_config.json")).unwrap();
    let weights = std::fs::read(fixture("tiny_quickgelu.safetensors")).unwrap();
    let clip = Clip::from_safetensors(&cfg, &weights, device).unwrap();
    let kb = kanoclip::head::knowledge::Knowledge::parse("industrial")
        .load()
        .unwrap();
    let config = DetectorConfig::for_clip(&clip.config);
    Detector::training_free(clip, &kb, &Tokenizer::new().unwrap(), config).unwrap()
}

/// The bytes of a memory file: the tiny detector's memory of the two tiny fixture images.
pub fn tiny_memory_bytes(detector: &kanoclip::detect::Detector) -> Vec<u8> {
    use kanoclip::detect::memory::ReferenceImage;
    let images: Vec<image::DynamicImage> = (0..2)
        .map(|i| image::open(fixture(&format!("images/tiny_quickgelu_{i}.png"))).unwrap())
        .collect();
    let names = (0..2)
        .map(|i| ReferenceImage {
            name: format!("good-{i}.png"),
            sha256: "0".repeat(64),
        })
        .collect();
    let memory = detector
        .build_memory(&images, names, Default::default())
        .unwrap();
    memory.to_bytes().unwrap()
}

/// The images a fixture's JSON list names, decoded as the detector reads files.
pub fn fixture_images(list: &serde_json::Value) -> Vec<image::DynamicImage> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| kanoclip::load_image(fixture(p.as_str().unwrap())).unwrap())
        .collect()
}

/// The two detectors of the head fixture on `device`, named as its JSON names their
/// results: `trained` (the head file) and `training_free` (the small knowledge base with
/// the fixture's detector settings).
pub fn head_detectors(device: &Device) -> Vec<(&'static str, kanoclip::Detector)> {
    use kanoclip::head::knowledge::KnowledgeBase;
    use kanoclip::{Clip, Detector, DetectorConfig, Tokenizer};
    let clip = || {
        Clip::from_files(
            fixture("tiny_quickgelu_config.json"),
            fixture("tiny_quickgelu.safetensors"),
            device,
        )
        .unwrap()
    };
    let tokenizer = Tokenizer::new().unwrap();
    let trained = Detector::load(
        clip(),
        fixture("tiny_quickgelu_head.safetensors"),
        &tokenizer,
    )
    .unwrap();
    let kb = KnowledgeBase::from_file(fixture("knowledge_small.json")).unwrap();
    let cfg: DetectorConfig =
        serde_json::from_value(read_json("head_cases.json")["detector"].clone()).unwrap();
    let free = Detector::training_free(clip(), &kb, &tokenizer, cfg).unwrap();
    vec![("trained", trained), ("training_free", free)]
}
