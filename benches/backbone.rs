//! `kanoclip embed`'s work for a ViT-B/16-shaped model with random weights at 224, on each
//! backend: load, pre-process, vision tower (CLIP-VV, 4 taps), text tower.
//!
//!     cargo bench --bench backbone            # both backends
//!     KANOCLIP_BENCH_BACKENDS=cpu cargo bench --bench backbone
//!
//! The weights are random: these are timings, not accuracy.

use std::time::{Duration, Instant};

use kanoclip::clip::embed::{image_batch, to_vec};
use kanoclip::clip::{Clip, ClipConfig, Tokenizer, VvOptions};
use kanoclip::device::{BackendKind, device};

const B16: &str = r#"{"embed_dim": 512, "quick_gelu": true,
  "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}"#;

/// Random open_clip-named weights for `cfg` (normal-ish, std 0.02; layer norms at 1/0).
fn random_weights(cfg: &ClipConfig) -> Vec<u8> {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let cfg = ClipConfig::from_json_str(B16).unwrap();
    let bytes = random_weights(&cfg);
    // KANOCLIP_BENCH_SAVE=DIR keeps the random model, to time the real CLI on it.
    if let Some(dir) = std::env::var_os("KANOCLIP_BENCH_SAVE") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b16_random.safetensors"), &bytes).unwrap();
        std::fs::write(dir.join("b16_config.json"), B16).unwrap();
    }
    let image = image::DynamicImage::ImageRgb8(
        image::open("www/samples/hazelnut_toy/crack.jpg")
            .unwrap()
            .to_rgb8(),
    );
    let tokenizer = Tokenizer::new().unwrap();
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("a photo of a damaged object number {i}"))
        .collect();
    let vv = VvOptions {
        vv_from: Some(4),
        taps: vec![3, 6, 9, 12],
    };
    let kinds = std::env::var("KANOCLIP_BENCH_BACKENDS").unwrap_or_else(|_| "cpu,wgpu".into());
    println!("ViT-B/16-shaped RANDOM model, 1 image at 224 (vv_from 4, taps 3,6,9,12), 8 prompts");
    println!(
        "{:<6} {:>9} {:>12} {:>14} {:>14} {:>12}",
        "backend", "load ms", "preproc ms", "vision ms(1st)", "vision ms(warm)", "text ms"
    );
    for kind in kinds.split(',') {
        let kind = match kind.trim() {
            "cpu" => BackendKind::Cpu,
            "wgpu" => BackendKind::Wgpu,
            other => panic!("unknown backend {other}"),
        };
        let Ok(dev) = pollster::block_on(device(kind)) else {
            println!("{kind:<6} unavailable");
            continue;
        };
        let t0 = Instant::now();
        let clip = Clip::from_safetensors(&cfg, &bytes, &dev).unwrap();
        let load = t0.elapsed();
        let t0 = Instant::now();
        let batch = image_batch(std::slice::from_ref(&image), 224, &dev).unwrap();
        let pre = t0.elapsed();
        let mut vision = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let out = clip.encode_image(batch.clone(), &vv).unwrap();
            let _ = to_vec(out.global).unwrap();
            for tap in out.taps {
                let _ = to_vec(tap).unwrap();
            }
            vision.push(t0.elapsed());
        }
        let rows = tokenizer.tokenize_batch(&prompts, 77).unwrap();
        let t0 = Instant::now();
        let _ = to_vec(clip.encode_text(&rows).unwrap()).unwrap();
        let text = t0.elapsed();
        let warm = vision[1..].iter().map(|d| ms(*d)).sum::<f64>() / (vision.len() - 1) as f64;
        println!(
            "{:<6} {:>9.0} {:>12.1} {:>14.0} {:>14.0} {:>12.0}",
            kind,
            ms(load),
            ms(pre),
            ms(vision[0]),
            warm,
            ms(text)
        );
        detect_timings(&cfg, &bytes, &image, &tokenizer, &dev, kind);
    }
    if std::env::var_os("KANOCLIP_BENCH_TRAIN").is_some() {
        for kind in kinds.split(',') {
            let kind = match kind.trim() {
                "wgpu" => BackendKind::Wgpu,
                _ => BackendKind::Cpu,
            };
            train_step_timing(&cfg, &bytes, &image, &tokenizer, kind);
        }
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}

