//! The head's shape and the backbone it was built for.

use serde::{Deserialize, Serialize};

use crate::clip::config::MAX_DIM;
use crate::clip::{Clip, ClipConfig};
use crate::error::{Error, Result};

/// Identifies a backbone: its shapes, plus a hash of its patch-embedding weights rounded to
/// f16 (so f16 and f32 copies, and OpenAI or Hugging Face names, of one model agree).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneId {
    /// CLIP's joint embedding width.
    pub embed_dim: usize,
    /// Image tower width.
    pub vision_width: usize,
    /// Image tower depth.
    pub vision_layers: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Text tower width.
    pub text_width: usize,
    /// Text tower depth.
    pub text_layers: usize,
    /// Hash of the patch embedding rounded to f16 (hex).
    pub fingerprint: String,
}

impl BackboneId {
    /// The identity of a loaded CLIP model.
    pub fn of(clip: &Clip) -> Self {
        Self::from_config(&clip.config, clip.fingerprint.clone())
    }

    /// Check the sizes a file claims (`what`: a memory's backbone block) before they size
    /// anything: each in `1..=`[`MAX_DIM`], as [`ClipConfig::validate`] allows.
    pub fn validate(&self, what: &str) -> Result<()> {
        let sizes = [
            ("embed_dim", self.embed_dim),
            ("vision_width", self.vision_width),
            ("vision_layers", self.vision_layers),
            ("patch_size", self.patch_size),
            ("text_width", self.text_width),
            ("text_layers", self.text_layers),
        ];
        match sizes.iter().find(|(_, v)| *v == 0 || *v > MAX_DIM) {
            Some((name, v)) => Err(Error::Invalid(format!(
                "{what}: backbone {name} {v} is out of range 1..={MAX_DIM}"
            ))),
            None => Ok(()),
        }
    }

    /// The shapes, for people: `embed 512 / vision 768×12 / patch 16 / text 512×12`.
    pub fn shape(&self) -> String {
        format!(
            "embed {} / vision {}×{} / patch {} / text {}×{}",
            self.embed_dim,
            self.vision_width,
            self.vision_layers,
            self.patch_size,
            self.text_width,
            self.text_layers
        )
    }

    /// The identity a CLIP config gives, with the weights' `fingerprint`.
    pub fn from_config(c: &ClipConfig, fingerprint: String) -> Self {
        BackboneId {
            embed_dim: c.embed_dim,
            vision_width: c.vision.tower.width,
            vision_layers: c.vision.tower.layers,
            patch_size: c.vision.patch_size,
            text_width: c.text.tower.width,
            text_layers: c.text.tower.layers,
            fingerprint,
        }
    }
}

/// The trainable head's hyper-parameters (spec §3–§5 defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Learnable context vectors per state prompt, `M`.
    pub n_ctx: usize,
    /// Deep-prompt tokens per block.
    pub deep_len: usize,
    /// Text blocks (1-indexed, inclusive) that get deep prompts, clipped to the tower.
    pub deep_blocks: [usize; 2],
    /// Heads of each Bi-CMCI cross-attention.
    pub attn_heads: usize,
    /// Conv-Adapter bottleneck `r = D / adapter_reduction`.
    pub adapter_reduction: usize,
    /// `g' = g + alpha · pooled`.
    pub alpha: f64,
    /// Number of tap levels (one Bi-CMCI per level).
    pub levels: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            n_ctx: 12,
            deep_len: 4,
            deep_blocks: [2, 9],
            attn_heads: 4,
            adapter_reduction: 4,
            alpha: 0.2,
            levels: 4,
        }
    }
}

impl HeadConfig {
    /// The 1-indexed text blocks that get deep prompts for a tower of `layers` blocks.
    pub fn deep_block_list(&self, layers: usize) -> Vec<usize> {
        (self.deep_blocks[0].max(1)..=self.deep_blocks[1].min(layers)).collect()
    }

    /// The parameters a head of this shape has on a backbone of these sizes.
    pub fn parameter_count(&self, embed_dim: usize, text_width: usize, text_layers: usize) -> u64 {
        // Saturating: a file's numbers reach here, and a count that wrapped would pass the
        // size checks it feeds.
        let (d, wt) = (embed_dim as u64, text_width as u64);
        let mul = u64::saturating_mul;
        let deep = mul(
            self.deep_len as u64,
            self.deep_block_list(text_layers).len() as u64,
        );
        let prompts = mul(mul(2, self.n_ctx as u64).saturating_add(deep), wt);
        // Per level, two cross-attentions: two layer norms and four d×d linears each.
        let per_attention = mul(4, d).saturating_add(mul(4, mul(d, d).saturating_add(d)));
        let bicmci = mul(mul(self.levels as u64, 2), per_attention);
        let r = d / (self.adapter_reduction.max(1) as u64);
        let adapter = [mul(d, r), r, mul(mul(r, r), 9), r, mul(r, d), d]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        prompts.saturating_add(bicmci).saturating_add(adapter)
    }

    /// Check the config against the backbone's embedding width and text context.
    pub fn validate(&self, embed_dim: usize, context_length: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Head(m));
        // Saturating: `n_ctx + 8` from a file near usize::MAX would wrap and pass.
        if self.n_ctx == 0 || self.n_ctx.saturating_add(8) > context_length {
            return bad(format!(
                "n_ctx {} does not fit the context of {context_length}",
                self.n_ctx
            ));
        }
        if self.deep_len == 0 || self.deep_len > self.n_ctx {
            return bad(format!("deep_len {} must be in 1..=n_ctx", self.deep_len));
        }
        if self.attn_heads == 0 || !embed_dim.is_multiple_of(self.attn_heads) {
            return bad(format!(
                "embed_dim {embed_dim} is not divisible by {} heads",
                self.attn_heads
            ));
        }
        if self.adapter_reduction == 0 || embed_dim / self.adapter_reduction == 0 {
            return bad(format!(
                "adapter_reduction {} is out of range",
                self.adapter_reduction
            ));
        }
        if self.levels == 0 || !self.alpha.is_finite() {
            return bad("levels must be positive and alpha finite".into());
        }
        Ok(())
    }
}
