//! The head's modules untrained, the head file, the knowledge base, rendering.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use common::{backends, fixture, max_abs_diff};
use kanoclip::Error;
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::detect::head_file::{HeadMeta, load_head, read_meta, save_head};
use kanoclip::detect::render::{heatmap, overlay};
use kanoclip::detect::{AnomalyMap, Detector, DetectorConfig};
use kanoclip::head::knowledge::KnowledgeBase;
use kanoclip::head::{BackboneId, Head, HeadConfig};
use kanoclip::tensor_io::to_vec;

fn tiny(device: &Device) -> Clip {
    Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        device,
    )
    .unwrap()
}

fn fresh_head(clip: &Clip, device: &Device) -> (Head, HeadMeta) {
    let mut detector = DetectorConfig::for_clip(&clip.config);
    detector.input_size = 32;
    let head_cfg = HeadConfig {
        levels: detector.taps.len(),
        ..HeadConfig::default()
    };
    let c = &clip.config;
    let head = Head::init(
        &head_cfg,
        c.embed_dim,
        c.text.tower.width,
        c.text.tower.layers,
        device,
    );
    (
        head,
        HeadMeta {
            head: head_cfg,
            detector,
            backbone: BackboneId::of(clip),
        },
    )
}

#[test]
fn untrained_bicmci_and_adapter_are_the_identity() {
    for (kind, device) in backends() {
        let clip = tiny(&device);
        let (head, _) = fresh_head(&clip, &device);
        let p = Tensor::<3>::random([2, 16, 32], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<3>::random([2, 2, 32], Distribution::Normal(0.0, 1.0), &device);
        for level in &head.bicmci {
            let (p2, t2) = level.forward(p.clone(), t.clone());
            assert_eq!(
                to_vec(p2).unwrap(),
                to_vec(p.clone()).unwrap(),
                "{kind}: P' = P"
            );
            assert_eq!(
                to_vec(t2).unwrap(),
                to_vec(t.clone()).unwrap(),
                "{kind}: T' = T"
            );
        }
        let pooled = to_vec(head.adapter.forward(p.clone(), 4)).unwrap();
        assert!(
            pooled.iter().all(|v| *v == 0.0),
            "{kind}: the adapter adds nothing"
        );
        // But the head is not dead: its inner layers are random, not zero.
        let inner = to_vec(head.bicmci[0].image_from_text.q.weight.val()).unwrap();
        assert!(inner.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn head_file_round_trips_and_refuses_bad_files() {
    let device = backends().remove(0).1;
    let clip = tiny(&device);
    let (head, meta) = fresh_head(&clip, &device);
    let dir = std::env::temp_dir().join(format!("kanoclip-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("head.safetensors");
    save_head(&path, &head, &meta).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(read_meta(&bytes).unwrap(), meta);
    let backbone = BackboneId::of(&clip);
    let (loaded, meta2) = load_head(&bytes, &backbone, 77, &device).unwrap();
    assert_eq!(meta2, meta);
    let a = to_vec(head.prompts.normal_ctx.val().flatten::<1>(0, 1)).unwrap();
    let b = to_vec(loaded.prompts.normal_ctx.val().flatten::<1>(0, 1)).unwrap();
    assert_eq!(a, b);
    let a = to_vec(
        head.bicmci[1]
            .text_from_image
            .v
            .weight
            .val()
            .flatten::<1>(0, 1),
    )
    .unwrap();
    let b = to_vec(
        loaded.bicmci[1]
            .text_from_image
            .v
            .weight
            .val()
            .flatten::<1>(0, 1),
    )
    .unwrap();
    assert_eq!(a, b);
    let a = to_vec(head.adapter.c2.weight.val().flatten::<1>(0, 3)).unwrap();
    let b = to_vec(loaded.adapter.c2.weight.val().flatten::<1>(0, 3)).unwrap();
    assert_eq!(a, b);
    // The same head gives the same detections through the file.
    let tokenizer = Tokenizer::new().unwrap();
    let img =
        kanoclip::clip::preprocess::load_image(fixture("images/tiny_quickgelu_0.png")).unwrap();
    let d1 = Detector::with_head(tiny(&device), head, meta.clone(), &tokenizer)
        .unwrap()
        .detect(&img)
        .unwrap();
    let d2 = Detector::load(tiny(&device), &path, &tokenizer)
        .unwrap()
        .detect(&img)
        .unwrap();
    assert_eq!(d1.score, d2.score);
    assert!(max_abs_diff(&d1.map.values, &d2.map.values) == 0.0);

    // Each bad head is refused with its own variant and reason.
    let head_err =
        |r: kanoclip::Result<(Head, HeadMeta)>, variant: fn(&Error) -> bool, want: &str| {
            let e = r.expect_err("must fail");
            assert!(
                variant(&e) && e.to_string().contains(want),
                "want `{want}`: {e}"
            );
        };
    let corrupt = |e: &Error| matches!(e, Error::Head(_));
    let incompatible = |e: &Error| matches!(e, Error::Incompatible(_));
    // Truncated: the header cannot be read (cut inside it) or the tensors are short.
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        let e = load_head(&bytes[..cut], &backbone, 77, &device).expect_err("must fail");
        assert!(
            matches!(&e, Error::Head(m) if m.contains("not a readable safetensors file"))
                || matches!(&e, Error::WeightsFormat(m) if m.contains("not a readable safetensors file")),
            "cut at {cut}: {e}"
        );
    }
    // Same shapes, other weights.
    let mut other = backbone.clone();
    other.fingerprint = "0".repeat(32);
    head_err(
        load_head(&bytes, &other, 77, &device),
        incompatible,
        "another backbone",
    );
    // A different shape.
    let small = Clip::from_files(
        fixture("small_gelu_config.json"),
        fixture("small_gelu.safetensors"),
        &device,
    )
    .unwrap();
    head_err(
        load_head(&bytes, &BackboneId::of(&small), 77, &device),
        incompatible,
        "another backbone",
    );
    // Infinity inside.
    let poisoned = common::rewrite_safetensors(&bytes, |name, view| {
        (name == "adapter.c1.weight").then(|| {
            let mut data = view.data().to_vec();
            data[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
            (view.dtype(), view.shape().to_vec(), data)
        })
    });
    // The tensor's problems stay a list, naming the tensor.
    match load_head(&poisoned, &backbone, 77, &device).expect_err("must fail") {
        Error::WeightsMismatch(problems) => assert!(
            problems
                .iter()
                .any(|p| p.contains("adapter.c1.weight") && p.contains("non-finite")),
            "{problems:?}"
        ),
        e => panic!("want WeightsMismatch, got {e}"),
    }
    // Not a head at all: CLIP weights.
    let clip_bytes = std::fs::read(fixture("tiny_quickgelu.safetensors")).unwrap();
    head_err(
        load_head(&clip_bytes, &backbone, 77, &device),
        corrupt,
        "not a kanoclip head",
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_hf_copy_is_the_same_backbone_when_bits_agree() {
    // The fingerprint hashes values rounded to f16, so the f16 HF export of the f32
    // open_clip fixture identifies as the same backbone.
    let device = backends().remove(0).1;
    let a = BackboneId::of(&tiny(&device));
    let b = BackboneId::of(
        &Clip::from_files(
            fixture("tiny_quickgelu_hf_config.json"),
            fixture("tiny_quickgelu_hf.safetensors"),
            &device,
        )
        .unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn knowledge_bases_are_validated() {
    for f in ["industrial.json", "medical.json"] {
        let kb = KnowledgeBase::from_file(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("weights/knowledge")
                .join(f),
        )
        .unwrap();
        assert!(
            kb.general.normal.len() >= 15 && kb.general.abnormal.len() >= 40,
            "{f}"
        );
        assert!(kb.general_provenance.model.contains("by hand"));
    }
    let good = std::fs::read_to_string(fixture("knowledge_small.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        KnowledgeBase::from_json_str(&v.to_string())
    };
    let cases: Vec<common::JsonEdit> = vec![
        (
            "general.normal is empty",
            Box::new(|v| v["general"]["normal"] = serde_json::json!([])),
        ),
        ("unknown field", Box::new(|v| v["colour"] = "red".into())),
        (
            "unknown field",
            Box::new(|v| v["general"]["weird"] = serde_json::json!([])),
        ),
        (
            "blank",
            Box::new(|v| v["general"]["abnormal"][0] = "   ".into()),
        ),
        ("format", Box::new(|v| v["format"] = "other/9".into())),
        (
            "specific_provenance",
            Box::new(|v| v["specific"] = serde_json::json!({"a.png": "a crack"})),
        ),
    ];
    for (want, f) in cases {
        let e = edit(&*f).unwrap_err();
        assert!(
            matches!(e, Error::Knowledge(_)) && e.to_string().contains(want),
            "want `{want}`: {e}"
        );
    }
    assert!(matches!(
        KnowledgeBase::from_json_str("{").unwrap_err(),
        Error::Knowledge(_)
    ));
    // A huge file is refused before it is read.
    let dir = std::env::temp_dir().join(format!("kanoclip-kb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(kanoclip::head::knowledge::MAX_FILE_BYTES + 1)
        .unwrap();
    let e = KnowledgeBase::from_file(&big).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn heatmap_and_overlay_are_at_the_map_size() {
    let map = AnomalyMap {
        width: 3,
        height: 2,
        values: vec![0.0, 0.5, 1.0, 0.0, 0.0, 1.0],
    };
    let h = heatmap(&map).unwrap();
    assert_eq!(h.dimensions(), (3, 2));
    assert_ne!(h.get_pixel(0, 0), h.get_pixel(2, 0), "low and high differ");
    let img =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30])));
    assert_eq!(
        overlay(&img, &map, 0.0).unwrap().get_pixel(1, 1).0,
        [10, 20, 30, 255]
    );
    assert_eq!(
        overlay(&img, &map, 1.0).unwrap().get_pixel(2, 0),
        h.get_pixel(2, 0)
    );
    let wrong = image::DynamicImage::ImageRgb8(image::RgbImage::new(4, 4));
    assert!(overlay(&wrong, &map, 0.5).is_err());
    assert!(
        heatmap(&AnomalyMap {
            width: 2,
            height: 2,
            values: vec![0.0]
        })
        .is_err()
    );
}

#[test]
fn a_head_whose_levels_do_not_match_the_taps_is_refused() {
    let device = backends().remove(0).1;
    let clip = tiny(&device);
    let (head, mut meta) = fresh_head(&clip, &device);
    meta.detector.taps.pop();
    let e = Detector::with_head(clip, head, meta, &Tokenizer::new().unwrap())
        .err()
        .expect("must fail");
    assert!(
        matches!(e, Error::Incompatible(_)) && e.to_string().contains("levels"),
        "{e}"
    );
}
