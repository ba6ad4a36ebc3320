//! The frozen CLIP backbone (spec §1–§2): config, weights import, tokenizer, pre-processing
//! and both towers, written once for every Burn backend.

pub mod config;
pub mod embed;
pub mod import;
pub mod layers;
pub mod model;
pub mod preprocess;
pub mod safetensors_reader;
pub mod text;
pub mod text_clean;
pub mod tokenizer;
pub mod vision;

pub use config::ClipConfig;
pub use model::Clip;
pub use tokenizer::Tokenizer;
pub use vision::{VisionOutput, VvOptions};
