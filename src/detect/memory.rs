//! Few-shot mode (spec §10): a memory of known-good images' patch features, the few-shot map
//! it gives, and the memory file.
//!
//! - The memory holds, per tap, the projected and L2-normalised CLIP-VV patch tokens (no
//!   class token) of k reference images: the same forward as detection, so it serves the
//!   training-free and the trained detector alike (the head never changes the backbone's
//!   tokens).
//! - The few-shot map of a query token `q` at tap l is `min_m (1 − cos(q, m)) / 2`, one
//!   matmul per tap; the maps are summed over taps and go through the zero-shot map's own
//!   up-sampling, smoothing and map-back (§7 steps 2–4).
//! - `scale` is the 99th percentile of the references' leave-one-out few-shot map (each
//!   reference against the others; with one reference, each patch against the image's
//!   other patches). Dividing by it puts the few-shot map on the zero-shot map's scale
//!   (normal patches at or below about 1), as §10 allows; see [`FewShot::normalize`].
//! - Above `max_rows` tokens per tap the memory is reduced by greedy coreset selection
//!   ([`super::coreset`]), as PatchCore does.

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::DetectorConfig;
use super::config::MAX_INPUT_SIZE;
use crate::error::{Error, Result};
use crate::head::BackboneId;
use crate::tensor_io::read_weights;

/// The `format` metadata of a memory file.
pub const FORMAT: &str = "kanoclip-memory/1";
/// The most reference images a memory may name.
pub const MAX_IMAGES: usize = 100_000;
/// The percentile of the references' leave-one-out distances that `scale` is.
pub const SCALE_PERCENTILE: f64 = 99.0;
/// The smallest `scale`: identical references have leave-one-out distances of 0.
pub const MIN_SCALE: f64 = 1e-3;

/// How the few-shot map enters the detection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FewShot {
    /// λ in `map = (1 − λ) · zero-shot + λ · few-shot`: 0 is zero-shot alone, 1 the
    /// few-shot map alone.
    pub weight: f64,
    /// Divide the few-shot map by the memory's `scale` before fusing.
    pub normalize: bool,
}

impl Default for FewShot {
    /// λ = 0.5 (WinCLIP+ averages the two maps), normalised: on `kanoclip synth` data the
    /// plain average lets the zero-shot map's spread drown the few-shot distances
    /// (hundredths), and the normalised one does not (tests/fewshot.rs measures both).
    fn default() -> Self {
        FewShot {
            weight: 0.5,
            normalize: true,
        }
    }
}

impl FewShot {
    /// λ must lie in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.weight) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "the few-shot weight {} is not in [0, 1]",
                self.weight
            )))
        }
    }
}

/// One reference image, as the memory file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceImage {
    /// A name for people: the file name, or what the app passed.
    pub name: String,
    /// SHA-256 of the image's bytes (the file, or the pixels passed), hex.
    pub sha256: String,
}

impl ReferenceImage {
    /// Read and decode a reference file in one read: the image, and its record (the path
    /// as name, the file's SHA-256).
    pub fn read(path: &std::path::Path) -> Result<(image::DynamicImage, Self)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let image = crate::clip::preprocess::decode_image(&bytes).map_err(|e| e.in_file(path))?;
        let record = ReferenceImage {
            name: path.display().to_string(),
            sha256: crate::tensor_io::sha256_hex(&bytes),
        };
        Ok((image, record))
    }
}

/// Everything in a memory file besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryMeta {
    /// The backbone the tokens come from.
    pub backbone: BackboneId,
    /// The model input size they were computed at.
    pub input_size: usize,
    /// The CLIP-VV path's first dual block.
    pub vv_from: usize,
    /// The tapped blocks, one memory each.
    pub taps: Vec<usize>,
    /// The reference images, in order.
    pub images: Vec<ReferenceImage>,
    /// Tokens per tap (k · patches, or fewer after coreset selection).
    pub rows: Vec<usize>,
    /// The 99th percentile of the references' leave-one-out few-shot map.
    pub scale: f64,
}

