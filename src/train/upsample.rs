//! Bilinear up-sampling (`align_corners = false`, as PyTorch's `F.interpolate`) written as
//! two matrix products, for the training loss. Burn 0.22's GPU (cubecl) backends have no
//! backward pass for bilinear `interpolate` ("Bilinear interpolation backward is not
//! supported by JIT backend"), so training on wgpu or CUDA would stop at the first step;
//! matrix products differentiate on every backend. Bilinear resizing is separable and
//! linear, so `up(X) = R_h · X · R_wᵀ` with fixed interpolation matrices `R` exactly.

use burn::prelude::*;
use burn::tensor::TensorData;

/// The `[out, input]` matrix of 1-D linear interpolation with half-pixel centres: output
/// `i` reads source position `(i + 0.5) · input / out − 0.5`, clamped at 0, from its two
/// neighbours (the upper one clamped at the edge), as PyTorch does.
pub fn interpolation_matrix(input: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * input];
    let scale = input as f64 / out as f64;
    for i in 0..out {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l = (src - i0 as f64) as f32;
        m[i * input + i0] += 1.0 - l;
        m[i * input + i1] += l;
    }
    m
}

/// Up-sample `x` `[B, C, h, w]` to `[B, C, size, size]`, differentiably on every backend.
pub fn upsample_bilinear(x: Tensor<4>, size: usize) -> Tensor<4> {
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
