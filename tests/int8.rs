//! `kanoclip convert --dtype int8` bundles: the quantised image tower loads through the
//! same checked reader, scores and maps stay within a bound of f32's (chosen from the
//! error measured here and by `cargo bench --bench quantization`), decisions on the sample
//! images equal f32's, and bad int8 tensors and manifests are refused with their reason.

mod common;

use common::{backends, fixture, max_abs_diff, rewrite_safetensors};
use image::DynamicImage;
use kanoclip::Error;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::detect::bundle::{
    BundleInfo, ChunkFiles, FORMAT, FORMAT_INT8, INT8_SCHEME, Manifest, StoreDtype, build,
};
use kanoclip::detect::{Detection, Detector, DetectorConfig};
use kanoclip::head::knowledge::Knowledge;
use safetensors::Dtype;

/// Measured on the tiny fixture, flex and wgpu alike: f16 max |Δ| score 1.9e-5, map
/// 3.2e-5; int8 score 1.0e-4, map 2.2e-4 (`cargo bench --bench quantization` measures a
/// ViT-B/16-shaped model). The bounds are about five times those.
const F16_BOUND: f32 = 2e-4;
const INT8_BOUND: f32 = 1e-3;

fn images() -> Vec<DynamicImage> {
    let mut paths: Vec<_> = ["good", "crack", "colour"]
        .iter()
        .map(|n| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("www/samples/hazelnut_toy/{n}.jpg"))
        })
        .collect();
    paths.extend(
        [
            "tiny_quickgelu_0.png",
            "tiny_quickgelu_1.png",
            "nonsquare_120x90.png",
        ]
        .iter()
        .map(|n| fixture(&format!("images/{n}"))),
    );
    paths.iter().map(|p| image::open(p).unwrap()).collect()
}

fn weights() -> (ClipConfig, Vec<u8>) {
    let cfg = ClipConfig::from_file(fixture("tiny_quickgelu_config.json")).unwrap();
    let bytes = std::fs::read(fixture("tiny_quickgelu.safetensors")).unwrap();
    (cfg, bytes)
}

/// A training-free bundle of the tiny fixture, made on the CPU.
fn bundle(dtype: StoreDtype) -> (Manifest, ChunkFiles) {
    let (cfg, bytes) = weights();
    let dev = burn::prelude::Device::flex();
    let clip = Clip::from_safetensors(&cfg, &bytes, &dev).unwrap();
    let kb = Knowledge::parse("industrial").load().unwrap();
    let tokenizer = Tokenizer::new().unwrap();
    let d = Detector::training_free(clip, &kb, &tokenizer, DetectorConfig::for_clip(&cfg)).unwrap();
    let info = BundleInfo {
        name: format!("tiny {}", dtype.name()),
        ..BundleInfo::default()
    };
    build(&d, &cfg, &bytes, None, dtype, &info).unwrap()
}

/// The manifest through its JSON text (as a browser gets it), and the vision file.
fn reload(m: &Manifest, chunks: &ChunkFiles) -> kanoclip::Result<(Manifest, Vec<u8>)> {
    let m = Manifest::from_json_str(&serde_json::to_string(m).unwrap())?;
    let vision = m
        .assemble("vision", |c| {
            Ok(chunks.iter().find(|(p, _)| *p == c.path).unwrap().1.clone())
        })?
        .unwrap();
    Ok((m, vision))
}

fn detect(m: &Manifest, chunks: &ChunkFiles, dev: &burn::prelude::Device) -> Vec<Detection> {
    let (m, vision) = reload(m, chunks).unwrap();
    let d = m.detector(&vision, None, dev).unwrap();
    d.detect_batch(&images()).unwrap()
}

fn deltas(a: &[Detection], b: &[Detection]) -> (f32, f32, f32, f32) {
    let mut score = (0.0f32, 0.0f32);
    let mut map = (0.0f32, 0.0f64, 0usize);
    for (x, y) in common::zip_eq(a, b) {
        let ds = common::abs_err(x.score, y.score);
        score = (score.0.max(ds), score.1 + ds / a.len() as f32);
        map.0 = map.0.max(max_abs_diff(&x.map.values, &y.map.values));
        map.1 += common::zip_eq(&x.map.values, &y.map.values)
            .map(|(p, q)| f64::from((p - q).abs()))
            .sum::<f64>();
        map.2 += x.map.values.len();
    }
    (score.0, score.1, map.0, (map.1 / map.2 as f64) as f32)
}

#[test]
fn int8_and_f16_bundles_stay_near_f32_with_its_decisions() {
    let bundles = [StoreDtype::F32, StoreDtype::F16, StoreDtype::Int8].map(bundle);
    let size = |i: usize| bundles[i].0.files[0].size;
    println!(
        "measure tiny vision file bytes f32 / f16 / int8: {} / {} / {}",
        size(0),
        size(1),
        size(2)
    );
    assert!(size(2) < size(1) && size(1) < size(0));
    assert_eq!(bundles[2].0.format, FORMAT_INT8);
    assert_eq!(bundles[2].0.quantization.as_deref(), Some(INT8_SCHEME));
    assert_eq!(bundles[1].0.format, FORMAT);
    for (kind, dev) in backends() {
        let [f32s, f16s, int8s] = [0, 1, 2].map(|i| detect(&bundles[i].0, &bundles[i].1, &dev));
        for (name, got, bound) in [("f16", &f16s, F16_BOUND), ("int8", &int8s, INT8_BOUND)] {
            let (smax, smean, mmax, mmean) = deltas(got, &f32s);
            println!(
                "measure {kind:?} {name} vs f32: score max {smax:.2e} mean {smean:.2e}, map max \
                 {mmax:.2e} mean {mmean:.2e}"
            );
            assert!(
                smax <= bound && mmax <= bound,
                "{kind:?} {name}: {smax} {mmax}"
            );
            assert!(
                smax > 0.0,
                "{kind:?} {name}: identical to f32, so nothing was quantised"
            );
            let decisions = |v: &[Detection]| v.iter().map(|d| d.is_anomalous).collect::<Vec<_>>();
            assert_eq!(decisions(got), decisions(&f32s), "{kind:?} {name}");
        }
    }
}

