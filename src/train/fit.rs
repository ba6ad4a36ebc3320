//! Epochs over a data set: batches, a head checkpoint after every epoch (written
//! atomically), and a JSON-lines log of every step's loss components. Following the
//! protocol of spec §8, the head trains on the auxiliary data set's test split, which has
//! the anomalies and their masks.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use image::DynamicImage;
use rayon::prelude::*;
use serde::Serialize;

use super::dataset::{Dataset, Sample, Split};
use super::trainer::{LossParts, Trainer};
use crate::clip::embed::image_batch;
use crate::clip::preprocess::{load_image, preprocess_mask};
use crate::error::{Error, Result};
use crate::head::file::save_head;

pub struct FitOptions {
    pub epochs: usize,
    pub batch: usize,
    /// The head file, rewritten after every epoch.
    pub out: PathBuf,
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

/// The JSON-lines log beside the head: `HEAD.log.jsonl`.
pub fn log_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".log.jsonl");
    out.with_file_name(name)
}

fn load_batch(
    samples: &[&Sample],
    size: usize,
    device: &Device,
) -> Result<(Tensor<4>, Tensor<3>, Vec<bool>)> {
    let loaded: Vec<(DynamicImage, Vec<f32>)> = samples
        .par_iter()
        .map(|s| {
            let img = load_image(&s.path)?;
            let mut mask = vec![0.0f32; size * size];
            for m in &s.masks {
                let m = preprocess_mask(&load_image(m)?.to_luma8(), size as u32)?;
                mask.iter_mut().zip(m).for_each(|(a, b)| *a = a.max(b));
            }
            Ok((img, mask))
        })
        .collect::<Result<_>>()?;
    let (images, masks): (Vec<DynamicImage>, Vec<Vec<f32>>) = loaded.into_iter().unzip();
    let x = image_batch(&images, size, device)?;
    let m = Tensor::from_data(
        TensorData::new(masks.concat(), [samples.len(), size, size]),
        device,
    );
    Ok((x, m, samples.iter().map(|s| s.label).collect()))
}

/// Train for `opts.epochs` epochs. `on_step(epoch, step, steps_per_epoch, loss)` reports
/// progress. A non-finite loss stops training with an error; the head file then holds the
/// last completed epoch.
pub fn fit(
    trainer: &mut Trainer,
    data: &Dataset,
    opts: &FitOptions,
    mut on_step: impl FnMut(usize, usize, usize, &LossParts),
) -> Result<()> {
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
    let device = trainer.clip.vision.conv1.device();
    let size = trainer.detector.input_size;
    let log = log_path(&opts.out);
    let mut log_file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let steps = samples.len().div_ceil(opts.batch);
    for epoch in 0..opts.epochs {
        let mut order = samples.clone();
        fastrand::Rng::with_seed(trainer.cfg.seed.wrapping_add(epoch as u64)).shuffle(&mut order);
        for (step, chunk) in order.chunks(opts.batch).enumerate() {
            let (x, m, y) = load_batch(chunk, size, &device)?;
            let parts = trainer.step(x, m, &y)?;
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
        }
        save_head(&opts.out, trainer.head(), &trainer.meta())?;
    }
    Ok(())
}
