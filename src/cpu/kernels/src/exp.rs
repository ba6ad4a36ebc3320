//! A vectorisable `exp`, and the two loops that spend it: the attention softmax and
//! QuickGELU.
//!
//! Why hand-written: `f32::exp` is a call into libm (`__expf_fma`), one element at a time,
//! and burn-flex's softmax and sigmoid call it per element (its SIMD layer, macerator, has
//! no exp). That was 6 % of a B/16 detect. No maintained crate gives a slice exp that
//! compiles to SSE2, AVX2 and WebAssembly SIMD128 from one source, so this is Cephes'
//! `expf` (range reduction by ln 2, a degree-6 polynomial), written without branches or
//! calls so that LLVM vectorises the loops that inline it. Relative error ≤ 2 ulp on the
//! range it is used on (tested against `f32::exp` below).

use rayon::prelude::*;

/// `e^x` for `x` in `[-87.3, 88]` (clamped outside it, so it never overflows to ∞ nor
/// underflows to a denormal: the softmax and sigmoid it serves never need either), NaN in,
/// NaN out.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Comparisons, not f32::clamp: a NaN must stay a NaN (clamp would make it a number).
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.3 { -87.3 } else { x };
    // n = round(x / ln 2) by the 1.5·2²³ trick: adding it rounds to an integer in the
    // mantissa, with plain SSE2 arithmetic (no `round` call).
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    // r = x − n·ln 2, with ln 2 split in two so the product is exact (Cephes' C1, C2).
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // × 2ⁿ by building the exponent field; −126 ≤ n ≤ 127 after the clamp.
    e * f32::from_bits(((bits + 127) as u32) << 23)
}

/// Run `body` compiled for AVX2 + FMA where the CPU has them (picked at run time, so one
/// binary serves every x86-64), else for the build's own target (SSE2 on x86-64, SIMD128
/// in the browser build).
macro_rules! dispatch {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name($($arg: $ty),*) {
            $generic($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { $name($($arg),*) };
        }
        $generic($($arg),*)
    };
}

/// Each `row_len` row of `s`, in place: `softmax(row)` (max-subtracted, as torch's).
pub fn softmax_rows(s: &mut [f32], row_len: usize) {
    dispatch!(softmax_rows_avx2, softmax_rows_generic, (s: &mut [f32], row_len: usize));
}

#[inline(always)]
fn softmax_rows_generic(s: &mut [f32], row_len: usize) {
    const L: usize = 8;
    for row in s.chunks_exact_mut(row_len) {
        // Lane-wise maxima and sums, so the loops vectorise without reassociating floats
        // behind the compiler's back.
        let mut m = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            }
        }
        let mut max = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for &x in chunks.remainder() {
            max = max.max(x);
        }
        let mut acc = [0.0f32; L];
        let mut chunks = row.chunks_exact_mut(L);
        for c in &mut chunks {
            for i in 0..L {
                let e = exp(c[i] - max);
                c[i] = e;
                acc[i] += e;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for x in chunks.into_remainder() {
            *x = exp(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// QuickGELU in place: `x · σ(1.702 x) = x / (1 + e^(−1.702 x))`, in chunks on rayon's
/// pool. Run serially it kept the browser's second thread idle: 1.6 % of a B/16 detect on
/// 2 threads, in the #25 profile.
pub fn quick_gelu(x: &mut [f32]) {
    // 16 K elements (64 KB) per job: a B/16 `c_fc` output (197 × 3072) makes 37 jobs.
    const CHUNK: usize = 16 * 1024;
    x.par_chunks_mut(CHUNK).for_each(|c| {
        dispatch!(quick_gelu_avx2, quick_gelu_generic, (c: &mut [f32]));
    });
}

#[inline(always)]
fn quick_gelu_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + exp(-1.702 * *v);
    }
}
