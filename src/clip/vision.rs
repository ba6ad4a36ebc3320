//! The ViT image tower, with the CLIP-VV dual path and its taps (spec §2).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::detect::upsample::resize_grid_rows;

use super::layers::Block;
use crate::error::{Error, Result};

/// CLIP's image tower (ViT) with the CLIP-VV dual path of spec §2.
#[derive(Module, Debug)]
pub struct VisionTower {
    /// Patch embedding `[width, 3, p, p]`, no bias.
    pub conv1: Param<Tensor<4>>,
    /// The class token's embedding.
    pub class_embedding: Param<Tensor<1>>,
    /// `[1 + grid², width]` at the checkpoint's own image size.
    pub positional_embedding: Param<Tensor<2>>,
    /// LayerNorm before the blocks.
    pub ln_pre: LayerNorm,
    /// The transformer blocks.
    pub blocks: Vec<Block>,
    /// LayerNorm before the projection.
    pub ln_post: LayerNorm,
    /// `[width, embed_dim]`.
    pub proj: Param<Tensor<2>>,
    /// Side of a square patch.
    pub patch_size: usize,
}

/// Which CLIP-VV features to compute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VvOptions {
    /// First dual block, 1-indexed; `None` runs plain CLIP.
    pub vv_from: Option<usize>,
    /// Blocks whose output is tapped, 1-indexed.
    pub taps: Vec<usize>,
    /// Blocks whose original-path output is also returned raw (before `ln_post` and the
    /// projection, class token included), 1-indexed: mutual scoring's tokens (spec §11).
    pub raw_taps: Vec<usize>,
}

/// What one forward pass gives.
pub struct VisionOutput {
    /// `g = proj(h_ori[CLS])`, `[batch, embed_dim]`: open_clip's `encode_image`.
    pub global: Tensor<2>,
    /// One `[batch, 1 + grid², embed_dim]` tensor per tap, CLS first, in `taps` order.
    pub taps: Vec<Tensor<3>>,
    /// One `[batch, 1 + grid², width]` tensor per raw tap, CLS first, in `raw_taps` order.
    pub raw: Vec<Tensor<3>>,
}

impl VisionTower {
    /// Attention heads per block (the most of any block; 0 without blocks).
    pub fn heads(&self) -> usize {
        self.blocks.iter().map(|b| b.attn.heads).max().unwrap_or(0)
    }

    /// Residual width.
    pub fn width(&self) -> usize {
        self.class_embedding.dims()[0]
    }

    /// The patch grid side of the checkpoint's positional embedding.
    pub fn native_grid(&self) -> usize {
        let n = self.positional_embedding.dims()[0] - 1;
        (n as f64).sqrt().round() as usize
    }

    /// The positional embedding for a `grid × grid` input, resized bilinearly (half-pixel
    /// centres, as `F.interpolate(mode="bilinear", align_corners=False)`) when the grid
    /// differs from the checkpoint's, as AnomalyCLIP does for its 518-pixel inputs.
    pub fn positional_embedding_for(&self, grid: usize) -> Tensor<2> {
        let pos = self.positional_embedding.val();
        let native = self.native_grid();
        if grid == native {
            return pos;
        }
        let cls = pos.clone().narrow(0, 0, 1);
        let patches = pos.narrow(0, 1, native * native);
        let resized = resize_grid_rows(patches, (native, native), (grid, grid));
        Tensor::cat(vec![cls, resized], 0)
    }

    /// Check the input size and the VV options before anything reaches the backend.
    pub fn check(&self, size: usize, vv: &VvOptions) -> Result<()> {
        if size == 0 || !size.is_multiple_of(self.patch_size) {
            return Err(Error::Invalid(format!(
                "input size {size} is not a positive multiple of the patch size {}",
                self.patch_size
            )));
        }
        let layers = self.blocks.len();
        if let Some(from) = vv.vv_from
            && (from == 0 || from > layers)
        {
            return Err(Error::Invalid(format!(
                "vv_from {from} is not a block in 1..={layers}"
            )));
        }
        if let Some(&t) = (vv.taps.iter().chain(&vv.raw_taps)).find(|&&t| t == 0 || t > layers) {
            return Err(Error::Invalid(format!(
                "tap {t} is not a block in 1..={layers}"
            )));
        }
        Ok(())
    }

    /// Run the tower on normalised images `[batch, 3, S, S]` with a prepared positional
    /// embedding (see [`VisionTower::positional_embedding_for`]). Inputs must have passed
    /// [`VisionTower::check`].
    pub fn forward(&self, images: Tensor<4>, pos: Tensor<2>, vv: &VvOptions) -> VisionOutput {
        let [b, _, _, _] = images.dims();
        let w = self.width();
        let x = conv2d(
            images,
            self.conv1.val(),
            None,
            ConvOptions::new([self.patch_size; 2], [0, 0], [1, 1], 1),
        );
        let [_, _, gh, gw] = x.dims();
        let x = x.reshape([b, w, gh * gw]).swap_dims(1, 2);
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, w])
            .expand([b, 1, w]);
        let x = Tensor::cat(vec![cls, x], 1) + pos.unsqueeze::<3>();
        let mut h_ori = self.ln_pre.forward(x);
        let mut h_vv: Option<Tensor<3>> = None;
        let mut taps: Vec<(usize, Tensor<3>)> = Vec::with_capacity(vv.taps.len());
        let mut raw: Vec<(usize, Tensor<3>)> = Vec::with_capacity(vv.raw_taps.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let n = i + 1;
            if vv.vv_from.is_some_and(|from| n >= from) {
                let vv_in = h_vv.take().unwrap_or_else(|| h_ori.clone());
                let (o, v) = block.forward_dual(h_ori, vv_in);
                h_ori = o;
                h_vv = Some(v);
            } else {
                h_ori = block.forward(h_ori, None);
            }
            if vv.taps.contains(&n) {
                let h = h_vv.clone().unwrap_or_else(|| h_ori.clone());
                taps.push((n, self.project(h)));
            }
            if vv.raw_taps.contains(&n) {
                raw.push((n, h_ori.clone()));
            }
        }
        let cls = h_ori.narrow(1, 0, 1).reshape([b, w]);
        let global = self.ln_post.forward(cls).matmul(self.proj.val());
        // Taps come back in the order asked for, even if the caller did not sort them.
        let ordered = |wanted: &[usize], got: &[(usize, Tensor<3>)]| {
            wanted
                .iter()
                .map(|t| got.iter().find(|(n, _)| n == t).map(|(_, x)| x.clone()))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default()
        };
        VisionOutput {
            global,
            taps: ordered(&vv.taps, &taps),
            raw: ordered(&vv.raw_taps, &raw),
        }
    }

    /// `proj(x) = ln_post(x) @ proj`, token-wise.
    pub fn project(&self, h: Tensor<3>) -> Tensor<3> {
        let proj = self.proj.val().unsqueeze::<3>();
        self.ln_post.forward(h).matmul(proj)
    }
}
