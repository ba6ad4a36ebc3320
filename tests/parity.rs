//! Parity with open_clip (and transformers for the HF layout) on seeded random models,
//! on both the CPU backend (flex) and wgpu (lavapipe in CI): max abs error ≤ 1e-4.

mod common;

use common::{backends, fixture, flatten, max_abs_diff, read_json};
use kanoclip::clip::embed::embed;
use kanoclip::clip::preprocess::load_image;
use kanoclip::clip::{Clip, Tokenizer, VvOptions};

const TOL: f32 = 1e-4;

#[test]
fn embeddings_taps_and_tokens_match_the_reference() {
    let parity = read_json("parity.json");
    let tokenizer = Tokenizer::new().unwrap();
    let mut report = Vec::new();
    for (kind, device) in backends() {
        for case in parity["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let clip = Clip::from_files(
                fixture(case["config"].as_str().unwrap()),
                fixture(case["weights"].as_str().unwrap()),
                &device,
            )
            .unwrap();
            let images: Vec<_> = case["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| load_image(fixture(p.as_str().unwrap())).unwrap())
                .collect();
            let texts: Vec<String> = case["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            let vv = VvOptions {
                vv_from: case["vv_from"].as_u64().map(|v| v as usize),
                taps: case["taps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as usize)
                    .collect(),
                ..Default::default()
            };
            let size = case["input_size"].as_u64().unwrap() as usize;
            let got = embed(&clip, &tokenizer, &images, &texts, &vv, size).unwrap();
            let want = &case["expected"];

            let ids: Vec<Vec<u32>> = serde_json::from_value(want["token_ids"].clone()).unwrap();
            assert_eq!(got.token_ids, ids, "{name}: token ids");
            let flat = |v: &Vec<Vec<f32>>| v.iter().flatten().copied().collect::<Vec<f32>>();
            let e_img = max_abs_diff(&flat(&got.image_embeds), &flatten(&want["image_embeds"]));
            let e_txt = max_abs_diff(&flat(&got.text_embeds), &flatten(&want["text_embeds"]));
            // The HF case holds rounded weights, so its taps are not in the fixture.
            let e_tap = if want["patch_taps"].is_null() {
                f32::NAN
            } else {
                let taps: Vec<f32> = got
                    .patch_taps
                    .iter()
                    .flatten()
                    .flatten()
                    .flatten()
                    .copied()
                    .collect();
                max_abs_diff(&taps, &flatten(&want["patch_taps"]))
            };
            let want_scale = want["logit_scale"].as_f64().unwrap() as f32;
            let e_scale = (got.logit_scale - want_scale).abs() / want_scale;
            report.push(format!(
                "{kind:>4} {name:<28} image {e_img:.2e}  text {e_txt:.2e}  taps {e_tap:.2e}  logit_scale(rel) {e_scale:.1e}"
            ));
            assert!(
                e_img <= TOL && e_txt <= TOL && (e_tap.is_nan() || e_tap <= TOL) && e_scale <= 1e-6,
                "{name} on {kind}: {}",
                report.last().unwrap()
            );

            // Each tap is its own tensor: no two taps of an image are equal.
            for image_taps in &got.patch_taps {
                for i in 0..image_taps.len() {
                    for j in i + 1..image_taps.len() {
                        let a: Vec<f32> = image_taps[i].iter().flatten().copied().collect();
                        let b: Vec<f32> = image_taps[j].iter().flatten().copied().collect();
                        assert!(
                            max_abs_diff(&a, &b) > 1e-2,
                            "{name}: taps {i} and {j} are equal"
                        );
                    }
                }
            }
        }
    }
    eprintln!("parity (max abs error per output):\n{}", report.join("\n"));
}
