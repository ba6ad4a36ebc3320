//! A steady loop of the detector's whole work on a ViT-B/16-shaped RANDOM model at 224, to
//! profile (#10) or to split a detect's time into its parts:
//!
//!     cargo build --release --example prof_detect
//!     RAYON_NUM_THREADS=2 N=40 perf record -g target/release/examples/prof_detect
//!
//! `N` detects (10) of `B` images (1). Prints the median and its parts. Timings, not accuracy.

#[path = "../benches/common/mod.rs"]
mod common;
use common::{B16, detector_with_head, random_picture, random_weights};
use kanoclip::clip::{ClipConfig, Tokenizer};
use kanoclip::device::{BackendKind, device};
fn main() {
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let bytes = random_weights(&cfg);
    let dev = pollster::block_on(device(BackendKind::Cpu)).unwrap();
    let tok = Tokenizer::new().unwrap();
    let det = detector_with_head(&cfg, &bytes, &dev, &tok);
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let b: usize = std::env::var("B")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let image = random_picture(224);
    let images = vec![image; b];
    let mut rows = vec![];
    for _ in 0..n {
        let t = std::time::Instant::now();
        let d = det.detect_batch(&images).unwrap();
        let tm = &d[0].timings;
        rows.push((
            t.elapsed().as_secs_f64() * 1e3,
            tm.preprocess_ms,
            tm.backbone_ms,
            tm.head_ms,
            tm.postprocess_ms,
        ));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let r = rows[n / 2];
    println!(
        "detect b{b}: median {:.1} ms (per image: pre {:.1}, backbone {:.1}, head {:.1}, post {:.1}); min {:.1}",
        r.0, r.1, r.2, r.3, r.4, rows[0].0
    );
}
