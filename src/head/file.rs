//! The head file: the trainable parameters as safetensors, with the head's config, the
//! detector settings it was trained with and the backbone it belongs to in the metadata.
//!
//! Written with the `safetensors` crate rather than burn-store so that loading goes through
//! the same checks as CLIP weights (shapes, dtypes, non-finite values, missing and
//! unexpected tensors, all listed at once), and so that the Python reference in `scripts/`
//! can write head files by these plain names. Linear weights are stored PyTorch-style,
//! `[out, in]`.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::adapter::ConvAdapter;
use super::bicmci::{BiCmciLevel, CrossAttention};
use super::prompts::Prompts;
use super::{BackboneId, Head, HeadConfig};
use crate::clip::embed::to_vec;
use crate::clip::layers::{layer_norm, linear_from_torch};
use crate::clip::safetensors_reader::WeightReader;
use crate::detect::DetectorConfig;
use crate::error::{Error, Result};

pub const FORMAT: &str = "kanoclip-head/1";

/// Everything in a head file besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    pub head: HeadConfig,
    pub detector: DetectorConfig,
    pub backbone: BackboneId,
}

/// `(name, shape, values)` for every parameter, in file order.
/// A named parameter: file name, shape, row-major values.
type Entry = (String, Vec<usize>, Vec<f32>);

fn entries(head: &Head) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut push =
        |name: String, dims: Vec<usize>, values: Vec<f32>| out.push((name, dims, values));
    let p = &head.prompts;
    for (name, t) in [
        ("prompts.normal_ctx", &p.normal_ctx),
        ("prompts.abnormal_ctx", &p.abnormal_ctx),
    ] {
        push(name.into(), t.dims().to_vec(), to_vec(t.val())?);
    }
    for (i, t) in p.deep.iter().enumerate() {
        push(
            format!("prompts.deep.{i}"),
            t.dims().to_vec(),
            to_vec(t.val())?,
        );
    }
    let ln = |push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>),
              name: &str,
              ln: &LayerNorm|
     -> Result<()> {
        push(
            format!("{name}.weight"),
            ln.gamma.dims().to_vec(),
            to_vec(ln.gamma.val())?,
        );
        if let Some(b) = &ln.beta {
            push(format!("{name}.bias"), b.dims().to_vec(), to_vec(b.val())?);
        }
        Ok(())
    };
    let lin = |push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>),
               name: &str,
               l: &Linear|
     -> Result<()> {
        let w = l.weight.val().transpose();
        push(format!("{name}.weight"), w.dims().to_vec(), to_vec(w)?);
        if let Some(b) = &l.bias {
            push(format!("{name}.bias"), b.dims().to_vec(), to_vec(b.val())?);
        }
        Ok(())
    };
    let conv = |push: &mut dyn FnMut(String, Vec<usize>, Vec<f32>),
                name: &str,
                c: &Conv2d|
     -> Result<()> {
        push(
            format!("{name}.weight"),
            c.weight.dims().to_vec(),
            to_vec(c.weight.val())?,
        );
        if let Some(b) = &c.bias {
            push(format!("{name}.bias"), b.dims().to_vec(), to_vec(b.val())?);
        }
        Ok(())
    };
    for (l, level) in head.bicmci.iter().enumerate() {
        for (dir, x) in [
            ("image_from_text", &level.image_from_text),
            ("text_from_image", &level.text_from_image),
        ] {
            let n = format!("bicmci.{l}.{dir}");
            ln(&mut push, &format!("{n}.ln_q"), &x.ln_q)?;
            ln(&mut push, &format!("{n}.ln_kv"), &x.ln_kv)?;
            for (part, linear) in [("q", &x.q), ("k", &x.k), ("v", &x.v), ("out", &x.out)] {
                lin(&mut push, &format!("{n}.{part}"), linear)?;
            }
        }
    }
    for (name, c) in [
        ("adapter.c1", &head.adapter.c1),
        ("adapter.c2", &head.adapter.c2),
        ("adapter.c3", &head.adapter.c3),
    ] {
        conv(&mut push, name, c)?;
    }
    Ok(out)
}

/// Write the head atomically: a temporary file in the same folder, synced, then renamed, so
/// that a failure never leaves a half-written head under `path`.
pub fn save_head(path: impl AsRef<Path>, head: &Head, meta: &HeadMeta) -> Result<()> {
    crate::atomic::write(path.as_ref(), &head_bytes(head, meta)?)
}

/// The head file's bytes.
pub fn head_bytes(head: &Head, meta: &HeadMeta) -> Result<Vec<u8>> {
    let entries = entries(head)?;
    let bytes: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, dims, _), b)| {
            TensorView::new(Dtype::F32, dims.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Head(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("head".to_string(), to_json(&meta.head)?),
        ("detector".to_string(), to_json(&meta.detector)?),
        ("backbone".to_string(), to_json(&meta.backbone)?),
    ]
    .into();
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Head(e.to_string()))
}

