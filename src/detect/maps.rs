//! Anomaly maps (spec §7): per-tap maps, bilinear up-sampling, a Gaussian, and the way back
//! through the centre crop to the original image.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::clip::preprocess::Geometry;

/// `Σ_l up((S_l[a] + 1 − S_l[n]) / 2)` for a batch: `[B, S, S]`, or `None` without taps.
/// Each tap's map is up-sampled bilinearly (half-pixel centres, as
/// `F.interpolate(align_corners=False)`).
pub fn summed_maps(local: &[Tensor<3>], grid: usize, size: usize) -> Option<Tensor<3>> {
    let mut total: Option<Tensor<4>> = None;
    for s in local {
        let [b, n, _] = s.dims();
        let normal = s.clone().narrow(2, 0, 1);
        let abnormal = s.clone().narrow(2, 1, 1);
        let m = (abnormal - normal + 1.0)
            .div_scalar(2.0)
            .reshape([b, 1, grid, grid]);
        debug_assert_eq!(n, grid * grid);
        let up = interpolate(
            m,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([size, size]),
        );
        total = Some(match total {
            Some(t) => t + up,
            None => up,
        });
    }
    let total = total?;
    let [b, _, _, _] = total.dims();
    Some(total.reshape([b, size, size]))
}

/// The 1-D Gaussian kernel `scipy.ndimage.gaussian_filter` uses: radius `int(4σ + 0.5)`.
fn kernel(sigma: f64) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as i64;
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
pub fn gaussian_blur(map: &[f32], width: usize, height: usize, sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return map.to_vec();
    }
    let k = kernel(sigma);
    // Columns first, then rows: the same 1-D pass with the strides swapped.
    let tmp = blur_1d(map, &k, (width, 1), (height, width));
    blur_1d(&tmp, &k, (height, width), (width, 1))
}

/// Convolve every line of a 2-D map with `k` along one axis, reflecting at its ends.
/// `(lines, line_stride)` walks the lines, `(len, step)` walks along each line.
fn blur_1d(
    src: &[f32],
    k: &[f32],
    (lines, line_stride): (usize, usize),
    (len, step): (usize, usize),
) -> Vec<f32> {
    let r = (k.len() / 2) as i64;
    let mut out = vec![0.0f32; src.len()];
    for line in 0..lines {
        for i in 0..len {
            let acc: f32 = k
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    w * src
                        [line * line_stride + reflect(i as i64 + j as i64 - r, len as i64) * step]
                })
                .sum();
            out[line * line_stride + i * step] = acc;
        }
    }
    out
}

/// Bilinear resize with half-pixel centres (`F.interpolate(mode="bilinear",
/// align_corners=False)`, no anti-aliasing).
pub fn resize_bilinear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let coord = |d: usize, s: usize, n: usize| -> (usize, usize, f32) {
        let x = ((d as f64 + 0.5) * s as f64 / n as f64 - 0.5).max(0.0);
        let x0 = (x.floor() as usize).min(s - 1);
        let x1 = (x0 + 1).min(s - 1);
        (x0, x1, (x - x0 as f64) as f32)
    };
    let mut out = vec![0.0f32; dw * dh];
    for y in 0..dh {
        let (y0, y1, fy) = coord(y, sh, dh);
        for x in 0..dw {
            let (x0, x1, fx) = coord(x, sw, dw);
            let top = src[y0 * sw + x0] * (1.0 - fx) + src[y0 * sw + x1] * fx;
            let bottom = src[y1 * sw + x0] * (1.0 - fx) + src[y1 * sw + x1] * fx;
            out[y * dw + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// Undo the centre crop and the resize: the `size × size` map is placed where the crop
/// came from in the resized image, and that canvas is resized to the original size. The
/// strips the crop cut off were never seen by the model and get 0.
pub fn to_original(map: &[f32], g: &Geometry) -> Vec<f32> {
    let s = g.size as usize;
    let (rw, rh) = (g.resized.0 as usize, g.resized.1 as usize);
    let (cx, cy) = (g.crop.0 as usize, g.crop.1 as usize);
    let mut canvas = vec![0.0f32; rw * rh];
    for y in 0..s {
        canvas[(cy + y) * rw + cx..(cy + y) * rw + cx + s]
            .copy_from_slice(&map[y * s..(y + 1) * s]);
    }
    let (ow, oh) = (g.original.0 as usize, g.original.1 as usize);
    if (ow, oh) == (rw, rh) {
        canvas
    } else {
        resize_bilinear(&canvas, rw, rh, ow, oh)
    }
}
