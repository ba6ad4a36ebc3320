//! Multi-head self-attention straight from a fused `in_proj` output `[b, t, 3w]`.
//!
//! Each (image, head) job reads its q, k and v where `in_proj` wrote them (gemm takes
//! strides), keeps its `t × t` scores in a per-thread buffer, and writes its `hd` columns
//! of the merged `[b, t, w]` output in place.

use rayon::prelude::*;

use crate::exp;

/// Where the fused `[b, t, 3w]` tensor's elements lie in its buffer: q, k and v side by
/// side in the last axis (contiguous), `heads` heads each.
#[derive(Clone, Copy, Debug)]
pub struct Fused {
    pub b: usize,
    pub t: usize,
    /// The width of one of q, k and v (a third of the last axis).
    pub w: usize,
    pub heads: usize,
    /// Element strides of the first two axes, and the offset of element `[0, 0, 0]`.
    pub batch_stride: usize,
    pub row_stride: usize,
    pub offset: usize,
}

impl Fused {
    /// The index one past the last element the kernel reads, when the shape is one it
    /// takes (`heads` divides `w`, nothing empty).
    fn end(&self) -> Option<usize> {
        let Fused { b, t, w, heads, .. } = *self;
        if b == 0 || t == 0 || heads == 0 || w == 0 || w % heads != 0 {
            return None;
        }
        (b - 1)
            .checked_mul(self.batch_stride)?
            .checked_add((t - 1).checked_mul(self.row_stride)?)?
            .checked_add(self.offset)?
            .checked_add(w.checked_mul(3)?)
    }
}

/// `softmax(a bᵀ / √hd) c` per head, merged to `[b, t, w]`: `(a, b, c) = (q, k, v)`, or
/// `(v, v, v)` for CLIP-VV's V-V path (`vv`). `None` (and nothing read) when `data` does
/// not hold every element `x` describes or the shape is not one it takes.
pub fn attend(data: &[f32], x: Fused, vv: bool) -> Option<Vec<f32>> {
    if x.end()? > data.len() {
        return None;
    }
    let Fused { b, t, w, heads, .. } = x;
    let (sb, st, off) = (x.batch_stride, x.row_stride, x.offset);
    let hd = w / heads;
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
            // inside `data` (checked against `end` above); `scores` is `t × t`; job
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
    Some(out)
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
