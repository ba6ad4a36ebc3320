//! What the benches share: the ViT-B/16 shape, random weights for it, and measures.
#![allow(dead_code)]

use std::time::Duration;

use burn::prelude::Device;
use kanoclip::clip::{Clip, ClipConfig, Tokenizer};
use kanoclip::detect::head_file::HeadMeta;
use kanoclip::detect::{Detector, DetectorConfig};
use kanoclip::head::{BackboneId, Head, HeadConfig};

/// A trained-mode detector with a fresh (untrained) 4-level head: the detector's whole work.
pub fn detector_with_head(
    cfg: &ClipConfig,
    bytes: &[u8],
    dev: &Device,
    tokenizer: &Tokenizer,
) -> Detector {
    let clip = Clip::from_safetensors(cfg, bytes, dev).unwrap();
    let detector = DetectorConfig::for_clip(cfg);
    let head_cfg = HeadConfig {
        levels: detector.taps.len(),
        ..HeadConfig::default()
    };
    let (d, w, l) = (cfg.embed_dim, cfg.text.tower.width, cfg.text.tower.layers);
    let head = Head::init(&head_cfg, d, w, l, dev);
    let meta = HeadMeta {
        head: head_cfg,
        detector,
        backbone: BackboneId::of(&clip),
    };
    Detector::with_head(clip, head, meta, tokenizer).unwrap()
}

pub const B16: &str = r#"{"embed_dim": 512, "quick_gelu": true,
  "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#;

/// Random open_clip-named weights for `cfg` (normal-ish, std 0.02; layer norms at 1/0).
pub fn random_weights(cfg: &ClipConfig) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Sum of 4 uniforms: close enough to a normal for a timing run.
        (0..4)
            .map(|i| ((state.rotate_left(i * 16) & 0xffff) as f32 / 65535.0) - 0.5)
            .sum::<f32>()
            * 0.035
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, fill: Option<f32>| {
        let n: usize = shape.iter().product();
        let bytes = (0..n)
            .flat_map(|_| fill.unwrap_or_else(&mut next).to_le_bytes())
            .collect();
        tensors.push((name, shape, bytes));
    };
    let (v, t, d) = (&cfg.vision, &cfg.text, cfg.embed_dim);
    let (vw, tw, g) = (v.tower.width, t.tower.width, cfg.grid());
    let mut blocks = |prefix: &str, layers: usize, w: usize, m: usize| {
        for i in 0..layers {
            let p = format!("{prefix}{i}.");
            for ln in ["ln_1", "ln_2"] {
                add(format!("{p}{ln}.weight"), vec![w], Some(1.0));
                add(format!("{p}{ln}.bias"), vec![w], Some(0.0));
            }
            add(format!("{p}attn.in_proj_weight"), vec![3 * w, w], None);
            add(format!("{p}attn.in_proj_bias"), vec![3 * w], None);
            add(format!("{p}attn.out_proj.weight"), vec![w, w], None);
            add(format!("{p}attn.out_proj.bias"), vec![w], None);
            add(format!("{p}mlp.c_fc.weight"), vec![m, w], None);
            add(format!("{p}mlp.c_fc.bias"), vec![m], None);
            add(format!("{p}mlp.c_proj.weight"), vec![w, m], None);
            add(format!("{p}mlp.c_proj.bias"), vec![w], None);
        }
    };
    blocks(
        "visual.transformer.resblocks.",
        v.tower.layers,
        vw,
        v.tower.mlp_width,
    );
    blocks(
        "transformer.resblocks.",
        t.tower.layers,
        tw,
        t.tower.mlp_width,
    );
    for (name, shape, fill) in [
        (
            "visual.conv1.weight",
            vec![vw, 3, v.patch_size, v.patch_size],
            None,
        ),
        ("visual.class_embedding", vec![vw], None),
        ("visual.positional_embedding", vec![g * g + 1, vw], None),
        ("visual.ln_pre.weight", vec![vw], Some(1.0)),
        ("visual.ln_pre.bias", vec![vw], Some(0.0)),
        ("visual.ln_post.weight", vec![vw], Some(1.0)),
        ("visual.ln_post.bias", vec![vw], Some(0.0)),
        ("visual.proj", vec![vw, d], None),
        ("token_embedding.weight", vec![t.vocab_size, tw], None),
        ("positional_embedding", vec![t.context_length, tw], None),
        ("ln_final.weight", vec![tw], Some(1.0)),
        ("ln_final.bias", vec![tw], Some(0.0)),
        ("text_projection", vec![tw, d], None),
        ("logit_scale", vec![], Some(4.6052)),
    ] {
        add(name.to_string(), shape, fill);
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Peak resident memory of this process so far.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A `size × size` RGB picture of seeded noise, the same every run (the compare bench's
/// input; its content does not matter to a timing).
pub fn random_picture(size: u32) -> image::DynamicImage {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(size, size, |_, _| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        image::Rgb([rng as u8, (rng >> 8) as u8, (rng >> 16) as u8])
    }))
}
