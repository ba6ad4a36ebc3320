//! The causal text transformer, pooled at the EOT token.

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::module::embedding;
use burn::tensor::{Int, TensorData};

use super::layers::Block;

#[derive(Module, Debug)]
pub struct TextTower {
    /// `[vocab, width]`.
    pub token_embedding: Param<Tensor<2>>,
    /// `[context, width]`.
    pub positional_embedding: Param<Tensor<2>>,
    pub blocks: Vec<Block>,
    pub ln_final: LayerNorm,
    /// `[width, embed_dim]`.
    pub text_projection: Param<Tensor<2>>,
}

impl TextTower {
    pub fn context_length(&self) -> usize {
        self.positional_embedding.dims()[0]
    }

    /// The additive causal mask: 0 on and below the diagonal, -inf above.
    fn causal_mask(&self, device: &Device) -> Tensor<2> {
        let c = self.context_length();
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

    /// Encode token rows (each `context_length` long, as the tokenizer gives them) to
    /// unnormalised text features `[rows, embed_dim]`, like open_clip's `encode_text`.
    pub fn forward(&self, tokens: &[Vec<u32>]) -> Tensor<2> {
        let device = self.token_embedding.device();
        let c = self.context_length();
        let b = tokens.len();
        let ids: Vec<i64> = tokens
            .iter()
            .flat_map(|row| row.iter().map(|&t| t as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, c]), &device);
        let mut x = embedding(self.token_embedding.val(), ids)
            + self.positional_embedding.val().unsqueeze::<3>();
        let mask = self.causal_mask(&device);
        for block in &self.blocks {
            x = block.forward(x, Some(&mask));
        }
        let x = self.ln_final.forward(x);
        // Pool at the EOT token, which has the largest id (open_clip's `argmax` pooling).
        let eot: Vec<i64> = tokens
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let pos = row
                    .iter()
                    .enumerate()
                    .max_by_key(|&(i, &t)| (t, std::cmp::Reverse(i)))
                    .map_or(0, |(i, _)| i);
                (r * c + pos) as i64
            })
            .collect();
        let eot = Tensor::<1, Int>::from_data(TensorData::new(eot, [b]), &device);
        let w = x.dims()[2];
        x.reshape([b * c, w])
            .select(0, eot)
            .matmul(self.text_projection.val())
    }
}
