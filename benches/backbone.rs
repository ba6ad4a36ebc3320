//! `kanoclip embed`'s work for a ViT-B/16-shaped model with random weights at 224, on each
//! backend: load, pre-process, vision tower (CLIP-VV, 4 taps), text tower.
//!
//!     cargo bench --bench backbone            # both backends
//!     KANOCLIP_BENCH_BACKENDS=cpu cargo bench --bench backbone
//!
//! The weights are random: these are timings, not accuracy.

use std::time::Instant;

mod common;
use common::{B16, ms, peak_rss_mib, random_weights};

use kanoclip::clip::{Clip, ClipConfig, Tokenizer, VvOptions};
use kanoclip::device::{BackendKind, device};
use kanoclip::{clip::preprocess::image_batch, tensor_io::to_vec};

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
        ..Default::default()
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
        let batch = image_batch(std::slice::from_ref(&image), 224, &dev)
            .unwrap()
            .0;
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
        let x = image_batch(&images, 224, &dev).unwrap().0;
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
    let det = common::detector_with_head(cfg, bytes, dev, tokenizer);
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
