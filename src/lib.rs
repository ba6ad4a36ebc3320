//! # kanoclip
//!
//! KAnoCLIP zero-shot image anomaly detection (arXiv 2501.03786) on Burn. The model code is
//! written once and runs on whichever device is chosen at run time: Burn's `flex` CPU backend,
//! or wgpu (Vulkan, Metal, DX12 natively; WebGPU in browsers).
//!
//! Start with [`Detector::from_files`]:
//!
//! ```no_run
//! use kanoclip::{BackendKind, Detector, DetectorSource, Knowledge};
//! let detector = Detector::from_files(
//!     "weights/vit-b-16/clip_config.json",
//!     "weights/vit-b-16/open_clip_model.safetensors",
//!     DetectorSource::TrainingFree(Knowledge::Industrial),
//!     BackendKind::Cpu,
//! )?;
//! let found = detector.detect(&kanoclip::load_image("part.png")?)?;
//! # Ok::<(), kanoclip::Error>(())
//! ```
//!
//! The parts, in the direction they depend on each other:
//! - [`clip`]: the frozen CLIP backbone with the CLIP-VV dual path (spec §1–§2).
//! - [`head`]: KAnoCLIP's anomaly head: knowledge base, KnPL prompts, Bi-CMCI and the
//!   Conv-Adapter (spec §3–§5).
//! - [`detect`]: the detection API, head files, maps, calibration, rendering and the
//!   browser bundle (spec §7).
//! - [`eval`]: the metrics, and natively (feature `train`) evaluation over a data set.
//! - Native only (feature `train`): `train` (the losses, the trainer, checkpoints, the
//!   feature cache), `data` (data-set layouts and the synthetic-defect generator) and
//!   `knowledge` (filling a knowledge base from a chat model).
//! - [`device`]: picking a backend at run time. [`web`]: the types that cross into
//!   JavaScript, and on wasm32 the wasm-bindgen exports for the browser package.
#![warn(missing_docs)]

pub(crate) mod atomic;
pub mod clip;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "train")]
pub mod data;
pub mod detect;
pub mod device;
pub mod error;
pub mod eval;
pub mod head;
#[cfg(feature = "train")]
pub mod knowledge;
pub mod tensor_io;
#[cfg(feature = "train")]
pub mod train;
/// The browser boundary: the JS-facing types everywhere (checked natively against the
/// package's TypeScript), the wasm-bindgen glue on wasm32 with `webgpu`.
pub mod web;

/// The `kanoclip` command line (what `src/main.rs` runs).
#[cfg(all(feature = "cli", feature = "train"))]
#[doc(hidden)]
pub mod cli;

/// Entry points for the fuzz targets and the replay of their corpora.
#[cfg(all(feature = "train", feature = "flex"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod test_util;

pub use clip::preprocess::{decode_image, load_image};
pub use clip::{Clip, ClipConfig, Tokenizer};
pub use detect::{AnomalyMap, Calibration, Detection, Detector, DetectorConfig, DetectorSource};
pub use device::BackendKind;
pub use error::{Error, Result};
pub use head::knowledge::Knowledge;
