//! Detector settings (spec §2 and §7 defaults).

use serde::{Deserialize, Serialize};

use crate::clip::ClipConfig;
use crate::error::{Error, Result};

/// The largest model input side the settings may ask for.
pub const MAX_INPUT_SIZE: usize = 4096;
/// The most bytes one image's attention scores may take in a block (`heads · tokens² · 4`,
/// what Burn's unfused attention holds at once): 2 GiB. ViT-L/14 at 518 takes 120 MB,
/// ViT-B/16 at 224 2.4 MB; ViT-B/16 at 1024 (4097 tokens) 806 MB.
pub const MAX_ATTENTION_BYTES: u64 = 2 << 30;
/// The most multiply-adds the map's Gaussian may take per image (two passes of
/// `size² · (2·⌊4σ + 0.5⌋ + 1)`): 2³². The default σ = 4 at 518 takes 18 million.
pub const MAX_BLUR_OPS: u64 = 1 << 32;
/// A σ below this blurs nothing (the kernel's outer taps are below e⁻⁵⁰⁰⁰⁰) and is taken as
/// 0; far below it, `2σ²` underflows and the kernel was NaN ([`super::maps::kernel_radius`]).
pub const MIN_SIGMA: f64 = 1e-2;

/// A detector's settings: input size, the CLIP-VV path and taps, τ, σ, score fusion and threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Side of the square model input.
    pub input_size: usize,
    /// First CLIP-VV dual block, 1-indexed.
    pub vv_from: usize,
    /// Tapped blocks, 1-indexed: one map (and one Bi-CMCI level) each.
    pub taps: Vec<usize>,
    /// Temperature τ of every cosine logit.
    pub tau: f64,
    /// Gaussian σ in pixels at the input size.
    pub sigma: f64,
    /// Image score = `global_weight · p + (1 − global_weight) · max(map)`.
    pub global_weight: f64,
    /// `is_anomalous = score ≥ threshold`.
    pub threshold: f64,
}

impl DetectorConfig {
    /// The spec's defaults for a backbone: ViT-L/14 (24 blocks) taps 6, 12, 18, 24 from
    /// `vv_from` 6 at input 518 (AnomalyCLIP's setting, positional embedding resized);
    /// ViT-B/16 (12 blocks) taps 3, 6, 9, 12 from 4 at its own size. Other depths get four
    /// evenly spaced taps and `vv_from` at a third of the depth.
    pub fn for_clip(cfg: &ClipConfig) -> Self {
        let layers = cfg.vision.tower.layers;
        let (vv_from, input_size) = match (layers, cfg.vision.patch_size) {
            (24, 14) => (6, 518),
            (24, _) => (6, cfg.vision.image_size),
            (12, _) => (4, cfg.vision.image_size),
            _ => ((layers / 3).max(1), cfg.vision.image_size),
        };
        let mut taps: Vec<usize> = (1..=4).map(|i| (layers * i).div_ceil(4).max(1)).collect();
        taps.dedup();
        DetectorConfig {
            input_size,
            vv_from,
            taps,
            tau: 0.07,
            sigma: 4.0,
            global_weight: 0.5,
            threshold: 0.5,
        }
    }

    /// Check the settings against a backbone of `layers` blocks and `patch_size`.
    pub fn validate(&self, layers: usize, patch_size: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("detector config: {m}")));
        if self.input_size == 0
            || !self.input_size.is_multiple_of(patch_size)
            || self.input_size > MAX_INPUT_SIZE
        {
            return bad(format!(
                "input size {} is not a multiple of the patch size {patch_size} in \
                 1..={MAX_INPUT_SIZE}",
                self.input_size
            ));
        }
        if self.vv_from == 0 || self.vv_from > layers {
            return bad(format!(
                "vv_from {} is not a block in 1..={layers}",
                self.vv_from
            ));
        }
        let mut distinct = self.taps.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if self.taps.is_empty()
            || distinct.len() != self.taps.len()
            || self.taps.iter().any(|&t| t == 0 || t > layers)
        {
            return bad(format!(
                "taps {:?} must be distinct blocks in 1..={layers}",
                self.taps
            ));
        }
        if !(self.tau >= 1e-4 && self.tau <= 100.0) {
            return bad(format!("tau {} is not in [1e-4, 100]", self.tau));
        }
        // σ beyond the input's side smooths the map flat (and sizes the kernel).
        if !(self.sigma >= 0.0 && self.sigma <= self.input_size as f64) {
            return bad(format!(
                "sigma {} is not in [0, input size {}]",
                self.sigma, self.input_size
            ));
        }
        if !(0.0..=1.0).contains(&self.global_weight) || !self.threshold.is_finite() {
            return bad("global_weight must be in [0, 1] and threshold finite".into());
        }
        Ok(())
    }

    /// Check what one image's detect would take at these settings on a tower of
    /// `patch_size` and `heads` attention heads, before anything is allocated: the
    /// attention scores ([`MAX_ATTENTION_BYTES`]) and the Gaussian's work
    /// ([`MAX_BLUR_OPS`]). Values that [`Self::validate`] accepts one by one (input 4096,
    /// σ up to the input's side) together asked for 17 GB per head or 10¹² operations;
    /// the error says the limit and what would fit.
    pub fn check_cost(&self, patch_size: usize, heads: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("detector config: {m}")));
        let grid = (self.input_size / patch_size.max(1)) as u64;
        let tokens = grid.saturating_mul(grid).saturating_add(1);
        let attention = tokens
            .saturating_mul(tokens)
            .saturating_mul(heads as u64)
            .saturating_mul(4);
        if attention > MAX_ATTENTION_BYTES {
            // Whole megabytes: precision float formatting would add its code to the
            // browser module for this one message.
            return bad(format!(
                "input size {} gives {tokens} tokens, whose attention scores take {} MB per \
                 image ({heads} heads); the limit is {} MB: choose a smaller input size",
                self.input_size,
                attention / 1_000_000,
                MAX_ATTENTION_BYTES / 1_000_000
            ));
        }
        let side = self.input_size as u64;
        let taps = super::maps::kernel_radius(self.sigma).map_or(0, |r| 2 * r + 1);
        let blur = side
            .saturating_mul(side)
            .saturating_mul(taps)
            .saturating_mul(2);
        if blur > MAX_BLUR_OPS {
            return bad(format!(
                "sigma {} at input size {} takes {blur} multiply-adds per image to blur; the \
                 limit is {MAX_BLUR_OPS}: choose a smaller sigma",
                self.sigma, self.input_size
            ));
        }
        Ok(())
    }
}
