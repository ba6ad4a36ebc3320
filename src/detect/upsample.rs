//! Bilinear resizing (`align_corners = false`, as PyTorch's `F.interpolate`), formulated
//! once: [`source_coord`] is the 1-D rule, and every resize in kanoclip uses it.
//!
//! - On the device, [`upsample_bilinear`] writes it as two matrix products, for detection
//!   and for the training loss alike. Burn 0.22's GPU (cubecl) backends have no backward
//!   pass for bilinear `interpolate` ("Bilinear interpolation backward is not supported by
//!   JIT backend"), so training on wgpu or CUDA would stop at the first step with it;
//!   matrix products differentiate on every backend. Bilinear resizing is separable and
//!   linear, so `up(X) = R_h · X · R_wᵀ` with fixed interpolation matrices `R` exactly.
//! - On the host, the smoothed map goes back to the original size by the same rule
//!   ([`super::maps::to_original`]).

use burn::prelude::*;
use burn::tensor::TensorData;

/// The `[out, input]` matrix of 1-D linear interpolation with half-pixel centres: output
/// `i` reads source position `(i + 0.5) · input / out − 0.5`, clamped at 0, from its two
/// neighbours (the upper one clamped at the edge), as PyTorch does.
pub(crate) fn interpolation_matrix(input: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * input];
    for i in 0..out {
        let (i0, i1, l) = source_coord(i, input, out);
        m[i * input + i0] += 1.0 - l;
        m[i * input + i1] += l;
    }
    m
}

/// Output index `i` of `out` reads source position `(i + 0.5) · input / out − 0.5`,
/// clamped at 0: its two neighbours (the upper clamped at the edge) and the weight of the
/// upper one.
pub(crate) fn source_coord(i: usize, input: usize, out: usize) -> (usize, usize, f32) {
    let (i0, i1, l) = source_coord_u64(i as u64, input as u64, out as u64);
    (i0 as usize, i1 as usize, l)
}

/// [`source_coord`] for 64-bit sizes (a thin image's resized long side).
pub(crate) fn source_coord_u64(i: u64, input: u64, out: u64) -> (u64, u64, f32) {
    let x = ((i as f64 + 0.5) * input as f64 / out as f64 - 0.5).max(0.0);
    let last = input.saturating_sub(1);
    let i0 = (x.floor() as u64).min(last);
    let i1 = (i0 + 1).min(last);
    (i0, i1, (x - i0 as f64) as f32)
}

