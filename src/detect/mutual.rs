//! Mutual scoring (spec §11, after MuSc): each image of a group is scored against the
//! others, with no text and no references. Normal patches find close matches in other
//! images of the same product; defects are rare, and find none.
//!
//! For each tap (the raw original-path block output, no class token):
//! 1. each image's `P × W` token map is layer-normalised over all its values (no affine);
//! 2. for each degree r ∈ [`DEGREES`], each token becomes the mean of its r × r
//!    neighbourhood on the patch grid (zero padding counted, as MuSc's unfold-and-pool);
//! 3. for image i, patch p and every other image j, `d_j = min_q ‖z_p − z_q‖₂`; the patch's
//!    score is the mean of the smallest [`INTERVAL`] of the N − 1 values (at least one).
//!
//! The scores are averaged over taps and degrees and divided by `√(2W)`: two independent
//! layer-normalised tokens lie about `√(2W)` apart (each value has unit variance), so the
//! map lands on roughly the zero-shot map's `[0, 1]` scale, whatever the backbone's width.
//! The spec leaves the scale open; a constant factor changes no ranking and no AUROC, and
//! this one lets the heatmaps' colours, the default threshold's neighbourhood and §10's
//! fusion rule mean the same as in the other modes.
//!
//! Everything runs on the detector's device: one batched matrix product per block of image
//! pairs (each pair once: its row minima score i against j, its column minima j against i),
//! and the interval mean by repeated minima (no sort, which GPU backends read back).

use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The neighbourhood sizes of the aggregation (MuSc's LNAMD degrees).
pub const DEGREES: [usize; 3] = [1, 3, 5];
/// The share of the other images whose distances are averaged (MuSc's 30 % interval).
pub const INTERVAL: f64 = 0.3;
/// The fewest images a group may hold: with two, each image has a single neighbour and a
/// defect in either is "shared" by the other's absence.
pub const MIN_GROUP: usize = 3;
/// The most images a group may hold (the device holds every image's tokens at once).
pub const MAX_GROUP: usize = 256;
/// The layer norm's ε (PyTorch's `F.layer_norm` default).
const EPS: f64 = 1e-5;
/// The most bytes one slice of pair products may take on the device.
const PAIR_BYTES: usize = 256 << 20;
/// Stands for "no distance" (an image against itself): larger than any real one, and
/// finite, because WGSL may assume there is no infinity.
const FAR: f32 = f32::MAX;

/// How mutual scoring runs and enters the detection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutual {
    /// λ in `map = (1 − λ) · other + λ · mutual`, where `other` is the zero-shot map (or the
    /// few-shot fused one, with a memory set): 1, the default, is the mutual map alone,
    /// as MuSc's figures are.
    pub weight: f64,
    /// The most images scored together: larger groups are split evenly
    /// ([`group_sizes`]).
    pub group: usize,
}

/// The default group size G, from `benches/mutual.rs` on a random ViT-B/16 at 224 (flex,
/// 2 cores; random weights, so mechanics, not accuracy on real defects): on 64 synthetic
/// test images per texture, G = 8, 16, 32, 64 gave 86.4, 96.3, 98.4, 99.2 % pixel AUROC at
/// 332, 316, 387, 546 ms per image (zero-shot: 77.5 % at 320 ms). 32 keeps most of the
/// gain of scoring whole categories at about 1.2× a zero-shot detect; the pair products
/// grow with G, and on ViT-L/14 at 518 (1369 patches) they grow faster.
pub const DEFAULT_GROUP: usize = 32;

impl Default for Mutual {
    fn default() -> Self {
        Mutual {
            weight: 1.0,
            group: DEFAULT_GROUP,
        }
    }
}

impl Mutual {
    /// λ in [0, 1], the group in `MIN_GROUP..=MAX_GROUP`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(Error::Invalid(format!(
                "the mutual weight {} is not in [0, 1]",
                self.weight
            )));
        }
        if !(MIN_GROUP..=MAX_GROUP).contains(&self.group) {
            return Err(Error::Invalid(format!(
                "the mutual group size {} is not in {MIN_GROUP}..={MAX_GROUP}",
                self.group
            )));
        }
        Ok(())
    }
}

/// How many of the other images' distances a patch's score averages: the smallest
/// [`INTERVAL`] of `n − 1`, at least one.
pub fn interval_len(n: usize) -> usize {
    ((INTERVAL * n.saturating_sub(1) as f64).floor() as usize).max(1)
}

/// Split `n` images into groups of at most `group`, as evenly as possible (sizes differ by
/// at most one), so that no group is left with a few stragglers: 33 with G = 32 gives
/// 17 + 16, not 32 + 1. Groups of fewer than [`MIN_GROUP`] arise only when `n` is that
/// small.
pub fn group_sizes(n: usize, group: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let groups = n.div_ceil(group.max(1));
    (0..groups)
        .map(|i| n / groups + usize::from(i < n % groups))
        .collect()
}

/// The mutual map of a group on the patch grid, `[N, P]`, from each tap's raw tokens
/// `[N, P, W]` (no class token), on a `grid × grid` patch grid. `None` without taps.
pub fn mutual_grid(taps: &[Tensor<3>], grid: usize) -> Option<Tensor<2>> {
    let mut total: Option<Tensor<2>> = None;
    let mut width = 1;
    for tokens in taps {
        let [_, _, w] = tokens.dims();
        width = w;
        let z = layer_norm(tokens.clone());
        for r in DEGREES {
            let s = interval_mean(aggregate(z.clone(), grid, r), PAIR_BYTES);
            total = Some(match total {
                Some(t) => t + s,
                None => s,
            });
        }
    }
    let count = (taps.len() * DEGREES.len()) as f64;
    total.map(|t| t.div_scalar(count * (2.0 * width as f64).sqrt()))
}

