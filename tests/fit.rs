//! Epochs, checkpoints and resume, the feature cache, and what happens when things go
//! wrong: an interrupted and resumed run ends with the head of an uninterrupted one, the
//! cache changes nothing but the time, a NaN keeps the last good checkpoint, and a failed
//! write keeps the old file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use common::fixture;
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::data::dataset::{Dataset, Format};
use kanoclip::data::synth::{SynthConfig, Texture, generate};
use kanoclip::detect::DetectorConfig;
use kanoclip::head::HeadConfig;
use kanoclip::head::knowledge::KnowledgeBase;
use kanoclip::train::fit::{FitEnd, FitOptions, checkpoint_path, fit, log_path};
use kanoclip::train::trainer::{TrainConfig, Trainer};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kanoclip-fit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn data(dir: &Path) -> Dataset {
    let cfg = SynthConfig {
        size: 32,
        textures: vec![Texture::Stripes, Texture::Noise],
        train_good: 1,
        test_good: 2,
        test_per_defect: 1,
        seed: 4,
    };
    generate(dir, &cfg).unwrap();
    Dataset::load(dir, Format::Mvtec).unwrap()
}

fn trainer(cfg: TrainConfig) -> Trainer {
    trainer_at(cfg, 32)
}

/// A trainer of the tiny fixture model at `input_size`.
fn trainer_at(cfg: TrainConfig, input_size: usize) -> Trainer {
    let device = Device::flex().autodiff();
    let clip = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        &device,
    )
    .unwrap();
    let kb = KnowledgeBase::from_file(fixture("knowledge_small.json")).unwrap();
    let mut det = DetectorConfig::for_clip(&clip.config);
    det.input_size = input_size;
    let head = HeadConfig {
        levels: det.taps.len(),
        ..HeadConfig::default()
    };
    Trainer::new(clip, &kb, &Tokenizer::new().unwrap(), head, det, cfg).unwrap()
}

fn opts<'a>(
    out: PathBuf,
    cache: Option<PathBuf>,
    resume: bool,
    stop: Option<&'a AtomicBool>,
) -> FitOptions<'a> {
    FitOptions {
        epochs: 2,
        batch: 4,
        out,
        cache,
        resume,
        stop,
    }
}

fn head_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The largest difference between two head files' tensors (same names required).
fn head_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (head_bytes(a), head_bytes(b));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    let mut names_b = b.names();
    names_b.sort();
    assert_eq!(names, names_b);
    let f = |d: &[u8]| -> Vec<f32> {
        d.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    common::max_err(names.iter().map(|n| {
        common::max_abs_diff(
            &f(a.tensor(n).unwrap().data()),
            &f(b.tensor(n).unwrap().data()),
        )
    }))
}

/// Two JSON-lines logs agree line by line: the same epochs and steps, losses within `tol`
/// (relative).
fn same_log(a: &Path, b: &Path, tol: f64) {
    let (a, b) = (
        std::fs::read_to_string(a).unwrap(),
        std::fs::read_to_string(b).unwrap(),
    );
    assert_eq!(a.lines().count(), b.lines().count());
    for (x, y) in a.lines().zip(b.lines()) {
        let (x, y): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(x).unwrap(),
            serde_json::from_str(y).unwrap(),
        );
        assert_eq!((&x["epoch"], &x["step"]), (&y["epoch"], &y["step"]));
        for k in ["total", "kd", "global", "local"] {
            let (p, q) = (x[k].as_f64().unwrap(), y[k].as_f64().unwrap());
            assert!((p - q).abs() <= tol * p.abs().max(1e-3), "{k}: {x} vs {y}");
        }
    }
}

/// Floating-point tolerance between runs that compute the same thing through differently
/// laid out tensors (a loaded head's transposed linear weights, features rebuilt from the
/// cache): sums are accumulated in another order, which moves the last bits, never more.
const TOL: f32 = 1e-5;

