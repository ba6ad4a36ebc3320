//! Few-shot mode's costs on a ViT-B/16-shaped random model at 224 (native CPU): memory size
//! and build time for k = 1, 4, 16, the added detect latency per image, and a k = 32
//! memory reduced by greedy coreset to 16 images' worth. Plus pixel AUROC on `kanoclip
//! synth` data for k = 0 (zero-shot), 1, 2, 4 with this random backbone: mechanics only,
//! never accuracy on real data. Run: `cargo bench --bench fewshot`.

mod common;

use std::time::Instant;

use burn::prelude::*;
use common::{B16, ms, random_weights};
use image::DynamicImage;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::data::dataset::{Dataset, Format};
use kanoclip::data::synth::{SynthConfig, Texture, generate, texture};
use kanoclip::detect::memory::{FewShot, ReferenceImage};
use kanoclip::detect::{Detector, DetectorConfig, MemoryOptions};
use kanoclip::eval::evaluate::evaluate;
use kanoclip::eval::few_shot::{FewShotProtocol, evaluate_few_shot};
use kanoclip::head::knowledge::Knowledge;

fn names(n: usize) -> Vec<ReferenceImage> {
    (0..n)
        .map(|i| ReferenceImage {
            name: format!("good{i}"),
            sha256: String::new(),
        })
        .collect()
}

fn main() {
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let bytes = random_weights(&cfg);
    let dev = Device::flex();
    let clip = Clip::from_safetensors(&cfg, &bytes, &dev).unwrap();
    let kb = Knowledge::Industrial.load().unwrap();
    let det = Detector::training_free(
        clip,
        &kb,
        &Tokenizer::new().unwrap(),
        DetectorConfig::for_clip(&cfg),
    )
    .unwrap();
    let goods: Vec<DynamicImage> = (0..32)
        .map(|i| DynamicImage::ImageRgb8(texture(Texture::Grid, 224, 100 + i)))
        .collect();
    let query = DynamicImage::ImageRgb8(texture(Texture::Grid, 224, 7));
    let time_detect = |n: usize| {
        det.detect(&query).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            det.detect(&query).unwrap();
        }
        ms(t.elapsed()) / n as f64
    };
    let zero = time_detect(3);
    println!("B/16 random, 224, flex CPU, threads as the machine gives");
    println!("zero-shot detect: {zero:.0} ms/image");
    println!("k | rows/tap | memory MB | build ms | detect ms | added ms");
    for k in [1usize, 4, 16, 32] {
        let t = Instant::now();
        let m = det
            .build_memory(&goods[..k], names(k), MemoryOptions::default())
            .unwrap();
        let build = ms(t.elapsed());
        let (rows, mb) = (m.meta().rows[0], m.meta().bytes() as f64 / 1e6);
        det.set_memory(m, FewShot::default()).unwrap();
        let d = time_detect(3);
        let note = if k > 16 {
            "  (coreset to 16 images' worth)"
        } else {
            ""
        };
        println!(
            "{k:>2} | {rows:>8} | {mb:>9.1} | {build:>8.0} | {d:>9.0} | {:>8.0}{note}",
            d - zero
        );
    }
    det.clear_memory();

    // Synthetic data, this random backbone: pixel AUROC for k = 0, 1, 2, 4.
    let dir = std::env::temp_dir().join(format!("kanoclip-bench-fewshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    generate(
        &dir,
        &SynthConfig {
            size: 224,
            textures: Texture::ALL.to_vec(),
            train_good: 4,
            test_good: 2,
            test_per_defect: 1,
            seed: 3,
        },
    )
    .unwrap();
    let data = Dataset::load(&dir, Format::Mvtec).unwrap();
    let zs = evaluate(&det, &data, |_| {}).unwrap().mean;
    println!("\nsynthetic textures, random B/16 (mechanics, not accuracy):");
    println!(
        "k 0: pixel AUROC {:.3}, image AUROC {:.3}",
        zs.pixel_auroc.unwrap_or(f64::NAN),
        zs.image_auroc.unwrap_or(f64::NAN)
    );
    for k in [1usize, 2, 4] {
        let p = FewShotProtocol {
            shots: k,
            seeds: vec![0, 1, 2],
            fusion: FewShot::default(),
        };
        let r = evaluate_few_shot(&det, &data, &p, 8, |_| {}).unwrap();
        let m = r.mean.last().unwrap();
        println!(
            "k {k}: pixel AUROC {:.3} ± {:.3}, image AUROC {:.3} ± {:.3} (3 seeds)",
            m.pixel_auroc.unwrap_or(f64::NAN),
            r.std.pixel_auroc.unwrap_or(f64::NAN),
            m.image_auroc.unwrap_or(f64::NAN),
            r.std.image_auroc.unwrap_or(f64::NAN)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
