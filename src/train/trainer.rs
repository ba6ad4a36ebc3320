//! One optimisation step of KAnoCLIP's head (spec §6) on an autodiff device, with CLIP
//! frozen: its parameters do not require gradients and the vision features are detached,
//! so neither gradients nor optimiser state exist for CLIP. Only the prompts, Bi-CMCI and
//! the adapter train; gradients reach the prompts through the frozen text tower.
//!
//! Data parallelism uses Burn's own multi-device support: the head is forked onto every
//! device (same parameter ids), each device takes a shard of the batch with its loss
//! weighted by the shard's share, and `ModuleOptimizer::step_multi` sums the gradients, so
//! a step over n devices is the step over the whole batch.

use std::collections::HashMap;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::prelude::*;

use super::checkpoint::{Checkpoint, Progress, param_ids, with_param_ids};
use super::loss;
use crate::clip::text::TextTower;
use crate::clip::{Clip, Tokenizer, VisionOutput, VisionTower, VvOptions};
use crate::detect::DetectorConfig;
use crate::detect::head_file::{HeadMeta, check_levels, head_bytes, load_head};
use crate::detect::upsample::upsample_bilinear;
use crate::error::{Error, Result};
use crate::head::knowledge::KnowledgeBase;
use crate::head::prompts::{PromptTokens, l2_normalize};
use crate::head::{BackboneId, Head, HeadConfig, score};
use crate::tensor_io::to_vec;

/// Optimiser and loss settings (spec §6 defaults: AnomalyCLIP's Adam, α = β = γ = 1).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Adam's learning rate.
    pub lr: f64,
    /// Adam's β1.
    pub beta_1: f32,
    /// Adam's β2.
    pub beta_2: f32,
    /// Seed of the initial head.
    pub seed: u64,
    /// Weights of `L_KD`, `L_global`, `L_local`.
    pub alpha: f64,
    /// See `alpha`.
    pub beta: f64,
    /// See `alpha`.
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
    /// The weighted sum.
    pub total: f32,
    /// `L_KD`.
    pub kd: f32,
    /// `L_global`.
    pub global: f32,
    /// `L_local`.
    pub local: f32,
}

/// One batch, ready for a step: the frozen backbone's features (detached), the masks at
/// the input size, the labels, and per image the row of its specific knowledge text.
pub struct Batch {
    /// Frozen features.
    pub vision: VisionOutput,
    /// Ground-truth masks at the input size, in {0, 1}.
    pub masks: Tensor<3>,
    /// Image labels (anomalous or not).
    pub labels: Vec<bool>,
    /// Each image's row of specific knowledge, if any.
    pub specific: Vec<Option<usize>>,
}

/// What each device needs besides the head: the frozen text tower (gradients reach the
/// prompts through it) and the fixed knowledge targets.
struct Replica {
    device: Device,
    text: TextTower,
    /// `[K_n; K_a]`, detached.
    general: Tensor<2>,
    /// `k_i`, one row per specific text, detached.
    specific: Option<Tensor<2>>,
}

/// Trains the head on a frozen CLIP (spec §6).
pub struct Trainer {
    /// The frozen CLIP.
    pub clip: Clip,
    head: Option<Head>,
    optim: ModuleOptimizer,
    /// Optimiser and loss settings.
    pub cfg: TrainConfig,
    /// The head's shape.
    pub head_cfg: HeadConfig,
    /// The detector settings it trains for.
    pub detector: DetectorConfig,
    tokens: PromptTokens,
    /// The frozen image tower on the autodiff device's inner backend, and its positional
    /// embedding there: see [`Trainer::features`].
    frozen: VisionTower,
    pos: Tensor<2>,
    /// The first replica is on the main device (where CLIP and the head live).
    replicas: Vec<Replica>,
    /// Specific-knowledge row of each training image, by path relative to the data root.
    specific_rows: HashMap<String, usize>,
}

/// Outputs of the inner backend as constants on the autodiff device.
fn constants(v: VisionOutput) -> VisionOutput {
    VisionOutput {
        global: v.global.autodiff(),
        taps: v.taps.into_iter().map(Tensor::autodiff).collect(),
        raw: Vec::new(),
    }
}

