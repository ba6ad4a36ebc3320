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
//! Native builds only (feature `native`; their jobs run on rayon's pool, the one burn-flex
//! uses). The browser build keeps Burn's ops on its CPU fallback: it has no threads, its
//! code is size-optimised (`opt-level = "z"` leaves these loops unvectorised), and these
//! kernels took the module past its 3.0 MB gzipped budget (by 1 KB) for a speed-up that
//! was not measured there.

mod attention;
mod exp;

pub use attention::attend;

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

/// A raw pointer that jobs on other threads may write through, each to its own part.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: the kernels hand each parallel job a disjoint part of the buffer.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
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
