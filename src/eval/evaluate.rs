//! Evaluation on a data set's test split (spec §8): per-category image AUROC, AP and
//! F1-max, pixel AUROC and AP, and their means over categories.
//!
//! Pixel metrics stream through [`PixelHistogram`] and [`ProHistogram`] (65,536 score bins
//! over [0, 1]; AUPRO keeps per bin the background count and the summed region weights), so
//! a full MVTec AD run holds one map at a time, not 1725 of them: memory is two maps plus
//! 2 MiB of bins, whatever the data set's size. The binned metrics are exactly the
//! unbinned ones on scores rounded to 1/65536; `tests/metrics.rs` bounds the difference.

use image::DynamicImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::clip::preprocess::load_image;
use crate::data::dataset::{Dataset, Sample, Split};
use crate::detect::mutual::group_sizes;
use crate::detect::{Detector, Mutual, Scored};
use crate::error::{Error, Result};
use crate::eval::metrics::{PixelHistogram, auroc, average_precision, f1_max};
use crate::eval::pro::ProHistogram;

/// The FPR limit of AUPRO (spec §8).
pub const AUPRO_LIMIT: f64 = 0.3;

/// One category's metrics (`None` where undefined).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CategoryMetrics {
    /// The category (or `mean`).
    pub category: String,
    /// Test images.
    pub images: usize,
    /// Anomalous ones among them.
    pub anomalous: usize,
    /// Image AUROC.
    pub image_auroc: Option<f64>,
    /// Image average precision.
    pub image_ap: Option<f64>,
    /// Image F1-max.
    pub image_f1_max: Option<f64>,
    /// Pixel AUROC.
    pub pixel_auroc: Option<f64>,
    /// Pixel average precision.
    pub pixel_ap: Option<f64>,
    /// AUPRO up to FPR 0.3, normalised ([`AUPRO_LIMIT`]).
    pub aupro: Option<f64>,
}

/// One image's score.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreRow {
    /// The image file.
    pub path: String,
    /// Its category.
    pub category: String,
    /// 1 for anomalous, 0 for normal.
    pub label: u8,
    /// The detector's score.
    pub score: f32,
}

/// A test image that could not be scored (unreadable image or mask, refused input...):
/// it is left out of every metric and listed, and the run goes on.
#[derive(Clone, Debug, Serialize)]
pub struct FailedRow {
    /// The image file.
    pub path: String,
    /// Its category.
    pub category: String,
    /// The error's kind ([`Error::kind`]).
    pub kind: &'static str,
    /// What went wrong.
    pub error: String,
}

/// What `kanoclip eval` reports.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Per category.
    pub categories: Vec<CategoryMetrics>,
    /// Means over the categories where each metric is defined.
    pub mean: CategoryMetrics,
    /// Every scored image's score.
    pub scores: Vec<ScoreRow>,
    /// The images that could not be scored, with why.
    pub failed: Vec<FailedRow>,
    /// With mutual scoring: the images scored alone, because their group had fewer than
    /// three readable images.
    pub scored_alone: usize,
    /// Throughput of the whole run.
    pub images_per_second: f64,
}

/// The union of a sample's masks, thresholded at 128, at the image's size.
fn load_mask(sample: &Sample, width: u32, height: u32) -> Result<Vec<bool>> {
    let mut mask = vec![false; width as usize * height as usize];
    for m in &sample.masks {
        let img = load_image(m)?.to_luma8();
        if img.dimensions() != (width, height) {
            return Err(Error::Dataset(vec![format!(
                "{}: mask size differs from its image",
                m.display()
            )]));
        }
        for (v, p) in mask.iter_mut().zip(img.pixels()) {
            *v |= p[0] >= 128;
        }
    }
    Ok(mask)
}

/// The images per forward pass of [`evaluate`].
pub const DEFAULT_BATCH: usize = 8;

/// Run `detector` over the test split, [`DEFAULT_BATCH`] images per forward pass.
/// `progress` is called once per image.
pub fn evaluate(
    detector: &Detector,
    data: &Dataset,
    progress: impl FnMut(&Sample),
) -> Result<EvalReport> {
    evaluate_with(detector, data, DEFAULT_BATCH, |_| Ok(()), progress)
}