/// One training step on a batch of 8 at 224, split as the feature cache splits it: the
/// frozen backbone's features (what the cache saves), reading 8 cached entries back, and
/// the head's forward, backward and Adam update.
fn train_step_timing(
    cfg: &ClipConfig,
    bytes: &[u8],
    image: &image::DynamicImage,
    tokenizer: &Tokenizer,
    kind: BackendKind,
) {
    use burn::prelude::*;
    use kanoclip::detect::DetectorConfig;
    use kanoclip::head::knowledge::KnowledgeBase;
    use kanoclip::head::{BackboneId, HeadConfig};
    use kanoclip::train::cache::FeatureCache;
    use kanoclip::train::fit::{join_features, split_features};
    use kanoclip::train::trainer::{Batch, TrainConfig, Trainer};
    let dev = pollster::block_on(device(kind)).unwrap().autodiff();
    let clip = Clip::from_safetensors(cfg, bytes, &dev).unwrap();
    let kb = KnowledgeBase::from_file("weights/knowledge/industrial.json").unwrap();
    let det = DetectorConfig::for_clip(cfg);
    let head = HeadConfig {
        levels: det.taps.len(),
        ..HeadConfig::default()
    };
    let mut t = Trainer::new(
        clip,
        &kb,
        tokenizer,
        head,
        det.clone(),
        TrainConfig::default(),
    )
    .unwrap();
    let images = vec![image.clone(); 8];
    let labels = vec![false, true, false, true, false, true, false, true];
    let dir = std::env::temp_dir().join(format!("kanoclip-bench-cache-{}", std::process::id()));
    let cache = FeatureCache::new(&dir, &BackboneId::of(&t.clip), &det).unwrap();
    let tokens = 1 + (224 / cfg.vision.patch_size).pow(2);
    let (mut feat, mut read, mut step) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        let t0 = Instant::now();
        let x = image_batch(&images, 224, &dev).unwrap();
        let split = split_features(t.features(x)).unwrap();
        feat.push(ms(t0.elapsed()));
        for (i, f) in split.iter().enumerate() {
            cache.put(&format!("{round}-{i}"), f).unwrap();
        }
        let t0 = Instant::now();
        let back: Vec<_> = (0..8)
            .map(|i| cache.get(&format!("{round}-{i}")).unwrap())
            .collect();
        let vision = join_features(&back, tokens, &dev);
        read.push(ms(t0.elapsed()));
        let batch = Batch {
            vision,
            masks: Tensor::<3>::zeros([8, 224, 224], &dev),
            labels: labels.clone(),
            specific: vec![None; 8],
        };
        let t0 = Instant::now();
        t.step(batch).unwrap();
        step.push(ms(t0.elapsed()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, r, s) = (med(&feat), med(&read), med(&step));
    println!(
        "{kind:<6} train step, batch 8 at 224 (median of 3): frozen features {f:.0} ms, head step {s:.0} ms; \
         without cache {:.0} ms, with cache {:.0} ms (reading 8 entries {r:.0} ms), {:.1}x",
        f + s,
        r + s,
        (f + s) / (r + s)
    );
}

/// `kanoclip detect`'s per-image work with a fresh (untrained) head: stage split, warm.
fn detect_timings(
    cfg: &ClipConfig,
    bytes: &[u8],
    image: &image::DynamicImage,
    tokenizer: &Tokenizer,
    dev: &burn::prelude::Device,
    kind: BackendKind,
) {
    use kanoclip::detect::{Detector, DetectorConfig};
    use kanoclip::head::file::HeadMeta;
    use kanoclip::head::{BackboneId, Head, HeadConfig};
    let clip = Clip::from_safetensors(cfg, bytes, dev).unwrap();
    let detector = DetectorConfig::for_clip(cfg);
    let head_cfg = HeadConfig {
        levels: detector.taps.len(),
        ..HeadConfig::default()
    };
    let head = Head::init(
        &head_cfg,
        cfg.embed_dim,
        cfg.text.tower.width,
        cfg.text.tower.layers,
        dev,
    );
    let meta = HeadMeta {
        head: head_cfg,
        detector,
        backbone: BackboneId::of(&clip),
    };
    let det = Detector::with_head(clip, head, meta, tokenizer).unwrap();
    let runs: Vec<_> = (0..4).map(|_| det.detect(image).unwrap().timings).collect();
    let warm = &runs[1..];
    let avg = |f: fn(&kanoclip::detect::Timings) -> f64| {
        warm.iter().map(f).sum::<f64>() / warm.len() as f64
    };
    let (p, b, h, q) = (
        avg(|t| t.preprocess_ms),
        avg(|t| t.backbone_ms),
        avg(|t| t.head_ms),
        avg(|t| t.postprocess_ms),
    );
    println!(
        "{kind:<6} detect (512x512 JPEG, trained-mode head, warm): preprocess {p:.1} ms, backbone {b:.0} ms, head {h:.0} ms, postprocess {q:.1} ms, total {:.0} ms",
        p + b + h + q
    );
}

fn peak_rss_mib() -> f64 {
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
