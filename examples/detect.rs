//! The README's library example: `cargo run --release --example detect -- CLIP_CONFIG
//! WEIGHTS IMAGE…` prints each image's score and verdict (scripts/test runs it on the tiny
//! test model). Bad images are reported and skipped.

use kanoclip::{BackendKind, Detector, DetectorSource, Knowledge};

fn main() -> kanoclip::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, weights, images @ ..] = args.as_slice() else {
        eprintln!("usage: detect CLIP_CONFIG WEIGHTS IMAGE…");
        std::process::exit(2);
    };
    // README: begin
    let detector = Detector::from_files(
        config,
        weights,
        DetectorSource::TrainingFree(Knowledge::Industrial),
        BackendKind::Cpu,
    )?;
    for path in images {
        // `load_image` reads the size from the header first and refuses what is too large.
        match kanoclip::load_image(path).and_then(|image| detector.detect(&image)) {
            Ok(found) => println!(
                "{path}: score {:.4}, anomalous: {}, map {}×{}",
                found.score, found.is_anomalous, found.map.width, found.map.height
            ),
            Err(e) => println!("{path}: skipped ({e})"),
        }
    }
    // README: end
    Ok(())
}
