//! A whole CLIP model: both towers and the logit scale.

use burn::prelude::*;

use super::config::ClipConfig;
use super::text::TextTower;
use super::vision::{VisionOutput, VisionTower, VvOptions};
use crate::error::{Error, Result};

/// A frozen CLIP model: the image tower (with the CLIP-VV dual path of spec §2), the text
/// tower and the logit scale. Load one with [`Clip::from_files`] or
/// [`Clip::from_safetensors`]; the device it is loaded on picks the backend.
#[derive(Debug)]
pub struct Clip {
    /// The shapes it was built from.
    pub config: ClipConfig,
    /// The image tower.
    pub vision: VisionTower,
    /// The text tower.
    pub text: TextTower,
    /// `exp` of the stored logit scale.
    pub logit_scale: f32,
    /// Identifies the weights (hash of the patch embedding rounded to f16), so that a head
    /// trained on one backbone is not loaded onto another of the same shape.
    pub fingerprint: String,
}

impl Clip {
    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vision.conv1.device()
    }

    /// Encode normalised images `[batch, 3, S, S]`; see [`VisionTower::forward`].
    pub fn encode_image(&self, images: Tensor<4>, vv: &VvOptions) -> Result<VisionOutput> {
        let [b, c, h, w] = images.dims();
        if b == 0 || c != 3 || h != w {
            return Err(Error::Invalid(format!(
                "expected images [batch>0, 3, S, S], got [{b}, {c}, {h}, {w}]"
            )));
        }
        self.vision.check(h, vv)?;
        let pos = self
            .vision
            .positional_embedding_for(h / self.vision.patch_size);
        Ok(self.vision.forward(images, pos, vv))
    }

    /// Check token rows before they reach the embedding table: each `context_length` long,
    /// every id inside the vocabulary.
    pub fn check_tokens(&self, tokens: &[Vec<u32>]) -> Result<()> {
        let c = self.text.context_length();
        let vocab = self.config.text.vocab_size as u32;
        if tokens.is_empty() {
            return Err(Error::Invalid("no texts to encode".into()));
        }
        for row in tokens {
            if row.len() != c {
                return Err(Error::Invalid(format!(
                    "token row has {} ids, expected {c}",
                    row.len()
                )));
            }
            if let Some(t) = row.iter().find(|&&t| t >= vocab) {
                return Err(Error::Invalid(format!(
                    "token id {t} is outside the vocabulary of {vocab}"
                )));
            }
        }
        Ok(())
    }

    /// Encode token rows from [`crate::clip::tokenizer::Tokenizer`] to text features.
    pub fn encode_text(&self, tokens: &[Vec<u32>]) -> Result<Tensor<2>> {
        self.check_tokens(tokens)?;
        Ok(self.text.forward(tokens))
    }
}
