//! Epochs over a data set: batches (their frozen features from the on-disk cache where
//! possible), after every epoch a resume checkpoint and the head file (both written
//! atomically), a JSON-lines log of every step's loss components, and a clean stop with a
//! checkpoint when asked (Ctrl-C). Following the protocol of spec §8, the head trains on
//! the auxiliary data set's test split, which has the anomalies and their masks.
//!
//! Resuming continues at the step after the last one done: the batch order of an epoch
//! depends only on the seed and the epoch, and the checkpoint holds the head and Adam's
//! state, so an interrupted and resumed run ends with the head of an uninterrupted one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use burn::tensor::TensorData;
use image::DynamicImage;
use rayon::prelude::*;
use serde::Serialize;

use super::cache::{FeatureCache, Features};
use super::checkpoint::{Checkpoint, Progress};
use super::trainer::{Batch, LossParts, Trainer};
use crate::clip::VisionOutput;
use crate::clip::preprocess::image_batch;
use crate::clip::preprocess::{decode_image, load_image, preprocess_mask};
use crate::data::dataset::{Dataset, Sample, Split};
use crate::detect::head_file::save_head;
use crate::error::{Error, Result};
use crate::head::BackboneId;
use crate::tensor_io::to_vec;

/// How [`fit`] runs.
pub struct FitOptions<'a> {
    /// Epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// The head file, rewritten after every epoch.
    pub out: PathBuf,
    /// The feature cache's folder; `None` computes the features every time.
    pub cache: Option<PathBuf>,
    /// Continue from `HEAD.ckpt`.
    pub resume: bool,
    /// When set (by a Ctrl-C handler), stop after the current step with a checkpoint.
    pub stop: Option<&'a AtomicBool>,
}

/// How training ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitEnd {
    /// All epochs ran.
    Finished,
    /// Stopped on request; the checkpoint continues at `(epoch, step)`.
    Stopped {
        /// The epoch to continue in.
        epoch: usize,
        /// The first step to run in it.
        step: usize,
    },
}

#[derive(Serialize)]
struct LogLine {
    epoch: usize,
    step: usize,
    total: f32,
    kd: f32,
    global: f32,
    local: f32,
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    out.with_file_name(name)
}

/// The JSON-lines log beside the head: `HEAD.log.jsonl`.
pub fn log_path(out: &Path) -> PathBuf {
    with_suffix(out, ".log.jsonl")
}

/// The resume checkpoint beside the head: `HEAD.ckpt`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    with_suffix(out, ".ckpt")
}

/// A sample's path relative to the data root, `/`-separated: the key of its specific
/// knowledge.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Per-image features of a batch (what the cache stores).
pub fn split_features(v: VisionOutput) -> Result<Vec<Features>> {
    let [b, d] = v.global.dims();
    let global = to_vec(v.global)?;
    let taps = v.taps.into_iter().map(to_vec).collect::<Result<Vec<_>>>()?;
    Ok((0..b)
        .map(|i| Features {
            global: global[i * d..(i + 1) * d].to_vec(),
            taps: taps
                .iter()
                .map(|t| {
                    let n = t.len() / b;
                    t[i * n..(i + 1) * n].to_vec()
                })
                .collect(),
        })
        .collect())
}

/// A batch's features from per-image ones (`tokens` rows a tap).
pub fn join_features(f: &[Features], tokens: usize, device: &Device) -> VisionOutput {
    let b = f.len();
    let d = f[0].global.len();
    let global: Vec<f32> = f.iter().flat_map(|x| x.global.iter().copied()).collect();
    let taps = (0..f[0].taps.len())
        .map(|t| {
            let v: Vec<f32> = f.iter().flat_map(|x| x.taps[t].iter().copied()).collect();
            Tensor::from_data(TensorData::new(v, [b, tokens, d]), device)
        })
        .collect();
    VisionOutput {
        global: Tensor::from_data(TensorData::new(global, [b, d]), device),
        taps,
        raw: Vec::new(),
    }
}

