//! KnPL's learnable prompts (spec §3), class-agnostic as in AnomalyCLIP:
//! `normal = [V1..VM] object.` and `abnormal = [W1..WM] damaged object.`, with deep prompts
//! that replace the tokens right after SOT at text blocks 2..9. The text encoder is frozen.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::config::HeadConfig;
use crate::clip::Tokenizer;
use crate::clip::text::{TextTower, eot_positions};
use crate::error::Result;

/// KnPL's learnable context vectors and deep prompts.
#[derive(Module, Debug)]
pub struct Prompts {
    /// `[M, text width]` each.
    pub normal_ctx: Param<Tensor<2>>,
    /// `[M, text width]`: the abnormal prompt's context.
    pub abnormal_ctx: Param<Tensor<2>>,
    /// One `[deep_len, text width]` per deep block, in block order.
    pub deep: Vec<Param<Tensor<2>>>,
    /// The 1-indexed text blocks the `deep` entries belong to.
    pub deep_blocks: Vec<usize>,
}

/// The fixed template token rows, made once.
#[derive(Clone, Debug)]
pub struct PromptTokens {
    /// The two template rows (normal, abnormal).
    pub rows: Vec<Vec<u32>>,
}

impl PromptTokens {
    /// `"X X … X object."` and `"X X … X damaged object."` with `n_ctx` placeholders, whose
    /// embeddings the learnable vectors replace.
    pub fn new(tokenizer: &Tokenizer, n_ctx: usize, context_length: usize) -> Result<Self> {
        let ctx = vec!["X"; n_ctx].join(" ");
        let rows = tokenizer.tokenize_batch(
            &[format!("{ctx} object."), format!("{ctx} damaged object.")],
            context_length,
        )?;
        Ok(Self { rows })
    }
}

impl Prompts {
    /// Random init, `N(0, 0.02)` as AnomalyCLIP.
    pub fn init(cfg: &HeadConfig, text_width: usize, text_layers: usize, device: &Device) -> Self {
        Self::init_with(cfg, text_width, text_layers, false, device)
    }

    /// With `zeroed`, every vector starts at zero and nothing is drawn at random.
    pub(crate) fn init_with(
        cfg: &HeadConfig,
        text_width: usize,
        text_layers: usize,
        zeroed: bool,
        device: &Device,
    ) -> Self {
        let draw = |rows: usize| {
            Param::from_tensor(if zeroed {
                Tensor::zeros([rows, text_width], device)
            } else {
                Tensor::random([rows, text_width], Distribution::Normal(0.0, 0.02), device)
            })
        };
        let deep_blocks = cfg.deep_block_list(text_layers);
        Prompts {
            normal_ctx: draw(cfg.n_ctx),
            abnormal_ctx: draw(cfg.n_ctx),
            deep: deep_blocks.iter().map(|_| draw(cfg.deep_len)).collect(),
            deep_blocks,
        }
    }

    /// `T = [t_n; t_a]`, `[2, D]`, L2-normalised.
    pub fn encode(&self, text: &TextTower, tokens: &PromptTokens) -> Tensor<2> {
        let embeds = text.embed_tokens(&tokens.rows);
        let [_, c, _] = embeds.dims();
        let m = self.normal_ctx.dims()[0];
        let ctx = Tensor::stack::<3>(vec![self.normal_ctx.val(), self.abnormal_ctx.val()], 0);
        let x = Tensor::cat(
            vec![
                embeds.clone().narrow(1, 0, 1),
                ctx,
                embeds.narrow(1, 1 + m, c - 1 - m),
            ],
            1,
        );
        let deep: Vec<(usize, Tensor<2>)> = self
            .deep_blocks
            .iter()
            .copied()
            .zip(self.deep.iter().map(|p| p.val()))
            .collect();
        l2_normalize(text.forward_embeddings(x, &eot_positions(&tokens.rows), &deep))
    }
}

/// Rows scaled to unit L2 norm (with a small floor against zero rows).
pub fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x
        .clone()
        .powi_scalar(2)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
