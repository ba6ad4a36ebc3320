//! Multi-head self-attention straight from the fused `in_proj` output.
//!
//! Burn's route splits `[b, t, 3w]` into q, k, v, makes each `[b, heads, t, hd]`
//! contiguous (a copy each), runs its attention op (softmax with libm `exp`), and copies the
//! result back to `[b, t, w]` for `out_proj`. Here each (image, head) job reads its q, k
//! and v where `in_proj` wrote them (gemm takes strides), keeps its `t × t` scores in a
//! per-thread buffer, and writes its `hd` columns of the merged output in place.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;

use rayon::prelude::*;

use super::{SharedMut, exp, flex_f32, from_flex};

/// `softmax(a bᵀ / √hd) c` per head, merged to `[b, t, w]`, from `fused = [b, t, 3w]`
/// (q, k, v side by side, `heads` heads each): `(a, b, c) = (q, k, v)`, or `(v, v, v)`
/// for CLIP-VV's V-V path (`vv`). `None` off flex, or for shapes it does not take.
pub fn attend(fused: &Tensor<3>, heads: usize, vv: bool) -> Option<Tensor<3>> {
    let x = flex_f32(fused)?;
    let [b, t, w3] = fused.dims();
    let w = w3 / 3;
    if heads == 0 || w3 % 3 != 0 || w % heads != 0 || t == 0 || b == 0 {
        return None;
    }
    let hd = w / heads;
    let layout = x.layout();
    let strides = layout.strides();
    if strides[2] != 1 || strides[1] < 1 || strides[0] < 0 {
        return None;
    }
    let (sb, st, off) = (
        strides[0] as usize,
        strides[1] as usize,
        layout.start_offset(),
    );
    let data: &[f32] = x.storage();
    // Every read below is inside the tensor's own elements: check the last one once.
    let last = off + (b - 1) * sb + (t - 1) * st + w3 - 1;
    if last >= data.len() {
        return None;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let (a_off, b_off) = if vv { (2 * w, 2 * w) } else { (0, w) };
    let mut out = vec![0.0f32; b * t * w];
    let dst = SharedMut(out.as_mut_ptr());
    let src = data.as_ptr() as usize;
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; t * t],
        |scores, job| {
            let (i, h) = (job / heads, job % heads);
            let base = off + i * sb + h * hd;
            let src = src as *const f32;
            // SAFETY: `a`, `b` and `c` address `t` rows of `hd` elements at stride `st`
            // inside `data` (checked against `last` above); `scores` is `t × t`; job
            // (i, h) alone writes rows `i·t ..` columns `h·hd ..` of `out`.
            unsafe {
                gemm::gemm(
                    t,
                    t,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    t as isize,
                    false,
                    src.add(base + a_off),
                    1,
                    st as isize,
                    src.add(base + b_off),
                    st as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                exp::softmax_rows(scores, t);
                gemm::gemm(
                    t,
                    hd,
                    t,
                    dst.ptr().add(i * t * w + h * hd),
                    1,
                    w as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    t as isize,
                    src.add(base + 2 * w),
                    1,
                    st as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    Some(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        [b, t, w],
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