/// A batch: masks at the input size, features from the cache or the backbone.
fn load_batch(
    trainer: &Trainer,
    data: &Dataset,
    samples: &[&Sample],
    cache: Option<&FeatureCache>,
) -> Result<Batch> {
    let size = trainer.detector.input_size;
    let device = trainer.clip.device();
    let loaded = read_samples(samples, size, cache)?;
    let masks = Tensor::from_data(
        TensorData::new(
            loaded
                .iter()
                .flat_map(|l| l.mask.iter().copied())
                .collect::<Vec<_>>(),
            [samples.len(), size, size],
        ),
        &device,
    );
    Ok(Batch {
        vision: batch_features(trainer, samples, &loaded, cache)?,
        masks,
        labels: samples.iter().map(|s| s.label).collect(),
        specific: samples
            .iter()
            .map(|s| trainer.specific_row(&relative(&data.root, &s.path)))
            .collect(),
    })
}

/// One sample as read from disk: the file's bytes, its mask at the input size, and its
/// feature-cache key and entry (when there is a cache, and a hit).
struct Loaded {
    bytes: Vec<u8>,
    mask: Vec<f32>,
    key: Option<String>,
    hit: Option<Features>,
}

/// Read the samples' files and masks, and look them up in the cache, in parallel.
fn read_samples(
    samples: &[&Sample],
    size: usize,
    cache: Option<&FeatureCache>,
) -> Result<Vec<Loaded>> {
    samples
        .par_iter()
        .map(|s| {
            let bytes = std::fs::read(&s.path).map_err(|e| Error::io(&s.path, e))?;
            let mut mask = vec![0.0f32; size * size];
            for m in &s.masks {
                let m = preprocess_mask(&load_image(m)?.to_luma8(), size as u32)?;
                mask.iter_mut().zip(m).for_each(|(a, b)| *a = a.max(b));
            }
            let key = cache.map(|c| c.key(&bytes));
            let hit = cache.zip(key.as_ref()).and_then(|(c, k)| c.get(k));
            Ok(Loaded {
                bytes,
                mask,
                key,
                hit,
            })
        })
        .collect()
}

/// The frozen features of a batch: computed for the cache's misses (and stored), read for
/// its hits, in sample order.
fn batch_features(
    trainer: &Trainer,
    samples: &[&Sample],
    loaded: &[Loaded],
    cache: Option<&FeatureCache>,
) -> Result<VisionOutput> {
    let size = trainer.detector.input_size;
    let device = trainer.clip.device();
    let images: Vec<DynamicImage> = loaded
        .par_iter()
        .zip(samples)
        .filter(|(l, _)| l.hit.is_none())
        .map(|(l, s)| decode_image(&l.bytes).map_err(|e| e.in_file(&s.path)))
        .collect::<Result<_>>()?;
    let Some(cache) = cache else {
        return Ok(trainer.features(image_batch(&images, size, &device)?.0));
    };
    let computed = if images.is_empty() {
        Vec::new()
    } else {
        split_features(trainer.features(image_batch(&images, size, &device)?.0))?
    };
    let mut computed = computed.into_iter();
    let mut all = Vec::with_capacity(loaded.len());
    for l in loaded {
        let f = match &l.hit {
            Some(f) => f.clone(),
            None => {
                let f = computed
                    .next()
                    .ok_or_else(|| Error::Invalid("fewer features than cache misses".into()))?;
                if let Some(k) = &l.key {
                    cache.put(k, &f)?;
                }
                f
            }
        };
        all.push(f);
    }
    let grid = size / trainer.clip.config.vision.patch_size;
    Ok(join_features(&all, 1 + grid * grid, &device))
}

/// Restore the trainer from the checkpoint at `path`, which must have been made with the
/// same seed, batch size and images (`progress` gives what this run would record); returns
/// where to go on: `(epoch, step)`.
fn resume(
    trainer: &mut Trainer,
    path: &Path,
    progress: impl Fn(usize, usize) -> Progress,
) -> Result<(usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let ckpt = Checkpoint::from_bytes(&bytes).map_err(|e| e.in_file(path))?;
    let p = &ckpt.progress;
    let want = progress(p.epoch, p.step);
    if *p != want {
        return Err(Error::Invalid(format!(
            "{}: made with seed {}, batch {} and {} images, not seed {}, batch {} and {}",
            path.display(),
            p.seed,
            p.batch,
            p.images,
            want.seed,
            want.batch,
            want.images
        )));
    }
    trainer.restore(&ckpt)?;
    Ok((p.epoch, p.step))
}

