//! The head and the detector (spec §3–§7) against the Python reference
//! (`scripts/head_reference.py`: torch's MultiheadAttention and Conv2d, scipy's
//! gaussian_filter), on both backends; plus hand-built cases.

mod common;

use common::{backends, fixture, flatten, max_abs_diff, read_json};
use image::DynamicImage;
use kanoclip::clip::preprocess::{Geometry, load_image};
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::detect::{Detector, DetectorConfig, calibration_rule, maps};
use kanoclip::head::knowledge::KnowledgeBase;

const TOL: f32 = 1e-4;

fn case() -> serde_json::Value {
    read_json("head_cases.json")
}

fn clip(case: &serde_json::Value, device: &burn::prelude::Device) -> Clip {
    Clip::from_files(
        fixture(case["clip_config"].as_str().unwrap()),
        fixture(case["weights"].as_str().unwrap()),
        device,
    )
    .unwrap()
}

fn images(case: &serde_json::Value) -> Vec<DynamicImage> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| load_image(fixture(p.as_str().unwrap())).unwrap())
        .collect()
}

fn check(
    name: &str,
    detector: &Detector,
    want: &serde_json::Value,
    imgs: &[DynamicImage],
) -> String {
    let text = kanoclip::tensor_io::to_vec(detector.text_features().clone()).unwrap();
    let e_text = max_abs_diff(&text, &flatten(&want["text"]));
    let got = detector.detect_batch(imgs).unwrap();
    let mut e_score: f32 = 0.0;
    let mut e_map: f32 = 0.0;
    for (d, w) in common::zip_eq(&got, want["results"].as_array().unwrap()) {
        let want = |k: &str| w[k].as_f64().unwrap() as f32;
        e_score = e_score.max(common::abs_err(d.score, want("score")));
        e_score = e_score.max(common::abs_err(
            d.global_probability,
            want("global_probability"),
        ));
        e_map = e_map.max(max_abs_diff(&d.map.values, &flatten(&w["map"])));
        assert_eq!((d.map.width, d.map.height), (32, 32));
    }
    let line = format!("{name:<28} text {e_text:.2e}  score/prob {e_score:.2e}  map {e_map:.2e}");
    assert!(e_text <= TOL && e_score <= TOL && e_map <= TOL, "{line}");
    line
}

#[test]
fn trained_and_training_free_match_the_reference() {
    let case = case();
    let tokenizer = Tokenizer::new().unwrap();
    let imgs = images(&case);
    let mut report = Vec::new();
    for (kind, device) in backends() {
        let trained = Detector::load(
            clip(&case, &device),
            fixture(case["head"].as_str().unwrap()),
            &tokenizer,
        )
        .unwrap();
        report.push(check(
            &format!("{kind} trained"),
            &trained,
            &case["trained"],
            &imgs,
        ));
        let kb = KnowledgeBase::from_file(fixture(case["knowledge"].as_str().unwrap())).unwrap();
        let cfg: DetectorConfig = serde_json::from_value(case["detector"].clone()).unwrap();
        let free = Detector::training_free(clip(&case, &device), &kb, &tokenizer, cfg).unwrap();
        report.push(check(
            &format!("{kind} training-free"),
            &free,
            &case["training_free"],
            &imgs,
        ));
    }
    eprintln!("detector parity (max abs error):\n{}", report.join("\n"));
}

#[test]
fn maps_go_back_through_the_crop_to_the_original_size() {
    let case = case();
    let mb = &case["map_back"];
    let g = Geometry::new(120, 90, 32);
    assert_eq!((g.resized, g.crop), ((42, 32), (5, 0)));
    let back = maps::to_original(&flatten(&mb["map"]), &g);
    assert_eq!(back.len(), 120 * 90);
    assert!(max_abs_diff(&back, &flatten(&mb["expected"])) < 1e-5);

    // And end to end: a non-square image gives a map at its own size.
    let device = backends().remove(0).1;
    let tokenizer = Tokenizer::new().unwrap();
    let det = Detector::load(
        clip(&case, &device),
        fixture(case["head"].as_str().unwrap()),
        &tokenizer,
    )
    .unwrap();
    let img = load_image(fixture("images/nonsquare_120x90.png")).unwrap();
    let d = det.detect(&img).unwrap();
    assert_eq!(
        (d.map.width, d.map.height, d.map.values.len()),
        (120, 90, 120 * 90)
    );
    assert!(
        d.map
            .values
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
    );
}

