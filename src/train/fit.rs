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
use super::dataset::{Dataset, Sample, Split};
use super::trainer::{Batch, LossParts, Trainer};
use crate::clip::VisionOutput;
use crate::clip::embed::{image_batch, to_vec};
use crate::clip::preprocess::{decode_image, load_image, preprocess_mask};
use crate::error::{Error, Result};
use crate::head::BackboneId;
use crate::head::file::save_head;

pub struct FitOptions<'a> {
    pub epochs: usize,
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
    Finished,
    /// Stopped on request; the checkpoint continues at `(epoch, step)`.
    Stopped {
        epoch: usize,
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
    let device = trainer.clip.vision.conv1.device();
    type Loaded = (Vec<u8>, Vec<f32>, Option<String>, Option<Features>);
    let loaded: Vec<Loaded> = samples
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
            Ok((bytes, mask, key, hit))
        })
        .collect::<Result<_>>()?;
    let misses: Vec<usize> = (0..loaded.len())
        .filter(|&i| loaded[i].3.is_none())
        .collect();
    let images: Vec<DynamicImage> = misses
        .par_iter()
        .map(|&i| {
            decode_image(&loaded[i].0).map_err(|e| match e {
                Error::Image(m) => Error::Image(format!("{}: {m}", samples[i].path.display())),
                e => e,
            })
        })
        .collect::<Result<_>>()?;
    let masks = Tensor::from_data(
        TensorData::new(
            loaded
                .iter()
                .flat_map(|l| l.1.iter().copied())
                .collect::<Vec<_>>(),
            [samples.len(), size, size],
        ),
        &device,
    );
    let vision = match cache {
        None => trainer.features(image_batch(&images, size, &device)?),
        Some(cache) => {
            let mut computed = if images.is_empty() {
                Vec::new()
            } else {
                split_features(trainer.features(image_batch(&images, size, &device)?))?
            }
            .into_iter();
            let mut all = Vec::with_capacity(loaded.len());
            for (bytes_mask_key_hit, _) in loaded.iter().zip(samples) {
                let f = match &bytes_mask_key_hit.3 {
                    Some(f) => f.clone(),
                    None => {
                        let f = computed.next().expect("one computed entry per miss");
                        if let Some(k) = &bytes_mask_key_hit.2 {
                            cache.put(k, &f)?;
                        }
                        f
                    }
                };
                all.push(f);
            }
            let grid = size / trainer.clip.config.vision.patch_size;
            join_features(&all, 1 + grid * grid, &device)
        }
    };
    Ok(Batch {
        vision,
        masks,
        labels: samples.iter().map(|s| s.label).collect(),
        specific: samples
            .iter()
            .map(|s| trainer.specific_row(&relative(&data.root, &s.path)))
            .collect(),
    })
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
    let ckpt_path = checkpoint_path(&opts.out);
    let seed = trainer.cfg.seed;
    let progress = |epoch, step| Progress {
        epoch,
        step,
        seed,
        batch: opts.batch,
        images: samples.len(),
    };
    let (mut start_epoch, mut start_step) = (0usize, 0usize);
    if opts.resume {
        let bytes = std::fs::read(&ckpt_path).map_err(|e| Error::io(&ckpt_path, e))?;
        let ckpt = Checkpoint::from_bytes(&bytes)?;
        let p = &ckpt.progress;
        let want = progress(p.epoch, p.step);
        if *p != want {
            return Err(Error::Invalid(format!(
                "{}: made with seed {}, batch {} and {} images, not seed {}, batch {} and {}",
                ckpt_path.display(),
                p.seed,
                p.batch,
                p.images,
                want.seed,
                want.batch,
                want.images
            )));
        }
        trainer.restore(&ckpt)?;
        (start_epoch, start_step) = (p.epoch, p.step);
    }
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
    let save = |trainer: &Trainer, epoch: usize, step: usize| -> Result<()> {
        let (epoch, step) = if step == steps {
            (epoch + 1, 0)
        } else {
            (epoch, step)
        };
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
            let line = LogLine {
                epoch,
                step,
                total: parts.total,
                kd: parts.kd,
                global: parts.global,
                local: parts.local,
            };
            let json = serde_json::to_string(&line).map_err(|e| Error::Invalid(e.to_string()))?;
            writeln!(log_file, "{json}").map_err(|e| Error::io(&log, e))?;
            on_step(epoch, step, steps, &parts);
            if opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                save(trainer, epoch, step + 1)?;
                let (e, s) = if step + 1 == steps {
                    (epoch + 1, 0)
                } else {
                    (epoch, step + 1)
                };
                return Ok(FitEnd::Stopped { epoch: e, step: s });
            }
        }
        save(trainer, epoch, steps)?;
    }
    Ok(FitEnd::Finished)
}