/// Each image's token map normalised over all its values together, without affine.
fn layer_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2).mean_dim(1);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2).mean_dim(1);
    centred / var.add_scalar(EPS).sqrt()
}

/// The mean over each token's `r × r` neighbourhood on the grid, zeros counted at the
/// border; `r = 1` is the token itself. As `avg_pool2d` with stride 1, padding `r / 2` and
/// `count_include_pad`, written as sums of shifted slices, one axis at a time: only
/// concatenation, slicing and additions, which every backend has already (a pooling op
/// would add its own kernels to the browser's download, about 40 KB gzipped).
fn aggregate(z: Tensor<3>, grid: usize, r: usize) -> Tensor<3> {
    if r == 1 {
        return z;
    }
    let [n, p, w] = z.dims();
    // Patches are row-major on the grid: [N, row, column, W].
    let mut x = z.reshape([n, grid, grid, w]);
    for axis in [1, 2] {
        let mut pad = x.dims();
        pad[axis] = r / 2;
        let zeros = Tensor::<4>::zeros(pad, &x.device());
        let padded = Tensor::cat(vec![zeros.clone(), x, zeros], axis);
        x = (1..r).fold(padded.clone().narrow(axis, 0, grid), |sum, k| {
            sum + padded.clone().narrow(axis, k, grid)
        });
    }
    x.div_scalar((r * r) as f64).reshape([n, p, w])
}

/// Where each ordered pair's distances sit in the stacked minima, for the pairs `(i, j)`,
/// `i < j`, of `n` images in order (i, then j): `(i, j)` is row `pair` of the row minima,
/// `(j, i)` row `pairs + pair` of the column minima, `(i, i)` the last row (far).
fn pair_layout(n: usize) -> Vec<i64> {
    let pairs: Vec<[usize; 2]> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| [i, j]))
        .collect();
    let m = pairs.len();
    let mut index = vec![(2 * m) as i64; n * n];
    for (k, &[i, j]) in pairs.iter().enumerate() {
        index[i * n + j] = k as i64;
        index[j * n + i] = (m + k) as i64;
    }
    index
}

/// Spec §11's mutual score of every patch of every image, `[N, P]`, from tokens `[N, P, W]`.
/// Image i's products with every later image come from one matrix product of the later
/// images' tokens (a contiguous slice, no copy) with i's, `[(N − i − 1)·P, P]`; its
/// minima over i's patches score the later images against i, and over theirs score i
/// against each of them. The products are taken in slices of at most `pair_bytes`.
fn interval_mean(z: Tensor<3>, pair_bytes: usize) -> Tensor<2> {
    let [n, p, w] = z.dims();
    let device = z.device();
    let flat = z.reshape([n * p, w]);
    let norms = flat.clone().square().sum_dim(1); // [N·P, 1]
    let index = pair_layout(n);
    let per_slice = (pair_bytes / (4 * p * p).max(1)).max(1);
    let ints = |v: Vec<i64>| {
        let len = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
    };
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    for i in 0..n.saturating_sub(1) {
        let mine = flat.clone().narrow(0, i * p, p); // [P, W]
        let mine_t = mine.transpose();
        let mine_norms = norms.clone().narrow(0, i * p, p).reshape([1, 1, p]);
        let mut j = i + 1;
        while j < n {
            let c = per_slice.min(n - j);
            let theirs = flat.clone().narrow(0, j * p, c * p); // [c·P, W]
            let their_norms = norms.clone().narrow(0, j * p, c * p).reshape([c, p, 1]);
            // d2[k, q, p]: image j + k's patch q against image i's patch p.
            let d2 = theirs
                .matmul(mine_t.clone())
                .reshape([c, p, p])
                .mul_scalar(-2.0)
                + their_norms
                + mine_norms.clone();
            rows.push(d2.clone().min_dim(1).reshape([c, p])); // i's patches against j + k
            cols.push(d2.min_dim(2).reshape([c, p])); // j + k's patches against i
            j += c;
        }
    }
    let far = Tensor::<2>::full([1, p], FAR, &device);
    let stacked = Tensor::cat([rows, cols, vec![far]].concat(), 0);
    // d[i, j, p]: squared distance of image i's patch p to its nearest patch of image j.
    let mut d = stacked.select(0, ints(index)).reshape([n, n, p]);
    let k = interval_len(n);
    let mut sum = Tensor::<2>::zeros([n, p], &device);
    let images = Tensor::<1, Int>::arange(0..n as i64, &device).reshape([1, n, 1]);
    for step in 0..k {
        let nearest = d.clone().min_dim(1); // [N, 1, P]
        sum = sum + nearest.clone().clamp_min(0.0).sqrt().reshape([n, p]);
        if step + 1 < k {
            // Take the nearest image out (its index, so that equal distances count once).
            let at = d.clone().argmin(1); // [N, 1, P]
            let taken = images.clone().expand([n, n, p]).equal(at.expand([n, n, p]));
            d = d.mask_fill(taken, FAR);
        }
    }
    sum.div_scalar(k as f64)
}

#[cfg(test)]
mod tests;
