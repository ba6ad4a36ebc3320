//! The head's tensors by name: one table ([`visit`]) lists every parameter once, with its
//! file name and orientation, and drives both the writer and the reader.
//!
//! Stored with the `safetensors` crate rather than burn-store so that loading goes through
//! the same checks as CLIP weights (shapes, dtypes, non-finite values, missing and
//! unexpected tensors, all listed at once), and so that the Python reference in `scripts/`
//! can write head files by these plain names. Linear weights are stored PyTorch-style,
//! `[out, in]`.

use std::collections::HashMap;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{Head, HeadConfig};
use crate::error::{Error, Result};
use crate::tensor_io::{WeightReader, to_vec};

/// One parameter of the table, borrowed for reading or writing.
enum Slot<'a> {
    R1(&'a mut Param<Tensor<1>>),
    /// `torch_linear`: stored transposed (`[out, in]`), as PyTorch's `Linear` keeps it.
    R2(&'a mut Param<Tensor<2>>, bool),
    R4(&'a mut Param<Tensor<4>>),
}

/// The table: every head parameter with its file name, in file order.
fn visit(head: &mut Head, f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>) -> Result<()> {
    let p = &mut head.prompts;
    f(
        "prompts.normal_ctx".into(),
        Slot::R2(&mut p.normal_ctx, false),
    )?;
    f(
        "prompts.abnormal_ctx".into(),
        Slot::R2(&mut p.abnormal_ctx, false),
    )?;
    for (i, t) in p.deep.iter_mut().enumerate() {
        f(format!("prompts.deep.{i}"), Slot::R2(t, false))?;
    }
    let ln = |f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>, n: String, ln: &mut LayerNorm| {
        f(format!("{n}.weight"), Slot::R1(&mut ln.gamma))?;
        match &mut ln.beta {
            Some(b) => f(format!("{n}.bias"), Slot::R1(b)),
            None => Ok(()),
        }
    };
    let lin = |f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>, n: String, l: &mut Linear| {
        f(format!("{n}.weight"), Slot::R2(&mut l.weight, true))?;
        match &mut l.bias {
            Some(b) => f(format!("{n}.bias"), Slot::R1(b)),
            None => Ok(()),
        }
    };
    let conv = |f: &mut dyn FnMut(String, Slot<'_>) -> Result<()>, n: &str, c: &mut Conv2d| {
        f(format!("{n}.weight"), Slot::R4(&mut c.weight))?;
        match &mut c.bias {
            Some(b) => f(format!("{n}.bias"), Slot::R1(b)),
            None => Ok(()),
        }
    };
    for (l, level) in head.bicmci.iter_mut().enumerate() {
        for (dir, x) in [
            ("image_from_text", &mut level.image_from_text),
            ("text_from_image", &mut level.text_from_image),
        ] {
            let n = format!("bicmci.{l}.{dir}");
            ln(f, format!("{n}.ln_q"), &mut x.ln_q)?;
            ln(f, format!("{n}.ln_kv"), &mut x.ln_kv)?;
            for (part, linear) in [
                ("q", &mut x.q),
                ("k", &mut x.k),
                ("v", &mut x.v),
                ("out", &mut x.out),
            ] {
                lin(f, format!("{n}.{part}"), linear)?;
            }
        }
    }
    let a = &mut head.adapter;
    conv(f, "adapter.c1", &mut a.c1)?;
    conv(f, "adapter.c2", &mut a.c2)?;
    conv(f, "adapter.c3", &mut a.c3)
}

/// The head's tensors as a safetensors file (f32) with `metadata`.
pub(crate) fn to_safetensors(head: &Head, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut head = head.clone();
    visit(&mut head, &mut |name, slot| {
        let (dims, values) = match slot {
            Slot::R1(p) => (p.dims().to_vec(), to_vec(p.val())?),
            Slot::R2(p, false) => (p.dims().to_vec(), to_vec(p.val())?),
            Slot::R2(p, true) => {
                let w = p.val().transpose();
                (w.dims().to_vec(), to_vec(w)?)
            }
            Slot::R4(p) => (p.dims().to_vec(), to_vec(p.val())?),
        };
        let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        entries.push((name, dims, bytes));
        Ok(())
    })?;
    let views = entries
        .iter()
        .map(|(name, dims, b)| {
            TensorView::new(Dtype::F32, dims.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Head(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Head(e.to_string()))
}

/// The shapes of a head for a backbone of these sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadDims {
    /// CLIP's joint embedding width `D`.
    pub embed_dim: usize,
    /// The text tower's width.
    pub text_width: usize,
    /// The text tower's depth.
    pub text_layers: usize,
}

/// Read a head of `cfg`'s shape from `r`: the table's shapes come from a head built to
/// `cfg`, every tensor of which is then replaced by the file's.
pub(crate) fn read(
    r: &mut WeightReader,
    cfg: &HeadConfig,
    dims: HeadDims,
    device: &Device,
) -> Result<Head> {
    let (d, w, l) = (dims.embed_dim, dims.text_width, dims.text_layers);
    let mut head = Head::init_with(cfg, d, w, l, true, device);
    visit(&mut head, &mut |name, slot| {
        match slot {
            Slot::R1(p) => *p = Param::from_tensor(r.tensor(&name, p.dims())),
            Slot::R2(p, false) => *p = Param::from_tensor(r.tensor(&name, p.dims())),
            Slot::R2(p, true) => {
                let [i, o] = p.dims();
                *p = Param::from_tensor(r.tensor_t(&name, [o, i]));
            }
            Slot::R4(p) => *p = Param::from_tensor(r.tensor(&name, p.dims())),
        }
        Ok(())
    })?;
    Ok(head)
}
