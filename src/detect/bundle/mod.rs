//! The browser bundle that `kanoclip convert --to web` writes and the wasm build loads:
//! `manifest.json` plus chunk files.
//!
//! - Contents: the image tower (`vision.safetensors`, OpenAI/open_clip or Hugging Face
//!   names as in the source weights), the head (`head.safetensors`, trained mode only),
//!   and the state texts `[t_n; t_a]` encoded once natively, in the manifest. The prompts
//!   are fixed after training, so the page needs no text tower in either mode.
//! - f16 by default (half the download); the loader widens every tensor to f32, so
//!   computation is f32 on every adapter, with or without WebGPU's `shader-f16`.
//! - `int8`: the transformer blocks' matrices as weight-only int8, symmetric, one f32
//!   scale per output channel ([`quantizable`]); everything else f16. The loader
//!   dequantises them to f32 as it reads them, so memory at run time is the f16 bundle's
//!   and the kernels are the same. Such a bundle's format is [`FORMAT_INT8`], which
//!   packages that predate int8 refuse by its format.
//! - Each file is cut into chunks of at most [`MAX_CHUNK`] bytes; the manifest lists every
//!   chunk's size and SHA-256, the model config, the detector settings and the threshold.
//!
//! The jobs, one file each: [`dtype`] re-encodes and quantises tensors; [`chunk`] cuts
//! files into content-named chunks and checks their names; [`manifest`] is the schema and
//! its checks; [`build`] writes a bundle; [`read`] reassembles one and builds its detector.

pub mod build;
pub mod chunk;
pub mod dtype;
pub mod manifest;
pub mod read;

pub use build::{BundleInfo, build};
pub use chunk::{BundleFile, Chunk, ChunkFiles, MAX_CHUNK, check_chunk_path, chunk};
pub use dtype::{StoreDtype, convert_dtype, quantizable};
pub use manifest::{FORMAT, FORMAT_INT8, INT8_SCHEME, Manifest, Mode};
