//! A dense layer, `x w + bias`, as one gemm that accumulates onto the bias.
//!
//! Burn's default `linear` runs a matrix product into a fresh zeroed buffer, then adds the
//! bias in a second, broadcast, pass; on flex that pass is serial. In the browser on two
//! threads (#25 profile) the zeroing and the bias pass kept the second thread idle. Here
//! the output starts as the bias rows (filled on rayon's pool) and gemm adds `x w` onto
//! them: `1 · out + 1 · (x w)`, which rounds exactly as `(x w) + bias`.

use rayon::prelude::*;

/// A row-major matrix inside a slice: element `[i, j]` at `offset + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
    pub offset: usize,
}

impl Matrix {
    /// One past the last element it reads, or `None` on overflow.
    fn end(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(self.offset);
        }
        (self.rows - 1)
            .checked_mul(self.rs)?
            .checked_add((self.cols - 1).checked_mul(self.cs)?)?
            .checked_add(self.offset)?
            .checked_add(1)
    }

    fn fits(&self, len: usize) -> bool {
        self.end().is_some_and(|end| end <= len)
    }
}

/// Products smaller than this (m·n·k) run on one thread: burn-flex's own threshold.
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `x w (+ bias)` as a contiguous `[x.rows, w.cols]` matrix. `None` (nothing read) when
/// the shapes disagree or a matrix does not lie inside its slice.
pub fn linear(
    x: &[f32],
    xm: Matrix,
    w: &[f32],
    wm: Matrix,
    bias: Option<&[f32]>,
) -> Option<Vec<f32>> {
    let (m, k, n) = (xm.rows, xm.cols, wm.cols);
    if wm.rows != k || !xm.fits(x.len()) || !wm.fits(w.len()) {
        return None;
    }
    if bias.is_some_and(|b| b.len() != n) {
        return None;
    }
    let len = m.checked_mul(n)?;
    let mut out = match bias {
        None => vec![0.0f32; len],
        Some(b) => {
            let mut out = Vec::with_capacity(len);
            if n > 0 {
                out.spare_capacity_mut()[..len]
                    .par_chunks_mut(n * 64)
                    .for_each(|c| {
                        for row in c.chunks_exact_mut(n) {
                            for (o, v) in row.iter_mut().zip(b) {
                                o.write(*v);
                            }
                        }
                    });
            }
            // SAFETY: the loop above wrote all `len` elements (whole rows of `n`).
            unsafe { out.set_len(len) };
            out
        }
    };
    if len == 0 {
        return Some(out);
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: both inputs were checked to lie inside their slices (`fits`), and `out` is
    // a contiguous m × n buffer.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr().add(xm.offset),
            xm.cs as isize,
            xm.rs as isize,
            w.as_ptr().add(wm.offset),
            wm.cs as isize,
            wm.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Some(out)
}