/// A copy of the int8 bundle's vision file with `edit` applied to its tensors.
fn edited(
    edit: impl Fn(&str, safetensors::tensor::TensorView) -> Option<common::Replacement>,
) -> kanoclip::Result<()> {
    let (m, chunks) = bundle(StoreDtype::Int8);
    let (m, vision) = reload(&m, &chunks)?;
    let vision = rewrite_safetensors(&vision, edit);
    let dev = burn::prelude::Device::flex();
    m.detector(&vision, None, &dev).map(drop)
}

const W: &str = "visual.transformer.resblocks.0.mlp.c_fc.weight";

fn refused(r: kanoclip::Result<()>, want: &str) {
    match r {
        Err(Error::WeightsMismatch(p)) => {
            assert!(p.iter().any(|p| p.contains(want)), "{p:?} lacks {want:?}")
        }
        other => panic!("expected a weights mismatch naming {want:?}, got {other:?}"),
    }
}

#[test]
fn bad_int8_tensors_are_refused_with_their_reason() {
    let scale = format!("{W}.scale");
    // The scale swapped for one of another dtype, shape, or with bad values; every case is
    // a refusal that names the tensor, never a panic or a silent zero.
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    type Edit = Box<dyn Fn(&[usize]) -> common::Replacement>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "expected F32",
            Box::new(|s| (Dtype::F16, s.to_vec(), vec![0; s[0] * 2])),
        ),
        (
            "expected F32",
            Box::new(move |s| (Dtype::F32, vec![s[0] - 1], f32_bytes(&vec![0.1; s[0] - 1]))),
        ),
        (
            "non-finite",
            Box::new(move |s| (Dtype::F32, s.to_vec(), f32_bytes(&vec![f32::NAN; s[0]]))),
        ),
        (
            "negative",
            Box::new(move |s| (Dtype::F32, s.to_vec(), f32_bytes(&vec![-0.1; s[0]]))),
        ),
        (
            "non-finite",
            Box::new(move |s| {
                (
                    Dtype::F32,
                    s.to_vec(),
                    f32_bytes(&vec![f32::INFINITY; s[0]]),
                )
            }),
        ),
    ];
    for (want, make) in &cases {
        let sc = scale.clone();
        refused(edited(|n, v| (n == sc).then(|| make(v.shape()))), want);
    }
    // No scale at all: the int8 tensor is refused, and named.
    let (m, chunks) = bundle(StoreDtype::Int8);
    let (m, vision) = reload(&m, &chunks).unwrap();
    let st = safetensors::SafeTensors::deserialize(&vision).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| *n != scale)
        .collect();
    let no_scale = safetensors::serialize(kept, None).unwrap();
    let dev = burn::prelude::Device::flex();
    refused(m.detector(&no_scale, None, &dev).map(drop), "has no");
    // An int8 tensor that int8 bundles keep f16 (the projection), with no scale to read
    // it by.
    refused(
        edited(|n, v| {
            (n == "visual.proj")
                .then(|| (Dtype::I8, v.shape().to_vec(), vec![1; v.data().len() / 2]))
        }),
        "`visual.proj` has no",
    );
}

#[test]
fn manifests_name_their_format_dtype_and_scheme() {
    let (m, _) = bundle(StoreDtype::Int8);
    let json = serde_json::to_value(&m).unwrap();
    let check = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        edit(&mut j);
        Manifest::from_json_str(&j.to_string())
    };
    assert!(check(&|_| {}).is_ok());
    // What a package from before int8 does with this bundle: it reads formats by equality
    // with its own, `kanoclip-web/1`, and so refuses `kanoclip-web/2` as incompatible.
    assert_ne!(json["format"], FORMAT);
    // (what, edit, what the refusal says)
    type Case = (
        &'static str,
        Box<dyn Fn(&mut serde_json::Value)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "int8 under format 1",
            Box::new(|j| j["format"] = FORMAT.into()),
            "format",
        ),
        (
            "f16 under format 2",
            Box::new(|j| {
                j["dtype"] = "f16".into();
                j["quantization"] = serde_json::Value::Null;
            }),
            "format",
        ),
        (
            "no scheme",
            Box::new(|j| {
                j.as_object_mut()
                    .unwrap()
                    .remove("quantization")
                    .map(drop)
                    .unwrap_or(())
            }),
            "quantization",
        ),
        (
            "another scheme",
            Box::new(|j| j["quantization"] = "int4-groupwise".into()),
            "quantization",
        ),
        (
            "unknown dtype",
            Box::new(|j| j["dtype"] = "int4".into()),
            "int4",
        ),
        (
            "a future format",
            Box::new(|j| {
                j["format"] = "kanoclip-web/3".into();
                j["new_field"] = 1.into();
            }),
            "update kanoclip",
        ),
    ];
    for (what, edit, want) in cases {
        match check(&*edit) {
            Err(e) => assert!(e.to_string().contains(want), "{what}: {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
}
