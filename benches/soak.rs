//! The native soak (run by `scripts/soak`, never by CI): sequential detects on a
//! ViT-B/16-shaped RANDOM model at 224 with its head, then concurrent ones.
//!
//!     cargo bench --bench soak -- [DETECTS]      # default 1000
//!
//! - Sequential: after a warm-up of 20 detects, the resident set (VmRSS) and its peak
//!   (VmHWM) are sampled every 50 detects; the growth of the peak after warm-up must stay
//!   under 5 %. Each detect uses one of 8 different images, decoded from PNG each time (as
//!   the CLI does).
//! - Concurrent: 16 threads detect at once on the same `Detector`; every result must equal
//!   the sequential result of the same image (score and map, bit for bit).
//!
//! Prints the figures; exits non-zero if a bound fails. The weights are random: these are
//! mechanics, not accuracy.

mod common;
use common::{B16, detector_with_head, random_weights};

use kanoclip::clip::preprocess::decode_image;
use kanoclip::clip::{ClipConfig, Tokenizer};
use kanoclip::device::{BackendKind, device};

fn status(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn png(seed: u64) -> Vec<u8> {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let img = image::RgbImage::from_fn(320, 240, |_, _| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        image::Rgb([rng as u8, (rng >> 8) as u8, (rng >> 16) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, image::ImageFormat::Png)
        .unwrap();
    buf.into_inner()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let dev = pollster::block_on(device(BackendKind::Cpu)).unwrap();
    let detector = detector_with_head(
        &cfg,
        &random_weights(&cfg),
        &dev,
        &Tokenizer::new().unwrap(),
    );
    let files: Vec<Vec<u8>> = (0..8).map(png).collect();
    let mut want = Vec::new();
    for f in &files {
        want.push(detector.detect(&decode_image(f).unwrap()).unwrap());
    }
    for i in 0..20 {
        detector
            .detect(&decode_image(&files[i % 8]).unwrap())
            .unwrap();
    }
    let (rss0, hwm0) = (status("VmRSS:"), status("VmHWM:"));
    println!(
        "soak: B/16 random + head, 224, flex CPU; after 28 warm-up detects RSS {rss0:.0} MiB, peak {hwm0:.0} MiB"
    );
    let start = std::time::Instant::now();
    for i in 0..n {
        let d = detector
            .detect(&decode_image(&files[i % 8]).unwrap())
            .unwrap();
        assert_eq!(
            d.score.to_bits(),
            want[i % 8].score.to_bits(),
            "detect {i} drifted"
        );
        if (i + 1) % 50 == 0 || i + 1 == n {
            println!(
                "soak: {:>5} detects  RSS {:>6.0} MiB  peak {:>6.0} MiB  {:.0} ms/detect",
                i + 1,
                status("VmRSS:"),
                status("VmHWM:"),
                start.elapsed().as_secs_f64() * 1e3 / (i + 1) as f64
            );
        }
    }
    let (rss1, hwm1) = (status("VmRSS:"), status("VmHWM:"));
    let growth = (hwm1 - hwm0) / hwm0 * 100.0;
    println!(
        "soak: {n} sequential detects: RSS {rss0:.0} → {rss1:.0} MiB, peak {hwm0:.0} → {hwm1:.0} MiB ({growth:+.2} %)"
    );

    // 16 at once on one detector: the same bits as sequential.
    let results: Vec<(usize, kanoclip::detect::Detection)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (detector, files) = (&detector, &files);
                s.spawn(move || {
                    let img = decode_image(&files[i % 8]).unwrap();
                    (i, detector.detect(&img).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut worst = 0f32;
    for (i, d) in &results {
        let w = &want[i % 8];
        worst = worst.max((d.score - w.score).abs());
        for (a, b) in d.map.values.iter().zip(&w.map.values) {
            worst = worst.max((a - b).abs());
        }
    }
    println!(
        "soak: 16 concurrent detects: max |Δ| against sequential {worst:e}; peak RSS now {:.0} MiB",
        status("VmHWM:")
    );
    let mut ok = true;
    if growth >= 5.0 {
        println!("soak: FAILED: peak RSS grew {growth:.2} % (bound 5 %)");
        ok = false;
    }
    if worst != 0.0 {
        println!("soak: FAILED: concurrent results differ from sequential ones");
        ok = false;
    }
    std::process::exit(if ok { 0 } else { 1 });
}
