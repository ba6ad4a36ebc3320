//! A full MVTec AD-sized pixel evaluation (1725 maps of 256²) streams through the
//! histograms in bounded memory. Its own test binary, so that the peak-RSS reading is this
//! test's alone.

use kanoclip::eval::metrics::PixelHistogram;
use kanoclip::eval::pro::ProHistogram;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn mvtec_sized_pixel_eval_in_bounded_memory() {
    const IMAGES: usize = 1725;
    const SIZE: usize = 256;
    let before = peak_rss_kib();
    let mut hist = PixelHistogram::default();
    let mut pro = ProHistogram::default();
    let mut rng = fastrand::Rng::with_seed(5);
    let (mut map, mut mask) = (vec![0f32; SIZE * SIZE], vec![false; SIZE * SIZE]);
    for i in 0..IMAGES {
        // Every other image has a square defect; defect pixels score in [0.6, 1), the rest
        // in [0, 0.6): perfect separation, so both AUROC and AUPRO are exactly 1.
        let (x0, y0, side) = (rng.usize(0..200), rng.usize(0..200), rng.usize(4..50));
        for y in 0..SIZE {
            for x in 0..SIZE {
                let j = y * SIZE + x;
                mask[j] =
                    i % 2 == 0 && (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
                map[j] = if mask[j] {
                    0.6 + 0.39 * rng.f32()
                } else {
                    0.59 * rng.f32()
                };
            }
        }
        hist.add(&map, &mask);
        pro.add(&map, &mask, SIZE);
    }
    assert_eq!(hist.auroc(), Some(1.0));
    assert!((pro.aupro(0.3).unwrap() - 1.0).abs() < 1e-9);
    // Holding the scores (f32) and masks (u8) of 113 M pixels would take 565 MB; streaming
    // needs two maps and 2 MiB of bins. Allow 64 MiB for the allocator and the test harness.
    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!(
        "peak RSS grew by {} KiB over {IMAGES} maps of {SIZE}²",
        grown
    );
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
}
