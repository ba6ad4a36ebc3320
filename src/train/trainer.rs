//! One optimisation step of KAnoCLIP's head (spec §6) on an autodiff device, with CLIP
//! frozen: its parameters do not require gradients and the vision features are detached,
//! so neither gradients nor optimiser state exist for CLIP. Only the prompts, Bi-CMCI and
//! the adapter train; gradients reach the prompts through the frozen text tower.
//!
//! This is the core the trainer builds on; epochs, checkpoints and resume are still to
//! come.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::loss;
use crate::clip::embed::to_vec;
use crate::clip::{Clip, Tokenizer, VisionOutput, VvOptions};
use crate::detect::DetectorConfig;
use crate::error::{Error, Result};
use crate::head::file::HeadMeta;
use crate::head::knowledge::KnowledgeBase;
use crate::head::prompts::{PromptTokens, l2_normalize};
use crate::head::{BackboneId, Head, HeadConfig, score};

/// Optimiser and loss settings (spec §6 defaults: AnomalyCLIP's Adam, α = β = γ = 1).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub seed: u64,
    /// Weights of `L_KD`, `L_global`, `L_local`.
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 1e-3,
            beta_1: 0.5,
            beta_2: 0.999,
            seed: 111,
            alpha: 1.0,
            beta: 1.0,
            gamma: 1.0,
        }
    }
}

/// The loss of one batch, by component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossParts {
    pub total: f32,
    pub kd: f32,
    pub global: f32,
    pub local: f32,
}

pub struct Trainer {
    pub clip: Clip,
    head: Option<Head>,
    optim: ModuleOptimizer,
    pub cfg: TrainConfig,
    pub head_cfg: HeadConfig,
    pub detector: DetectorConfig,
    tokens: PromptTokens,
    /// `[K_n; K_a]`, detached.
    general: Tensor<2>,
    pos: Tensor<2>,
}

fn detach(v: VisionOutput) -> VisionOutput {
    VisionOutput {
        global: v.global.detach(),
        taps: v.taps.into_iter().map(Tensor::detach).collect(),
    }
}

impl Trainer {
    /// `clip` must live on an autodiff device (`device.autodiff()`); it is frozen here.
    pub fn new(
        clip: Clip,
        knowledge: &KnowledgeBase,
        tokenizer: &Tokenizer,
        head_cfg: HeadConfig,
        detector: DetectorConfig,
        cfg: TrainConfig,
    ) -> Result<Self> {
        let device = clip.vision.conv1.device();
        if !device.is_autodiff() {
            return Err(Error::Invalid(
                "training needs an autodiff device (device.autodiff())".into(),
            ));
        }
        let c = clip.config.clone();
        detector.validate(c.vision.tower.layers, c.vision.patch_size)?;
        head_cfg.validate(c.embed_dim, c.text.context_length)?;
        if head_cfg.levels != detector.taps.len() {
            return Err(Error::Head(format!(
                "{} levels for {} taps",
                head_cfg.levels,
                detector.taps.len()
            )));
        }
        let mut clip = clip;
        clip.vision = clip.vision.set_require_grad(false);
        clip.text = clip.text.set_require_grad(false);
        // K_n, K_a: the renormalised means of the general texts (spec §3), fixed targets.
        let mut targets = Vec::new();
        for texts in [&knowledge.general.normal, &knowledge.general.abnormal] {
            let rows = tokenizer.tokenize_batch(texts, c.text.context_length)?;
            let f = l2_normalize(clip.encode_text(&rows)?).mean_dim(0);
            targets.push(l2_normalize(f).detach());
        }
        let general = Tensor::cat(targets, 0);
        device.seed(cfg.seed);
        let head = Head::init(
            &head_cfg,
            c.embed_dim,
            c.text.tower.width,
            c.text.tower.layers,
            &device,
        );
        let tokens = PromptTokens::new(tokenizer, head_cfg.n_ctx, c.text.context_length)?;
        clip.check_tokens(&tokens.rows)?;
        let pos = clip
            .vision
            .positional_embedding_for(detector.input_size / c.vision.patch_size)
            .detach();
        let optim = AdamConfig::new()
            .with_beta_1(cfg.beta_1)
            .with_beta_2(cfg.beta_2)
            .init();
        Ok(Trainer {
            clip,
            head: Some(head),
            optim,
            cfg,
            head_cfg,
            detector,
            tokens,
            general,
            pos,
        })
    }

    pub fn head(&self) -> &Head {
        self.head
            .as_ref()
            .expect("the head is only taken during a step")
    }

    /// What a head file needs besides the tensors.
    pub fn meta(&self) -> HeadMeta {
        HeadMeta {
            head: self.head_cfg.clone(),
            detector: self.detector.clone(),
            backbone: BackboneId::of(&self.clip),
        }
    }

    /// The total loss of a batch (images `[B, 3, S, S]` normalised, masks `[B, S, S]` in
    /// {0, 1}), with its components. The total is still attached to the graph.
    pub fn loss(
        &self,
        images: Tensor<4>,
        masks: Tensor<3>,
        labels: &[bool],
    ) -> (Tensor<1>, [Tensor<1>; 3]) {
        let head = self.head();
        let size = self.detector.input_size;
        let grid = size / self.clip.config.vision.patch_size;
        let vv = VvOptions {
            vv_from: Some(self.detector.vv_from),
            taps: self.detector.taps.clone(),
        };
        let vision = detach(self.clip.vision.forward(images, self.pos.clone(), &vv));
        let text = head.prompts.encode(&self.clip.text, &self.tokens);
        let scores = score(&vision, &text, Some(head), self.detector.tau, grid);
        let global = loss::cross_entropy(scores.global_logits, labels);
        let up: Vec<Tensor<4>> = scores
            .local
            .iter()
            .map(|s| {
                let [b, _, _] = s.dims();
                let s = s.clone().swap_dims(1, 2).reshape([b, 2, grid, grid]);
                interpolate(
                    s,
                    InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(false)
                        .with_output_size([size, size]),
                )
            })
            .collect();
        let device = text.device();
        let local = loss::local(&up, masks).unwrap_or_else(|| Tensor::zeros([1], &device));
        let kd = loss::knowledge_distillation(text, self.general.clone(), None, 1.0);
        let total = kd.clone().mul_scalar(self.cfg.alpha)
            + global.clone().mul_scalar(self.cfg.beta)
            + local.clone().mul_scalar(self.cfg.gamma);
        (total, [kd, global, local])
    }

    /// One Adam step on a batch. A non-finite loss stops with an error and leaves the head
    /// as it was.
    pub fn step(
        &mut self,
        images: Tensor<4>,
        masks: Tensor<3>,
        labels: &[bool],
    ) -> Result<LossParts> {
        let (total, [kd, global, local]) = self.loss(images, masks, labels);
        let value = |t: Tensor<1>| -> Result<f32> {
            Ok(to_vec(t.detach())?.first().copied().unwrap_or(f32::NAN))
        };
        let parts = LossParts {
            total: value(total.clone())?,
            kd: value(kd)?,
            global: value(global)?,
            local: value(local)?,
        };
        if !parts.total.is_finite() {
            return Err(Error::Invalid(format!(
                "the loss is not finite ({parts:?}); stopping, the head is unchanged"
            )));
        }
        let head = self
            .head
            .take()
            .ok_or_else(|| Error::Invalid("trainer is in an inconsistent state".into()))?;
        let grads = GradientsParams::from_grads(total.backward(), &head);
        self.head = Some(self.optim.step(self.cfg.lr, head, grads));
        Ok(parts)
    }
}
