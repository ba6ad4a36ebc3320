//! AUPRO: the area under the per-region-overlap curve up to a false-positive-rate limit
//! (0.3 in spec §8), normalised by that limit, defined as anomalib's `AUPRO` computes it:
//!
//! - regions are the 8-connected components of each ground-truth mask (anomalib labels
//!   them with OpenCV's `connectedComponents`, connectivity 8);
//! - at each distinct score threshold, FPR is the share of background pixels at or above
//!   it, and PRO is the mean over all regions of the share of the region's pixels at or
//!   above it (a pixel of region r weighs `1 / |r|`);
//! - the curve starts at (0, 0), is cut at the limit with linear interpolation, and its
//!   trapezoidal area is divided by the limit.
//!
//! [`aupro`] keeps every score (exact, for small inputs and tests). [`ProHistogram`] streams
//! a whole data set in fixed memory: per score bin (the same 65,536 bins over [0, 1] as
//! [`super::metrics::PixelHistogram`]) it keeps the background-pixel count and the summed
//! region weights, so it equals [`aupro`] on scores quantised to the bin centres.
//!
//! The connected-component labelling is written here (a flood fill of a dozen lines)
//! rather than taken from `imageproc`, whose dependency tree (nalgebra, rand, fonts) is
//! far larger than the function.
//!
//! Undefined cases (no region, or no background pixel) are `None`; anomalib returns 0
//! there, which would read as a measured result.

use super::metrics::{PIXEL_BINS, PixelHistogram};

/// Labels of the 8-connected components of `mask` (`width × height`, row-major):
/// 0 for background, `1..=n` for the regions, and `n`.
pub fn regions(mask: &[bool], width: usize) -> (Vec<u32>, u32) {
    let height = mask.len().checked_div(width).unwrap_or(0);
    let mut labels = vec![0u32; mask.len()];
    let mut n = 0;
    let mut stack = Vec::new();
    for start in 0..width * height {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        n += 1;
        labels[start] = n;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for (dx, dy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if mask[j] && labels[j] == 0 {
                    labels[j] = n;
                    stack.push(j);
                }
            }
        }
    }
    (labels, n)
}

/// Per pixel: `(is background, region weight 1/|r|)`, and the number of regions.
fn weights(mask: &[bool], width: usize) -> (Vec<f64>, u32) {
    let (labels, n) = regions(mask, width);
    let mut sizes = vec![0u64; n as usize + 1];
    for &l in &labels {
        sizes[l as usize] += 1;
    }
    let w = labels
        .iter()
        .map(|&l| {
            if l == 0 {
                0.0
            } else {
                1.0 / sizes[l as usize] as f64
            }
        })
        .collect();
    (w, n)
}

/// The area of a curve given by `(background count, region weight)` per distinct
/// threshold, highest first.
fn area(
    points: impl Iterator<Item = (u64, f64)>,
    bg: u64,
    regions: u64,
    limit: f64,
) -> Option<f64> {
    if bg == 0 || regions == 0 || !(limit > 0.0 && limit <= 1.0) {
        return None;
    }
    let (mut fp, mut pro_sum) = (0u64, 0.0f64);
    let (mut x0, mut y0, mut total) = (0.0f64, 0.0f64, 0.0f64);
    for (n, w) in points {
        fp += n;
        pro_sum += w;
        let x = (fp as f64 / bg as f64).min(1.0);
        let y = (pro_sum / regions as f64).min(1.0);
        if x > limit {
            let y_lim = y0 + (y - y0) * (limit - x0) / (x - x0);
            return Some((total + (limit - x0) * (y0 + y_lim) / 2.0) / limit);
        }
        total += (x - x0) * (y0 + y) / 2.0;
        (x0, y0) = (x, y);
    }
    // The curve ends at FPR 1 ≥ limit, so this is reached only when x == limit exactly.
    Some(total / x0.max(f64::MIN_POSITIVE))
}

/// Exact AUPRO over images (`maps[i]` and `masks[i]` of equal length, `width` wide).
/// `None` if there is no region, no background, or the inputs disagree in size.
pub fn aupro(maps: &[&[f32]], masks: &[&[bool]], width: usize, limit: f64) -> Option<f64> {
    if maps.len() != masks.len() || width == 0 {
        return None;
    }
    let mut pixels: Vec<(f32, bool, f64)> = Vec::new();
    let (mut bg, mut count) = (0u64, 0u64);
    for (scores, mask) in maps.iter().zip(masks) {
        if scores.len() != mask.len() || mask.len() % width != 0 {
            return None;
        }
        let (w, n) = weights(mask, width);
        count += u64::from(n);
        for ((&s, &m), w) in scores.iter().zip(mask.iter()).zip(w) {
            if !s.is_nan() {
                bg += u64::from(!m);
                pixels.push((s, !m, w));
            }
        }
    }
    pixels.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points: Vec<(u64, f64)> = Vec::new();
    let mut last = None;
    for (s, is_bg, w) in pixels {
        if last != Some(s) {
            points.push((0, 0.0));
            last = Some(s);
        }
        let p = points.last_mut().expect("pushed above");
        p.0 += u64::from(is_bg);
        p.1 += w;
    }
    area(points.into_iter(), bg, count, limit)
}

/// Streaming AUPRO in fixed memory (see the module docs).
#[derive(Clone)]
pub struct ProHistogram {
    background: Vec<u64>,
    weight: Vec<f64>,
    regions: u64,
}

impl Default for ProHistogram {
    fn default() -> Self {
        Self {
            background: vec![0; PIXEL_BINS],
            weight: vec![0.0; PIXEL_BINS],
            regions: 0,
        }
    }
}

impl ProHistogram {
    /// Add one image's map and mask (same length, `width` wide). NaN scores are skipped.
    pub fn add(&mut self, scores: &[f32], mask: &[bool], width: usize) {
        if width == 0 || scores.len() != mask.len() {
            return;
        }
        let (w, n) = weights(mask, width);
        self.regions += u64::from(n);
        for ((&s, &m), w) in scores.iter().zip(mask).zip(w) {
            if s.is_nan() {
                continue;
            }
            let b = PixelHistogram::bin(s);
            self.background[b] += u64::from(!m);
            self.weight[b] += w;
        }
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &ProHistogram) {
        self.regions += other.regions;
        for (a, b) in self.background.iter_mut().zip(&other.background) {
            *a += b;
        }
        for (a, b) in self.weight.iter_mut().zip(&other.weight) {
            *a += b;
        }
    }

    /// AUPRO up to `limit` (0.3 in the papers).
    pub fn aupro(&self, limit: f64) -> Option<f64> {
        let bg = self.background.iter().sum();
        let points = (0..PIXEL_BINS)
            .rev()
            .map(|b| (self.background[b], self.weight[b]))
            .filter(|&(n, w)| n > 0 || w > 0.0);
        area(points, bg, self.regions, limit)
    }
}
