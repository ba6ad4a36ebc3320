//! The browser bundle that `kanoclip convert --to web` writes and the wasm build loads:
//! `manifest.json` plus chunk files.
//!
//! - Contents: the image tower (`vision.safetensors`, OpenAI/open_clip or Hugging Face
//!   names as in the source weights), the head (`head.safetensors`, trained mode only),
//!   and the state texts `[t_n; t_a]` encoded once natively, in the manifest. The prompts
//!   are fixed after training, so the page needs no text tower in either mode.
//! - f16 by default (half the download); the loader widens every tensor to f32, so
//!   computation is f32 on every adapter, with or without WebGPU's `shader-f16`.
//! - Each file is cut into chunks of at most [`MAX_CHUNK`] bytes; the manifest lists every
//!   chunk's size and SHA-256, the model config, the detector settings and the threshold.

use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::head_file::load_head;
use super::{Detector, DetectorConfig};
use crate::clip::ClipConfig;
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};
use crate::head::BackboneId;
use crate::tensor_io::{float_values, sha256_hex};

/// The `format` of a web manifest.
pub const FORMAT: &str = "kanoclip-web/1";
/// The largest chunk: 32 MB (decimal, so also under 32 MiB).
pub const MAX_CHUNK: usize = 32_000_000;

/// One chunk file of a bundle file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// File name, relative to the manifest.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the chunk, hex.
    pub sha256: String,
}

/// One file of the bundle, cut into chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleFile {
    /// `vision` or `head`.
    pub name: String,
    /// Bytes, all chunks together.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Its chunks, in order.
    pub chunks: Vec<Chunk>,
}

/// Which detector a bundle holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// With a trained head.
    Trained,
    /// Plain CLIP with knowledge texts.
    TrainingFree,
}

/// `manifest.json` of a browser bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// A name for people (e.g. "ViT-B/16, industrial head").
    pub name: String,
    /// Shown by the page above the results when set (e.g. that the model is untrained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// Trained or training-free.
    pub mode: Mode,
    /// `f16` or `f32`: how the tensors are stored.
    pub dtype: String,
    /// The CLIP model's shapes.
    pub clip: ClipConfig,
    /// The backbone the weights are.
    pub backbone: BackboneId,
    /// The detector settings.
    pub detector: DetectorConfig,
    /// The decision threshold.
    pub threshold: f64,
    /// `[t_n, t_a]`, each `embed_dim` long, L2-normalised.
    pub text_features: Vec<Vec<f32>>,
    /// The bundle's files.
    pub files: Vec<BundleFile>,
}

/// Re-encode the tensors of a safetensors file that `keep` accepts as f16 (or f32),
/// keeping the metadata.
pub fn convert_dtype(bytes: &[u8], f16: bool, keep: impl Fn(&str) -> bool) -> Result<Vec<u8>> {
    let bad = |e: String| Error::WeightsFormat(e);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| keep(n))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut data = Vec::with_capacity(names.len());
    for name in &names {
        let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        let values = float_values(t.dtype(), t.data())
            .ok_or_else(|| bad(format!("{name}: unsupported dtype {:?}", t.dtype())))?;
        let encoded: Vec<u8> = if f16 {
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect()
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        data.push((t.shape().to_vec(), encoded));
    }
    let dtype = if f16 { Dtype::F16 } else { Dtype::F32 };
    let views = names
        .iter()
        .zip(&data)
        .map(|(n, (shape, b))| {
            TensorView::new(dtype, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, meta.metadata().clone()).map_err(|e| bad(e.to_string()))
}

/// Cut a file into chunks `NAME.safetensors.000`, `.001`, ….
pub fn chunk(name: &str, bytes: &[u8]) -> (BundleFile, Vec<(String, Vec<u8>)>) {
    let mut chunks = Vec::new();
    let mut out = Vec::new();
    for (i, part) in bytes.chunks(MAX_CHUNK).enumerate() {
        let path = format!("{name}.safetensors.{i:03}");
        chunks.push(Chunk {
            path: path.clone(),
            size: part.len() as u64,
            sha256: sha256_hex(part),
        });
        out.push((path, part.to_vec()));
    }
    (
        BundleFile {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            chunks,
        },
        out,
    )
}

impl Manifest {
    /// Parse and check a manifest.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("not a kanoclip web manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(Error::Incompatible(format!(
                "manifest format is `{}`, expected `{FORMAT}`",
                m.format
            )));
        }
        m.clip.validate()?;
        let d = m.clip.embed_dim;
        if m.text_features.len() != 2 || m.text_features.iter().any(|t| t.len() != d) {
            return Err(Error::Config(format!(
                "text_features must be 2 rows of {d} values"
            )));
        }
        if m.text_features.iter().flatten().any(|v| !v.is_finite()) || !m.threshold.is_finite() {
            return Err(Error::Config("non-finite numbers in the manifest".into()));
        }
        let has_head = m.files.iter().any(|f| f.name == "head");
        if has_head != (m.mode == Mode::Trained) {
            return Err(Error::Config(
                "a trained bundle has a head file, a training-free one has none".into(),
            ));
        }
        Ok(m)
    }

    /// The detector of this bundle, from the reassembled files.
    pub fn detector(
        &self,
        vision: &[u8],
        head: Option<&[u8]>,
        device: &Device,
    ) -> Result<Detector> {
        let (tower, fingerprint) = VisionTower::from_safetensors(&self.clip, vision, device)?;
        if fingerprint != self.backbone.fingerprint {
            return Err(Error::WeightsMismatch(vec![format!(
                "the image tower's weights ({fingerprint}) are not the manifest's ({})",
                self.backbone.fingerprint
            )]));
        }
        let head = match (self.mode, head) {
            (Mode::Trained, Some(bytes)) => {
                let (head, meta) =
                    load_head(bytes, &self.backbone, self.clip.text.context_length, device)?;
                if meta.detector.taps != self.detector.taps {
                    return Err(Error::Incompatible(
                        "the head's taps are not the manifest's".into(),
                    ));
                }
                Some(head)
            }
            (Mode::Trained, None) => {
                return Err(Error::Head("this bundle's head file is missing".into()));
            }
            (Mode::TrainingFree, _) => None,
        };
        let d = self.clip.embed_dim;
        let text =
            Tensor::<2>::from_data(TensorData::new(self.text_features.concat(), [2, d]), device);
        let mut config = self.detector.clone();
        config.threshold = self.threshold;
        Detector::from_parts(tower, self.backbone.clone(), head, config, text)
    }
}
