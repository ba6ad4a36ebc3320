//! Everything `kanoclip embed` prints: embeddings, token ids and CLIP-VV taps.

use image::DynamicImage;
use serde::Serialize;

use super::preprocess::image_batch;
use super::{Clip, Tokenizer, VvOptions};
use crate::error::Result;
use crate::tensor_io::to_vec;

/// Outputs in the reference's conventions: unnormalised embeddings, `exp`'d logit scale.
#[derive(Debug, Serialize)]
pub struct Embeddings {
    /// One unnormalised image embedding per image.
    pub image_embeds: Vec<Vec<f32>>,
    /// One unnormalised text embedding per text.
    pub text_embeds: Vec<Vec<f32>>,
    /// The token ids of each text.
    pub token_ids: Vec<Vec<u32>>,
    /// `[image][tap][token][dim]`, CLS first, each `ln_post(·) @ proj`.
    pub patch_taps: Vec<Vec<Vec<Vec<f32>>>>,
    /// `exp` of the stored logit scale.
    pub logit_scale: f32,
}

fn rows(values: Vec<f32>, width: usize) -> Vec<Vec<f32>> {
    values.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

/// Embed images (pre-processed to `input_size`) and texts the way the reference does.
pub fn embed(
    clip: &Clip,
    tokenizer: &Tokenizer,
    images: &[DynamicImage],
    texts: &[String],
    vv: &VvOptions,
    input_size: usize,
) -> Result<Embeddings> {
    let device = clip.device();
    let d = clip.config.embed_dim;
    let mut out = Embeddings {
        image_embeds: Vec::new(),
        text_embeds: Vec::new(),
        token_ids: tokenizer.tokenize_batch(texts, clip.config.text.context_length)?,
        patch_taps: Vec::new(),
        logit_scale: clip.logit_scale,
    };
    if !images.is_empty() {
        clip.vision.check(input_size, vv)?;
        let (batch, _) = image_batch(images, input_size, &device)?;
        let vision = clip.encode_image(batch, vv)?;
        out.image_embeds = rows(to_vec(vision.global)?, d);
        let mut taps = vec![Vec::new(); images.len()];
        for tap in vision.taps {
            let [_, tokens, _] = tap.dims();
            for (i, image_rows) in rows(to_vec(tap)?, tokens * d).into_iter().enumerate() {
                taps[i].push(rows(image_rows, d));
            }
        }
        out.patch_taps = taps;
    }
    if !texts.is_empty() {
        out.text_embeds = rows(to_vec(clip.encode_text(&out.token_ids)?)?, d);
    }
    Ok(out)
}
