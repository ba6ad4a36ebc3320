//! KAnoCLIP's anomaly head on top of the frozen backbone: KnPL prompts (§3), Bi-CMCI (§4)
//! and the Conv-Adapter (§5), and the scoring they feed (§4, §5, §7).

pub mod adapter;
pub mod bicmci;
pub mod config;
pub mod knowledge;
pub mod prompts;
pub(crate) mod tensors;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::clip::VisionOutput;
use adapter::ConvAdapter;
use bicmci::BiCmciLevel;
pub use config::{BackboneId, HeadConfig};
use prompts::{Prompts, l2_normalize};

/// The trainable parameters: prompts, one Bi-CMCI per tap level, and the adapter.
#[derive(Module, Debug)]
pub struct Head {
    /// KnPL's learnable prompts.
    pub prompts: Prompts,
    /// One Bi-CMCI per tap level.
    pub bicmci: Vec<BiCmciLevel>,
    /// The Conv-Adapter.
    pub adapter: ConvAdapter,
    /// Weight of the adapter's output in `g' = g + α · pooled`.
    pub alpha: f64,
}

impl Head {
    /// A fresh head: random prompts, identity Bi-CMCI and adapter.
    pub fn init(
        cfg: &HeadConfig,
        embed_dim: usize,
        text_width: usize,
        text_layers: usize,
        device: &Device,
    ) -> Self {
        Self::init_with(cfg, embed_dim, text_width, text_layers, false, device)
    }

    /// With `zeroed`, a template of the right shapes with nothing drawn at random.
    pub(crate) fn init_with(
        cfg: &HeadConfig,
        embed_dim: usize,
        text_width: usize,
        text_layers: usize,
        zeroed: bool,
        device: &Device,
    ) -> Self {
        Head {
            prompts: Prompts::init_with(cfg, text_width, text_layers, zeroed, device),
            bicmci: (0..cfg.levels)
                .map(|_| BiCmciLevel::init_with(embed_dim, cfg.attn_heads, zeroed, device))
                .collect(),
            adapter: ConvAdapter::init_with(embed_dim, cfg.adapter_reduction, zeroed, device),
            alpha: cfg.alpha,
        }
    }
}

/// Logits and per-patch state probabilities for a batch.
pub struct Scores {
    /// `[B, 2]` global logits (normal, abnormal), already divided by τ.
    pub global_logits: Tensor<2>,
    /// Per tap level, `S_l`: `[B, N, 2]` softmax over the two states, patches without CLS.
    pub local: Vec<Tensor<3>>,
}

/// Score a vision forward pass against the state texts `text` (`[2, D]`, L2-normalised).
/// With a head, Bi-CMCI adapts patches and texts per level and the adapter shifts the
/// global feature; without one (training-free mode) both are skipped.
pub fn score(
    vision: &VisionOutput,
    text: &Tensor<2>,
    head: Option<&Head>,
    tau: f64,
    grid: usize,
) -> Scores {
    let [b, d] = vision.global.dims();
    let texts = text.clone().unsqueeze::<3>().expand([b, 2, d]);
    let mut local = Vec::with_capacity(vision.taps.len());
    for (l, tap) in vision.taps.iter().enumerate() {
        let [_, tokens, _] = tap.dims();
        let patches = tap.clone().narrow(1, 1, tokens - 1);
        let (p, t) = match head.and_then(|h| h.bicmci.get(l)) {
            Some(level) => level.forward(patches, texts.clone()),
            None => (patches, texts.clone()),
        };
        let z = l2_normalize(p)
            .matmul(l2_normalize(t).swap_dims(1, 2))
            .div_scalar(tau);
        local.push(softmax(z, 2));
    }
    let mut g = vision.global.clone();
    if let (Some(h), Some(last)) = (head, vision.taps.last()) {
        let [_, tokens, _] = last.dims();
        g = g + h
            .adapter
            .forward(last.clone().narrow(1, 1, tokens - 1), grid)
            .mul_scalar(h.alpha);
    }
    let global_logits = l2_normalize(g)
        .matmul(text.clone().transpose())
        .div_scalar(tau);
    Scores {
        global_logits,
        local,
    }
}