/// The KD targets (spec §3), fixed: `[K_n; K_a]`, the renormalised means of the general
/// texts; each specific text `k_i` encoded once and normalised, with its row by image path.
fn knowledge_targets(
    clip: &Clip,
    knowledge: &KnowledgeBase,
    tokenizer: &Tokenizer,
) -> Result<(Tensor<2>, Option<Tensor<2>>, HashMap<String, usize>)> {
    let context = clip.config.text.context_length;
    let mut targets = Vec::new();
    for texts in [&knowledge.general.normal, &knowledge.general.abnormal] {
        let rows = tokenizer.tokenize_batch(texts, context)?;
        let f = l2_normalize(clip.encode_text(&rows)?).mean_dim(0);
        targets.push(l2_normalize(f).detach());
    }
    let general = Tensor::cat(targets, 0);
    let mut specific_rows = HashMap::new();
    let mut rows = Vec::new();
    for (i, (path, text)) in knowledge.specific.iter().enumerate() {
        specific_rows.insert(path.clone(), i);
        rows.push(tokenizer.tokenize(text, context)?);
    }
    let mut specific = Vec::new();
    for chunk in rows.chunks(64) {
        specific.push(l2_normalize(clip.encode_text(chunk)?).detach());
    }
    let specific = (!specific.is_empty()).then(|| Tensor::cat(specific, 0));
    Ok((general, specific, specific_rows))
}

