//! Mutual scoring (spec §11, issue #24) on a ViT-B/16-shaped random model at 224: mechanics
//! and costs, never accuracy on real data (random weights).
//!
//! 1. Evidence: image and pixel AUROC on `kanoclip synth` data (every texture, several
//!    seeds) for zero-shot, mutual (λ = 1) and fused (λ = 0.5), on the tiny fixture model
//!    and on the random B/16.
//! 2. The group-size curve: the same metrics for G = 8, 16, 32, 64 on 64 test images per
//!    category, with the time per image.
//! 3. Costs: time per image and peak resident memory for N = 16, 64 and 200 images of one
//!    product, in groups of the default G and in one group, beside a zero-shot detect.
//!
//! Run: `cargo bench --bench mutual` (native CPU, threads as the machine gives; about an
//! hour on 2 cores). `KANOCLIP_BENCH_PARTS=evidence,curve,costs` picks parts;
//! `KANOCLIP_BENCH_BACKEND=wgpu KANOCLIP_BENCH_N=16,64` runs the costs on wgpu.

mod common;

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use common::{B16, ms, random_weights};
use image::DynamicImage;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::data::dataset::{Dataset, Format};
use kanoclip::data::synth::{SynthConfig, Texture, generate, texture};
use kanoclip::detect::mutual::DEFAULT_GROUP;
use kanoclip::detect::{Detector, DetectorConfig, Mutual};
use kanoclip::eval::evaluate::{CategoryMetrics, evaluate, evaluate_mutual};
use kanoclip::head::knowledge::Knowledge;

fn detector(config: &str, weights: Option<&[u8]>, device: &Device) -> Detector {
    let cfg = ClipConfig::from_json_str(config).unwrap();
    let random;
    let bytes = match weights {
        Some(b) => b,
        None => {
            random = random_weights(&cfg);
            &random
        }
    };
    let clip = Clip::from_safetensors(&cfg, bytes, device).unwrap();
    let kb = Knowledge::Industrial.load().unwrap();
    let tok = Tokenizer::new().unwrap();
    Detector::training_free(clip, &kb, &tok, DetectorConfig::for_clip(&cfg)).unwrap()
}

fn synth(dir: &Path, size: u32, test_good: usize, per_defect: usize, seed: u64) -> Dataset {
    let _ = std::fs::remove_dir_all(dir);
    generate(
        dir,
        &SynthConfig {
            size,
            textures: Texture::ALL.to_vec(),
            train_good: 0,
            test_good,
            test_per_defect: per_defect,
            seed,
        },
    )
    .unwrap();
    Dataset::load(dir, Format::Mvtec).unwrap()
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1}", 100.0 * x))
}

fn row(label: &str, m: &CategoryMetrics) -> String {
    format!(
        "{label:<24} | {:>6} | {:>6}",
        pct(m.image_auroc),
        pct(m.pixel_auroc)
    )
}

/// Reset this process's peak resident memory (Linux), so that the next reading is the
/// peak of what follows.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn evidence(name: &str, det: &Detector, size: u32, seeds: &[u64], tmp: &Path) {
    println!("\n{name}: synthetic textures, image / pixel AUROC (mechanics, not accuracy)");
    println!("{:<24} | {:>6} | {:>6}", "seed, mode", "I-AUC", "P-AUC");
    for &seed in seeds {
        let data = synth(&tmp.join(format!("ev{seed}")), size, 4, 2, seed);
        let zero = evaluate(det, &data, |_| {}).unwrap().mean;
        let mutual = evaluate_mutual(det, &data, &Mutual::default(), |_| {})
            .unwrap()
            .mean;
        let half = Mutual {
            weight: 0.5,
            ..Mutual::default()
        };
        let fused = evaluate_mutual(det, &data, &half, |_| {}).unwrap().mean;
        println!("{}", row(&format!("{seed} zero-shot"), &zero));
        println!("{}", row(&format!("{seed} mutual λ 1"), &mutual));
        println!("{}", row(&format!("{seed} fused λ 0.5"), &fused));
        println!(
            "{:<24} | {:>+6.1} | {:>+6.1}",
            format!("{seed} gain, mutual"),
            100.0 * (mutual.image_auroc.unwrap() - zero.image_auroc.unwrap()),
            100.0 * (mutual.pixel_auroc.unwrap() - zero.pixel_auroc.unwrap())
        );
    }
}

