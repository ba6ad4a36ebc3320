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
use crate::tensor_io::{SCALE_SUFFIX, float_values, quantize_rows, sha256_hex};

/// The `format` of a web manifest whose tensors are floats (f16 or f32).
pub const FORMAT: &str = "kanoclip-web/1";
/// The `format` of an int8 bundle: a new number, so that a package that cannot read int8
/// tensors refuses the bundle by its format ("manifest format is `kanoclip-web/2`,
/// expected `kanoclip-web/1`") before it downloads the weights.
pub const FORMAT_INT8: &str = "kanoclip-web/2";
/// The quantisation scheme an int8 bundle names (`quantization` in its manifest).
pub const INT8_SCHEME: &str = "int8-weight-only-symmetric-per-output-channel";

/// How a bundle stores its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum StoreDtype {
    /// Half precision: half the f32 download.
    F16,
    /// Full precision (the parity tests' bundles).
    F32,
    /// The blocks' matrices as int8 with per-output-channel scales, the rest f16.
    Int8,
}

impl StoreDtype {
    /// Its name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StoreDtype::F16 => "f16",
            StoreDtype::F32 => "f32",
            StoreDtype::Int8 => "int8",
        }
    }

    /// The manifest format of a bundle stored this way.
    pub fn format(self) -> &'static str {
        match self {
            StoreDtype::Int8 => FORMAT_INT8,
            StoreDtype::F16 | StoreDtype::F32 => FORMAT,
        }
    }
}

/// Whether `--dtype int8` stores a tensor as int8: the matrices of the transformer blocks
/// (attention and MLP weights, PyTorch's `[out, in]`, at least 1,024 values), which are
/// nearly all of a ViT's parameters. The patch conv, embeddings, projections, layer norms
/// and biases stay f16.
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2
        && shape.iter().product::<usize>() >= 1024
        && (name.contains(".resblocks.") || name.contains(".encoder.layers."))
        && name.ends_with("weight")
}
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

/// Room for a safetensors header and metadata beyond the parameters themselves.
const HEADER_SLACK: u64 = 1 << 24;
/// The largest manifest read (a ViT-L/14 manifest is about 40 KB).
const MAX_MANIFEST: u64 = 1 << 24;
/// The largest head file a bundle may name (heads are a few MB).
const MAX_HEAD_FILE: u64 = 1 << 28;

fn check_sha256(hex: &str) -> Result<()> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{hex}` is not a SHA-256 (64 lower-case hex digits)"
        )))
    }
}

/// A chunk path is a bare file name beside the manifest: letters, digits, `-`, `_` and
/// `.`, not starting with `.`, at most 128 characters, holding the first 16 hex digits of
/// its SHA-256 (chunks are named by content). This refuses, as one class, absolute URLs,
/// `//host`, `..`, sub-folders, schemes, queries and percent-escapes: a bundle can only
/// fetch files from its own folder, on its own origin.
pub fn check_chunk_path(path: &str, sha256: &str) -> Result<()> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if path.is_empty() || path.len() > 128 || path.starts_with('.') || !path.bytes().all(safe) {
        return Err(Error::Config(format!(
            "chunk path `{path}` is not a plain file name beside the manifest"
        )));
    }
    if !sha256.get(..16).is_some_and(|p| path.contains(p)) {
        return Err(Error::Config(format!(
            "chunk path `{path}` is not named by its content (the first 16 digits of {sha256})"
        )));
    }
    Ok(())
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

/// Re-encode the tensors of a safetensors file that `keep` accepts as `dtype` (for
/// `int8`: [`quantizable`] tensors as int8 `W` plus f32 `W.scale`, the rest f16), keeping
/// the metadata.
pub fn convert_dtype(
    bytes: &[u8],
    dtype: StoreDtype,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<u8>> {
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
    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(names.len());
    for name in &names {
        let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
        let values = float_values(t.dtype(), t.data())
            .ok_or_else(|| bad(format!("{name}: unsupported dtype {:?}", t.dtype())))?;
        let shape = t.shape().to_vec();
        match dtype {
            StoreDtype::Int8 if quantizable(name, &shape) => {
                let (q, scales) = quantize_rows(&values, shape[0]);
                let q = q.iter().map(|v| *v as u8).collect();
                let scales = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
                data.push((name.clone(), Dtype::I8, shape.clone(), q));
                data.push((
                    format!("{name}{SCALE_SUFFIX}"),
                    Dtype::F32,
                    vec![shape[0]],
                    scales,
                ));
            }
            StoreDtype::F32 => {
                let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                data.push((name.clone(), Dtype::F32, shape, b));
            }
            StoreDtype::F16 | StoreDtype::Int8 => {
                let b = values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect();
                data.push((name.clone(), Dtype::F16, shape, b));
            }
        }
    }
    let views = data
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, meta.metadata().clone()).map_err(|e| bad(e.to_string()))
}

/// A bundle's chunk files: `(path beside the manifest, bytes)`.
pub type ChunkFiles = Vec<(String, Vec<u8>)>;

/// What a bundle says besides its weights.
#[derive(Clone, Debug, Default)]
pub struct BundleInfo {
    /// A name for people.
    pub name: String,
    /// A notice the page shows with every result.
    pub notice: Option<String>,
    /// The decision threshold (default: the detector's).
    pub threshold: Option<f64>,
}