/// A fresh head drawn with `seed`, as leaf parameters on `device`.
fn seeded_head(meta: &HeadMeta, context: usize, seed: u64, device: &Device) -> Result<Head> {
    // The device's random generator is global: hold a lock from seeding to the last
    // draw, so that trainers built on other threads cannot interleave their draws.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // The head is drawn on the CPU and moved: backends have different generators, and
    // one seed should give one initial head on every backend.
    #[cfg(feature = "flex")]
    let init_device = Device::flex().autodiff();
    #[cfg(not(feature = "flex"))]
    let init_device = device.clone();
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    init_device.seed(seed);
    let b = &meta.backbone;
    let head = Head::init(
        &meta.head,
        b.embed_dim,
        b.text_width,
        b.text_layers,
        &init_device,
    );
    // Burn initialises parameters lazily, on first read: the head file's bytes read them
    // all while the lock is held. Loading those bytes on the training device gives leaf
    // parameters there (a moved tensor would carry the move in its graph).
    let bytes = head_bytes(&head, meta)?;
    Ok(load_head(&bytes, b, context, device)?.0)
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
        let device = clip.device();
        if !device.is_autodiff() {
            return Err(Error::Invalid(
                "training needs an autodiff device (device.autodiff())".into(),
            ));
        }
        let c = clip.config.clone();
        detector.validate(c.vision.tower.layers, c.vision.patch_size)?;
        detector.check_cost(c.vision.patch_size, c.vision.tower.heads)?;
        head_cfg.validate(c.embed_dim, c.text.context_length)?;
        check_levels(head_cfg.levels, &detector.taps)?;
        let mut clip = clip;
        clip.vision = clip.vision.set_require_grad(false);
        clip.text = clip.text.set_require_grad(false);
        let (general, specific, specific_rows) = knowledge_targets(&clip, knowledge, tokenizer)?;
        let meta = HeadMeta {
            head: head_cfg.clone(),
            detector: detector.clone(),
            backbone: BackboneId::of(&clip),
        };
        let head = seeded_head(&meta, c.text.context_length, cfg.seed, &device)?;
        let tokens = PromptTokens::new(tokenizer, head_cfg.n_ctx, c.text.context_length)?;
        clip.check_tokens(&tokens.rows)?;
        let pos = clip
            .vision
            .positional_embedding_for(detector.input_size / c.vision.patch_size)
            .inner();
        let optim = AdamConfig::new()
            .with_beta_1(cfg.beta_1)
            .with_beta_2(cfg.beta_2)
            .init();
        let text = clip.text.clone();
        Ok(Trainer {
            head: Some(head),
            optim,
            cfg,
            head_cfg,
            detector,
            tokens,
            frozen: clip.vision.valid(),
            pos,
            replicas: vec![Replica {
                device: device.clone(),
                text,
                general,
                specific,
            }],
            specific_rows,
            clip,
        })
    }

    /// Train data-parallel over `devices` as well as the main one (all autodiff devices of
    /// one backend kind).
    pub fn with_devices(mut self, devices: &[Device]) -> Result<Self> {
        for d in devices {
            if !d.is_autodiff() {
                return Err(Error::Invalid(
                    "training needs autodiff devices (device.autodiff())".into(),
                ));
            }
            let main = &self.replicas[0];
            let replica = Replica {
                device: d.clone(),
                text: main.text.clone().fork(d),
                general: main.general.clone().to_device(d),
                specific: main.specific.clone().map(|t| t.to_device(d)),
            };
            self.replicas.push(replica);
        }
        Ok(self)
    }

    /// The row of a training image's specific knowledge (path relative to the data root,
    /// `/`-separated), if the knowledge base has one.
    pub fn specific_row(&self, relative_path: &str) -> Option<usize> {
        self.specific_rows.get(relative_path).copied()
    }

    /// The frozen backbone's features of normalised images `[B, 3, S, S]`, detached.
    pub fn features(&self, images: Tensor<4>) -> VisionOutput {
        let vv = VvOptions {
            vv_from: Some(self.detector.vv_from),
            taps: self.detector.taps.clone(),
            ..Default::default()
        };
        // The tower is frozen: no gradient flows into it, so it runs without autodiff's
        // bookkeeping, on the plain backend (and so on the CPU backend's fused kernels:
        // src/cpu), and its outputs join the graph as constants.
        constants(self.frozen.forward(images.inner(), self.pos.clone(), &vv))
    }

    /// The head being trained.
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

    /// The total loss of a batch on replica `r` with the head `head` (on that replica's
    /// device), each term weighted by `weight`, with its unweighted components. The total
    /// is still attached to the graph.
    fn replica_loss(
        &self,
        r: usize,
        head: &Head,
        batch: Batch,
        weight: f64,
    ) -> (Tensor<1>, [Tensor<1>; 3]) {
        let replica = &self.replicas[r];
        let size = self.detector.input_size;
        let grid = size / self.clip.config.vision.patch_size;
        let text = head.prompts.encode(&replica.text, &self.tokens);
        let scores = score(&batch.vision, &text, Some(head), self.detector.tau, grid);
        let global = loss::cross_entropy(scores.global_logits, &batch.labels);
        let up: Vec<Tensor<4>> = scores
            .local
            .iter()
            .map(|s| {
                let [b, _, _] = s.dims();
                let s = s.clone().swap_dims(1, 2).reshape([b, 2, grid, grid]);
                upsample_bilinear(s, size)
            })
            .collect();
        let device = replica.device.clone();
        let local = loss::local(&up, batch.masks).unwrap_or_else(|| Tensor::zeros([1], &device));
        // The images of the batch that have a specific text: their rows and labels.
        let (rows, labels): (Vec<i64>, Vec<bool>) = batch
            .specific
            .iter()
            .zip(&batch.labels)
            .filter_map(|(s, &l)| s.map(|s| (s as i64, l)))
            .unzip();
        let specific = match (&replica.specific, rows.is_empty()) {
            (Some(k), false) => {
                let n = rows.len();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
                Some((k.clone().select(0, idx), labels.as_slice()))
            }
            _ => None,
        };
        let kd = loss::knowledge_distillation(text, replica.general.clone(), specific, 1.0);
        let total = (kd.clone().mul_scalar(self.cfg.alpha)
            + global.clone().mul_scalar(self.cfg.beta)
            + local.clone().mul_scalar(self.cfg.gamma))
        .mul_scalar(weight);
        (total, [kd, global, local])
    }

    /// The total loss of a batch on the main device, with its components.
    pub fn loss(&self, batch: Batch) -> (Tensor<1>, [Tensor<1>; 3]) {
        self.replica_loss(0, self.head(), batch, 1.0)
    }

    /// One Adam step on a batch, split over the devices (see the module docs). A
    /// non-finite loss stops with an error and leaves the head as it was.
    pub fn step(&mut self, batch: Batch) -> Result<LossParts> {
        let value = |t: Tensor<1>| -> Result<f32> {
            Ok(to_vec(t.detach())?.first().copied().unwrap_or(f32::NAN))
        };
        let n = batch.labels.len();
        let shards = split(batch, self.replicas.len());
        let head = self
            .head
            .take()
            .ok_or_else(|| Error::Invalid("trainer is in an inconsistent state".into()))?;
        let mut parts = LossParts {
            total: 0.0,
            kd: 0.0,
            global: 0.0,
            local: 0.0,
        };
        let mut grads = Vec::new();
        let mut failed = None;
        for (r, shard) in shards.into_iter().enumerate() {
            let replica_head = if r == 0 {
                head.clone()
            } else {
                head.clone().fork(&self.replicas[r].device)
            };
            let w = shard.labels.len() as f64 / n as f64;
            let (total, [kd, global, local]) = self.replica_loss(r, &replica_head, shard, w);
            let (t, k, g, l) = match (|| {
                Ok::<_, Error>((
                    value(total.clone())?,
                    value(kd)?,
                    value(global)?,
                    value(local)?,
                ))
            })() {
                Ok(v) => v,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // KD does not depend on the shard: every shard computes the same value.
            parts.total += t;
            parts.kd = k;
            parts.global += w as f32 * g;
            parts.local += w as f32 * l;
            grads.push((
                GradientsParams::from_grads(total.backward(), &replica_head),
                self.replicas[r].device.clone(),
            ));
        }
        if let Some(e) = failed {
            self.head = Some(head);
            return Err(e);
        }
        if !parts.total.is_finite() {
            self.head = Some(head);
            return Err(Error::Invalid(format!(
                "the loss is not finite ({parts:?}); stopping, the head is unchanged"
            )));
        }
        self.head = Some(if grads.len() == 1 {
            let (g, _) = grads.pop().expect("one shard");
            self.optim.step(self.cfg.lr, head, g)
        } else {
            self.optim
                .step_multi(self.cfg.lr, head, MultiGradientsParams { grads })
        });
        Ok(parts)
    }

    /// The checkpoint of the current state, to continue at `(epoch, step)`.
    pub fn checkpoint(&self, progress: Progress) -> Result<Checkpoint> {
        let optimizer = self
            .optim
            .into_bytes()
            .map_err(|e| Error::Invalid(format!("optimiser state: {e:?}")))?;
        Ok(Checkpoint {
            progress,
            head: head_bytes(self.head(), &self.meta())?,
            optimizer: optimizer.to_vec(),
            param_ids: param_ids(self.head()),
        })
    }

    /// Continue from a checkpoint: its head and Adam state replace the current ones.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let c = &self.clip.config;
        let device = self.replicas[0].device.clone();
        let (head, meta) = load_head(
            &ckpt.head,
            &BackboneId::of(&self.clip),
            c.text.context_length,
            &device,
        )?;
        if meta != self.meta() {
            return Err(Error::Invalid(
                "the checkpoint was made with other head or detector settings".into(),
            ));
        }
        let head = with_param_ids(head, ckpt.param_ids.clone())?;
        let optim = AdamConfig::new()
            .with_beta_1(self.cfg.beta_1)
            .with_beta_2(self.cfg.beta_2)
            .init();
        self.optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(ckpt.optimizer.clone()))
            .map_err(|e| Error::Invalid(format!("optimiser state: {e:?}")))?;
        self.head = Some(head);
        Ok(())
    }
}

/// Split a batch into at most `n` shards of near-equal size, in order.
fn split(batch: Batch, n: usize) -> Vec<Batch> {
    let b = batch.labels.len();
    let n = n.clamp(1, b.max(1));
    if n == 1 {
        return vec![batch];
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let len = b / n + usize::from(i < b % n);
        out.push(Batch {
            vision: VisionOutput {
                global: batch.vision.global.clone().narrow(0, start, len),
                taps: batch
                    .vision
                    .taps
                    .iter()
                    .map(|t| t.clone().narrow(0, start, len))
                    .collect(),
                raw: Vec::new(),
            },
            masks: batch.masks.clone().narrow(0, start, len),
            labels: batch.labels[start..start + len].to_vec(),
            specific: batch.specific[start..start + len].to_vec(),
        });
        start += len;
    }
    out
}
