//! Mutual scoring (spec §11) against the Python reference (`scripts/mutual_reference.py`:
//! torch and scipy, written from the spec) on both backends, its fusion with the zero-shot
//! and few-shot maps, and its groups.

mod common;

use common::fixture_images as images;
use common::head_detectors as detectors;
use common::{backends, flatten, max_abs_diff, read_json};
use kanoclip::detect::MemoryOptions;
use kanoclip::detect::memory::{FewShot, ReferenceImage};
use kanoclip::detect::mutual::{MIN_GROUP, Mutual, group_sizes};
use kanoclip::{Detection, Error};

const TOL: f32 = 1e-4;

fn alone(group: usize) -> Mutual {
    Mutual { weight: 1.0, group }
}

/// `(1 − λ) · other + λ · mutual`, map by map, and each score its map's maximum.
fn fused(other: &[Detection], mutual: &[Vec<f32>], lambda: f32) -> Vec<(f32, Vec<f32>)> {
    common::zip_eq(other, mutual)
        .map(|(o, m)| {
            let map: Vec<f32> = (o.map.values.iter().zip(m))
                .map(|(a, b)| (1.0 - lambda) * a + lambda * b)
                .collect();
            (map.iter().copied().fold(f32::MIN, f32::max), map)
        })
        .collect()
}

fn max_errors(got: &[Detection], want: &[(f32, Vec<f32>)]) -> (f32, f32) {
    common::zip_eq(got, want).fold((0.0, 0.0), |(em, es), (d, (s, m))| {
        (
            em.max(max_abs_diff(&d.map.values, m)),
            es.max(common::abs_err(d.score, *s)),
        )
    })
}

