//! Writing a bundle: what `kanoclip convert --to web` does.

use super::chunk::{ChunkFiles, chunk};
use super::dtype::{StoreDtype, convert_dtype};
use super::manifest::{INT8_SCHEME, Manifest, Mode};
use crate::clip::ClipConfig;
use crate::detect::Detector;
use crate::error::{Error, Result};

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
    let threshold = info.threshold.unwrap_or(detector.threshold());
    if !threshold.is_finite() {
        return Err(Error::Invalid(format!(
            "threshold {threshold} is not a finite number"
        )));
    }
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
        threshold,
        detector: detector.config(),
        text_features: text.chunks(d).map(<[f32]>::to_vec).collect(),
        files,
    };
    // What cannot be read back is never written: the reader's checks, on the JSON itself.
    Manifest::from_json_str(&serde_json::to_string(&manifest)?)?;
    Ok((manifest, chunks))
}
