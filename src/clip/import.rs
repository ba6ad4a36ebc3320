//! Builds a [`Clip`] from a safetensors checkpoint in either of the layouts users have:
//! OpenAI / open_clip state-dict names, or Hugging Face `CLIPModel` names.

use burn::module::Param;
use burn::prelude::*;

use super::config::{Activation, ClipConfig, TowerConfig};
use super::layers::{Attention, Block, Mlp, layer_norm, linear};
use super::model::Clip;
use super::text::TextTower;
use super::vision::VisionTower;
use crate::error::{Error, Result};
use crate::tensor_io::{WeightReader, read_weights};

/// The naming scheme of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `visual.transformer.resblocks.N.attn.in_proj_weight`, ...
    OpenClip,
    /// `vision_model.encoder.layers.N.self_attn.q_proj.weight`, ...
    HuggingFace,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tower {
    Vision,
    Text,
}

impl Layout {
    fn detect(r: &WeightReader) -> Result<Self> {
        if r.contains("visual.conv1.weight") {
            Ok(Layout::OpenClip)
        } else if r.contains("vision_model.embeddings.patch_embedding.weight") {
            Ok(Layout::HuggingFace)
        } else {
            Err(Error::WeightsMismatch(vec![
                "neither `visual.conv1.weight` (OpenAI/open_clip) nor \
                 `vision_model.embeddings.patch_embedding.weight` (Hugging Face) is present: \
                 not a CLIP checkpoint"
                    .into(),
            ]))
        }
    }

    fn block_prefix(self, tower: Tower, i: usize) -> String {
        match (self, tower) {
            (Layout::OpenClip, Tower::Vision) => format!("visual.transformer.resblocks.{i}."),
            (Layout::OpenClip, Tower::Text) => format!("transformer.resblocks.{i}."),
            (Layout::HuggingFace, Tower::Vision) => format!("vision_model.encoder.layers.{i}."),
            (Layout::HuggingFace, Tower::Text) => format!("text_model.encoder.layers.{i}."),
        }
    }
}

/// Reads `{prefix}weight` and `{prefix}bias` of a layer norm.
fn read_ln(r: &mut WeightReader, prefix: &str, width: usize, eps: f64) -> burn::nn::LayerNorm {
    let g = r.tensor(&format!("{prefix}weight"), [width]);
    let b = r.tensor(&format!("{prefix}bias"), [width]);
    layer_norm(g, b, eps)
}

/// Reads a PyTorch linear layer `{prefix}weight [out, in]`, `{prefix}bias [out]`.
fn read_linear(r: &mut WeightReader, prefix: &str, d_in: usize, d_out: usize) -> burn::nn::Linear {
    let w = r.tensor_t(&format!("{prefix}weight"), [d_out, d_in]);
    let b = r.tensor(&format!("{prefix}bias"), [d_out]);
    linear(w, Some(b))
}

fn read_block(
    r: &mut WeightReader,
    layout: Layout,
    tower: Tower,
    i: usize,
    cfg: &TowerConfig,
    act: Activation,
) -> Block {
    let p = layout.block_prefix(tower, i);
    let (w, m, eps) = (cfg.width, cfg.mlp_width, cfg.ln_eps);
    match layout {
        Layout::OpenClip => Block {
            ln_1: read_ln(r, &format!("{p}ln_1."), w, eps),
            attn: Attention {
                in_proj: linear(
                    r.tensor_t(&format!("{p}attn.in_proj_weight"), [3 * w, w]),
                    Some(r.tensor(&format!("{p}attn.in_proj_bias"), [3 * w])),
                ),
                out_proj: read_linear(r, &format!("{p}attn.out_proj."), w, w),
                heads: cfg.heads,
            },
            ln_2: read_ln(r, &format!("{p}ln_2."), w, eps),
            mlp: Mlp::new(
                read_linear(r, &format!("{p}mlp.c_fc."), w, m),
                read_linear(r, &format!("{p}mlp.c_proj."), m, w),
                act,
            ),
        },
        Layout::HuggingFace => {
            // Fuse q, k and v into one in_proj, in that order, as PyTorch's MHA stores it.
            let [qw, kw, vw] = ["q", "k", "v"]
                .map(|n| r.tensor_t(&format!("{p}self_attn.{n}_proj.weight"), [w, w]));
            let [qb, kb, vb] =
                ["q", "k", "v"].map(|n| r.tensor(&format!("{p}self_attn.{n}_proj.bias"), [w]));
            Block {
                ln_1: read_ln(r, &format!("{p}layer_norm1."), w, eps),
                attn: Attention {
                    in_proj: linear(
                        // `[in, out]`: q, k and v side by side along the outputs.
                        Tensor::cat(vec![qw, kw, vw], 1),
                        Some(Tensor::cat(vec![qb, kb, vb], 0)),
                    ),
                    out_proj: read_linear(r, &format!("{p}self_attn.out_proj."), w, w),
                    heads: cfg.heads,
                },
                ln_2: read_ln(r, &format!("{p}layer_norm2."), w, eps),
                mlp: Mlp::new(
                    read_linear(r, &format!("{p}mlp.fc1."), w, m),
                    read_linear(r, &format!("{p}mlp.fc2."), m, w),
                    act,
                ),
            }
        }
    }
}

/// A projection stored as `[in, out]` (open_clip parameter) or `[out, in]` (HF linear).
fn read_projection(
    r: &mut WeightReader,
    layout: Layout,
    open_clip: &str,
    hf: &str,
    d_in: usize,
    d_out: usize,
) -> Tensor<2> {
    match layout {
        Layout::OpenClip => r.tensor(open_clip, [d_in, d_out]),
        Layout::HuggingFace => r.tensor_t(hf, [d_out, d_in]),
    }
}