/// [`evaluate`], `batch` images per forward pass (at least 1; only that many are decoded
/// at once), with `before` run before each category (few-shot mode sets that category's
/// reference memory there).
pub fn evaluate_with(
    detector: &Detector,
    data: &Dataset,
    batch: usize,
    before: impl FnMut(&str) -> Result<()>,
    progress: impl FnMut(&Sample),
) -> Result<EvalReport> {
    evaluate_scored(detector, data, &Scoring::Batch(batch), before, progress)
}

/// [`evaluate`] with mutual scoring (spec §11): each category's test images scored
/// against each other, in even groups of at most `mutual.group` (categories never mixed),
/// by [`Detector::detect_group_or_alone`]. Images scored alone (a group left with fewer
/// than three readable images) are counted in [`EvalReport::scored_alone`].
pub fn evaluate_mutual(
    detector: &Detector,
    data: &Dataset,
    mutual: &Mutual,
    progress: impl FnMut(&Sample),
) -> Result<EvalReport> {
    mutual.validate()?;
    evaluate_scored(
        detector,
        data,
        &Scoring::Mutual(*mutual),
        |_| Ok(()),
        progress,
    )
}

/// How [`evaluate_category`] scores a category's test images.
enum Scoring {
    /// Each alone, this many per forward pass.
    Batch(usize),
    /// Against each other.
    Mutual(Mutual),
}

impl Scoring {
    /// The sizes of the chunks `n` test images are scored in.
    fn chunks(&self, n: usize) -> Vec<usize> {
        match self {
            Scoring::Batch(b) => {
                let b = (*b).max(1);
                (0..n).step_by(b).map(|start| b.min(n - start)).collect()
            }
            Scoring::Mutual(m) => group_sizes(n, m.group),
        }
    }
}

fn evaluate_scored(
    detector: &Detector,
    data: &Dataset,
    scoring: &Scoring,
    mut before: impl FnMut(&str) -> Result<()>,
    mut progress: impl FnMut(&Sample),
) -> Result<EvalReport> {
    let start = web_time::Instant::now();
    let mut categories = Vec::new();
    let mut scores = Vec::new();
    let mut failed = Vec::new();
    let mut scored_alone = 0;
    for category in data.categories() {
        let test: Vec<&Sample> = data
            .samples
            .iter()
            .filter(|s| s.category == category && s.split == Split::Test)
            .collect();
        for (s, why) in data
            .unreadable
            .iter()
            .filter(|(s, _)| s.category == category && s.split == Split::Test)
        {
            failed.push(FailedRow {
                path: s.path.display().to_string(),
                category: category.clone(),
                kind: "image",
                error: why.clone(),
            });
        }
        if !test.is_empty() {
            before(&category)?;
            let m = evaluate_category(
                detector,
                &category,
                &test,
                scoring,
                (&mut scores, &mut failed, &mut scored_alone),
                &mut progress,
            );
            categories.push(m);
        }
    }
    if categories.is_empty() {
        return Err(Error::Dataset(vec![format!(
            "{}: no test images",
            data.root.display()
        )]));
    }
    if scores.is_empty() {
        let first = failed.first().map_or(String::new(), |f: &FailedRow| {
            format!(": the first, {}: {}", f.path, f.error)
        });
        return Err(Error::Dataset(vec![format!(
            "{}: none of the {} test images could be scored{first}",
            data.root.display(),
            failed.len()
        )]));
    }
    let mean = mean_metrics(&categories);
    let images_per_second = scores.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok(EvalReport {
        categories,
        mean,
        scores,
        failed,
        scored_alone,
        images_per_second,
    })
}