fn curve(det: &Detector, tmp: &Path) {
    let data = synth(&tmp.join("curve"), 224, 24, 8, 7);
    println!("\nrandom B/16: group size G on 64 test images per category (4 textures, seed 7)");
    println!("{:<24} | {:>6} | {:>6} | ms/image", "G", "I-AUC", "P-AUC");
    let t = Instant::now();
    let zero = evaluate(det, &data, |_| {}).unwrap();
    let per = ms(t.elapsed()) / zero.scores.len() as f64;
    println!("{} | {per:.0}", row("zero-shot", &zero.mean));
    for g in [8usize, 16, 32, 64] {
        let t = Instant::now();
        let m = evaluate_mutual(
            det,
            &data,
            &Mutual {
                weight: 1.0,
                group: g,
            },
            |_| {},
        )
        .unwrap();
        let per = ms(t.elapsed()) / m.scores.len() as f64;
        let label = if g == 64 {
            "64 (all)".to_string()
        } else {
            g.to_string()
        };
        println!("{} | {per:.0}", row(&label, &m.mean));
    }
}

fn costs(det: &Detector, label: &str, sizes: &[usize]) {
    let images: Vec<DynamicImage> = (0..200)
        .map(|i| DynamicImage::ImageRgb8(texture(Texture::Grid, 224, 1000 + i)))
        .collect();
    det.detect(&images[0]).unwrap();
    reset_peak();
    let t = Instant::now();
    for img in &images[..8] {
        det.detect(img).unwrap();
    }
    let zero = ms(t.elapsed()) / 8.0;
    println!("\nrandom B/16, 224, {label}: costs");
    println!(
        "zero-shot detect: {zero:.0} ms/image, peak RSS {:.0} MiB",
        common::peak_rss_mib()
    );
    println!("N   | groups        | ms/image | × zero-shot | peak RSS MiB");
    for &n in sizes {
        for group in [DEFAULT_GROUP, n] {
            if group == DEFAULT_GROUP && n <= DEFAULT_GROUP && group != n {
                continue;
            }
            reset_peak();
            let t = Instant::now();
            let m = Mutual { weight: 1.0, group };
            let found = det.detect_mutual(&images[..n], &m).unwrap();
            assert_eq!(found.len(), n);
            let per = ms(t.elapsed()) / n as f64;
            let label = if group >= n {
                "one group".to_string()
            } else {
                format!("G = {group}")
            };
            println!(
                "{n:<3} | {label:<13} | {per:>8.0} | {:>11.2} | {:>12.0}",
                per / zero,
                common::peak_rss_mib()
            );
        }
    }
}

fn main() {
    let parts =
        std::env::var("KANOCLIP_BENCH_PARTS").unwrap_or_else(|_| "evidence,curve,costs".into());
    let tmp = std::env::temp_dir().join(format!("kanoclip-bench-mutual-{}", std::process::id()));
    // KANOCLIP_BENCH_BACKEND=wgpu runs the costs on wgpu, for the sizes in
    // KANOCLIP_BENCH_N (default 16,64,200).
    let wgpu = std::env::var("KANOCLIP_BENCH_BACKEND").is_ok_and(|b| b == "wgpu");
    let device = if wgpu {
        kanoclip::device::device_blocking(kanoclip::BackendKind::Wgpu).expect("a wgpu adapter")
    } else {
        Device::flex()
    };
    let sizes: Vec<usize> = std::env::var("KANOCLIP_BENCH_N")
        .unwrap_or_else(|_| "16,64,200".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let b16 = detector(B16, None, &device);
    println!(
        "threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if parts.contains("evidence") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let config = std::fs::read_to_string(root.join("tiny_quickgelu_config.json")).unwrap();
        let weights = std::fs::read(root.join("tiny_quickgelu.safetensors")).unwrap();
        let tiny = detector(&config, Some(&weights), &Device::flex());
        let size = tiny.config().input_size as u32;
        evidence("tiny fixture model", &tiny, size, &[1, 2, 3, 4, 5], &tmp);
        evidence("random B/16", &b16, 224, &[1, 2, 3], &tmp);
    }
    if parts.contains("curve") {
        curve(&b16, &tmp);
    }
    if parts.contains("costs") {
        costs(&b16, if wgpu { "wgpu" } else { "flex CPU" }, &sizes);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
