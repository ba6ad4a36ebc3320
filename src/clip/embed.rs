//! Everything `kanoclip embed` prints: embeddings, token ids and CLIP-VV taps.

use burn::prelude::*;
use burn::tensor::TensorData;
use image::DynamicImage;
use serde::Serialize;

use super::preprocess::preprocess;
use super::{Clip, Tokenizer, VvOptions};
use crate::error::{Error, Result};

/// Outputs in the reference's conventions: unnormalised embeddings, `exp`'d logit scale.
#[derive(Debug, Serialize)]
pub struct Embeddings {
    pub image_embeds: Vec<Vec<f32>>,
    pub text_embeds: Vec<Vec<f32>>,
    pub token_ids: Vec<Vec<u32>>,
    /// `[image][tap][token][dim]`, CLS first, each `ln_post(·) @ proj`.
    pub patch_taps: Vec<Vec<Vec<Vec<f32>>>>,
    pub logit_scale: f32,
}

/// Read a tensor back to the host as `f32`s.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| Error::Backend(format!("{e:?}")))
}

fn rows(values: Vec<f32>, width: usize) -> Vec<Vec<f32>> {
    values.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

/// Stack pre-processed images into one `[n, 3, S, S]` batch.
pub fn image_batch(images: &[DynamicImage], size: usize, device: &Device) -> Result<Tensor<4>> {
    let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
    for image in images {
        pixels.extend(preprocess(image, size as u32)?.pixels);
    }
    Ok(Tensor::from_data(
        TensorData::new(pixels, [images.len(), 3, size, size]),
        device,
    ))
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
    let device = clip.vision.conv1.device();
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
        let vision = clip.encode_image(image_batch(images, input_size, &device)?, vv)?;
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
