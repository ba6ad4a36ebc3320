//! The causal text transformer, pooled at the EOT token.

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::module::embedding;
use burn::tensor::{Int, TensorData};

use super::layers::Block;

/// CLIP's text tower: token and positional embeddings, causal blocks, final LayerNorm, EOT pooling and projection.
#[derive(Module, Debug)]
pub struct TextTower {
    /// `[vocab, width]`.
    pub token_embedding: Param<Tensor<2>>,
    /// `[context, width]`.
    pub positional_embedding: Param<Tensor<2>>,
    /// The transformer blocks.
    pub blocks: Vec<Block>,
    /// The final LayerNorm.
    pub ln_final: LayerNorm,
    /// `[width, embed_dim]`.
    pub text_projection: Param<Tensor<2>>,
}

impl TextTower {
    /// Tokens per text.
    pub fn context_length(&self) -> usize {
        self.positional_embedding.dims()[0]
    }

    /// The additive causal mask over `c` tokens: 0 on and below the diagonal, -inf above.
    fn causal_mask(&self, c: usize, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..c * c)
            .map(|i| {
                if i % c > i / c {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_data(TensorData::new(values, [c, c]), device)
    }

    /// Token embeddings `[rows, context, width]` of token rows.
    pub fn embed_tokens(&self, tokens: &[Vec<u32>]) -> Tensor<3> {
        let device = self.token_embedding.device();
        let c = self.context_length();
        let ids: Vec<i64> = tokens
            .iter()
            .flat_map(|row| row.iter().map(|&t| t as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [tokens.len(), c]), &device);
        embedding(self.token_embedding.val(), ids)
    }

    /// Encode token rows (each `context_length` long, as the tokenizer gives them) to
    /// unnormalised text features `[rows, embed_dim]`, like open_clip's `encode_text`.
    pub fn forward(&self, tokens: &[Vec<u32>]) -> Tensor<2> {
        self.forward_embeddings(self.embed_tokens(tokens), &eot_positions(tokens), &[])
    }

    /// Encode rows given as token embeddings `[rows, context, width]`, pooled at `eot`.
    /// Each `(block, tokens [k, width])` of `deep` replaces the hidden states of positions
    /// `1..1+k` (right after SOT) of every row before that block runs (1-indexed): KnPL's
    /// deep prompts (spec §3).
    pub fn forward_embeddings(
        &self,
        x: Tensor<3>,
        eot: &[usize],
        deep: &[(usize, Tensor<2>)],
    ) -> Tensor<2> {
        let device = x.device();
        let [b, c, w] = x.dims();
        // Attention is causal, so nothing after the last EOT can change what is pooled:
        // run only up to it (prompts are short; this is exact and several times faster).
        let deep_len = deep.iter().map(|(_, p)| p.dims()[0]).max().unwrap_or(0);
        let c = (eot.iter().copied().max().unwrap_or(0) + 1)
            .max(1 + deep_len)
            .min(c);
        let x = x.narrow(1, 0, c);
        let mut x = x + self
            .positional_embedding
            .val()
            .narrow(0, 0, c)
            .unsqueeze::<3>();
        let mask = self.causal_mask(c, &device);
        for (i, block) in self.blocks.iter().enumerate() {
            if let Some((_, prompt)) = deep.iter().find(|(n, _)| *n == i + 1) {
                let [k, _] = prompt.dims();
                let prompt = prompt.clone().unsqueeze::<3>().expand([b, k, w]);
                x = Tensor::cat(
                    vec![
                        x.clone().narrow(1, 0, 1),
                        prompt,
                        x.narrow(1, 1 + k, c - 1 - k),
                    ],
                    1,
                );
            }
            x = block.forward(x, Some(&mask));
        }
        let x = self.ln_final.forward(x);
        let rows: Vec<i64> = eot
            .iter()
            .enumerate()
            .map(|(r, &p)| (r * c + p) as i64)
            .collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &device);
        x.reshape([b * c, w])
            .select(0, rows)
            .matmul(self.text_projection.val())
    }
}

/// Where each row's EOT token is: the largest id, first occurrence (open_clip's `argmax`).
pub fn eot_positions(tokens: &[Vec<u32>]) -> Vec<usize> {
    tokens
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by_key(|&(i, &t)| (t, std::cmp::Reverse(i)))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}
