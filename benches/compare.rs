//! kanoclip's side of `scripts/bench-compare`: the detector's whole per-image work
//! (pre-processing, CLIP-VV from block 4 with taps 3, 6, 9, 12, a 4-level head, maps,
//! σ = 4 smoothing, scores) on a ViT-B/16-shaped RANDOM model at 224, batch 1 and 8, and
//! one training step at batch 8 (frozen features + head forward, backward and Adam).
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench compare
//!
//! Environment: `KANOCLIP_BENCH_BACKENDS` (`cpu,wgpu`), `KANOCLIP_BENCH_BATCHES` (`1,8`),
//! `KANOCLIP_BENCH_REPS` (5), `KANOCLIP_BENCH_WARMUP` (2), `KANOCLIP_BENCH_TRAIN` (`1` adds the training step),
//! `KANOCLIP_BENCH_JSON` (a file for one JSON line per measurement), `KANOCLIP_BENCH_ROUND`
//! (`scripts/bench-compare`'s round, recorded in each line). The weights are
//! random: these are timings, not accuracy.

use std::io::Write;
use std::time::Instant;

mod common;
use common::{B16, detector_with_head, ms, peak_rss_mib, random_picture, random_weights};

use burn::prelude::*;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::detect::DetectorConfig;
use kanoclip::device::{BackendKind, device};
use kanoclip::head::HeadConfig;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Out(Option<std::fs::File>);

impl Out {
    fn record(&mut self, backend: &str, work: &str, batch: usize, ms: f64) {
        let threads = rayon_threads();
        println!(
            "kanoclip {backend:<5} {work:<12} batch {batch}: {ms:>9.1} ms per call ({:.1} ms per image), {threads} threads",
            ms / batch as f64
        );
        if let Some(f) = &mut self.0 {
            writeln!(
                f,
                r#"{{"side":"kanoclip","backend":"{backend}","work":"{work}","batch":{batch},"threads":{threads},"round":{},"ms":{ms}}}"#,
                env_or("KANOCLIP_BENCH_ROUND", "1").parse::<usize>().unwrap_or(1)
            )
            .unwrap();
        }
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() {
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let bytes = random_weights(&cfg);
    let tokenizer = Tokenizer::new().unwrap();
    let image = random_picture(224);
    let reps: usize = env_or("KANOCLIP_BENCH_REPS", "5").parse().unwrap();
    let warmup: usize = env_or("KANOCLIP_BENCH_WARMUP", "2").parse().unwrap();
    let batches: Vec<usize> = env_or("KANOCLIP_BENCH_BATCHES", "1,8")
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect();
    let mut out = Out(std::env::var_os("KANOCLIP_BENCH_JSON").map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    }));
    println!(
        "ViT-B/16-shaped RANDOM model at 224; detect = pre-processing + CLIP-VV + 4-level head + maps + smoothing"
    );
    for kind in env_or("KANOCLIP_BENCH_BACKENDS", "cpu,wgpu").split(',') {
        let kind = match kind.trim() {
            "cpu" => BackendKind::Cpu,
            "wgpu" => BackendKind::Wgpu,
            other => panic!("unknown backend {other}"),
        };
        let Ok(dev) = pollster::block_on(device(kind)) else {
            println!("kanoclip {kind:<5} unavailable");
            continue;
        };
        let det = detector_with_head(&cfg, &bytes, &dev, &tokenizer);
        for &b in &batches {
            let images = vec![image.clone(); b];
            for _ in 0..warmup {
                det.detect_batch(&images).unwrap();
            }
            let times = (0..reps)
                .map(|_| {
                    let t0 = Instant::now();
                    let found = det.detect_batch(&images).unwrap();
                    assert_eq!(found.len(), b);
                    ms(t0.elapsed())
                })
                .collect();
            out.record(&kind.to_string(), "detect", b, median(times));
        }
        if std::env::var_os("KANOCLIP_BENCH_TRAIN").is_some() {
            train_step(&cfg, &bytes, &image, &tokenizer, kind, &mut out);
        }
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}

/// One training step at batch 8 without the feature cache: frozen features, then the
/// head's forward, backward and Adam update (as `scripts/torch_train_step.py` times it).
fn train_step(
    cfg: &ClipConfig,
    bytes: &[u8],
    image: &image::DynamicImage,
    tokenizer: &Tokenizer,
    kind: BackendKind,
    out: &mut Out,
) {
    use kanoclip::clip::preprocess::image_batch;
    use kanoclip::train::trainer::{Batch, TrainConfig, Trainer};
    let dev = pollster::block_on(device(kind)).unwrap().autodiff();
    let clip = Clip::from_safetensors(cfg, bytes, &dev).unwrap();
    let kb = kanoclip::Knowledge::Industrial.load().unwrap();
    let det = DetectorConfig::for_clip(cfg);
    let head = HeadConfig {
        levels: det.taps.len(),
        ..HeadConfig::default()
    };
    let mut t = Trainer::new(clip, &kb, tokenizer, head, det, TrainConfig::default()).unwrap();
    let images = vec![image.clone(); 8];
    let labels = vec![false, true, false, true, false, true, false, true];
    let times = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let vision = t.features(image_batch(&images, 224, &dev).unwrap().0);
            let batch = Batch {
                vision,
                masks: Tensor::<3>::zeros([8, 224, 224], &dev),
                labels: labels.clone(),
                specific: vec![None; 8],
            };
            t.step(batch).unwrap();
            ms(t0.elapsed())
        })
        .collect();
    out.record(&kind.to_string(), "train-step", 8, median(times));
}
