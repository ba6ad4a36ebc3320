//! The frozen CLIP backbone (spec §1–§2): config, weights import, tokenizer, pre-processing
//! and both towers, written once for every Burn backend.

pub mod config;
pub mod embed;
mod import;
pub(crate) mod layers;
mod model;
pub mod preprocess;
pub mod text;
pub(crate) mod text_clean;
pub mod tokenizer;
pub mod vision;

pub use config::ClipConfig;
pub(crate) use import::is_vision_tensor;
pub use model::Clip;
pub use tokenizer::Tokenizer;
pub use vision::{VisionOutput, VisionTower, VvOptions};
