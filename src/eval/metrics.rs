//! The metrics anomaly-detection papers report (spec §8), equal to scikit-learn's
//! `roc_auc_score` and `average_precision_score` on the same inputs.
//!
//! Image metrics are exact (every score kept, ties handled as scikit-learn does). Pixel
//! metrics over a whole dataset do not fit in memory as raw scores, so [`PixelHistogram`]
//! streams them into two fixed histograms (normal and anomalous pixels) of
//! [`PIXEL_BINS`] equal bins over [0, 1]; its AUROC and AP are exactly scikit-learn's on
//! the scores quantised to the bin centres, in `O(bins)` memory however many pixels.
//!
//! A metric that is undefined (a category with no anomalies, or no normal samples) is
//! `None`, never a crash or a made-up number.

/// Bins of the pixel histograms: scores are quantised to 1/65536.
pub const PIXEL_BINS: usize = 1 << 16;

/// Counts of (negatives, positives) per distinct score, highest score first.
fn curve_points(scores: &[f32], labels: &[bool]) -> Vec<(u64, u64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points: Vec<(u64, u64)> = Vec::new();
    let mut last: Option<f32> = None;
    for i in order {
        if last != Some(scores[i]) {
            points.push((0, 0));
            last = Some(scores[i]);
        }
        let p = points.last_mut().expect("pushed above");
        if labels[i] { p.1 += 1 } else { p.0 += 1 }
    }
    points
}

/// ROC AUC from per-threshold counts (highest threshold first), trapezoidal as sklearn.
fn auroc_from_points(points: &[(u64, u64)]) -> Option<f64> {
    let (neg, pos) = points
        .iter()
        .fold((0u64, 0u64), |(n, p), &(a, b)| (n + a, p + b));
    if neg == 0 || pos == 0 {
        return None;
    }
    let (mut fp, mut tp, mut area) = (0u64, 0u64, 0.0f64);
    for &(n, p) in points {
        let (fp2, tp2) = (fp + n, tp + p);
        area += (fp2 - fp) as f64 * (tp + tp2) as f64 / 2.0;
        fp = fp2;
        tp = tp2;
    }
    Some(area / (neg as f64 * pos as f64))
}

/// `Σ (R_k − R_{k−1}) · P_k` over thresholds, as sklearn's `average_precision_score`.
fn ap_from_points(points: &[(u64, u64)]) -> Option<f64> {
    let pos: u64 = points.iter().map(|p| p.1).sum();
    if pos == 0 {
        return None;
    }
    let (mut fp, mut tp, mut ap) = (0u64, 0u64, 0.0f64);
    for &(n, p) in points {
        fp += n;
        tp += p;
        if p > 0 {
            ap += p as f64 / pos as f64 * (tp as f64 / (tp + fp) as f64);
        }
    }
    Some(ap)
}

/// The best F1 over all thresholds (from sklearn's precision–recall curve).
fn f1_max_from_points(points: &[(u64, u64)]) -> Option<f64> {
    let pos: u64 = points.iter().map(|p| p.1).sum();
    if pos == 0 {
        return None;
    }
    let (mut fp, mut tp, mut best) = (0u64, 0u64, 0.0f64);
    for &(n, p) in points {
        fp += n;
        tp += p;
        if tp > 0 {
            let precision = tp as f64 / (tp + fp) as f64;
            let recall = tp as f64 / pos as f64;
            best = best.max(2.0 * precision * recall / (precision + recall));
        }
    }
    Some(best)
}

fn check(scores: &[f32], labels: &[bool]) -> bool {
    scores.len() == labels.len() && !scores.is_empty() && scores.iter().all(|s| !s.is_nan())
}

/// Area under the ROC curve; `None` if a class is missing or the inputs are unusable.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    check(scores, labels)
        .then(|| auroc_from_points(&curve_points(scores, labels)))
        .flatten()
}

/// Average precision; `None` without positives.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    check(scores, labels)
        .then(|| ap_from_points(&curve_points(scores, labels)))
        .flatten()
}

/// Maximum F1 over thresholds; `None` without positives.
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Option<f64> {
    check(scores, labels)
        .then(|| f1_max_from_points(&curve_points(scores, labels)))
        .flatten()
}

/// Streaming pixel AUROC and AP in fixed memory (see the module docs).
#[derive(Clone)]
pub struct PixelHistogram {
    negatives: Vec<u64>,
    positives: Vec<u64>,
}

impl Default for PixelHistogram {
    fn default() -> Self {
        Self {
            negatives: vec![0; PIXEL_BINS],
            positives: vec![0; PIXEL_BINS],
        }
    }
}

impl PixelHistogram {
    /// The bin of a score: `floor(clamp(s, 0, 1) · bins)`, the top edge in the last bin.
    pub fn bin(score: f32) -> usize {
        ((score.clamp(0.0, 1.0) as f64 * PIXEL_BINS as f64) as usize).min(PIXEL_BINS - 1)
    }

    /// The value every score in `bin` is counted as.
    pub fn bin_centre(bin: usize) -> f32 {
        ((bin as f64 + 0.5) / PIXEL_BINS as f64) as f32
    }

    /// Add one image's map and its ground-truth mask (same length). NaN scores are skipped.
    pub fn add(&mut self, scores: &[f32], mask: &[bool]) {
        for (&s, &m) in scores.iter().zip(mask) {
            if s.is_nan() {
                continue;
            }
            let b = Self::bin(s);
            if m {
                self.positives[b] += 1
            } else {
                self.negatives[b] += 1
            }
        }
    }

    /// Add another histogram's counts (from another thread or chunk).
    pub fn merge(&mut self, other: &PixelHistogram) {
        for (a, b) in self.negatives.iter_mut().zip(&other.negatives) {
            *a += b;
        }
        for (a, b) in self.positives.iter_mut().zip(&other.positives) {
            *a += b;
        }
    }

    fn points(&self) -> Vec<(u64, u64)> {
        (0..PIXEL_BINS)
            .rev()
            .map(|b| (self.negatives[b], self.positives[b]))
            .filter(|&(n, p)| n + p > 0)
            .collect()
    }

    /// Pixel AUROC, or `None` without both classes.
    pub fn auroc(&self) -> Option<f64> {
        auroc_from_points(&self.points())
    }

    /// Pixel average precision, or `None` without anomalous pixels.
    pub fn average_precision(&self) -> Option<f64> {
        ap_from_points(&self.points())
    }
}