impl MemoryMeta {
    /// Refuse a memory made for another backbone or other settings than `config`'s.
    pub fn check_against(&self, backbone: &BackboneId, config: &DetectorConfig) -> Result<()> {
        let mut problems = Vec::new();
        if &self.backbone != backbone {
            problems.push(format!(
                "it was built on another backbone (weights {}, this detector's {})",
                self.backbone.fingerprint, backbone.fingerprint
            ));
        }
        if self.input_size != config.input_size {
            problems.push(format!(
                "input size {} (the detector's is {})",
                self.input_size, config.input_size
            ));
        }
        if self.vv_from != config.vv_from || self.taps != config.taps {
            problems.push(format!(
                "CLIP-VV from block {} with taps {:?} (the detector's: {} and {:?})",
                self.vv_from, self.taps, config.vv_from, config.taps
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Incompatible(format!(
                "this reference memory does not fit the detector: {}",
                problems.join("; ")
            )))
        }
    }

    /// Check the numbers before any tensor is made.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("reference memory: {m}")));
        // The backbone's sizes first: `embed_dim` sizes every row (0 was a panic).
        self.backbone.validate("reference memory")?;
        let p = self.backbone.patch_size;
        if self.input_size == 0
            || !self.input_size.is_multiple_of(p)
            || self.input_size > MAX_INPUT_SIZE
        {
            return bad(format!(
                "input size {} is not a multiple of the patch size {p} in 1..={MAX_INPUT_SIZE}",
                self.input_size
            ));
        }
        let grid = self.input_size / p;
        let k = self.images.len();
        if k == 0 || k > MAX_IMAGES {
            return bad(format!("{k} reference images (1..={MAX_IMAGES} allowed)"));
        }
        if self.taps.is_empty() || self.taps.len() > self.backbone.vision_layers {
            return bad(format!("taps {:?}", self.taps));
        }
        let most = grid.saturating_mul(grid).saturating_mul(k);
        if self.rows.len() != self.taps.len() || self.rows.iter().any(|&r| r == 0 || r > most) {
            return bad(format!(
                "tokens per tap {:?}, but {} taps of {k} images hold 1..={most} each",
                self.rows,
                self.taps.len()
            ));
        }
        if !self.scale.is_finite() || self.scale < MIN_SCALE {
            return bad(format!(
                "scale {} is not a number ≥ {MIN_SCALE}",
                self.scale
            ));
        }
        Ok(())
    }

    /// The memory's size in bytes on the device (f32 tokens).
    pub fn bytes(&self) -> u64 {
        let rows = (self.rows.iter()).fold(0u64, |a, &r| a.saturating_add(r as u64));
        rows.saturating_mul(self.backbone.embed_dim as u64)
            .saturating_mul(4)
    }
}

/// A reference memory, on the device and on the host.
pub struct ReferenceMemory {
    meta: MemoryMeta,
    /// Per tap, `rows × D` row-major on the host (what the file stores).
    host: Vec<Vec<f32>>,
    /// Per tap, `[D, rows]` on the device: the right operand of the query product.
    tensors: Vec<Tensor<2>>,
}