#[test]
fn interrupted_and_resumed_training_ends_where_an_uninterrupted_run_does() {
    let dir = scratch("resume");
    let data = data(&dir.join("data"));
    // 2 textures × (2 good + 5 defects) = 14 test images: 4 steps an epoch.
    let straight = dir.join("straight.safetensors");
    let end = fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(straight.clone(), None, false, None),
        |_, _, _, _| {},
    )
    .unwrap();
    assert_eq!(end, FitEnd::Finished);
    assert_eq!(
        std::fs::read_to_string(log_path(&straight))
            .unwrap()
            .lines()
            .count(),
        8
    );

    // Stop after step 2 of epoch 0 (what Ctrl-C does), then resume in a new trainer.
    let resumed = dir.join("resumed.safetensors");
    let stop = AtomicBool::new(false);
    let end = fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(resumed.clone(), None, false, Some(&stop)),
        |_, step, _, _| {
            if step == 1 {
                stop.store(true, Ordering::SeqCst)
            }
        },
    )
    .unwrap();
    assert_eq!(end, FitEnd::Stopped { epoch: 0, step: 2 });
    assert!(checkpoint_path(&resumed).exists());
    assert!(
        !resumed.exists(),
        "no head file before the first epoch ends"
    );
    let end = fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(resumed.clone(), None, true, None),
        |_, _, _, _| {},
    )
    .unwrap();
    assert_eq!(end, FitEnd::Finished);
    // The same eight steps, logged once each, and the same head: the batch order, the head
    // and Adam's moments all carried over. (Without Adam's state the first resumed step
    // would be a bias-corrected first step, far off.)
    same_log(&log_path(&straight), &log_path(&resumed), 1e-5);
    let d = head_diff(&straight, &resumed);
    assert!(d < TOL, "resumed head differs by {d}");

    // A resume with another batch size is refused, naming the difference.
    let mut o = opts(resumed.clone(), None, true, None);
    o.batch = 3;
    let e = fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &o,
        |_, _, _, _| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("batch 4"), "{e}");
    // Resuming without a checkpoint names the missing file.
    let e = fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(dir.join("none.safetensors"), None, true, None),
        |_, _, _, _| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("none.safetensors.ckpt"), "{e}");
}

#[test]
fn the_feature_cache_changes_nothing_but_the_time() {
    let dir = scratch("cache");
    let data = data(&dir.join("data"));
    let cache = dir.join("features");
    let plain = dir.join("plain.safetensors");
    let cached = dir.join("cached.safetensors");
    let again = dir.join("again.safetensors");
    fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(plain.clone(), None, false, None),
        |_, _, _, _| {},
    )
    .unwrap();
    fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(cached.clone(), Some(cache.clone()), false, None),
        |_, _, _, _| {},
    )
    .unwrap();
    // One entry per training image, written in the first epoch, read in the second.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 14);
    let stamp = |p: PathBuf| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| stamp(e.unwrap().path()))
        .collect();
    fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(again.clone(), Some(cache.clone()), false, None),
        |_, _, _, _| {},
    )
    .unwrap();
    let after: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| stamp(e.unwrap().path()))
        .collect();
    assert_eq!(before, after, "a warm cache is only read");
    let d = head_diff(&plain, &cached);
    assert!(d < TOL, "cached head differs by {d}");
    let d = head_diff(&plain, &again);
    assert!(d < TOL, "warm-cache head differs by {d}");
    same_log(&log_path(&plain), &log_path(&again), 1e-5);
    // A corrupt entry is a miss: recomputed, rewritten, and the result unchanged.
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"not safetensors").unwrap();
    let fixed = dir.join("fixed.safetensors");
    fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &opts(fixed.clone(), Some(cache.clone()), false, None),
        |_, _, _, _| {},
    )
    .unwrap();
    let d = head_diff(&plain, &fixed);
    assert!(d < TOL, "repaired-cache head differs by {d}");
    assert!(std::fs::read(&entry).unwrap().len() > 1000);
}

#[test]
fn a_nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("nan");
    let data = data(&dir.join("data"));
    let out = dir.join("head.safetensors");
    let mut o = opts(out.clone(), None, false, None);
    o.epochs = 1;
    fit(
        &mut trainer(TrainConfig::default()),
        &data,
        &o,
        |_, _, _, _| {},
    )
    .unwrap();
    let (head, ckpt) = (head_bytes(&out), head_bytes(&checkpoint_path(&out)));
    // Resume into epoch 2 with an infinite learning rate: the first step makes the head
    // non-finite, the second step's loss is NaN, and training stops.
    let cfg = TrainConfig {
        lr: f64::INFINITY,
        ..TrainConfig::default()
    };
    let e = fit(
        &mut trainer(cfg),
        &data,
        &opts(out.clone(), None, true, None),
        |_, _, _, _| {},
    )
    .expect_err("must stop");
    assert!(e.to_string().contains("not finite"), "{e}");
    assert!(head_bytes(&out) == head, "head file changed");
    assert!(
        head_bytes(&checkpoint_path(&out)) == ckpt,
        "checkpoint changed"
    );
}

