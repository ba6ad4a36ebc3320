//! kanoclip's fused CPU kernels on plain `f32` slices: no Burn types, so that the browser
//! build can optimise them for speed while the rest of its module is optimised for size.
//! `kanoclip::cpu` adapts them to Burn's flex tensors, and tests them there against
//! Burn's own ops.
//!
//! Their jobs run on rayon's global pool: native threads, the browser's Web Worker pool in
//! the threaded module, or the calling thread alone where wasm32 has no threads (rayon
//! falls back to it).

pub mod attention;
pub mod exp;
pub mod linear;
