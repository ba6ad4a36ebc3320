//! Metrics equal scikit-learn (fixtures from `scripts/metrics_reference.py`) within 1e-6,
//! including ties and degenerate categories, and hand-computed cases.

mod common;

use kanoclip::eval::metrics::{PixelHistogram, auroc, average_precision, f1_max};

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
