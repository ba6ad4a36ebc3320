//! Kernel launches per ViT-B/16 detect on wgpu (issue #22): the work a GPU sees, which
//! carries over from lavapipe to a real card where timings do not. Counted with CubeCL's
//! launch observer (every kernel issued, named as the kernel names itself), for the
//! training-free and the trained (4-level head) detector at batch 1 and 8, and a mutual
//! group of 8. Random weights: the count does not depend on them.
//!
//! Run: `cargo bench --bench dispatch` (needs a wgpu adapter: lavapipe is enough; about
//! 20 minutes there). `KANOCLIP_BENCH_PARTS` picks the rows, a comma-separated list of
//! `tiny`, `free` (training-free), `trained`, `mutual`, `b1` and `b8` (batch sizes);
//! `KANOCLIP_BENCH_PARTS=tiny` counts the tiny model only, `tiny,free,b1` adds the B/16
//! training-free detect at batch 1 (a few minutes on lavapipe).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{B16, detector_with_head, random_picture, random_weights};
use cubecl_runtime::logging::{LaunchObservation, LaunchObserver};
use image::DynamicImage;
use kanoclip::detect::Mutual;
use kanoclip::{BackendKind, Clip, ClipConfig, Detector, DetectorConfig, Knowledge, Tokenizer};

#[derive(Default)]
struct Count(Mutex<HashMap<&'static str, usize>>);

impl LaunchObserver for Count {
    fn launched(&self, kernel: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kernel)
            .or_default() += 1;
    }
}

/// A kernel's name without its module path and type parameters.
fn short(name: &str) -> String {
    let head = name.split('<').next().unwrap_or(name);
    head.rsplit("::").next().unwrap_or(head).to_string()
}

/// The launches of one call of `work` (run once before, so that nothing first-time counts).
fn count(label: &str, work: impl Fn()) {
    work();
    let counts = Arc::new(Count::default());
    let watching = LaunchObservation::new(counts.clone());
    work();
    drop(watching);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (k, n) in counts.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        *kinds.entry(short(k)).or_default() += n;
    }
    let total: usize = kinds.values().sum();
    let mut top: Vec<(String, usize)> = kinds.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let list: Vec<String> = top
        .iter()
        .take(8)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!("{label:<34} | {total:>6} | {}", list.join(", "));
}

fn main() {
    // The tiny fixture model first: the browser tests count the same call on WebGPU, so
    // equal counts say that the native figures below hold in the browser too.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dev = kanoclip::device::device_blocking(BackendKind::Wgpu).expect("a wgpu adapter");
    let tiny = Detector::training_free(
        Clip::from_files(
            root.join("tiny_quickgelu_config.json"),
            root.join("tiny_quickgelu.safetensors"),
            &dev,
        )
        .unwrap(),
        &Knowledge::Industrial.load().unwrap(),
        &Tokenizer::new().unwrap(),
        DetectorConfig::for_clip(
            &ClipConfig::from_json_str(
                &std::fs::read_to_string(root.join("tiny_quickgelu_config.json")).unwrap(),
            )
            .unwrap(),
        ),
    )
    .unwrap();
    let blank = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        224,
        224,
        image::Rgba([120, 120, 120, 120]),
    ));
    println!("{:<34} | {:>6} | kinds", "call", "total");
    count("tiny, training-free, detect", || {
        tiny.detect(&blank).unwrap();
    });
    let parts = std::env::var("KANOCLIP_BENCH_PARTS").ok();
    let wants = |part: &str| {
        parts
            .as_deref()
            .is_none_or(|p| p.split(',').any(|x| x.trim() == part))
    };
    if !["free", "trained", "mutual"].iter().any(|p| wants(p)) {
        return;
    }
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let bytes = random_weights(&cfg);
    let tok = Tokenizer::new().unwrap();
    let kb = Knowledge::Industrial.load().unwrap();
    let free = Detector::training_free(
        Clip::from_safetensors(&cfg, &bytes, &dev).unwrap(),
        &kb,
        &tok,
        DetectorConfig::for_clip(&cfg),
    )
    .unwrap();
    let trained = wants("trained").then(|| detector_with_head(&cfg, &bytes, &dev, &tok));
    let images: Vec<DynamicImage> = (0..8).map(|_| random_picture(224)).collect();
    println!("B/16 random, 224, wgpu: kernel launches per call (largest kinds)");
    let modes = [
        ("training-free", wants("free").then_some(&free)),
        ("trained", trained.as_ref()),
    ];
    for (mode, det) in modes {
        let Some(det) = det else { continue };
        for batch in [1, 8] {
            if !wants(&format!("b{batch}")) {
                continue;
            }
            count(&format!("{mode}, detect batch {batch}"), || {
                det.detect_batch(&images[..batch]).unwrap();
            });
        }
    }
    if wants("mutual") {
        count("training-free, mutual group of 8", || {
            free.detect_group(&images, &Mutual::default()).unwrap();
        });
    }
}
