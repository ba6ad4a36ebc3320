//! Few-shot mode (spec §10) against the Python reference (`scripts/fewshot_reference.py`:
//! torch and scipy, written from the spec) on both backends, and the memory file's bad
//! inputs.

mod common;

use std::sync::Arc;

use common::fixture_images as images;
use common::head_detectors as detectors;
use common::{backends, fixture, flatten, max_abs_diff, read_json, rewrite_safetensors};
use image::DynamicImage;
use kanoclip::Error;
use kanoclip::detect::MemoryOptions;
use kanoclip::detect::memory::{FewShot, ReferenceImage, ReferenceMemory, percentile};

const TOL: f32 = 1e-4;

fn names(n: usize) -> Vec<ReferenceImage> {
    (0..n)
        .map(|i| ReferenceImage {
            name: format!("ref{i}.png"),
            sha256: "0".repeat(64),
        })
        .collect()
}

#[test]
fn memory_few_shot_map_and_fusion_match_the_reference() {
    let doc = read_json("fewshot_cases.json");
    let refs = images(&doc["references"]);
    let queries = images(&doc["queries"]);
    let mut report = Vec::new();
    for (kind, device) in backends() {
        for (mode, detector) in detectors(&device) {
            for case in doc["cases"].as_array().unwrap() {
                let k = case["k"].as_u64().unwrap() as usize;
                let memory = detector
                    .build_memory(&refs[..k], names(k), MemoryOptions::default())
                    .unwrap();
                let want: Vec<Vec<f32>> = case["memory"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(flatten)
                    .collect();
                let e_mem = common::max_err(
                    common::zip_eq(memory.tokens(), &want).map(|(g, w)| max_abs_diff(g, w)),
                );
                let e_scale = (memory.meta().scale - case["scale"].as_f64().unwrap()).abs() as f32;
                // λ = 1 without normalisation: the few-shot map alone.
                let alone = FewShot {
                    weight: 1.0,
                    normalize: false,
                };
                let memory = Arc::new(memory);
                detector.set_memory(memory.clone(), alone).unwrap();
                let got = detector.detect_batch(&queries).unwrap();
                let e_few = common::max_err(
                    common::zip_eq(&got, case["few_shot_maps"].as_array().unwrap())
                        .map(|(d, w)| max_abs_diff(&d.map.values, &flatten(w))),
                );
                // The case's own fusion.
                let fusion = FewShot {
                    weight: case["weight"].as_f64().unwrap(),
                    normalize: case["normalize"].as_bool().unwrap(),
                };
                detector.set_few_shot(fusion).unwrap();
                let got = detector.detect_batch(&queries).unwrap();
                let (mut e_map, mut e_score) = (0.0f32, 0.0f32);
                for (d, w) in common::zip_eq(&got, case["fused"][mode].as_array().unwrap()) {
                    e_map = e_map.max(max_abs_diff(&d.map.values, &flatten(&w["map"])));
                    let want = w["score"].as_f64().unwrap() as f32;
                    e_score = e_score.max(common::abs_err(d.score, want));
                }
                let line = format!(
                    "{kind} {mode:<14} k={k}: memory {e_mem:.1e} scale {e_scale:.1e} \
                     few-shot map {e_few:.1e} fused map {e_map:.1e} score {e_score:.1e}"
                );
                assert!(
                    [e_mem, e_scale, e_few, e_map, e_score]
                        .iter()
                        .all(|e| *e <= TOL),
                    "{line}"
                );
                report.push(line);
                // A memory from the bytes it writes detects the same.
                let back =
                    ReferenceMemory::from_bytes(&memory.to_bytes().unwrap(), &device).unwrap();
                assert_eq!(back.meta(), memory.meta());
                detector.set_memory(back, fusion).unwrap();
                let again = detector.detect_batch(&queries).unwrap();
                for (a, b) in common::zip_eq(&again, &got) {
                    assert!(max_abs_diff(&a.map.values, &b.map.values) <= 1e-6);
                }
                detector.clear_memory();
                assert!(detector.memory().is_none());
            }
        }
    }
    eprintln!("few-shot parity (max abs error):\n{}", report.join("\n"));
}

#[test]
fn percentile_is_numpys_linear_one() {
    // numpy.percentile([1, 2, 3, 4, 10], [0, 50, 90, 99, 100]) = 1, 3, 7.6, 9.76, 10.
    let v = [4.0, 1.0, 10.0, 3.0, 2.0];
    for (q, want) in [
        (0.0, 1.0),
        (50.0, 3.0),
        (90.0, 7.6),
        (99.0, 9.76),
        (100.0, 10.0),
    ] {
        assert!((percentile(&v, q).unwrap() - want).abs() < 1e-9, "q {q}");
    }
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[1.0, f32::NAN], 50.0), None);
}

#[test]
fn coreset_reduces_the_memory_and_keeps_its_tokens() {
    let device = &backends()[0].1;
    let (_, detector) = detectors(device).remove(1);
    let doc = read_json("fewshot_cases.json");
    let refs = images(&doc["references"]);
    let full = detector
        .build_memory(&refs, names(3), MemoryOptions::default())
        .unwrap();
    let small = detector
        .build_memory(
            &refs,
            names(3),
            MemoryOptions {
                max_rows: Some(10),
                seed: 4,
            },
        )
        .unwrap();
    assert_eq!(full.meta().rows, vec![48; 3]);
    assert_eq!(small.meta().rows, vec![10; 3]);
    assert_eq!(
        small.meta().scale,
        full.meta().scale,
        "scale comes from the full memory"
    );
    // Every kept token is one of the full memory's rows.
    let d = 32;
    for (s, f) in common::zip_eq(small.tokens(), full.tokens()) {
        for row in s.chunks_exact(d) {
            assert!(f.chunks_exact(d).any(|r| r == row));
        }
    }
    // A coreset never lowers the few-shot distance: fewer neighbours, each no nearer.
    let queries = images(&doc["queries"]);
    let alone = FewShot {
        weight: 1.0,
        normalize: false,
    };
    detector.set_memory(full, alone).unwrap();
    let a = detector.detect_batch(&queries).unwrap();
    detector.set_memory(small, alone).unwrap();
    let b = detector.detect_batch(&queries).unwrap();
    for (x, y) in common::zip_eq(&a, &b) {
        assert!(common::zip_eq(&x.map.values, &y.map.values).all(|(p, q)| *q >= p - 1e-6));
    }
}