/// One category's metrics; each image's score is added to `scores`, and each image that
/// cannot be scored to `failed` (one bad file never costs the run).
fn evaluate_category(
    detector: &Detector,
    category: &str,
    test: &[&Sample],
    scoring: &Scoring,
    (scores, failed, scored_alone): (&mut Vec<ScoreRow>, &mut Vec<FailedRow>, &mut usize),
    progress: &mut impl FnMut(&Sample),
) -> CategoryMetrics {
    let with_masks = test.iter().filter(|s| s.label).all(|s| !s.masks.is_empty());
    let mut hist = PixelHistogram::default();
    let mut pro = ProHistogram::default();
    let (mut s_img, mut l_img) = (Vec::new(), Vec::new());
    let mut fail = |s: &Sample, e: &Error| {
        failed.push(FailedRow {
            path: s.path.display().to_string(),
            category: category.to_string(),
            kind: e.kind(),
            error: e.to_string().replace('\n', "; "),
        });
    };
    let mut start = 0;
    for size in scoring.chunks(test.len()) {
        let chunk = &test[start..start + size];
        start += size;
        let loaded: Vec<Result<DynamicImage>> =
            chunk.par_iter().map(|s| load_image(&s.path)).collect();
        let (mut ok, mut images) = (Vec::new(), Vec::new());
        for (s, img) in chunk.iter().zip(loaded) {
            match img {
                Ok(img) => {
                    ok.push(*s);
                    images.push(img);
                }
                Err(e) => {
                    fail(s, &e);
                    progress(s);
                }
            }
        }
        let found: Vec<Result<_>> = match scoring {
            // One batch; one by one if the batch fails, so one image cannot cost the others.
            Scoring::Batch(_) => match detector.detect_batch(&images) {
                Ok(found) => found.into_iter().map(Ok).collect(),
                Err(_) => images.iter().map(|img| detector.detect(img)).collect(),
            },
            Scoring::Mutual(m) => detector
                .detect_group_or_alone(&images, m)
                .into_iter()
                .map(|r| {
                    r.map(|(d, how)| {
                        *scored_alone += usize::from(matches!(how, Scored::Alone { .. }));
                        d
                    })
                })
                .collect(),
        };
        for (s, d) in ok.into_iter().zip(found) {
            let scored = d.and_then(|d| {
                let mask = if with_masks {
                    Some(load_mask(s, d.map.width, d.map.height)?)
                } else {
                    None
                };
                Ok((d, mask))
            });
            match scored {
                Ok((d, mask)) => {
                    if let Some(mask) = mask {
                        hist.add(&d.map.values, &mask);
                        pro.add(&d.map.values, &mask, d.map.width as usize);
                    }
                    s_img.push(d.score);
                    l_img.push(s.label);
                    scores.push(ScoreRow {
                        path: s.path.display().to_string(),
                        category: category.to_string(),
                        label: u8::from(s.label),
                        score: d.score,
                    });
                }
                Err(e) => fail(s, &e),
            }
            progress(s);
        }
    }
    let pixel = |v: Option<f64>| if with_masks { v } else { None };
    CategoryMetrics {
        category: category.to_string(),
        images: s_img.len(),
        anomalous: l_img.iter().filter(|l| **l).count(),
        image_auroc: auroc(&s_img, &l_img),
        image_ap: average_precision(&s_img, &l_img),
        image_f1_max: f1_max(&s_img, &l_img),
        pixel_auroc: pixel(hist.auroc()),
        pixel_ap: pixel(hist.average_precision()),
        aupro: pixel(pro.aupro(AUPRO_LIMIT)),
    }
}

/// The mean of each metric over the categories where it is defined.
pub(crate) fn mean_metrics(categories: &[CategoryMetrics]) -> CategoryMetrics {
    let mean_of = |f: fn(&CategoryMetrics) -> Option<f64>| {
        let v: Vec<f64> = categories.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    CategoryMetrics {
        category: "mean".into(),
        images: categories.iter().map(|c| c.images).sum(),
        anomalous: categories.iter().map(|c| c.anomalous).sum(),
        image_auroc: mean_of(|c| c.image_auroc),
        image_ap: mean_of(|c| c.image_ap),
        image_f1_max: mean_of(|c| c.image_f1_max),
        pixel_auroc: mean_of(|c| c.pixel_auroc),
        pixel_ap: mean_of(|c| c.pixel_ap),
        aupro: mean_of(|c| c.aupro),
    }
}
