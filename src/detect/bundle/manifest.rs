//! `manifest.json`: the schema, and the checks run on it before anything is fetched or
//! allocated.

use serde::{Deserialize, Serialize};

use super::chunk::{BundleFile, MAX_CHUNK, check_chunk_path, check_sha256};
use super::dtype::StoreDtype;
use crate::clip::ClipConfig;
use crate::detect::DetectorConfig;
use crate::error::{Error, Result};
use crate::head::BackboneId;

/// The `format` of a web manifest whose tensors are floats (f16 or f32).
pub const FORMAT: &str = "kanoclip-web/1";
/// The `format` of an int8 bundle: a new number, so that a package that cannot read int8
/// tensors refuses the bundle by its format ("manifest format is `kanoclip-web/2`,
/// expected `kanoclip-web/1`") before it downloads the weights.
pub const FORMAT_INT8: &str = "kanoclip-web/2";
/// The quantisation scheme an int8 bundle names (`quantization` in its manifest).
pub const INT8_SCHEME: &str = "int8-weight-only-symmetric-per-output-channel";

/// Which detector a bundle holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// With a trained head.
    Trained,
    /// Plain CLIP with knowledge texts.
    TrainingFree,
}

impl Mode {
    /// Its name in manifests and reports: `trained` or `training-free`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Trained => "trained",
            Mode::TrainingFree => "training-free",
        }
    }
}

/// Room for a safetensors header and metadata beyond the parameters themselves.
const HEADER_SLACK: u64 = 1 << 24;
/// The largest head file a bundle may name (heads are a few MB).
const MAX_HEAD_FILE: u64 = 1 << 28;

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
    /// How the tensors are stored.
    pub dtype: StoreDtype,
    /// The int8 scheme ([`INT8_SCHEME`]); present exactly when `dtype` is `int8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
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

impl Manifest {
    /// Parse and check a manifest.
    pub fn from_json_str(text: &str) -> Result<Self> {
        if text.trim_start().starts_with('<') {
            return Err(Error::Config(
                "the manifest is an HTML page, not JSON (a captive portal, a login page or a \
                 wrong URL?)"
                    .into(),
            ));
        }
        // The format first: a newer bundle may have fields this version does not know.
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let f: Format = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("not a kanoclip web manifest: {e}")))?;
        if f.format != FORMAT && f.format != FORMAT_INT8 {
            return Err(Error::Incompatible(format!(
                "manifest format is `{}`; this kanoclip reads `{FORMAT}` and `{FORMAT_INT8}` \
                 (a newer kanoclip made this bundle: update kanoclip)",
                f.format
            )));
        }
        let m: Manifest = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("not a kanoclip web manifest: {e}")))?;
        if m.format != m.dtype.format() {
            return Err(Error::Config(format!(
                "an {} bundle has format `{}`, not `{}`",
                m.dtype.name(),
                m.format,
                m.dtype.format()
            )));
        }
        let scheme = (m.dtype == StoreDtype::Int8).then_some(INT8_SCHEME);
        if m.quantization.as_deref() != scheme {
            return Err(Error::Incompatible(format!(
                "quantization {:?} with dtype {}: this kanoclip reads {:?}",
                m.quantization,
                m.dtype.name(),
                scheme
            )));
        }
        m.clip.validate()?;
        // The backbone block sizes the head and the memories checked against it: it must
        // describe the clip config it sits beside (the fingerprint is the weights' own).
        let described = BackboneId::from_config(&m.clip, m.backbone.fingerprint.clone());
        if m.backbone != described {
            return Err(Error::Config(format!(
                "the manifest's backbone ({}) does not describe its clip config ({})",
                m.backbone.shape(),
                described.shape()
            )));
        }
        m.detector
            .validate(m.clip.vision.tower.layers, m.clip.vision.patch_size)?;
        m.detector
            .check_cost(m.clip.vision.patch_size, m.clip.vision.tower.heads)?;
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
        m.check_files()?;
        Ok(m)
    }

    /// The files' names, sizes, chunk lists and chunk paths, before anything is fetched
    /// or allocated: each file is `vision` (at most once, and always) or `head`; its size
    /// is within what the config allows; its chunks are at most [`MAX_CHUNK`] bytes, add
    /// up to it and are named by [`check_chunk_path`].
    fn check_files(&self) -> Result<()> {
        let bad = |e: String| Err(Error::Config(e));
        let limits = [
            ("vision", self.clip.parameter_count(true) * 4 + HEADER_SLACK),
            ("head", MAX_HEAD_FILE),
        ];
        let mut seen = Vec::new();
        for f in &self.files {
            let Some((_, limit)) = limits.iter().find(|(n, _)| *n == f.name) else {
                return bad(format!("unknown bundle file `{}` (vision or head)", f.name));
            };
            if seen.contains(&f.name.as_str()) {
                return bad(format!("the bundle lists `{}` twice", f.name));
            }
            seen.push(&f.name);
            if f.size == 0 || f.size > *limit {
                return bad(format!(
                    "`{}` claims {} bytes; this config allows 1 to {limit}",
                    f.name, f.size
                ));
            }
            check_sha256(&f.sha256)?;
            let most = f.size.div_ceil(MAX_CHUNK as u64) as usize;
            if f.chunks.is_empty() || f.chunks.len() > most {
                return bad(format!(
                    "`{}` has {} chunks; {} bytes need 1 to {most}",
                    f.name,
                    f.chunks.len(),
                    f.size
                ));
            }
            let mut sum = 0u64;
            for c in &f.chunks {
                if c.size == 0 || c.size > MAX_CHUNK as u64 {
                    return bad(format!(
                        "chunk `{}` claims {} bytes (1 to {MAX_CHUNK})",
                        c.path, c.size
                    ));
                }
                check_sha256(&c.sha256)?;
                check_chunk_path(&c.path, &c.sha256)?;
                sum += c.size;
            }
            if sum != f.size {
                return bad(format!(
                    "the chunks of `{}` add up to {sum} bytes, not {}",
                    f.name, f.size
                ));
            }
        }
        if !seen.contains(&"vision") {
            return bad("the bundle has no vision file".into());
        }
        Ok(())
    }
}