#[test]
fn mutual_map_and_its_fusions_match_the_reference() {
    let doc = read_json("mutual_cases.json");
    let mut report = Vec::new();
    for (kind, device) in backends() {
        for (mode, detector) in detectors(&device) {
            for case in doc["cases"].as_array().unwrap() {
                let group = images(&case["images"]);
                let n = group.len();
                let want: Vec<Vec<f32>> = case["maps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(flatten)
                    .collect();
                let scores: Vec<f32> = (case["scores"].as_array().unwrap().iter())
                    .map(|s| s.as_f64().unwrap() as f32)
                    .collect();
                // λ = 1: the mutual map alone, the score its maximum.
                let got = detector.detect_group(&group, &alone(n)).unwrap();
                let want_alone: Vec<(f32, Vec<f32>)> =
                    scores.iter().copied().zip(want.clone()).collect();
                let (e_map, e_score) = max_errors(&got, &want_alone);
                // λ = 0.4 with the zero-shot map (checked against its own reference in
                // tests/head.rs), then with a few-shot memory set: the maps are linear in
                // the grid map, so fusing the final maps is the reference.
                let lambda = 0.4;
                let mix = Mutual {
                    weight: lambda,
                    group: n,
                };
                let zero_shot = detector.detect_batch(&group).unwrap();
                let got = detector.detect_group(&group, &mix).unwrap();
                let (e_zs, e_zs_score) = max_errors(&got, &fused(&zero_shot, &want, lambda as f32));
                let refs = images(&read_json("fewshot_cases.json")["references"]);
                let names = (0..refs.len())
                    .map(|i| ReferenceImage {
                        name: format!("ref{i}"),
                        sha256: "0".repeat(64),
                    })
                    .collect();
                let memory = detector
                    .build_memory(&refs, names, MemoryOptions::default())
                    .unwrap();
                detector.set_memory(memory, FewShot::default()).unwrap();
                let few_shot = detector.detect_batch(&group).unwrap();
                let got = detector.detect_group(&group, &mix).unwrap();
                let (e_fs, e_fs_score) = max_errors(&got, &fused(&few_shot, &want, lambda as f32));
                detector.clear_memory();
                let line = format!(
                    "{kind} {mode:<13} N={n}: mutual map {e_map:.1e} score {e_score:.1e}; \
                     with zero-shot {e_zs:.1e}/{e_zs_score:.1e}; with few-shot {e_fs:.1e}/{e_fs_score:.1e}"
                );
                assert!(
                    [e_map, e_score, e_zs, e_zs_score, e_fs, e_fs_score]
                        .iter()
                        .all(|e| *e <= TOL),
                    "{line}"
                );
                report.push(line);
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn groups_are_split_evenly_and_each_scored_alone() {
    let doc = read_json("mutual_cases.json");
    let all = images(&doc["cases"][0]["images"]);
    let (_, device) = backends().remove(0);
    let (_, detector) = detectors(&device).remove(1);
    // Eight images in groups of at most 5: two groups of four, each its own comparison.
    assert_eq!(group_sizes(all.len(), 5), vec![4, 4]);
    let got = detector.detect_mutual(&all, &alone(5)).unwrap();
    let mut want = detector.detect_group(&all[..4], &alone(5)).unwrap();
    want.extend(detector.detect_group(&all[4..], &alone(5)).unwrap());
    assert_eq!(got.len(), 8);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.map.values, w.map.values);
        assert_eq!(g.score, w.score);
    }
    // Not the same as one group of eight: the other images changed.
    let one = detector.detect_group(&all, &alone(8)).unwrap();
    assert!(max_abs_diff(&one[0].map.values, &got[0].map.values) > 1e-4);
}

#[test]
fn too_small_or_badly_set_groups_are_refused() {
    let doc = read_json("mutual_cases.json");
    let all = images(&doc["cases"][0]["images"]);
    let (_, device) = backends().remove(0);
    let (_, detector) = detectors(&device).remove(1);
    for n in 0..MIN_GROUP {
        let err = detector.detect_group(&all[..n], &alone(8)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{n}: {err}");
        assert!(err.to_string().contains("group"), "{err}");
    }
    for bad in [
        Mutual {
            weight: -0.1,
            group: 8,
        },
        Mutual {
            weight: 1.0,
            group: 1,
        },
    ] {
        assert!(matches!(
            detector.detect_mutual(&all, &bad),
            Err(Error::Invalid(_))
        ));
    }
    // The detector is unharmed.
    assert_eq!(
        detector.detect_group(&all[..3], &alone(3)).unwrap().len(),
        3
    );
}

#[test]
fn an_image_the_detector_refuses_costs_only_itself() {
    use kanoclip::detect::Scored;
    let doc = read_json("mutual_cases.json");
    let all = images(&doc["cases"][0]["images"]);
    let (_, device) = backends().remove(0);
    let (_, detector) = detectors(&device).remove(1);
    let empty = image::DynamicImage::new_rgb8(0, 0);
    // Four good images around an empty one: the empty one fails, the four are a group.
    let mut group = all[..2].to_vec();
    group.push(empty.clone());
    group.extend(all[2..4].iter().cloned());
    let got = detector.detect_group_or_alone(&group, &alone(8));
    assert!(
        matches!(got[2], Err(Error::Image(_))),
        "{:?}",
        got[2].as_ref().err()
    );
    let want = detector.detect_group(&all[..4], &alone(8)).unwrap();
    let good: Vec<_> = [0, 1, 3, 4]
        .iter()
        .map(|&i| got[i].as_ref().unwrap())
        .collect();
    for ((d, scored), w) in good.iter().zip(&want) {
        assert_eq!(*scored, Scored::Mutual { group: 4 });
        assert_eq!(d.map.values, w.map.values);
    }
    // Two good images and the empty one: too few to compare, so each is scored alone, as
    // `detect` scores it, and says why.
    let got = detector.detect_group_or_alone(&[all[0].clone(), empty, all[1].clone()], &alone(8));
    assert!(got[1].is_err());
    for (i, img) in [(0, &all[0]), (2, &all[1])] {
        let (d, scored) = got[i].as_ref().unwrap();
        assert!(matches!(scored, Scored::Alone { why } if why.contains("group of 2")));
        let alone = detector.detect(img).unwrap();
        assert!(max_abs_diff(&d.map.values, &alone.map.values) <= 1e-6);
        assert!((d.score - alone.score).abs() <= 1e-6);
    }
    // A bad setting fails every image the same way.
    let bad = Mutual {
        weight: 2.0,
        group: 8,
    };
    let got = detector.detect_group_or_alone(&all[..4], &bad);
    assert!(got.iter().all(|r| matches!(r, Err(Error::Invalid(_)))));
}
