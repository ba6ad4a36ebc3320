//! WinCLIP's few-shot protocol (spec §10): per category, k normal images drawn with a seed
//! from `train/good` become the reference memory, the test split is scored, and the
//! metrics are averaged over seeds. Reference images never appear in the test split.

use std::path::PathBuf;

use serde::Serialize;

use super::evaluate::{CategoryMetrics, EvalReport, evaluate_with, mean_metrics};
use crate::data::dataset::{Dataset, Sample, Split};
use crate::detect::memory::{FewShot, ReferenceImage};
use crate::detect::{Detector, MemoryOptions};
use crate::error::{Error, Result};

/// The protocol's settings.
#[derive(Clone, Debug)]
pub struct FewShotProtocol {
    /// k: normal images per category.
    pub shots: usize,
    /// One run per seed.
    pub seeds: Vec<u64>,
    /// How the few-shot map is fused.
    pub fusion: FewShot,
}

/// The runs and their summary.
#[derive(Clone, Debug, Serialize)]
pub struct FewShotReport {
    /// k.
    pub shots: usize,
    /// The seeds, one run each.
    pub seeds: Vec<u64>,
    /// λ.
    pub weight: f64,
    /// Per category, each metric's mean over the seeds; the last row is the mean row's.
    pub mean: Vec<CategoryMetrics>,
    /// The standard deviation over seeds of the mean row's metrics.
    pub std: CategoryMetrics,
    /// Every run, in seed order.
    pub runs: Vec<EvalReport>,
}

/// The `shots` normal training images of `category` that `seed` draws, in name order.
pub fn draw_references(
    data: &Dataset,
    category: &str,
    shots: usize,
    seed: u64,
) -> Result<Vec<PathBuf>> {
    let mut pool: Vec<&Sample> = data
        .samples
        .iter()
        .filter(|s| s.category == category && s.split == Split::Train && !s.label)
        .collect();
    if shots == 0 || pool.len() < shots {
        return Err(Error::Dataset(vec![format!(
            "{category}: {} normal training images, but {shots} shots were asked for",
            pool.len()
        )]));
    }
    fastrand::Rng::with_seed(seed).shuffle(&mut pool);
    let mut picked: Vec<PathBuf> = pool[..shots].iter().map(|s| s.path.clone()).collect();
    picked.sort();
    Ok(picked)
}

/// Run the protocol, `batch` test images per forward pass. The detector's memory is
/// cleared at the end.
pub fn evaluate_few_shot(
    detector: &Detector,
    data: &Dataset,
    protocol: &FewShotProtocol,
    batch: usize,
    mut progress: impl FnMut(&Sample),
) -> Result<FewShotReport> {
    protocol.fusion.validate()?;
    if protocol.seeds.is_empty() {
        return Err(Error::Invalid("the few-shot protocol needs a seed".into()));
    }
    let mut runs = Vec::with_capacity(protocol.seeds.len());
    for &seed in &protocol.seeds {
        let set_memory = |category: &str| -> Result<()> {
            let files = draw_references(data, category, protocol.shots, seed)?;
            let mut images = Vec::with_capacity(files.len());
            let mut sources = Vec::with_capacity(files.len());
            for f in &files {
                let (image, record) = ReferenceImage::read(f)?;
                images.push(image);
                sources.push(record);
            }
            let options = MemoryOptions {
                seed,
                ..MemoryOptions::default()
            };
            let memory = detector.build_memory(&images, sources, options)?;
            detector.set_memory(memory, protocol.fusion)
        };
        let run = evaluate_with(detector, data, batch, set_memory, &mut progress);
        detector.clear_memory();
        runs.push(run?);
    }
    let rows = runs[0].categories.len() + 1;
    let mut mean = Vec::with_capacity(rows);
    for i in 0..rows {
        let same: Vec<CategoryMetrics> = runs
            .iter()
            .map(|r| r.categories.get(i).unwrap_or(&r.mean).clone())
            .collect();
        let mut m = mean_metrics(&same);
        m.category = same[0].category.clone();
        m.images = same[0].images;
        m.anomalous = same[0].anomalous;
        mean.push(m);
    }
    let means: Vec<&CategoryMetrics> = runs.iter().map(|r| &r.mean).collect();
    Ok(FewShotReport {
        shots: protocol.shots,
        seeds: protocol.seeds.clone(),
        weight: protocol.fusion.weight,
        std: spread(&means),
        mean,
        runs,
    })
}

/// Each metric's population standard deviation over `runs`, where defined in all.
fn spread(runs: &[&CategoryMetrics]) -> CategoryMetrics {
    let std_of = |f: fn(&CategoryMetrics) -> Option<f64>| {
        let v: Option<Vec<f64>> = runs.iter().map(|r| f(r)).collect();
        v.filter(|v| !v.is_empty()).map(|v| {
            let n = v.len() as f64;
            let m = v.iter().sum::<f64>() / n;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt()
        })
    };
    CategoryMetrics {
        category: "std".into(),
        images: runs.first().map_or(0, |r| r.images),
        anomalous: runs.first().map_or(0, |r| r.anomalous),
        image_auroc: std_of(|c| c.image_auroc),
        image_ap: std_of(|c| c.image_ap),
        image_f1_max: std_of(|c| c.image_f1_max),
        pixel_auroc: std_of(|c| c.pixel_auroc),
        pixel_ap: std_of(|c| c.pixel_ap),
        aupro: std_of(|c| c.aupro),
    }
}
