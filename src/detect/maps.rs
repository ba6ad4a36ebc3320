//! Anomaly maps (spec §7): per-tap maps, bilinear up-sampling, a Gaussian, and the way back
//! through the centre crop to the original image.

use burn::prelude::*;
use rayon::prelude::*;

use super::config::MIN_SIGMA;
use super::upsample::{source_coord_u64, upsample_bilinear};
use crate::clip::preprocess::Geometry;

/// `Σ_l (S_l[a] + 1 − S_l[n]) / 2` on the patch grid: `[B, N]`, or `None` without taps.
pub fn zero_shot_grid(local: &[Tensor<3>]) -> Option<Tensor<2>> {
    let mut total: Option<Tensor<2>> = None;
    for s in local {
        let [b, n, _] = s.dims();
        let normal = s.clone().narrow(2, 0, 1);
        let abnormal = s.clone().narrow(2, 1, 1);
        let m = (abnormal - normal + 1.0).div_scalar(2.0).reshape([b, n]);
        total = Some(match total {
            Some(t) => t + m,
            None => m,
        });
    }
    total
}

/// Up-sample grid maps `[B, grid²]` to `[B, size, size]`. Up-sampling is bilinear
/// (half-pixel centres, as `F.interpolate(align_corners=False)`) and linear, so maps are
/// summed (and fused) on the patch grid and up-sampled once: the same as the spec's sum of
/// up-sampled maps.
pub fn upsample_grid(total: Tensor<2>, grid: usize, size: usize) -> Tensor<3> {
    let [b, n] = total.dims();
    debug_assert_eq!(n, grid * grid);
    let up = upsample_bilinear(total.reshape([b, 1, grid, grid]), size);
    up.reshape([b, size, size])
}

/// The Gaussian's radius, `int(4σ + 0.5)` as `scipy.ndimage.gaussian_filter` takes it, or
/// `None` where σ blurs nothing: NaN, or below [`MIN_SIGMA`] (the kernel is a single 1, and
/// far below it `2σ²` underflows to a NaN kernel). The one rule the blur and its cost
/// check ([`super::DetectorConfig::check_cost`]) share.
pub fn kernel_radius(sigma: f64) -> Option<u64> {
    (sigma >= MIN_SIGMA).then_some((4.0 * sigma + 0.5) as u64)
}

/// The 1-D Gaussian kernel of `radius` for `sigma`.
fn kernel(sigma: f64, radius: u64) -> Vec<f32> {
    let radius = radius as i64;
    let w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// scipy's `mode="reflect"`: `d c b a | a b c d | d c b a`.
fn reflect(i: i64, n: i64) -> usize {
    let period = 2 * n;
    let mut j = i.rem_euclid(period);
    if j >= n {
        j = period - 1 - j;
    }
    j as usize
}

/// Separable Gaussian blur of a `width × height` map, as
/// `scipy.ndimage.gaussian_filter(map, sigma)` (the smoothing AnomalyCLIP applies).
///
/// Each output is its taps summed in kernel order, in both passes, so the result does not
/// depend on how the loops are laid out: columns are blurred a whole row at a time (a
/// weighted sum of rows, which vectorises), rows through one reflected copy of each row.
pub fn gaussian_blur(map: &[f32], width: usize, height: usize, sigma: f64) -> Vec<f32> {
    let Some(radius) = kernel_radius(sigma) else {
        return map.to_vec();
    };
    if width == 0 || height == 0 {
        return map.to_vec();
    }
    let k = kernel(sigma, radius);
    let r = (k.len() / 2) as i64;
    // Columns: output row y is Σ_j k[j] · input row reflect(y + j − r).
    let mut tmp = vec![0.0f32; map.len()];
    for (y, out) in tmp.chunks_exact_mut(width).enumerate() {
        for (j, &w) in k.iter().enumerate() {
            let from = reflect(y as i64 + j as i64 - r, height as i64) * width;
            for (o, &v) in out.iter_mut().zip(&map[from..from + width]) {
                *o += w * v;
            }
        }
    }
    // Rows: each row padded by its reflection, then a plain sliding dot product.
    let mut out = vec![0.0f32; map.len()];
    let mut padded = vec![0.0f32; width + 2 * r as usize];
    for (row, dst) in tmp.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        for (i, p) in padded.iter_mut().enumerate() {
            *p = row[reflect(i as i64 - r, width as i64)];
        }
        for (i, o) in dst.iter_mut().enumerate() {
            *o = k.iter().zip(&padded[i..]).map(|(w, v)| w * v).sum();
        }
    }
    out
}

/// Undo the centre crop and the resize: the `size × size` map is placed where the crop
/// came from in the resized image, and that canvas is resized (bilinearly) to the original
/// size. The strips the crop cut off were never seen by the model and get 0.
///
/// The canvas is never built: each output pixel samples it through [`source_coord`], so
/// memory is the output's alone, however long the resized image's side.
pub fn to_original(map: &[f32], g: &Geometry) -> Vec<f32> {
    let s = g.size as usize;
    let (ow, oh) = (g.original.0 as usize, g.original.1 as usize);
    // Canvas value at resized position (x, y): the map inside the crop, else 0.
    let at = |x: u64, y: u64| -> f32 {
        match (x.checked_sub(g.crop.0), y.checked_sub(g.crop.1)) {
            (Some(cx), Some(cy)) if cx < s as u64 && cy < s as u64 => {
                map[cy as usize * s + cx as usize]
            }
            _ => 0.0,
        }
    };
    let axis = |out: usize, resized: u64| -> Vec<(u64, u64, f32)> {
        (0..out)
            .map(|i| source_coord_u64(i as u64, resized, out as u64))
            .collect()
    };
    let (xs, ys) = (axis(ow, g.resized.0), axis(oh, g.resized.1));
    // Rows in parallel: at a photo's size this is a million samples, which on the
    // browser's threads would otherwise leave all but one idle.
    let mut out = vec![0.0f32; ow * oh];
    if ow == 0 {
        return out;
    }
    out.par_chunks_mut(ow)
        .zip(ys.par_iter())
        .for_each(|(row, &(y0, y1, fy))| {
            for (o, &(x0, x1, fx)) in row.iter_mut().zip(&xs) {
                let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
                let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
                *o = top * (1.0 - fy) + bottom * fy;
            }
        });
    out
}
