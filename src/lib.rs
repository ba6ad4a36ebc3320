//! # kanoclip
//!
//! KAnoCLIP zero-shot image anomaly detection (arXiv 2501.03786) on Burn. The model code is
//! written once and runs on whichever device is chosen at run time: Burn's `flex` CPU backend,
//! or wgpu (Vulkan, Metal, DX12 natively; WebGPU in browsers).
//!
//! - [`clip`]: the frozen CLIP backbone with the CLIP-VV dual path (spec §1–§2).
//! - [`head`]: KAnoCLIP's anomaly head: knowledge base, KnPL prompts, Bi-CMCI,
//!   Conv-Adapter, and the head file (spec §3–§5).
//! - [`detect`]: the detection API, maps, calibration and rendering (spec §7).
//! - [`device`]: picking a backend at run time.
//! - `web` (wasm32 only): the wasm-bindgen exports for the browser package.

pub mod atomic;
pub mod clip;
pub mod detect;
pub mod device;
pub mod error;
pub mod eval;
pub mod head;
#[cfg(feature = "train")]
pub mod train;
// Compiles to nothing except on wasm32 (the module's own `#![cfg]`).
#[cfg(feature = "webgpu")]
pub mod web;

pub use error::{Error, Result};
