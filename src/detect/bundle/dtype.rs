//! How a bundle stores its tensors: f16, f32, or weight-only int8 (with its scales).

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::manifest::{FORMAT, FORMAT_INT8};
use crate::error::{Error, Result};
use crate::tensor_io::{SCALE_SUFFIX, float_values, quantize_rows};

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
