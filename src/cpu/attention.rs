//! Multi-head self-attention straight from the fused `in_proj` output: the adapter of
//! `kanoclip_kernels::attention` (which reads each head where `in_proj` wrote it) to flex
//! tensors, and its test against Burn's ops, which split `[b, t, 3w]` into q, k and v,
//! copy each to `[b, heads, t, hd]`, and copy the result back to `[b, t, w]`.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;
use kanoclip_kernels::attention::{self, Fused};

use super::{flex_f32, from_flex};

/// `softmax(a bᵀ / √hd) c` per head, merged to `[b, t, w]`, from `fused = [b, t, 3w]`
/// (q, k, v side by side, `heads` heads each): `(a, b, c) = (q, k, v)`, or `(v, v, v)`
/// for CLIP-VV's V-V path (`vv`). `None` off flex, or for shapes it does not take.
pub fn attend(fused: &Tensor<3>, heads: usize, vv: bool) -> Option<Tensor<3>> {
    let x = flex_f32(fused)?;
    let [b, t, w3] = fused.dims();
    if w3 % 3 != 0 {
        return None;
    }
    let layout = x.layout();
    let strides = layout.strides();
    if strides[2] != 1 || strides[1] < 1 || strides[0] < 0 {
        return None;
    }
    let shape = Fused {
        b,
        t,
        w: w3 / 3,
        heads,
        batch_stride: strides[0] as usize,
        row_stride: strides[1] as usize,
        offset: layout.start_offset(),
    };
    let out = attention::attend(x.storage(), shape, vv)?;
    Some(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        [b, t, w3 / 3],
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, Tolerance};

    /// Burn's own ops on split heads: the reference.
    fn reference(fused: Tensor<3>, heads: usize, vv: bool) -> Tensor<3> {
        let [b, t, w3] = fused.dims();
        let w = w3 / 3;
        let split = |y: Tensor<3>| y.reshape([b, t, heads, w / heads]).swap_dims(1, 2);
        let q = split(fused.clone().narrow(2, 0, w));
        let k = split(fused.clone().narrow(2, w, w));
        let v = split(fused.narrow(2, 2 * w, w));
        let (a, k) = if vv { (v.clone(), v.clone()) } else { (q, k) };
        let s = ((w / heads) as f64).powf(-0.5);
        softmax(a.matmul(k.swap_dims(2, 3)).mul_scalar(s), 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, w])
    }

    #[test]
    fn attend_matches_burns_ops_both_paths_and_strided_input() {
        let dev = Device::flex();
        for (b, t, w, heads) in [(1, 5, 12, 3), (3, 17, 48, 4), (2, 197, 64, 1)] {
            let fused = Tensor::<3>::random([b, t, 3 * w], Distribution::Normal(0.0, 2.0), &dev);
            for vv in [false, true] {
                let got = attend(&fused, heads, vv).expect("flex f32").into_data();
                let want = reference(fused.clone(), heads, vv).into_data();
                got.assert_approx_eq::<f32>(&want, Tolerance::rel_abs(1e-5, 1e-5));
            }
            // A view: rows of a wider tensor, starting part-way in.
            let wide = Tensor::<3>::random([b, t, 3 * w + 5], Distribution::Default, &dev);
            let view = wide.narrow(2, 5, 3 * w);
            let got = attend(&view, heads, false).expect("strided").into_data();
            let want = reference(view, heads, false).into_data();
            got.assert_approx_eq::<f32>(&want, Tolerance::rel_abs(1e-5, 1e-5));
        }
    }

    #[test]
    fn attend_declines_what_it_does_not_take() {
        let dev = Device::flex();
        let x = Tensor::<3>::ones([1, 4, 12], &dev);
        assert!(attend(&x, 0, false).is_none());
        assert!(attend(&x, 2, false).is_some());
        let columns = Tensor::<3>::ones([1, 12, 4], &dev).swap_dims(1, 2);
        assert!(attend(&columns, 2, false).is_none());
        assert!(attend(&Tensor::<3>::ones([1, 4, 10], &dev), 2, false).is_none());
        assert!(
            attend(
                &Tensor::<3>::ones([1, 4, 12], &dev.clone().autodiff()),
                2,
                false
            )
            .is_none()
        );
    }
}