/// Bilinear resize of a `sw × sh` map to `dw × dh` on the host (no anti-aliasing); the
/// detector's map-back ([`super::maps::to_original`]) samples the same way without
/// building its source.
#[cfg(test)]
pub(crate) fn resize_bilinear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let xs: Vec<_> = (0..dw).map(|x| source_coord(x, sw, dw)).collect();
    let mut out = vec![0.0f32; dw * dh];
    for y in 0..dh {
        let (y0, y1, fy) = source_coord(y, sh, dh);
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let top = src[y0 * sw + x0] * (1.0 - fx) + src[y0 * sw + x1] * fx;
            let bottom = src[y1 * sw + x0] * (1.0 - fx) + src[y1 * sw + x1] * fx;
            out[y * dw + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// Up-sample `x` `[B, C, h, w]` to `[B, C, size, size]`, differentiably on every backend.
pub(crate) fn upsample_bilinear(x: Tensor<4>, size: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let r = |input: usize| {
        Tensor::<2>::from_data(
            TensorData::new(interpolation_matrix(input, size), [size, input]),
            &device,
        )
    };
    let (rh, rw) = (r(h), r(w));
    // Along the width: [B·C·h, w] · [w, size].
    let x = x.reshape([b * c * h, w]).matmul(rw.transpose());
    // Along the height: [B·C·size, h] · [h, size] on the transposed planes.
    let x = x
        .reshape([b * c, h, size])
        .swap_dims(1, 2)
        .reshape([b * c * size, h])
        .matmul(rh.transpose());
    x.reshape([b * c, size, size])
        .swap_dims(1, 2)
        .reshape([b, c, size, size])
}

/// Bilinear resize of a grid stored as rows, `x` `[h·w, C]` (positions row-major, channels
/// last), to `[oh·ow, C]`: one matrix product with the Kronecker product of the two 1-D
/// interpolation matrices, `(R_h ⊗ R_w) · x`. No layout changes, and each output sums
/// the same four weighted neighbours as PyTorch's `F.interpolate` (to rounding).
///
/// The positional embedding takes this rather than Burn's `interpolate`: with kernel fusion
/// on wgpu (burn-fusion 0.22.1), `interpolate` samples the wrong source positions (a
/// 7 → 9 bilinear resize came out up to 0.2 off on lavapipe, where the same op without
/// fusion and on flex agree with PyTorch), which took the resized-position parity case to
/// 0.19 on the taps.
pub(crate) fn resize_grid_rows(
    x: Tensor<2>,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Tensor<2> {
    let (rh, rw) = (interpolation_matrix(h, oh), interpolation_matrix(w, ow));
    let mut k = vec![0.0f32; oh * ow * h * w];
    for (y, ry) in rh.chunks_exact(h).enumerate() {
        for (x, rx) in rw.chunks_exact(w).enumerate() {
            let row = &mut k[(y * ow + x) * h * w..][..h * w];
            for (i, &a) in ry.iter().enumerate().filter(|(_, a)| **a != 0.0) {
                for (j, &b) in rx.iter().enumerate().filter(|(_, b)| **b != 0.0) {
                    row[i * w + j] = a * b;
                }
            }
        }
    }
    let device = x.device();
    Tensor::<2>::from_data(TensorData::new(k, [oh * ow, h * w]), &device).matmul(x)
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

    use super::*;
    use crate::tensor_io::to_vec;
    use crate::test_util::{backends, max_abs_diff};

    #[test]
    fn matrix_and_host_upsampling_equal_burns_bilinear_interpolate() {
        // Hand-computed: 2 → 4 with half-pixel centres reads 0, 0.25, 0.75, 1 of the way.
        assert_eq!(
            interpolation_matrix(2, 4),
            vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]
        );
        let values: Vec<f32> = (0..2 * 2 * 7 * 7)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for (kind, device) in backends() {
            let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 2, 7, 7]), &device);
            for size in [7, 16, 56] {
                // Burn's own bilinear `interpolate` on the CPU backend is the independent
                // reference; on wgpu with fusion it samples the wrong positions (see
                // `resize_grid_rows`), so every backend is held to the CPU's answer.
                let cpu = Tensor::<4>::from_data(
                    TensorData::new(values.clone(), [2, 2, 7, 7]),
                    &Device::flex(),
                );
                let want = interpolate(
                    cpu,
                    InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(false)
                        .with_output_size([size, size]),
                );
                let want = to_vec(want).unwrap();
                let got = to_vec(upsample_bilinear(x.clone(), size)).unwrap();
                let d = max_abs_diff(&got, &want);
                assert!(d < 1e-5, "{kind}: size {size} differs by {d}");
                // The host resize of the first plane, by the same rule.
                let host = resize_bilinear(&values[..49], 7, 7, size, size);
                let d = max_abs_diff(&host, &want[..size * size]);
                assert!(d < 1e-5, "{kind}: host resize to {size} differs by {d}");
            }
        }
    }

    #[test]
    fn grid_rows_resize_as_the_host_resizes_each_channel() {
        // A 5 × 7 grid of 3 channels, to 9 × 4 (up one way, down the other), and to itself.
        let (h, w, c) = (5, 7, 3);
        let values: Vec<f32> = (0..h * w * c)
            .map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.0)
            .collect();
        for (kind, device) in backends() {
            let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [h * w, c]), &device);
            for (oh, ow) in [(9, 4), (5, 7)] {
                let got = to_vec(resize_grid_rows(x.clone(), (h, w), (oh, ow))).unwrap();
                for ch in 0..c {
                    let plane: Vec<f32> = values.iter().skip(ch).step_by(c).copied().collect();
                    let want = resize_bilinear(&plane, w, h, ow, oh);
                    let mine: Vec<f32> = got.iter().skip(ch).step_by(c).copied().collect();
                    let d = max_abs_diff(&mine, &want);
                    assert!(d < 1e-5, "{kind}: {oh}×{ow}, channel {ch} differs by {d}");
                }
            }
        }
    }
}
