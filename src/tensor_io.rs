//! Tensors in and out of files and devices, shared by every part: the safetensors reader
//! that checks each tensor and lists every problem at once, float decoding, read-back to
//! `Vec<f32>`, and SHA-256 in hex.

use std::collections::BTreeSet;

use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Read a tensor back to the host as `f32`s.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| Error::backend("reading a tensor back", e))
}

/// [`to_vec`] with asynchronous read-back, which WebGPU requires.
pub async fn to_vec_async<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(|e| Error::backend("reading a tensor back", e))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::backend("converting a tensor read back", e))
}

/// SHA-256 of `bytes`, as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads float tensors out of a safetensors file by name, checking each shape, and collects
/// every problem so that one error can list them all.
///
/// It is only handed out by [`read_weights`], which runs [`WeightReader::finish`] itself and
/// returns the model only when every tensor was right: a loader cannot forget the check.
pub(crate) struct WeightReader<'a> {
    tensors: SafeTensors<'a>,
    device: Device,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

/// Read a model out of safetensors `bytes`: `build` takes what it needs from the reader;
/// then every problem it met, and every tensor nobody asked for (except those `ignorable`
/// accepts), fails the whole load. The model is returned only from a clean read.
///
/// `expected` is how many values the model's config describes. Missing tensors are stood in
/// for by zeros while the problems are collected, so a config that describes far more than
/// the file holds (another model's config, or a hostile one) is refused before any tensor
/// is made.
pub(crate) fn read_weights<T>(
    bytes: &[u8],
    device: &Device,
    expected: u64,
    ignorable: impl Fn(&str) -> bool,
    build: impl FnOnce(&mut WeightReader) -> Result<T>,
) -> Result<T> {
    let mut reader = WeightReader::new(bytes, device)?;
    let have: u64 = reader
        .tensors
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().map(|&d| d as u64).product::<u64>())
        .sum();
    if expected > have.saturating_mul(2).saturating_add(1 << 20) {
        return Err(Error::WeightsMismatch(vec![format!(
            "the config describes {expected} values but the weights file holds {have}: \
             they are not for the same model"
        )]));
    }
    let model = build(&mut reader)?;
    reader.finish(ignorable)?;
    Ok(model)
}

impl<'a> WeightReader<'a> {
    /// Parse the safetensors header; a truncated or foreign file is refused here.
    fn new(bytes: &'a [u8], device: &Device) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::WeightsFormat(format!("not a readable safetensors file ({e})")))?;
        Ok(Self {
            tensors,
            device: device.clone(),
            used: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.names().contains(&name)
    }

    /// The tensor `name`, which must have `shape`. f16, bf16 and f64 are widened or narrowed
    /// to f32. A problem is recorded and a zero tensor returned, so that loading goes on and
    /// [`WeightReader::finish`] reports every problem at once.
    pub fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Tensor<D> {
        match self.read(name, &shape) {
            Ok(values) => Tensor::from_data(TensorData::new(values, shape), &self.device),
            Err(problem) => {
                self.problems.push(problem);
                Tensor::zeros(shape, &self.device)
            }
        }
    }

    /// A PyTorch-layout matrix `name` of `shape` `[rows, cols]`, transposed on the host into
    /// a contiguous `[cols, rows]` tensor (Burn's `Linear` keeps `[in, out]`). A transposed
    /// view would do for a 2-D product, but Burn reshapes the weight of every `Linear`
    /// call on 3-D input, and a reshape of a view copies it: the whole model's weights, on
    /// every forward pass (a fifth of a ViT-B/16 forward on the CPU).
    pub fn tensor_t(&mut self, name: &str, shape: [usize; 2]) -> Tensor<2> {
        let [rows, cols] = shape;
        match self.read(name, &shape) {
            Ok(values) => {
                let mut t = vec![0.0f32; values.len()];
                for (r, row) in values.chunks_exact(cols).enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        t[c * rows + r] = *v;
                    }
                }
                Tensor::from_data(TensorData::new(t, [cols, rows]), &self.device)
            }
            Err(problem) => {
                self.problems.push(problem);
                Tensor::zeros([cols, rows], &self.device)
            }
        }
    }

    /// sha256 (hex, first 16 bytes) of a tensor's values rounded to f16: the same for f16,
    /// bf16-free f32 and f64 copies of one tensor.
    pub fn f16_digest(&mut self, name: &str) -> Option<String> {
        let shape = self.tensors.tensor(name).ok()?.shape().to_vec();
        let values = self.read(name, &shape).ok()?;
        let mut hash = Sha256::new();
        for v in values {
            hash.update(half::f16::from_f32(v).to_le_bytes());
        }
        Some(hex(&hash.finalize()[..16]))
    }

    /// The values of tensor `name` of `shape` on the host (a problem is recorded and an
    /// empty vector returned). No device round trip: WebGPU cannot read back synchronously.
    pub fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        match self.read(name, shape) {
            Ok(values) => values,
            Err(problem) => {
                self.problems.push(problem);
                Vec::new()
            }
        }
    }

    /// A scalar stored as shape `[]` or `[1]`.
    pub fn scalar(&mut self, name: &str) -> f32 {
        let shape = self
            .tensors
            .tensor(name)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let expect: &[usize] = if shape == [1] { &[1] } else { &[] };
        match self.read(name, expect) {
            Ok(v) => v[0],
            Err(problem) => {
                self.problems.push(problem);
                0.0
            }
        }
    }

    fn read(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Vec<f32>, String> {
        let view = self
            .tensors
            .tensor(name)
            .map_err(|_| format!("missing tensor `{name}` {shape:?}"))?;
        self.used.insert(name.to_string());
        if view.shape() != shape {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                view.shape()
            ));
        }
        let values = float_values(view.dtype(), view.data()).ok_or_else(|| {
            format!(
                "tensor `{name}` has dtype {:?}, expected a float type",
                view.dtype()
            )
        })?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{name}` holds a non-finite value at element {i}"
            ));
        }
        Ok(values)
    }

    /// Fail with every recorded problem, plus every tensor nobody asked for (except those
    /// `ignorable` accepts, such as buffers that some exporters save).
    fn finish(self, ignorable: impl Fn(&str) -> bool) -> Result<()> {
        let mut problems = self.problems;
        let mut unexpected: Vec<&str> = self
            .tensors
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(*n) && !ignorable(n))
            .collect();
        unexpected.sort();
        problems.extend(
            unexpected
                .into_iter()
                .map(|n| format!("unexpected tensor `{n}`")),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::WeightsMismatch(problems))
        }
    }
}

/// The values of a float tensor's little-endian bytes as f32, or `None` for a non-float
/// dtype.
pub fn float_values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    })
}
