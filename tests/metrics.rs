//! Metrics equal scikit-learn (fixtures from `scripts/metrics_reference.py`) within 1e-6,
//! including ties and degenerate categories, and hand-computed cases.

mod common;

use kanoclip::eval::metrics::{PixelHistogram, auroc, average_precision, f1_max};
use kanoclip::eval::pro::{ProHistogram, aupro, regions};

fn close(got: Option<f64>, want: &serde_json::Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-6, "{what}: {g} vs sklearn {w}"),
        (g, w) => panic!("{what}: {g:?} vs sklearn {w:?}"),
    }
}

#[test]
fn image_metrics_equal_scikit_learn() {
    let fixture = common::read_json("metrics_cases.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let scores: Vec<f32> = serde_json::from_value(case["scores"].clone()).unwrap();
        let labels: Vec<bool> = serde_json::from_value(case["labels"].clone()).unwrap();
        close(
            auroc(&scores, &labels),
            &case["auroc"],
            &format!("{name} auroc"),
        );
        close(
            average_precision(&scores, &labels),
            &case["ap"],
            &format!("{name} ap"),
        );
        close(
            f1_max(&scores, &labels),
            &case["f1_max"],
            &format!("{name} f1_max"),
        );
    }
}

#[test]
fn pixel_histogram_equals_scikit_learn_on_quantised_scores() {
    let fixture = common::read_json("metrics_cases.json");
    let pixel = &fixture["pixel"];
    let mut total = PixelHistogram::default();
    for (i, m) in pixel["maps"].as_array().unwrap().iter().enumerate() {
        let scores: Vec<f32> = serde_json::from_value(m["scores"].clone()).unwrap();
        let mask: Vec<bool> = serde_json::from_value(m["mask"].clone()).unwrap();
        // Streaming image by image into separate histograms and merging is the same.
        let mut h = PixelHistogram::default();
        h.add(&scores, &mask);
        if i == 0 {
            total = h;
        } else {
            total.merge(&h);
        }
    }
    close(total.auroc(), &pixel["auroc"], "pixel auroc");
    close(total.average_precision(), &pixel["ap"], "pixel ap");
}

#[test]
fn hand_computed_cases() {
    // Perfect separation, reversed, and one swapped pair out of 2·2 = 0.75.
    let l = [false, false, true, true];
    assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &l), Some(1.0));
    assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &l), Some(0.0));
    assert_eq!(auroc(&[0.1, 0.8, 0.2, 0.9], &l), Some(0.75));
    // A tie between a positive and a negative counts one half.
    assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
    // AP: positives ranked 1st and 3rd: (1/2)·1 + (1/2)·(2/3).
    let ap = average_precision(&[0.9, 0.8, 0.7], &[true, false, true]).unwrap();
    assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
    // F1-max: threshold 0.9 gives P=1, R=1/2 → 2/3; threshold 0.7 gives P=2/3, R=1 → 0.8.
    assert!((f1_max(&[0.9, 0.8, 0.7], &[true, false, true]).unwrap() - 0.8).abs() < 1e-12);
    // Undefined, not a crash: one class only, empty, mismatched, NaN.
    assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
    assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
    assert_eq!(auroc(&[], &[]), None);
    assert_eq!(auroc(&[0.1], &[true, false]), None);
    assert_eq!(auroc(&[f32::NAN, 0.2], &[true, false]), None);
    assert_eq!(PixelHistogram::default().auroc(), None);
}

fn aupro_case(case: &serde_json::Value) -> (Vec<Vec<f32>>, Vec<Vec<bool>>, usize, f64) {
    let maps: Vec<Vec<f32>> = serde_json::from_value(case["maps"].clone()).unwrap();
    let masks: Vec<Vec<u8>> = serde_json::from_value(case["masks"].clone()).unwrap();
    let masks = masks
        .into_iter()
        .map(|m| m.into_iter().map(|v| v != 0).collect())
        .collect();
    let width = case["width"].as_u64().unwrap() as usize;
    (maps, masks, width, case["limit"].as_f64().unwrap())
}

#[test]
fn aupro_equals_anomalib() {
    let fixture = common::read_json("aupro_cases.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (maps, masks, width, limit) = aupro_case(case);
        let m: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let k: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
        let got = aupro(&m, &k, width, limit);
        match (got, case["aupro"].as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-4, "{name}: {g} vs anomalib {w}"),
            (None, None) => {}
            (g, w) => panic!("{name}: {g:?} vs {w:?}"),
        }
        // Streaming: exact on the quantised case, within the binning error elsewhere.
        let mut hist = ProHistogram::default();
        for (s, m) in maps.iter().zip(&masks) {
            let mut h = ProHistogram::default();
            h.add(s, m, width);
            hist.merge(&h);
        }
        let tol = if name == "quantised" { 1e-4 } else { 2e-3 };
        match (hist.aupro(limit), case["aupro"].as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= tol, "{name} binned: {g} vs {w}"),
            (None, None) => {}
            (g, w) => panic!("{name} binned: {g:?} vs {w:?}"),
        }
    }
}

#[test]
fn aupro_hand_computed() {
    // 8-connectivity: a diagonal touch joins two squares; a gap of one pixel does not.
    let mut mask = vec![false; 36];
    for (x, y) in [(0, 0), (1, 1), (4, 0), (4, 1), (3, 4)] {
        mask[y * 6 + x] = true;
    }
    let (labels, n) = regions(&mask, 6);
    assert_eq!(n, 3);
    assert_eq!(labels[0], labels[7]);
    assert_ne!(labels[0], labels[4]);
    // One 4×1 image: background scores 0.1, 0.4; two one-pixel regions scored 0.9, 0.2.
    // Points (FPR, PRO): (0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1). Limit 0.5: area
    // under y = 0.5 on [0, 0.5] = 0.25, normalised by 0.5 = 0.5.
    let s = [0.1f32, 0.9, 0.4, 0.2];
    let m = [false, true, false, true];
    let got = aupro(&[&s], &[&m], 4, 0.5).unwrap();
    assert!((got - 0.5).abs() < 1e-12, "{got}");
    // Limit 1: area = 0.5·0.5 + 0.5·1 = 0.75 (PRO reaches 1 at FPR 0.5).
    assert!((aupro(&[&s], &[&m], 4, 1.0).unwrap() - 0.75).abs() < 1e-12);
    // Undefined: no region, or no background.
    assert_eq!(aupro(&[&s], &[&[false; 4]], 4, 0.3), None);
    assert_eq!(aupro(&[&s], &[&[true; 4]], 4, 0.3), None);
    assert_eq!(ProHistogram::default().aupro(0.3), None);
}
