//! WinCLIP's few-shot protocol (spec §10): per category, k normal images drawn with a seed
//! from `train/good` become the reference memory, the test split is scored, and the
//! metrics are averaged over seeds. Reference images never appear in the test split.
//!
//! The folder layout (`normal/`, `abnormal/`) has no training split: there the k references
//! are drawn from `normal/` and leave that seed's test set, as anomalib's `Folder` splits
//! its normal images into training and test.

use std::collections::BTreeMap;
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
    /// Where the references came from: [`FROM_TRAIN`], or [`FROM_TEST`] for the
    /// categories without normal training images (the folder layout).
    pub references: &'static str,
    /// Per category, each metric's mean over the seeds; the last row is the mean row's.
    pub mean: Vec<CategoryMetrics>,
    /// The standard deviation over seeds of the mean row's metrics.
    pub std: CategoryMetrics,
    /// Every run, in seed order.
    pub runs: Vec<EvalReport>,
}

/// `references` in the report: every category drew from its training split.
pub const FROM_TRAIN: &str = "train: normal training images";
/// `references` in the report: some category (the folder layout) drew from its test split.
pub const FROM_TEST: &str = "test: normal test images (normal/), removed from that seed's test set";

/// The `shots` normal images of `category` that `seed` draws, in name order, and the split
/// they come from: the training split, or where it has no normal image (the folder
/// layout) the test split, which must keep at least one normal image besides them.
pub fn draw_references(
    data: &Dataset,
    category: &str,
    shots: usize,
    seed: u64,
) -> Result<(Vec<PathBuf>, Split)> {
    let normal = |split: Split| -> Vec<&Sample> {
        (data.samples.iter())
            .filter(|s| s.category == category && s.split == split && !s.label)
            .collect()
    };
    let (mut pool, split) = match normal(Split::Train) {
        train if !train.is_empty() => (train, Split::Train),
        _ => (normal(Split::Test), Split::Test),
    };
    // From the test split, one normal image at least stays to be scored.
    let spare = usize::from(split == Split::Test);
    if shots == 0 || pool.len() < shots + spare {
        let what = match split {
            Split::Train => "normal training images",
            Split::Test => {
                "normal images (no training split: the references are drawn from them, and \
                 one must stay to be scored)"
            }
        };
        return Err(Error::Dataset(vec![format!(
            "{category}: {} {what}, but {shots} shots were asked for",
            pool.len()
        )]));
    }
    fastrand::Rng::with_seed(seed).shuffle(&mut pool);
    let mut picked: Vec<PathBuf> = pool[..shots].iter().map(|s| s.path.clone()).collect();
    picked.sort();
    Ok((picked, split))
}

/// Each category's references for one seed.
type Drawn = BTreeMap<String, Vec<PathBuf>>;

/// One seed's references per category, and the data it scores: `data` less the references
/// drawn from a test split (`None`: `data` itself).
fn seed_split(data: &Dataset, shots: usize, seed: u64) -> Result<(Drawn, Option<Dataset>)> {
    let mut drawn = BTreeMap::new();
    let mut from_test = false;
    for category in data.categories() {
        let (files, split) = draw_references(data, &category, shots, seed)?;
        from_test |= split == Split::Test;
        drawn.insert(category, files);
    }
    let scored = from_test.then(|| {
        let mut d = data.clone();
        d.samples
            .retain(|s| s.split != Split::Test || s.label || !drawn[&s.category].contains(&s.path));
        d
    });
    Ok((drawn, scored))
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
    let mut references = FROM_TRAIN;
    for &seed in &protocol.seeds {
        let (drawn, scored) = seed_split(data, protocol.shots, seed)?;
        if scored.is_some() {
            references = FROM_TEST;
        }
        let set_memory = |category: &str| -> Result<()> {
            let files = drawn.get(category).ok_or_else(|| {
                Error::Dataset(vec![format!("{category}: no references were drawn")])
            })?;
            let mut images = Vec::with_capacity(files.len());
            let mut sources = Vec::with_capacity(files.len());
            for f in files {
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
        let scored = scored.as_ref().unwrap_or(data);
        let run = evaluate_with(detector, scored, batch, set_memory, &mut progress);
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
        references,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, split: Split, label: bool) -> Sample {
        Sample {
            path: PathBuf::from(name),
            category: "c".into(),
            split,
            label,
            masks: vec![],
        }
    }

    /// Without a training split the references come from the normal test images and leave
    /// the scored set; with one, they come from it and the test set is untouched.
    #[test]
    fn references_never_are_scored() {
        let mut samples: Vec<Sample> = (0..5)
            .map(|i| sample(&format!("n{i}"), Split::Test, false))
            .collect();
        samples.extend((0..2).map(|i| sample(&format!("a{i}"), Split::Test, true)));
        let folder = Dataset {
            root: "d".into(),
            samples,
            unreadable: vec![],
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..8 {
            let (drawn, scored) = seed_split(&folder, 2, seed).unwrap();
            let refs = &drawn["c"];
            let scored = scored.expect("test references leave the test set");
            assert_eq!(refs.len(), 2);
            assert_eq!(scored.samples.len(), 5);
            assert!(scored.samples.iter().all(|s| !refs.contains(&s.path)));
            assert!(refs.iter().all(|r| r.to_str().unwrap().starts_with('n')));
            seen.insert(refs.clone());
        }
        assert!(seen.len() > 1, "the seed draws");
        // One normal image must stay: 5 references of 5 are refused.
        assert!(matches!(seed_split(&folder, 5, 0), Err(Error::Dataset(_))));
        let mut with_train = folder.clone();
        with_train
            .samples
            .extend((0..3).map(|i| sample(&format!("t{i}"), Split::Train, false)));
        let (drawn, scored) = seed_split(&with_train, 3, 0).unwrap();
        assert!(scored.is_none());
        assert!(
            drawn["c"]
                .iter()
                .all(|r| r.to_str().unwrap().starts_with('t'))
        );
    }
}