/// Pixel AUROC (mean over categories) of a detector on `data`.
fn pixel_auroc(detector: &kanoclip::detect::Detector, data: &Dataset) -> f64 {
    kanoclip::eval::evaluate::evaluate(detector, data, |_| {})
        .unwrap()
        .mean
        .pixel_auroc
        .unwrap()
}

#[test]
fn training_on_synthetic_defects_beats_untrained_and_training_free() {
    // Train on one synthetic set (seed 1), evaluate on a held-out one (seed 2: other
    // instances of the textures, other defect shapes and places), all at 64² with the tiny
    // random backbone. Measured when this test was written, training seed 111, 15 epochs:
    // trained 0.813, untrained head 0.614, training-free 0.464. Over other seeds the trained
    // head gave 0.813–0.821, untrained heads 0.50–0.69 (random prompts can land anywhere
    // near chance). The margins are about half the gaps measured at seed 111: 0.10 over the
    // untrained head (gap 0.20) and 0.15 over training-free (gap 0.35). A head that learned
    // nothing stays within the untrained range and fails.
    let dir = scratch("margin");
    let train_cfg = SynthConfig {
        size: 64,
        textures: vec![
            Texture::Noise,
            Texture::Stripes,
            Texture::Grid,
            Texture::Wood,
        ],
        train_good: 0,
        test_good: 4,
        test_per_defect: 3,
        seed: 1,
    };
    generate(&dir.join("train"), &train_cfg).unwrap();
    let held_cfg = SynthConfig {
        test_per_defect: 2,
        seed: 2,
        ..train_cfg
    };
    generate(&dir.join("held"), &held_cfg).unwrap();
    let train = Dataset::load(dir.join("train"), Format::Mvtec).unwrap();
    let held = Dataset::load(dir.join("held"), Format::Mvtec).unwrap();

    let with_size = |t: TrainConfig| trainer_at(t, 64);
    let untrained_path = dir.join("untrained.safetensors");
    let fresh = with_size(TrainConfig::default());
    kanoclip::detect::head_file::save_head(&untrained_path, fresh.head(), &fresh.meta()).unwrap();
    let trained_path = dir.join("trained.safetensors");
    let mut o = opts(trained_path.clone(), None, false, None);
    o.epochs = 15;
    o.batch = 8;
    fit(
        &mut with_size(TrainConfig::default()),
        &train,
        &o,
        |_, _, _, _| {},
    )
    .unwrap();

    let clip = || {
        Clip::from_files(
            fixture("tiny_quickgelu_config.json"),
            fixture("tiny_quickgelu.safetensors"),
            &Device::flex(),
        )
        .unwrap()
    };
    let tok = Tokenizer::new().unwrap();
    let kb = KnowledgeBase::from_file(fixture("knowledge_small.json")).unwrap();
    let trained = pixel_auroc(
        &kanoclip::detect::Detector::load(clip(), &trained_path, &tok).unwrap(),
        &held,
    );
    let untrained = pixel_auroc(
        &kanoclip::detect::Detector::load(clip(), &untrained_path, &tok).unwrap(),
        &held,
    );
    let c = clip();
    let mut cfg = DetectorConfig::for_clip(&c.config);
    cfg.input_size = 64;
    let free = pixel_auroc(
        &kanoclip::detect::Detector::training_free(c, &kb, &tok, cfg).unwrap(),
        &held,
    );
    eprintln!(
        "held-out synthetic pixel AUROC (random tiny backbone): trained {trained:.3}, untrained {untrained:.3}, training-free {free:.3}"
    );
    assert!(
        trained >= untrained + 0.10,
        "trained {trained} vs untrained {untrained}"
    );
    assert!(
        trained >= free + 0.15,
        "trained {trained} vs training-free {free}"
    );
}