/// A browser bundle of `detector`: its manifest and chunk files (`(path, bytes)`), from
/// the CLIP model it was loaded from (`clip`, `weights`: the image tower is kept) and, in
/// trained mode, its head file. What `kanoclip convert --to web` writes.
pub fn build(
    detector: &Detector,
    clip: &ClipConfig,
    weights: &[u8],
    head: Option<&[u8]>,
    dtype: StoreDtype,
    info: &BundleInfo,
) -> Result<(Manifest, ChunkFiles)> {
    let d = clip.embed_dim;
    let text = crate::tensor_io::to_vec(detector.text_features().clone())?;
    let vision = convert_dtype(weights, dtype, crate::clip::is_vision_tensor)?;
    let mut parts = vec![chunk("vision", &vision)];
    if let Some(bytes) = head {
        // The head is small: f16 for int8 bundles too.
        let head_dtype = if dtype == StoreDtype::F32 {
            StoreDtype::F32
        } else {
            StoreDtype::F16
        };
        parts.push(chunk("head", &convert_dtype(bytes, head_dtype, |_| true)?));
    }
    let mut files = Vec::new();
    let mut chunks = Vec::new();
    for (file, c) in parts {
        files.push(file);
        chunks.extend(c);
    }
    let manifest = Manifest {
        format: dtype.format().into(),
        name: info.name.clone(),
        notice: info.notice.clone(),
        mode: if head.is_some() {
            Mode::Trained
        } else {
            Mode::TrainingFree
        },
        dtype,
        quantization: (dtype == StoreDtype::Int8).then(|| INT8_SCHEME.into()),
        clip: clip.clone(),
        backbone: detector.backbone().clone(),
        threshold: info.threshold.unwrap_or(detector.threshold()),
        detector: detector.config(),
        text_features: text.chunks(d).map(<[f32]>::to_vec).collect(),
        files,
    };
    Ok((manifest, chunks))
}

/// Cut a file into chunks named by content, `NAME-000-<first 16 hex digits of the
/// chunk's SHA-256>.bin`, `NAME-001-….bin`, …: a redeployed bundle names new chunks, so a
/// browser never meets a stale cached chunk under a name it trusts.
pub fn chunk(name: &str, bytes: &[u8]) -> (BundleFile, ChunkFiles) {
    let mut chunks = Vec::new();
    let mut out = Vec::new();
    for (i, part) in bytes.chunks(MAX_CHUNK).enumerate() {
        let sha256 = sha256_hex(part);
        let path = format!("{name}-{i:03}-{}.bin", &sha256[..16]);
        chunks.push(Chunk {
            path: path.clone(),
            size: part.len() as u64,
            sha256,
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

    /// One file of the bundle, reassembled from its chunks as `read` returns them; each
    /// chunk's size and SHA-256 and then the whole file's are verified before it is used.
    pub fn assemble(
        &self,
        name: &str,
        mut read: impl FnMut(&Chunk) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.files.iter().find(|f| f.name == name) else {
            return Ok(None);
        };
        let mut whole = Vec::new();
        for c in &file.chunks {
            let bytes = read(c)?;
            if bytes.len() as u64 != c.size {
                return Err(Error::Integrity(format!(
                    "{}: {} bytes, the manifest says {}",
                    c.path,
                    bytes.len(),
                    c.size
                )));
            }
            let digest = sha256_hex(&bytes);
            if digest != c.sha256 {
                return Err(Error::Integrity(format!(
                    "{}: SHA-256 {digest} is not the manifest's {}",
                    c.path, c.sha256
                )));
            }
            whole.extend_from_slice(&bytes);
        }
        let digest = sha256_hex(&whole);
        if digest != file.sha256 {
            return Err(Error::Integrity(format!(
                "{name}: SHA-256 {digest} is not the manifest's {}",
                file.sha256
            )));
        }
        Ok(Some(whole))
    }

    /// Read a bundle from a folder natively: the manifest, then every chunk, each checked
    /// (size on disk first, then SHA-256) before it is used. Returns the manifest and the
    /// vision and head files.
    pub fn read(manifest: &std::path::Path) -> Result<(Self, Vec<u8>, Option<Vec<u8>>)> {
        let meta = std::fs::metadata(manifest).map_err(|e| Error::io(manifest, e))?;
        if meta.len() > MAX_MANIFEST {
            return Err(Error::Config(format!(
                "{}: {} bytes is too large for a manifest",
                manifest.display(),
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
        let m = Self::from_json_str(&text).map_err(|e| e.in_file(manifest))?;
        let dir = manifest.parent().unwrap_or(std::path::Path::new("."));
        let read = |c: &Chunk| {
            let path = dir.join(&c.path);
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            if len != c.size {
                return Err(Error::Integrity(format!(
                    "{}: {len} bytes, the manifest says {}",
                    path.display(),
                    c.size
                )));
            }
            std::fs::read(&path).map_err(|e| Error::io(&path, e))
        };
        let vision = m
            .assemble("vision", read)?
            .ok_or_else(|| Error::Config("the bundle has no vision file".into()))?;
        let head = m.assemble("head", read)?;
        Ok((m, vision, head))
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