fn to_json(v: &impl Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Head(e.to_string()))
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
        return Err(Error::Head(format!(
            "format `{}` is not `{FORMAT}`",
            get("format")?
        )));
    }
    let parse = |k: &str| -> Result<serde_json::Value> {
        serde_json::from_str(get(k)?).map_err(|e| Error::Head(format!("metadata `{k}`: {e}")))
    };
    let meta = HeadMeta {
        head: serde_json::from_value(parse("head")?)
            .map_err(|e| Error::Head(format!("metadata `head`: {e}")))?,
        detector: serde_json::from_value(parse("detector")?)
            .map_err(|e| Error::Head(format!("metadata `detector`: {e}")))?,
        backbone: serde_json::from_value(parse("backbone")?)
            .map_err(|e| Error::Head(format!("metadata `backbone`: {e}")))?,
    };
    Ok(meta)
}

/// Load a head for `backbone`: a head built for another backbone is refused by name.
pub fn load_head(
    bytes: &[u8],
    backbone: &BackboneId,
    context_length: usize,
    device: &Device,
) -> Result<(Head, HeadMeta)> {
    let meta = read_meta(bytes)?;
    if &meta.backbone != backbone {
        return Err(Error::Head(format!(
            "this head was built for another backbone (embed {} / vision {}×{} / patch {} / text {}×{} / weights {}), \
             but the loaded CLIP is embed {} / vision {}×{} / patch {} / text {}×{} / weights {}",
            meta.backbone.embed_dim,
            meta.backbone.vision_width,
            meta.backbone.vision_layers,
            meta.backbone.patch_size,
            meta.backbone.text_width,
            meta.backbone.text_layers,
            meta.backbone.fingerprint,
            backbone.embed_dim,
            backbone.vision_width,
            backbone.vision_layers,
            backbone.patch_size,
            backbone.text_width,
            backbone.text_layers,
            backbone.fingerprint,
        )));
    }
    meta.head.validate(backbone.embed_dim, context_length)?;
    meta.detector
        .validate(backbone.vision_layers, backbone.patch_size)?;
    if meta.head.levels != meta.detector.taps.len() {
        return Err(Error::Head(format!(
            "{} Bi-CMCI levels but {} taps",
            meta.head.levels,
            meta.detector.taps.len()
        )));
    }
    let mut r = WeightReader::new(bytes, device).map_err(|e| Error::Head(e.to_string()))?;
    let (d, wt) = (backbone.embed_dim, backbone.text_width);
    let cfg = &meta.head;
    let deep_blocks = cfg.deep_block_list(backbone.text_layers);
    let prompts = Prompts {
        normal_ctx: Param::from_tensor(r.tensor("prompts.normal_ctx", [cfg.n_ctx, wt])),
        abnormal_ctx: Param::from_tensor(r.tensor("prompts.abnormal_ctx", [cfg.n_ctx, wt])),
        deep: (0..deep_blocks.len())
            .map(|i| Param::from_tensor(r.tensor(&format!("prompts.deep.{i}"), [cfg.deep_len, wt])))
            .collect(),
        deep_blocks,
    };
    let read_ln = |r: &mut WeightReader, n: &str| {
        layer_norm(
            r.tensor(&format!("{n}.weight"), [d]),
            r.tensor(&format!("{n}.bias"), [d]),
            1e-5,
        )
    };
    let read_lin = |r: &mut WeightReader, n: &str| {
        linear_from_torch(
            r.tensor(&format!("{n}.weight"), [d, d]),
            Some(r.tensor(&format!("{n}.bias"), [d])),
        )
    };
    let xattn = |r: &mut WeightReader, n: String| CrossAttention {
        ln_q: read_ln(r, &format!("{n}.ln_q")),
        ln_kv: read_ln(r, &format!("{n}.ln_kv")),
        q: read_lin(r, &format!("{n}.q")),
        k: read_lin(r, &format!("{n}.k")),
        v: read_lin(r, &format!("{n}.v")),
        out: read_lin(r, &format!("{n}.out")),
        heads: cfg.attn_heads,
    };
    let bicmci = (0..cfg.levels)
        .map(|l| BiCmciLevel {
            image_from_text: xattn(&mut r, format!("bicmci.{l}.image_from_text")),
            text_from_image: xattn(&mut r, format!("bicmci.{l}.text_from_image")),
        })
        .collect();
    let rr = d / cfg.adapter_reduction;
    let mut adapter = ConvAdapter::init(d, cfg.adapter_reduction, device);
    for (c, name, shape) in [
        (&mut adapter.c1, "adapter.c1", [rr, d, 1, 1]),
        (&mut adapter.c2, "adapter.c2", [rr, rr, 3, 3]),
        (&mut adapter.c3, "adapter.c3", [d, rr, 1, 1]),
    ] {
        c.weight = Param::from_tensor(r.tensor(&format!("{name}.weight"), shape));
        c.bias = Some(Param::from_tensor(
            r.tensor(&format!("{name}.bias"), [shape[0]]),
        ));
    }
    r.finish(|_| false)
        .map_err(|e| Error::Head(e.to_string()))?;
    Ok((
        Head {
            prompts,
            bicmci,
            adapter,
            alpha: cfg.alpha,
        },
        meta,
    ))
}

/// Read and load a head file.
pub fn load_head_file(
    path: impl AsRef<Path>,
    backbone: &BackboneId,
    context_length: usize,
    device: &Device,
) -> Result<(Head, HeadMeta)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    load_head(&bytes, backbone, context_length, device).map_err(|e| match e {
        Error::Head(m) => Error::Head(format!("{}: {m}", path.display())),
        other => other,
    })
}
