//! Bundle dtypes on a ViT-B/16-shaped model: the vision file's size for f32, f16 and int8,
//! and how far f16's and int8's scores and maps are from f32's on the sample images.
//!
//!   cargo bench --bench quantization            # KANOCLIP_BUNDLES=DIR also writes the bundles
//!
//! The weights are RANDOM (std 0.02-ish, layer norms 1/0): these figures say how much the
//! storage changes the computation, nothing about detection quality.

mod common;

use common::{B16, random_weights};
use image::DynamicImage;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::detect::bundle::{BundleInfo, ChunkFiles, Manifest, StoreDtype, build};
use kanoclip::detect::{Detection, Detector, DetectorConfig};
use kanoclip::head::knowledge::Knowledge;

fn images() -> Vec<DynamicImage> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<_> = ["good", "crack", "colour"]
        .iter()
        .map(|n| root.join(format!("www/samples/hazelnut_toy/{n}.jpg")))
        .collect();
    paths.push(root.join("tests/fixtures/images/nonsquare_120x90.png"));
    paths.iter().map(|p| image::open(p).unwrap()).collect()
}

fn main() {
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let dev = burn::prelude::Device::flex();
    eprintln!("making random ViT-B/16 weights…");
    let bytes = random_weights(&cfg);
    let clip = Clip::from_safetensors(&cfg, &bytes, &dev).unwrap();
    let kb = Knowledge::parse("industrial").load().unwrap();
    let detector = Detector::training_free(
        clip,
        &kb,
        &Tokenizer::new().unwrap(),
        DetectorConfig::for_clip(&cfg),
    )
    .unwrap();
    let out = std::env::var_os("KANOCLIP_BUNDLES").map(std::path::PathBuf::from);
    let images = images();
    let mut reference: Option<Vec<Detection>> = None;
    println!(
        "| dtype | vision file | score max/mean |Δ| vs f32 | map max/mean |Δ| vs f32 | decisions = f32 |"
    );
    println!("|---|---|---|---|---|");
    for dtype in [StoreDtype::F32, StoreDtype::F16, StoreDtype::Int8] {
        let info = BundleInfo {
            name: format!("random ViT-B/16 ({})", dtype.name()),
            notice: Some("Random, untrained weights: for load and speed measurements only.".into()),
            threshold: None,
        };
        let (m, chunks) = build(&detector, &cfg, &bytes, None, dtype, &info).unwrap();
        if let Some(dir) = &out {
            write(&dir.join(dtype.name()), &m, &chunks);
        }
        let vision = m
            .assemble("vision", |c| {
                Ok(chunks.iter().find(|(p, _)| *p == c.path).unwrap().1.clone())
            })
            .unwrap()
            .unwrap();
        let d = m.detector(&vision, None, &dev).unwrap();
        let got = d.detect_batch(&images).unwrap();
        let size = m.files[0].size as f64 / 1e6;
        match &reference {
            None => {
                println!("| f32 | {size:.1} MB | – | – | – |");
                reference = Some(got);
            }
            Some(want) => {
                let (mut smax, mut ssum, mut mmax, mut msum, mut n) =
                    (0f32, 0f64, 0f32, 0f64, 0usize);
                for (g, w) in got.iter().zip(want) {
                    let ds = (g.score - w.score).abs();
                    smax = smax.max(ds);
                    ssum += f64::from(ds);
                    for (a, b) in g.map.values.iter().zip(&w.map.values) {
                        mmax = mmax.max((a - b).abs());
                        msum += f64::from((a - b).abs());
                        n += 1;
                    }
                }
                let same = got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| g.is_anomalous == w.is_anomalous);
                println!(
                    "| {} | {size:.1} MB | {smax:.2e} / {:.2e} | {mmax:.2e} / {:.2e} | {same} |",
                    dtype.name(),
                    ssum / got.len() as f64,
                    msum / n as f64
                );
            }
        }
    }
}

fn write(dir: &std::path::Path, m: &Manifest, chunks: &ChunkFiles) {
    std::fs::create_dir_all(dir).unwrap();
    for (path, bytes) in chunks {
        std::fs::write(dir.join(path), bytes).unwrap();
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}