fn read_vision(r: &mut WeightReader, layout: Layout, cfg: &ClipConfig) -> VisionTower {
    let v = &cfg.vision;
    let (w, p, n) = (v.tower.width, v.patch_size, cfg.grid() * cfg.grid() + 1);
    let eps = v.tower.ln_eps;
    let (conv, cls, pos, pre, post) = match layout {
        Layout::OpenClip => (
            "visual.conv1.weight",
            "visual.class_embedding",
            "visual.positional_embedding",
            "visual.ln_pre.",
            "visual.ln_post.",
        ),
        Layout::HuggingFace => (
            "vision_model.embeddings.patch_embedding.weight",
            "vision_model.embeddings.class_embedding",
            "vision_model.embeddings.position_embedding.weight",
            "vision_model.pre_layrnorm.",
            "vision_model.post_layernorm.",
        ),
    };
    VisionTower {
        conv1: Param::from_tensor(r.tensor(conv, [w, 3, p, p])),
        class_embedding: Param::from_tensor(r.tensor(cls, [w])),
        positional_embedding: Param::from_tensor(r.tensor(pos, [n, w])),
        ln_pre: read_ln(r, pre, w, eps),
        blocks: (0..v.tower.layers)
            .map(|i| read_block(r, layout, Tower::Vision, i, &v.tower, cfg.activation))
            .collect(),
        ln_post: read_ln(r, post, w, eps),
        proj: Param::from_tensor(read_projection(
            r,
            layout,
            "visual.proj",
            "visual_projection.weight",
            w,
            cfg.embed_dim,
        )),
        patch_size: p,
    }
}

fn read_text(r: &mut WeightReader, layout: Layout, cfg: &ClipConfig) -> TextTower {
    let t = &cfg.text;
    let w = t.tower.width;
    let (tok, pos, fin) = match layout {
        Layout::OpenClip => (
            "token_embedding.weight",
            "positional_embedding",
            "ln_final.",
        ),
        Layout::HuggingFace => (
            "text_model.embeddings.token_embedding.weight",
            "text_model.embeddings.position_embedding.weight",
            "text_model.final_layer_norm.",
        ),
    };
    TextTower {
        token_embedding: Param::from_tensor(r.tensor(tok, [t.vocab_size, w])),
        positional_embedding: Param::from_tensor(r.tensor(pos, [t.context_length, w])),
        blocks: (0..t.tower.layers)
            .map(|i| read_block(r, layout, Tower::Text, i, &t.tower, cfg.activation))
            .collect(),
        ln_final: read_ln(r, fin, w, t.tower.ln_eps),
        text_projection: Param::from_tensor(read_projection(
            r,
            layout,
            "text_projection",
            "text_projection.weight",
            w,
            cfg.embed_dim,
        )),
    }
}

/// Buffers that exporters save but that carry no weights.
fn ignorable(name: &str) -> bool {
    name.ends_with("position_ids") || name == "attn_mask" || name.ends_with(".attn_mask")
}

/// Whether a tensor name belongs to the image tower (in either layout).
pub(crate) fn is_vision_tensor(name: &str) -> bool {
    name.starts_with("visual.")
        || name.starts_with("vision_model.")
        || name == "visual_projection.weight"
}

/// The layout and the fingerprint of the patch conv.
fn identify(r: &mut WeightReader) -> Result<(Layout, String)> {
    let layout = Layout::detect(r)?;
    let conv = match layout {
        Layout::OpenClip => "visual.conv1.weight",
        Layout::HuggingFace => "vision_model.embeddings.patch_embedding.weight",
    };
    Ok((layout, r.f16_digest(conv).unwrap_or_default()))
}

impl VisionTower {
    /// Load only the image tower (what the browser bundle carries), with the weights'
    /// fingerprint. Tensors of other parts are not read.
    pub fn from_safetensors(
        cfg: &ClipConfig,
        bytes: &[u8],
        device: &Device,
    ) -> Result<(VisionTower, String)> {
        cfg.validate()?;
        let keep = |name: &str| ignorable(name) || !is_vision_tensor(name);
        read_weights(bytes, device, cfg.parameter_count(true), keep, |r| {
            let (layout, fingerprint) = identify(r)?;
            Ok((read_vision(r, layout, cfg), fingerprint))
        })
    }
}

impl Clip {
    /// Load a whole CLIP model from safetensors bytes in OpenAI/open_clip or Hugging Face
    /// names (f32, f16, bf16 or f64). Every missing, unexpected, mis-shaped, wrongly typed
    /// or non-finite tensor is listed in one [`Error::WeightsMismatch`].
    pub fn from_safetensors(cfg: &ClipConfig, bytes: &[u8], device: &Device) -> Result<Self> {
        cfg.validate()?;
        read_weights(bytes, device, cfg.parameter_count(false), ignorable, |r| {
            let (layout, fingerprint) = identify(r)?;
            let vision = read_vision(r, layout, cfg);
            let text = read_text(r, layout, cfg);
            let logit_scale = r.scalar("logit_scale");
            Ok(Clip {
                config: cfg.clone(),
                vision,
                text,
                logit_scale: logit_scale.exp(),
                fingerprint,
            })
        })
    }

    /// Read a config file (open_clip JSON or Hugging Face `config.json`) and a weights file.
    pub fn from_files(
        config: impl AsRef<std::path::Path>,
        weights: impl AsRef<std::path::Path>,
        device: &Device,
    ) -> Result<Self> {
        let config = ClipConfig::from_file(config)?;
        let path = weights.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_safetensors(&config, &bytes, device)
    }
}
