//! # kanoclip
//!
//! KAnoCLIP zero-shot image anomaly detection (arXiv 2501.03786) on Burn. The model code is
//! written once and runs on whichever device is chosen at run time: Burn's `flex` CPU backend,
//! or wgpu (Vulkan, Metal, DX12 natively; WebGPU in browsers).
//!
//! - [`clip`]: the frozen CLIP backbone with the CLIP-VV dual path (spec §1–§2).
//! - [`device`]: picking a backend at run time.

pub mod clip;
pub mod device;
pub mod error;

pub use error::{Error, Result};
