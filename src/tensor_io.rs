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
            Ok(values) => Tensor::from_data(
                TensorData::new(transpose(&values, rows, cols), [cols, rows]),
                &self.device,
            ),
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
        let values = if view.dtype() == Dtype::I8 {
            self.dequantized(name, shape, view.data())?
        } else {
            float_values(view.dtype(), view.data()).ok_or_else(|| {
                format!(
                    "tensor `{name}` has dtype {:?}, expected a float type",
                    view.dtype()
                )
            })?
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{name}` holds a non-finite value at element {i}"
            ));
        }
        Ok(values)
    }

    /// An int8 tensor `name` (a bundle's `--dtype int8` weight) widened to f32 with its
    /// per-row scales `{name}.scale` (f32, one per row of `shape`, finite and ≥ 0).
    fn dequantized(
        &mut self,
        name: &str,
        shape: &[usize],
        q: &[u8],
    ) -> std::result::Result<Vec<f32>, String> {
        let scale_name = format!("{name}{SCALE_SUFFIX}");
        let rows = shape.first().copied().unwrap_or(1);
        let scale = self
            .tensors
            .tensor(&scale_name)
            .map_err(|_| format!("int8 tensor `{name}` has no `{scale_name}`"))?;
        self.used.insert(scale_name.clone());
        if scale.dtype() != Dtype::F32 || scale.shape() != [rows] {
            return Err(format!(
                "`{scale_name}` is {:?} {:?}, expected F32 [{rows}]",
                scale.dtype(),
                scale.shape()
            ));
        }
        let scales = float_values(Dtype::F32, scale.data()).unwrap_or_default();
        if scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(format!(
                "`{scale_name}` holds a negative or non-finite scale"
            ));
        }
        Ok(dequantize_rows(q, &scales))
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

/// `values`, a row-major `rows × cols` matrix, transposed to `cols × rows`, in 32 × 32
/// tiles: a row-by-row loop writes with a stride of `rows` floats and misses the cache on
/// every write, which made this a tenth of loading a ViT-B/16.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let row = &values[r * cols..(r + 1) * cols];
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = row[c];
                }
            }
        }
    }
    t
}

/// The name suffix of an int8 tensor's scales: `W` is stored as int8 `W` and f32
/// `W.scale`.
pub const SCALE_SUFFIX: &str = ".scale";

/// Weight-only int8, symmetric, one scale per row (a PyTorch weight's row is one output
/// channel): `scale = max|row| / 127`, `q = round(w / scale)` in [-127, 127]; a row of zeros
/// has scale 0. Returns the int8 values and the scales.
pub fn quantize_rows(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = values.len().checked_div(rows).unwrap_or(0);
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(cols.max(1)).take(rows) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        q.extend(row.iter().map(|v| {
            if scale > 0.0 {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        }));
    }
    (q, scales)
}

/// The inverse of [`quantize_rows`]: `q · scale` of its row. `q` holds the int8 bytes;
/// its length is a multiple of the number of scales (checked by the safetensors shape).
pub fn dequantize_rows(q: &[u8], scales: &[f32]) -> Vec<f32> {
    let cols = q.len().checked_div(scales.len()).unwrap_or(0).max(1);
    q.iter()
        .enumerate()
        .map(|(i, &b)| f32::from(b as i8) * scales.get(i / cols).copied().unwrap_or(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_element_across_tile_edges() {
        // 37 × 70: neither side a multiple of the 32-wide tile.
        let (rows, cols) = (37, 70);
        let m: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let t = transpose(&m, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], (r * cols + c) as f32);
            }
        }
    }

    #[test]
    fn rows_quantise_symmetrically_by_hand() {
        // Row 0: max 1 → scale 1/127; 1 → 127, -0.6 → -76.2 → -76,
        // 0.25 → 31.75 → 32. Row 1: all zero → scale 0, q 0. Row 2: max 2.54 → 0.02;
        // -2.54 → -127, 0.011 → 0.55 → 1, 0.029 → 1.45 → 1.
        let w = [1.0, -0.6, 0.25, 0.0, 0.0, 0.0, -2.54, 0.011, 0.029];
        let (q, s) = quantize_rows(&w, 3);
        assert_eq!(q, [127, -76, 32, 0, 0, 0, -127, 1, 1]);
        assert_eq!(s, [1.0 / 127.0, 0.0, 2.54 / 127.0]);
        let bytes: Vec<u8> = q.iter().map(|v| *v as u8).collect();
        let back = dequantize_rows(&bytes, &s);
        let want = [
            1.0,
            -76.0 / 127.0,
            32.0 / 127.0,
            0.0,
            0.0,
            0.0,
            -2.54,
            0.02,
            0.02,
        ];
        for (b, w) in back.iter().zip(want) {
            assert!((b - w).abs() < 1e-6, "{back:?}");
        }
        // Every value is within half a step of its row's scale.
        for (i, (b, v)) in back.iter().zip(w).enumerate() {
            assert!((b - v).abs() <= s[i / 3] / 2.0 + 1e-7);
        }
    }
}
