//! A dense layer in one gemm on flex: the adapter of `kanoclip_kernels::linear`, and its
//! test against Burn's `Linear`.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;
use kanoclip_kernels::linear::{self as kernel, Matrix};

use super::{flex_f32, from_flex};

/// The 2-D matrix a flex tensor's layout describes, when its strides are non-negative.
fn matrix(t: &FlexTensor) -> Option<Matrix> {
    let l = t.layout();
    let (dims, strides) = (l.shape(), l.strides());
    if dims.num_dims() != 2 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    Some(Matrix {
        rows: dims[0],
        cols: dims[1],
        rs: strides[0] as usize,
        cs: strides[1] as usize,
        offset: l.start_offset(),
    })
}

/// `layer.forward(x)` for `x = [.., d_in]`: the bias rows plus `x w` in one gemm on flex
/// (`x` contiguous, f32 weights); `otherwise(x)` anywhere else (wgpu, autodiff, int8).
pub fn linear<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    otherwise: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let run = || {
        let xt = flex_f32(&x)?;
        let w = flex_f32(&layer.weight.val())?;
        let bias = match &layer.bias {
            Some(b) => Some(flex_f32(&b.val())?),
            None => None,
        };
        let dims = x.dims();
        let d_in = *dims.last()?;
        let rows = dims[..D - 1].iter().product::<usize>();
        let (start, end) = xt.layout().contiguous_offsets()?;
        if end - start != rows * d_in {
            return None;
        }
        let xm = Matrix {
            rows,
            cols: d_in,
            rs: d_in,
            cs: 1,
            offset: start,
        };
        let wm = matrix(&w)?;
        let b = match &bias {
            Some(b) => {
                let (s, e) = b.layout().contiguous_offsets()?;
                Some(&b.storage::<f32>()[s..e])
            }
            None => None,
        };
        let out = kernel::linear(xt.storage(), xm, w.storage(), wm, b)?;
        let mut shape = dims;
        shape[D - 1] = wm.cols;
        Some(from_flex(FlexTensor::from_data(TensorData::new(
            out, shape,
        ))))
    };
    match run() {
        Some(y) => y,
        None => otherwise(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::layers;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn linear_matches_burns_with_and_without_bias_and_for_views() {
        let dev = Device::flex();
        for (b, t, d_in, d_out) in [
            (1, 1, 1, 1),
            (2, 5, 12, 7),
            (1, 197, 64, 192),
            (3, 17, 40, 9),
        ] {
            let x = Tensor::<3>::random([b, t, d_in], Distribution::Normal(0.0, 2.0), &dev);
            let w = Tensor::<2>::random([d_in, d_out], Distribution::Default, &dev);
            let bias = Tensor::<1>::random([d_out], Distribution::Default, &dev);
            for layer in [
                layers::linear(w.clone(), Some(bias)),
                layers::linear(w.clone(), None),
            ] {
                let want = layer.forward(x.clone()).into_data();
                let got = linear(&layer, x.clone(), |_| unreachable!()).into_data();
                got.assert_approx_eq::<f32>(&want, Tolerance::rel_abs(1e-5, 1e-5));
            }
            // A transposed weight view, and an input that starts part-way into its buffer
            // (contiguous when b = 1: the kernel's; Burn's otherwise).
            let wt = Tensor::<2>::random([d_out, d_in], Distribution::Default, &dev);
            let layer = layers::linear(wt.swap_dims(0, 1), None);
            let wide = Tensor::<3>::random([b, t + 1, d_in], Distribution::Default, &dev);
            let view = wide.narrow(1, 1, t);
            let want = layer.forward(view.clone()).into_data();
            let got = if b == 1 {
                linear(&layer, view, |_| unreachable!())
            } else {
                linear(&layer, view, |y| layer.forward(y))
            };
            let got = got.into_data();
            got.assert_approx_eq::<f32>(&want, Tolerance::rel_abs(1e-5, 1e-5));
        }
    }

    #[test]
    fn linear_leaves_autodiff_and_strided_inputs_to_burn() {
        let dev = Device::flex();
        let layer = layers::linear(Tensor::<2>::ones([4, 2], &dev), None);
        // Columns of a wider tensor are not rows of one stride: Burn's path.
        let x = Tensor::<3>::ones([1, 4, 3], &dev).swap_dims(1, 2);
        let y = linear(&layer, x, |x| x.narrow(2, 0, 2).mul_scalar(7.0));
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), vec![7.0; 6]);
        let ad = dev.autodiff();
        let layer = layers::linear(Tensor::<2>::ones([4, 2], &ad), None);
        let y = linear(&layer, Tensor::<3>::ones([1, 3, 4], &ad), |x| {
            x.narrow(2, 0, 2).mul_scalar(7.0)
        });
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), vec![7.0; 6]);
    }
}