#[test]
fn gaussian_matches_hand_computed_values() {
    // A unit impulse in the middle of a 41×41 map: the blur is the outer product of the
    // normalised 1-D kernel exp(-x²/2σ²), radius int(4σ + 0.5) = 8 for σ = 2.
    let (n, c) = (41usize, 20usize);
    let mut m = vec![0.0f32; n * n];
    m[c * n + c] = 1.0;
    let out = maps::gaussian_blur(&m, n, n, 2.0);
    let k: Vec<f64> = (-8i32..=8).map(|x| (-(x * x) as f64 / 8.0).exp()).collect();
    let s: f64 = k.iter().sum();
    let at = |dx: i32, dy: i32| (k[(dx + 8) as usize] * k[(dy + 8) as usize] / (s * s)) as f32;
    for (dx, dy) in [(0, 0), (1, 0), (3, 2), (8, 8)] {
        let v = out[(c as i32 + dy) as usize * n + (c as i32 + dx) as usize];
        assert!(
            (v - at(dx, dy)).abs() < 1e-7,
            "{dx},{dy}: {v} vs {}",
            at(dx, dy)
        );
    }
    assert_eq!(out[c * n + c + 9], 0.0, "beyond the radius");
    // Reflect mode keeps the total mass at the border.
    let mut edge = vec![0.0f32; n * n];
    edge[0] = 1.0;
    let total: f32 = maps::gaussian_blur(&edge, n, n, 2.0).iter().sum();
    assert!((total - 1.0).abs() < 1e-5);
    // A σ so small that 2σ² underflows made the kernel 0/0 = NaN, and every map NaN; below
    // MIN_SIGMA the blur is the identity (the kernel's outer taps are below e⁻⁵⁰⁰⁰⁰).
    for sigma in [1e-30, 1e-200, 5e-3, f64::MIN_POSITIVE] {
        assert_eq!(maps::gaussian_blur(&m, n, n, sigma), m, "sigma {sigma}");
    }
    let just_above = maps::gaussian_blur(&m, n, n, kanoclip::detect::config::MIN_SIGMA);
    assert!(just_above.iter().all(|v| v.is_finite()));
    assert!((just_above[c * n + c] - 1.0).abs() < 1e-6);
}

/// A non-square map with values everywhere, against the 2-D sum written out in f64 with
/// scipy's `reflect` border: catches a swapped width/height or a wrong border.
#[test]
fn gaussian_on_a_non_square_map_is_the_reflected_2d_sum() {
    let (w, h, sigma) = (13usize, 7usize, 1.5f64);
    let m: Vec<f32> = (0..w * h).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
    let out = maps::gaussian_blur(&m, w, h, sigma);
    let r = (4.0 * sigma + 0.5) as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    // d c b a | a b c d | d c b a
    let reflect = |i: i64, n: i64| {
        let j = i.rem_euclid(2 * n);
        (if j >= n { 2 * n - 1 - j } else { j }) as usize
    };
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let mut want = 0.0f64;
            for dy in -r..=r {
                for dx in -r..=r {
                    let v = m[reflect(y + dy, h as i64) * w + reflect(x + dx, w as i64)];
                    want += k[(dy + r) as usize] * k[(dx + r) as usize] * v as f64;
                }
            }
            want /= s * s;
            let got = out[y as usize * w + x as usize] as f64;
            assert!((got - want).abs() < 1e-5, "({x},{y}): {got} vs {want}");
        }
    }
}

#[test]
fn calibration_rule_is_mean_plus_three_std_above_the_max() {
    // Hand-computed: mean 0.4, population std sqrt(0.08/3) = 0.163299, so 0.4 + 3·0.163299.
    let c = calibration_rule(&[0.2, 0.4, 0.6]).unwrap();
    assert!((c.threshold - 0.889_897_9).abs() < 1e-6, "{c:?}");
    // One image: just above its own score.
    let c = calibration_rule(&[0.5]).unwrap();
    assert!((c.threshold - 0.5001).abs() < 1e-12);
    assert!(calibration_rule(&[]).is_err());
    assert!(calibration_rule(&[0.1, f64::NAN]).is_err());

    let case = case();
    let device = backends().remove(0).1;
    let tokenizer = Tokenizer::new().unwrap();
    let det = Detector::load(
        clip(&case, &device),
        fixture(case["head"].as_str().unwrap()),
        &tokenizer,
    )
    .unwrap();
    let imgs = images(&case);
    let cal = det.calibrate(&imgs).unwrap();
    assert_eq!(det.threshold(), cal.threshold);
    assert_eq!(det.config().threshold, cal.threshold);
    for d in det.detect_batch(&imgs).unwrap() {
        assert!(!d.is_anomalous && f64::from(d.score) < cal.threshold);
    }
    det.set_threshold(0.0).unwrap();
    assert!(det.detect(&imgs[0]).unwrap().is_anomalous);
    assert!(det.set_threshold(f64::NAN).is_err());
}