impl std::fmt::Debug for ReferenceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceMemory")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl ReferenceMemory {
    /// A memory from host tokens (per tap, `rows × D`, L2-normalised).
    pub(crate) fn from_host(
        meta: MemoryMeta,
        host: Vec<Vec<f32>>,
        device: &Device,
    ) -> Result<Self> {
        meta.validate()?;
        let d = meta.backbone.embed_dim;
        if host.len() != meta.rows.len()
            || host.iter().zip(&meta.rows).any(|(h, r)| h.len() != r * d)
        {
            return Err(Error::Invalid(
                "reference memory: the tokens do not match the metadata".into(),
            ));
        }
        let tensors = host
            .iter()
            .zip(&meta.rows)
            .map(|(values, &rows)| {
                let mut t = vec![0.0f32; values.len()];
                for (r, row) in values.chunks_exact(d).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        t[c * rows + r] = *v;
                    }
                }
                Tensor::from_data(TensorData::new(t, [d, rows]), device)
            })
            .collect();
        Ok(ReferenceMemory {
            meta,
            host,
            tensors,
        })
    }

    /// The metadata.
    pub fn meta(&self) -> &MemoryMeta {
        &self.meta
    }

    /// Per tap, the tokens `rows × D` row-major.
    pub fn tokens(&self) -> &[Vec<f32>] {
        &self.host
    }

    /// The few-shot map on the patch grid, summed over taps: `[B, N]`, from each tap's
    /// patch tokens `[B, N, D]` (projected, not yet normalised).
    pub fn grid_map(&self, patches: &[Tensor<3>]) -> Option<Tensor<2>> {
        let mut total: Option<Tensor<2>> = None;
        for (q, m) in patches.iter().zip(&self.tensors) {
            let [b, n, d] = q.dims();
            let q = crate::head::prompts::l2_normalize(q.clone()).reshape([b * n, d]);
            let nearest = q.matmul(m.clone()).max_dim(1).reshape([b, n]);
            let dist = nearest.neg().add_scalar(1.0).div_scalar(2.0);
            total = Some(match total {
                Some(t) => t + dist,
                None => dist,
            });
        }
        total
    }

    /// The memory file's bytes: safetensors, one `tap.{i}` tensor `[rows, D]` f32 per tap,
    /// the metadata as JSON under `memory`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let d = self.meta.backbone.embed_dim;
        let bytes: Vec<Vec<u8>> = self
            .host
            .iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = bytes
            .iter()
            .zip(&self.meta.rows)
            .enumerate()
            .map(|(i, (b, &rows))| {
                TensorView::new(Dtype::F32, vec![rows, d], b)
                    .map(|v| (format!("tap.{i}"), v))
                    .map_err(|e| Error::WeightsFormat(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("memory".to_string(), serde_json::to_string(&self.meta)?),
        ]
        .into();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::WeightsFormat(e.to_string()))
    }

    /// Read a memory file's bytes: the metadata is checked before any tensor is made, and
    /// every tensor's shape and values (finite) before the memory is returned.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::WeightsFormat(format!("not a readable memory file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::Incompatible(format!(
                    "memory format `{other}` is not `{FORMAT}`"
                )));
            }
            None => {
                return Err(Error::Invalid(
                    "not a kanoclip reference memory (no `format` metadata)".into(),
                ));
            }
        }
        let text = meta.get("memory").ok_or_else(|| {
            Error::Invalid("reference memory: metadata `memory` is missing".into())
        })?;
        let meta: MemoryMeta = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("reference memory metadata: {e}")))?;
        meta.validate()?;
        let d = meta.backbone.embed_dim;
        let expected = meta.bytes() / 4;
        // Host values straight from the file: no device round trip (WebGPU has no
        // synchronous read-back).
        let host = read_weights(
            bytes,
            device,
            expected,
            |_| false,
            |r| {
                Ok((meta.rows.iter().enumerate())
                    .map(|(i, &rows)| r.values(&format!("tap.{i}"), &[rows, d]))
                    .collect::<Vec<_>>())
            },
        )?;
        Self::from_host(meta, host, device)
    }
}

/// numpy's default (linear) percentile of `values`, `q` in [0, 100].
pub fn percentile(values: &[f32], q: f64) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// The references' leave-one-out few-shot map on the grid, averaged over taps: `[k · N]`,
/// from each tap's tokens `[k · N, D]` (normalised). Each image is scored against the other
/// images; a lone image's patches against its other patches.
pub(crate) fn leave_one_out(taps: &[Tensor<2>], k: usize, n: usize) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for m in taps {
        let device = m.device();
        let mt = m.clone().transpose();
        let per_image: Vec<Tensor<2>> = (0..k)
            .map(|i| {
                let sims = m.clone().narrow(0, i * n, n).matmul(mt.clone());
                let sims = if k > 1 {
                    sims.slice_fill([0..n, i * n..(i + 1) * n], -2.0)
                } else {
                    sims - Tensor::<2>::eye(n, &device).mul_scalar(4.0)
                };
                sims.max_dim(1)
            })
            .collect();
        let nearest = Tensor::cat(per_image, 0).reshape([k * n]);
        let dist = nearest.neg().add_scalar(1.0).div_scalar(2.0);
        total = Some(match total {
            Some(t) => t + dist,
            None => dist,
        });
    }
    let taps_n = taps.len().max(1) as f64;
    total.map(|t| t.div_scalar(taps_n))
}