#[test]
fn bad_references_and_memory_files_get_typed_errors() {
    let device = &backends()[0].1;
    let (_, detector) = detectors(device).remove(1);
    let doc = read_json("fewshot_cases.json");
    let refs = images(&doc["references"]);
    // Zero references.
    assert!(matches!(
        detector.build_memory(&[], vec![], MemoryOptions::default()),
        Err(Error::Invalid(_))
    ));
    // Names that do not match the images.
    assert!(
        detector
            .build_memory(&refs, names(2), MemoryOptions::default())
            .is_err()
    );
    // λ out of [0, 1] or NaN.
    let memory = detector
        .build_memory(&refs[..2], names(2), MemoryOptions::default())
        .unwrap();
    let bytes = memory.to_bytes().unwrap();
    let memory = Arc::new(memory);
    for weight in [-0.1, 1.5, f64::NAN] {
        let f = FewShot {
            weight,
            normalize: true,
        };
        assert!(matches!(
            detector.set_memory(memory.clone(), f),
            Err(Error::Invalid(_))
        ));
    }
    // Reference images of another size and aspect work as detection images do.
    let wide = DynamicImage::new_rgb8(90, 20);
    let tall = DynamicImage::new_rgb8(3, 200);
    let m = detector
        .build_memory(&[wide, tall], names(2), MemoryOptions::default())
        .unwrap();
    assert_eq!(m.meta().rows, vec![32; 3]);

    // The memory file: truncated at every tenth byte, NaN values, wrong shapes, bad
    // metadata. Each gets an error, never a panic.
    for cut in (0..bytes.len()).step_by(bytes.len() / 10) {
        assert!(
            ReferenceMemory::from_bytes(&bytes[..cut], device).is_err(),
            "cut {cut}"
        );
    }
    let nan = rewrite_safetensors(&bytes, |name, v| {
        (name == "tap.1").then(|| {
            let mut b = v.data().to_vec();
            b[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            (v.dtype(), v.shape().to_vec(), b)
        })
    });
    assert!(matches!(
        ReferenceMemory::from_bytes(&nan, device),
        Err(Error::WeightsMismatch(p)) if p.iter().any(|m| m.contains("non-finite"))
    ));
    let short = rewrite_safetensors(&bytes, |name, v| {
        (name == "tap.0").then(|| {
            let b = v.data()[..v.data().len() - 32 * 4].to_vec();
            (v.dtype(), vec![v.shape()[0] - 1, 32], b)
        })
    });
    assert!(matches!(
        ReferenceMemory::from_bytes(&short, device),
        Err(Error::WeightsMismatch(_))
    ));
    let edit_meta = |f: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let mut m: serde_json::Value = serde_json::from_str(&meta["memory"]).unwrap();
        f(&mut m);
        meta.insert("memory".into(), m.to_string());
        safetensors::serialize(st.tensors(), Some(meta)).unwrap()
    };
    let cases: Vec<common::JsonEdit> = vec![
        (
            "no images",
            Box::new(|m| m["images"] = serde_json::json!([])),
        ),
        (
            "huge rows",
            Box::new(|m| m["rows"] = serde_json::json!([u64::MAX, 1, 1])),
        ),
        (
            "rows over k·N",
            Box::new(|m| m["rows"] = serde_json::json!([33, 32, 32])),
        ),
        (
            "rows per tap",
            Box::new(|m| m["rows"] = serde_json::json!([32, 32])),
        ),
        (
            "zero scale",
            Box::new(|m| m["scale"] = serde_json::json!(0.0)),
        ),
        (
            "input not a multiple",
            Box::new(|m| m["input_size"] = serde_json::json!(33)),
        ),
        (
            "unknown field",
            Box::new(|m| m["extra"] = serde_json::json!(1)),
        ),
    ];
    for (name, edit) in &cases {
        let bad = edit_meta(edit.as_ref());
        assert!(ReferenceMemory::from_bytes(&bad, device).is_err(), "{name}");
    }
    // A memory for other taps, or another backbone, is refused by the detector.
    let other_taps = ReferenceMemory::from_bytes(
        &edit_meta(&|m| m["taps"] = serde_json::json!([1, 3, 4])),
        device,
    )
    .unwrap();
    assert!(matches!(
        detector.set_memory(other_taps, FewShot::default()),
        Err(Error::Incompatible(_))
    ));
    let other_backbone = ReferenceMemory::from_bytes(
        &edit_meta(&|m| m["backbone"]["fingerprint"] = serde_json::json!("00")),
        device,
    )
    .unwrap();
    assert!(matches!(
        detector.set_memory(other_backbone, FewShot::default()),
        Err(Error::Incompatible(m)) if m.contains("backbone")
    ));
    let not_memory = std::fs::read(fixture("tiny_quickgelu_head.safetensors")).unwrap();
    assert!(ReferenceMemory::from_bytes(&not_memory, device).is_err());
}
