//! The head file: the head's tensors (named by [`crate::head`]'s table) as safetensors, with
//! the head's config, the detector settings it was trained with and the backbone it belongs
//! to in the metadata. It lives here, where the head and the detector settings meet, so
//! that `detect` depends on `head` and never the reverse.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::DetectorConfig;
use crate::error::{Error, Result};
use crate::head::tensors::{self, HeadDims};
use crate::head::{BackboneId, Head, HeadConfig};
use crate::tensor_io::read_weights;

/// The `format` metadata of a head file.
pub const FORMAT: &str = "kanoclip-head/1";

/// Everything in a head file besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    /// The head's hyper-parameters.
    pub head: HeadConfig,
    /// The detector settings it was trained with.
    pub detector: DetectorConfig,
    /// The backbone it was trained on.
    pub backbone: BackboneId,
}

/// The one check that a head's Bi-CMCI levels and the detector's taps agree: one level
/// per tap.
pub(crate) fn check_levels(levels: usize, taps: &[usize]) -> Result<()> {
    if levels == taps.len() {
        Ok(())
    } else {
        Err(Error::Incompatible(format!(
            "the head has {levels} Bi-CMCI levels but the detector has {} taps {taps:?}",
            taps.len()
        )))
    }
}

/// Write the head atomically: a temporary file in the same folder, synced, then renamed, so
/// that a failure never leaves a half-written head under `path`.
pub fn save_head(path: impl AsRef<Path>, head: &Head, meta: &HeadMeta) -> Result<()> {
    crate::atomic::write(path.as_ref(), &head_bytes(head, meta)?)
}

/// The head file's bytes.
pub fn head_bytes(head: &Head, meta: &HeadMeta) -> Result<Vec<u8>> {
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("head".to_string(), serde_json::to_string(&meta.head)?),
        (
            "detector".to_string(),
            serde_json::to_string(&meta.detector)?,
        ),
        (
            "backbone".to_string(),
            serde_json::to_string(&meta.backbone)?,
        ),
    ]
    .into();
    tensors::to_safetensors(head, metadata)
}

/// Read only the metadata of a head file.
pub fn read_meta(bytes: &[u8]) -> Result<HeadMeta> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Head(format!("not a readable safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| Error::Head(format!("metadata `{k}` is missing: not a kanoclip head")))
    };
    if get("format")? != FORMAT {
        return Err(Error::Incompatible(format!(
            "head format `{}` is not `{FORMAT}`",
            get("format")?
        )));
    }
    fn parse<T: serde::de::DeserializeOwned>(k: &str, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| Error::Head(format!("metadata `{k}`: {e}")))
    }
    Ok(HeadMeta {
        head: parse("head", get("head")?)?,
        detector: parse("detector", get("detector")?)?,
        backbone: parse("backbone", get("backbone")?)?,
    })
}

fn describe(b: &BackboneId) -> String {
    format!("{} / weights {}", b.shape(), b.fingerprint)
}

/// Load a head for `backbone`: a head built for another backbone is refused by name
/// ([`Error::Incompatible`]); wrong tensors are listed in [`Error::WeightsMismatch`].
pub fn load_head(
    bytes: &[u8],
    backbone: &BackboneId,
    context_length: usize,
    device: &Device,
) -> Result<(Head, HeadMeta)> {
    let meta = read_meta(bytes)?;
    if &meta.backbone != backbone {
        return Err(Error::Incompatible(format!(
            "this head was built for another backbone ({}), but the loaded CLIP is {}",
            describe(&meta.backbone),
            describe(backbone)
        )));
    }
    meta.head.validate(backbone.embed_dim, context_length)?;
    meta.detector
        .validate(backbone.vision_layers, backbone.patch_size)?;
    check_levels(meta.head.levels, &meta.detector.taps)?;
    let dims = HeadDims {
        embed_dim: backbone.embed_dim,
        text_width: backbone.text_width,
        text_layers: backbone.text_layers,
    };
    let expected = meta
        .head
        .parameter_count(dims.embed_dim, dims.text_width, dims.text_layers);
    let head = read_weights(
        bytes,
        device,
        expected,
        |_| false,
        |r| tensors::read(r, &meta.head, dims, device),
    )?;
    Ok((head, meta))
}

/// Read and load a head file; errors name the file.
pub fn load_head_file(
    path: impl AsRef<Path>,
    backbone: &BackboneId,
    context_length: usize,
    device: &Device,
) -> Result<(Head, HeadMeta)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_head(&bytes, backbone, context_length, device).map_err(|e| e.in_file(path))
}
