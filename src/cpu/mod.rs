//! Fused kernels for the CPU backend (burn-flex), behind the same Burn tensors the model
//! code passes everywhere else.
//!
//! Why: in the #10 profile of a B/16 detect, matrix products ran as fast as PyTorch's
//! (gemm against MKL, 103–126 GFLOP/s each on 2 threads), and what kept kanoclip behind
//! was the work between them: per-element libm `exp` in the attention softmax and in
//! QuickGELU's sigmoid, the copies that split the fused `in_proj` output into heads and
//! merge them back, and one fresh, zeroed buffer per element-wise op. These kernels do
//! that work in one pass each, reading the heads where `in_proj` wrote them.
//!
//! Each entry returns the input back (or `None`) when the tensors are not plain f32 flex
//! tensors: wgpu, CUDA and autodiff take Burn's own ops in the callers, which are the
//! reference these kernels are tested against (and the parity fixtures run through both).
//!
//! Every build with `flex`, the browser's CPU fallback included: the loops live in the
//! crate `kanoclip-kernels` (src/cpu/kernels), which the size-optimised browser build
//! compiles at -O3 with SIMD128 (its own profile override); their jobs run on rayon's
//! pool, the one burn-flex uses, or on the calling thread where wasm32 has no threads.

mod attention;
mod linear;

use kanoclip_kernels::exp;

pub use attention::attend;
pub use linear::linear;

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use burn_flex::{Flex, FlexTensor};

/// The flex tensor behind `x`, when `x` is an f32 tensor on flex outside autodiff.
fn flex_f32<const D: usize>(x: &Tensor<D>) -> Option<FlexTensor> {
    if x.is_autodiff() || x.dtype() != DType::F32 {
        return None;
    }
    x.clone().try_into_primitive::<Flex>().ok()
}

/// Whether `x` is a plain f32 tensor on flex (outside autodiff), where the kernels here
/// and burn-flex's own fused ops apply.
pub fn is_flex<const D: usize>(x: &Tensor<D>) -> bool {
    flex_f32(x).is_some()
}

fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

/// QuickGELU, `x · σ(1.702 x)`, in one pass, in place when `x` holds its buffer alone
/// (as `c_fc`'s fresh output does); `otherwise(x)` off flex.
pub fn quick_gelu<const D: usize>(
    x: Tensor<D>,
    otherwise: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let Some(mut t) = flex_f32(&x) else {
        return otherwise(x);
    };
    drop(x);
    let whole = t.layout().contiguous_offsets() == Some((0, t.layout().num_elements()));
    if whole && let Some(s) = t.try_storage_mut::<f32>() {
        exp::quick_gelu(&mut s[..]);
        return from_flex(t);
    }
    let shape = t.layout().shape().clone();
    let Ok(mut v) = t.into_data().try_into_vec::<f32>() else {
        unreachable!("an f32 tensor's data is f32")
    };
    exp::quick_gelu(&mut v);
    from_flex(FlexTensor::from_data(TensorData::new(v, shape)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::sigmoid;

    fn generic(x: Tensor<3>) -> Tensor<3> {
        x.clone() * sigmoid(x.mul_scalar(1.702))
    }

    #[test]
    fn quick_gelu_matches_burns_ops_owned_shared_and_strided() {
        let dev = Device::flex();
        let x = Tensor::<3>::random(
            [2, 5, 37],
            burn::tensor::Distribution::Normal(0.0, 3.0),
            &dev,
        );
        let want = generic(x.clone()).into_data();
        // Shared (the clone above holds the buffer too): copied, the input untouched.
        let before = x.clone().into_data();
        let got = quick_gelu(x.clone(), |_| unreachable!()).into_data();
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-6));
        x.clone().into_data().assert_eq(&before, true);
        // Owned: in place.
        let got = quick_gelu(x.clone() + 0.0, |_| unreachable!()).into_data();
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-6));
        // Strided view.
        let t = x.swap_dims(1, 2);
        let got = quick_gelu(t.clone(), |_| unreachable!()).into_data();
        got.assert_approx_eq::<f32>(
            &generic(t).into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn quick_gelu_leaves_autodiff_tensors_to_burn() {
        let dev = Device::flex().autodiff();
        let x = Tensor::<3>::ones([1, 2, 3], &dev);
        let y = quick_gelu(x, |x| x.mul_scalar(7.0));
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), vec![7.0; 6]);
    }
}

#[cfg(test)]
mod exp_tests {
    use kanoclip_kernels::exp::{exp, quick_gelu, softmax_rows};

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm_over_its_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp(x), x.exp()));
            x += 0.000_731;
        }
        for x in [0.0f32, -0.0, 1.0, -1.0, 1e-30, -1e-30, 0.5, 88.0, -87.0] {
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_and_keeps_nan() {
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 2e-38);
        assert!(exp(f32::NEG_INFINITY) < 2e-38);
    }

    #[test]
    fn softmax_rows_match_the_textbook_formula() {
        // Row lengths around the 8-lane chunking, and a row with a large spread.
        for len in [1usize, 7, 8, 9, 197] {
            let rows = 3;
            let s: Vec<f32> = (0..rows * len)
                .map(|i| ((i * 7919) % 113) as f32 * 0.37 - 20.0)
                .collect();
            let mut got = s.clone();
            softmax_rows(&mut got, len);
            for (r, row) in s.chunks(len).enumerate() {
                let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                for (j, &x) in row.iter().enumerate() {
                    let want = (x as f64 - max).exp() / z;
                    let g = got[r * len + j] as f64;
                    assert!(
                        (g - want).abs() <= 1e-6 * want.max(1e-3),
                        "len {len}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn quick_gelu_matches_its_formula() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 * 0.05).collect();
        let mut got = xs.clone();
        quick_gelu(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x as f64 / (1.0 + (-1.702 * x as f64).exp());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * want.abs().max(1e-2),
                "{x}: {g} vs {want}"
            );
        }
    }
}