/// One JSON line of loss components for a step.
fn log_step(
    file: &mut std::fs::File,
    path: &Path,
    epoch: usize,
    step: usize,
    parts: &LossParts,
) -> Result<()> {
    let line = LogLine {
        epoch,
        step,
        total: parts.total,
        kd: parts.kd,
        global: parts.global,
        local: parts.local,
    };
    let json = serde_json::to_string(&line)?;
    writeln!(file, "{json}").map_err(|e| Error::io(path, e))
}

/// The auxiliary data set's test split, which spec §8 trains on.
fn training_samples(data: &Dataset) -> Result<Vec<&Sample>> {
    let samples: Vec<&Sample> = data
        .samples
        .iter()
        .filter(|s| s.split == Split::Test)
        .collect();
    if samples.is_empty() {
        return Err(Error::Dataset(vec![format!(
            "{}: no test-split images to train on",
            data.root.display()
        )]));
    }
    Ok(samples)
}

/// Train for `opts.epochs` epochs. `on_step(epoch, step, steps_per_epoch, loss)` reports
/// progress. A non-finite loss stops training with an error; the head file and the
/// checkpoint then hold the last completed epoch.
pub fn fit(
    trainer: &mut Trainer,
    data: &Dataset,
    opts: &FitOptions,
    mut on_step: impl FnMut(usize, usize, usize, &LossParts),
) -> Result<FitEnd> {
    if opts.epochs == 0 || opts.batch == 0 {
        return Err(Error::Invalid("epochs and batch must be positive".into()));
    }
    let samples = training_samples(data)?;
    let ckpt_path = checkpoint_path(&opts.out);
    let seed = trainer.cfg.seed;
    let progress = |epoch, step| Progress {
        epoch,
        step,
        seed,
        batch: opts.batch,
        images: samples.len(),
    };
    let (start_epoch, start_step) = if opts.resume {
        resume(trainer, &ckpt_path, progress)?
    } else {
        (0, 0)
    };
    let cache = match &opts.cache {
        Some(dir) => Some(FeatureCache::new(
            dir,
            &BackboneId::of(&trainer.clip),
            &trainer.detector,
        )?),
        None => None,
    };
    let log = log_path(&opts.out);
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(opts.resume)
        .write(true)
        .truncate(!opts.resume)
        .open(&log)
        .map_err(|e| Error::io(&log, e))?;
    let steps = samples.len().div_ceil(opts.batch);
    // Where training goes on after `step` steps of `epoch`.
    let next = |epoch: usize, step: usize| {
        if step == steps {
            (epoch + 1, 0)
        } else {
            (epoch, step)
        }
    };
    // The checkpoint, and the head at the end of an epoch.
    let save = |trainer: &Trainer, (epoch, step): (usize, usize)| -> Result<()> {
        let ckpt = trainer.checkpoint(progress(epoch, step))?;
        crate::atomic::write(&ckpt_path, &ckpt.to_bytes()?)?;
        if step == 0 {
            save_head(&opts.out, trainer.head(), &trainer.meta())?;
        }
        Ok(())
    };
    for epoch in start_epoch..opts.epochs {
        let mut order = samples.clone();
        fastrand::Rng::with_seed(seed.wrapping_add(epoch as u64)).shuffle(&mut order);
        let skip = if epoch == start_epoch { start_step } else { 0 };
        for (step, chunk) in order.chunks(opts.batch).enumerate().skip(skip) {
            let batch = load_batch(trainer, data, chunk, cache.as_ref())?;
            let parts = trainer.step(batch)?;
            log_step(&mut log_file, &log, epoch, step, &parts)?;
            on_step(epoch, step, steps, &parts);
            if opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                let (epoch, step) = next(epoch, step + 1);
                save(trainer, (epoch, step))?;
                return Ok(FitEnd::Stopped { epoch, step });
            }
        }
        save(trainer, next(epoch, steps))?;
    }
    Ok(FitEnd::Finished)
}
