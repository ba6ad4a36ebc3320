//! The detection API every face calls (CLI, browser, training's evaluation): one
//! [`Detector`] with two modes, training-free (plain CLIP with the knowledge prompt
//! ensemble) and trained (KnPL prompts, Bi-CMCI and the Conv-Adapter from a head file).

pub mod bundle;
pub mod config;
pub mod coreset;
mod group;
pub mod head_file;
pub mod maps;
pub mod memory;
pub mod mutual;
mod reference;
pub mod render;
mod result;
pub(crate) mod upsample;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use burn::prelude::*;
use burn::tensor::activation::softmax;
use image::DynamicImage;
use web_time::Instant;

use crate::clip::preprocess::{Geometry, image_batch};
use crate::clip::vision::VisionTower;
use crate::clip::{Clip, Tokenizer, VvOptions};
use crate::error::{Error, Result};
use crate::head::knowledge::{Knowledge, KnowledgeBase};
use crate::head::prompts::{PromptTokens, l2_normalize};
use crate::head::{BackboneId, Head, score};
use crate::tensor_io::{to_vec, to_vec_async};
pub use config::DetectorConfig;
pub use group::{GroupScorer, Scored};
use head_file::{HeadMeta, check_levels, load_head_file};
use memory::{FewShot, ReferenceMemory};
pub use mutual::Mutual;
pub use reference::{BATCH as MEMORY_BATCH, MemoryBuilder, MemoryOptions};
pub use result::{AnomalyMap, Calibration, Detection, Timings};

/// CLIP's usual prompt templates, used to wrap each knowledge text in training-free mode.
pub const TEMPLATES: [&str; 7] = [
    "a photo of a {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a good photo of a {}.",
];

/// Where a detector's scoring comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectorSource {
    /// Training-free mode: plain CLIP with a knowledge base's prompt ensemble and the
    /// backbone's default settings ([`DetectorConfig::for_clip`]).
    TrainingFree(Knowledge),
    /// Trained mode: a head file, with the settings it was trained with.
    Head(PathBuf),
}

impl DetectorSource {
    /// The one rule every face uses: a head file when one is given (trained mode), else
    /// training-free mode with the knowledge base `knowledge` names (`industrial`,
    /// `medical`, or a knowledge file).
    pub fn new(head: Option<PathBuf>, knowledge: &str) -> Self {
        match head {
            Some(path) => DetectorSource::Head(path),
            None => DetectorSource::TrainingFree(Knowledge::parse(knowledge)),
        }
    }

    /// The mode's name, as reports and the browser bundle write it: `trained` or
    /// `training-free`.
    pub fn mode(&self) -> &'static str {
        match self {
            DetectorSource::TrainingFree(_) => "training-free",
            DetectorSource::Head(_) => "trained",
        }
    }
}

/// A forward pass waiting to be read back.
struct Run {
    probs: Tensor<2>,
    maps: Tensor<3>,
    geometry: Vec<Geometry>,
    times: [Instant; 3],
    /// The weight of `p` in the image score (§7); the rest is the map's maximum.
    global_weight: f64,
}

/// A forward pass on the patch grid, before the maps are up-sampled.
struct Grids {
    /// `softmax(global logits)`, `[B, 2]`.
    probs: Tensor<2>,
    /// The zero-shot map (fused with the few-shot map where a memory is set), summed over
    /// the taps: `[B, grid²]`.
    grid: Tensor<2>,
    /// With `raw`, per tap, the original path's patch tokens `[B, grid², width]`.
    raw: Vec<Tensor<3>>,
    geometry: Vec<Geometry>,
    times: [Instant; 3],
}

/// Zero-shot anomaly detection with a frozen CLIP image tower: an image score and a map
/// at the image's own size for every image.
///
/// ```no_run
/// use kanoclip::{BackendKind, Detector, DetectorSource, Knowledge};
/// let detector = Detector::from_files(
///     "weights/vit-b-16/clip_config.json",
///     "weights/vit-b-16/open_clip_model.safetensors",
///     DetectorSource::TrainingFree(Knowledge::Industrial),
///     BackendKind::Cpu,
/// )?;
/// let found = detector.detect(&kanoclip::load_image("part.png")?)?;
/// println!("score {:.3}, anomalous: {}", found.score, found.is_anomalous);
/// # Ok::<(), kanoclip::Error>(())
/// ```
pub struct Detector {
    vision: VisionTower,
    head: Option<Head>,
    config: DetectorConfig,
    /// The decision threshold's bits: the one owner of the threshold, settable through a
    /// shared reference (the browser glue shares the detector with pending detections).
    threshold: AtomicU64,
    /// `[t_n; t_a]`, L2-normalised, computed once at load.
    text: Tensor<2>,
    /// The positional embedding for `config.input_size`, resized once at load.
    pos: Tensor<2>,
    /// The backbone the image tower is (a reference memory must come from the same).
    backbone: BackboneId,
    /// Few-shot mode: the reference memory in force and how it is fused, if any. Shared
    /// with detections already running, so replacing it never disturbs them.
    few_shot: RwLock<Option<(Arc<ReferenceMemory>, FewShot)>>,
}

impl Detector {
    /// The one obvious call (native builds): load CLIP from a config and a weights file onto a device of
    /// `backend`, and build the detector `source` asks for. The tokenizer is built inside.
    #[cfg(feature = "native")]
    pub fn from_files(
        clip_config: impl AsRef<Path>,
        weights: impl AsRef<Path>,
        source: DetectorSource,
        backend: crate::device::BackendKind,
    ) -> Result<Self> {
        let device = crate::device::device_blocking(backend)?;
        let clip = Clip::from_files(clip_config, weights, &device)?;
        Self::new(clip, &source, &Tokenizer::new()?)
    }

    /// The detector `source` asks for, on a loaded CLIP: training-free with the backbone's
    /// default settings ([`DetectorConfig::for_clip`]), or trained with the head file's own.
    /// Every face (the CLI's commands, [`Self::from_files`]) builds its detector here.
    pub fn new(clip: Clip, source: &DetectorSource, tokenizer: &Tokenizer) -> Result<Self> {
        match source {
            DetectorSource::TrainingFree(knowledge) => {
                let config = DetectorConfig::for_clip(&clip.config);
                Self::training_free(clip, &knowledge.load()?, tokenizer, config)
            }
            DetectorSource::Head(path) => Self::load(clip, path, tokenizer),
        }
    }

    /// A detector from its parts: the image tower and the backbone it belongs to, a head or
    /// none (training-free), the settings, and the state texts `[t_n; t_a]` (`[2, D]`,
    /// L2-normalised) encoded beforehand, so that no text tower is needed (the browser
    /// bundle's case).
    pub fn from_parts(
        vision: VisionTower,
        backbone: BackboneId,
        head: Option<Head>,
        config: DetectorConfig,
        text: Tensor<2>,
    ) -> Result<Self> {
        config.validate(vision.blocks.len(), vision.patch_size)?;
        config.check_cost(vision.patch_size, vision.heads())?;
        let [states, d] = text.dims();
        if states != 2 || d != vision.proj.dims()[1] {
            return Err(Error::Invalid(format!(
                "text features are {states}×{d}, expected 2×{}",
                vision.proj.dims()[1]
            )));
        }
        if let Some(h) = &head {
            check_levels(h.bicmci.len(), &config.taps)?;
        }
        let pos = vision.positional_embedding_for(config.input_size / vision.patch_size);
        Ok(Detector {
            vision,
            head,
            threshold: AtomicU64::new(config.threshold.to_bits()),
            config,
            text,
            pos,
            backbone,
            few_shot: RwLock::new(None),
        })
    }

    /// Training-free mode: `t_n`, `t_a` are the renormalised means of the knowledge texts of
    /// each state, each wrapped in [`TEMPLATES`] (spec §3). Bi-CMCI and the adapter are
    /// skipped.
    pub fn training_free(
        clip: Clip,
        knowledge: &KnowledgeBase,
        tokenizer: &Tokenizer,
        config: DetectorConfig,
    ) -> Result<Self> {
        knowledge.validate()?;
        let mut states = Vec::with_capacity(2);
        for texts in [&knowledge.general.normal, &knowledge.general.abnormal] {
            let prompts: Vec<String> = texts
                .iter()
                .flat_map(|t| TEMPLATES.iter().map(move |tpl| tpl.replace("{}", t)))
                .collect();
            states.push(mean_text_feature(&clip, tokenizer, &prompts)?);
        }
        let text = Tensor::cat(states, 0);
        let backbone = BackboneId::of(&clip);
        Self::from_parts(clip.vision, backbone, None, config, text)
    }

    /// Trained mode: the head file's prompts, Bi-CMCI and adapter, and the detector settings
    /// it was trained with. A head built for another backbone is refused
    /// ([`Error::Incompatible`]).
    pub fn load(clip: Clip, head_path: impl AsRef<Path>, tokenizer: &Tokenizer) -> Result<Self> {
        let backbone = BackboneId::of(&clip);
        let (head, meta) = load_head_file(
            head_path,
            &backbone,
            clip.config.text.context_length,
            &clip.device(),
        )?;
        Self::with_head(clip, head, meta, tokenizer)
    }

    /// Trained mode from a head already in memory.
    pub fn with_head(
        clip: Clip,
        head: Head,
        meta: HeadMeta,
        tokenizer: &Tokenizer,
    ) -> Result<Self> {
        // The head's own levels are checked against the taps in `from_parts`.
        check_levels(meta.head.levels, &meta.detector.taps)?;
        let tokens =
            PromptTokens::new(tokenizer, meta.head.n_ctx, clip.config.text.context_length)?;
        clip.check_tokens(&tokens.rows)?;
        let text = head.prompts.encode(&clip.text, &tokens);
        let backbone = BackboneId::of(&clip);
        Self::from_parts(clip.vision, backbone, Some(head), meta.detector, text)
    }

    /// The settings in force (with the current threshold).
    pub fn config(&self) -> DetectorConfig {
        DetectorConfig {
            threshold: self.threshold(),
            ..self.config.clone()
        }
    }

    /// The device the detector runs on.
    pub fn device(&self) -> Device {
        self.vision.conv1.device()
    }

    /// The trained head, if any.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The backbone the image tower is.
    pub fn backbone(&self) -> &BackboneId {
        &self.backbone
    }

    /// The state text features `[t_n; t_a]`.
    pub fn text_features(&self) -> &Tensor<2> {
        &self.text
    }

    /// The decision threshold: an image is anomalous when its score is at or above it.
    pub fn threshold(&self) -> f64 {
        f64::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    /// Set the decision threshold (finite), for every detection from now on.
    pub fn set_threshold(&self, threshold: f64) -> Result<()> {
        if !threshold.is_finite() {
            return Err(Error::Invalid(format!(
                "threshold {threshold} is not finite"
            )));
        }
        self.threshold.store(threshold.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Detect on one image.
    pub fn detect(&self, image: &DynamicImage) -> Result<Detection> {
        let mut out = self.detect_batch(std::slice::from_ref(image))?;
        out.pop()
            .ok_or_else(|| Error::Invalid("the batch gave no result".into()))
    }

    /// Detect on several images in one forward pass. Timings are per image (batch time
    /// divided by the batch size).
    pub fn detect_batch(&self, images: &[DynamicImage]) -> Result<Vec<Detection>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let run = self.forward(images, true)?;
        let probs = to_vec(run.probs.clone())?;
        let maps = to_vec(run.maps.clone())?;
        self.finish(run, &probs, &maps)
    }

    /// [`Self::detect_batch`] with asynchronous read-back, which WebGPU requires (a
    /// synchronous read panics there). The backbone and head timings are then one figure,
    /// reported as `backbone_ms` (`head_ms` is 0).
    pub async fn detect_batch_async(&self, images: &[DynamicImage]) -> Result<Vec<Detection>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let run = self.forward(images, false)?;
        let probs = to_vec_async(run.probs.clone()).await?;
        let maps = to_vec_async(run.maps.clone()).await?;
        self.finish(run, &probs, &maps)
    }

    /// Pre-processing, the forward pass and the maps up-sampled, queued on the device. With
    /// `sync` the device is waited on between stages so that each stage is timed on its own.
    fn forward(&self, images: &[DynamicImage], sync: bool) -> Result<Run> {
        let size = self.config.input_size;
        let g = self.forward_grid(images, sync, false)?;
        Ok(Run {
            probs: g.probs,
            maps: maps::upsample_grid(g.grid, size / self.vision.patch_size, size),
            geometry: g.geometry,
            times: g.times,
            global_weight: self.config.global_weight,
        })
    }

    /// Pre-processing and the forward pass up to the maps on the patch grid; with `raw`, also
    /// the original path's patch tokens at the taps (mutual scoring's, spec §11).
    fn forward_grid(&self, images: &[DynamicImage], sync: bool, raw: bool) -> Result<Grids> {
        let device = self.device();
        let size = self.config.input_size;
        let grid = size / self.vision.patch_size;
        let wait = || -> Result<()> {
            if sync {
                device
                    .sync()
                    .map_err(|e| Error::backend("running the backbone", e))?;
            }
            Ok(())
        };
        let t0 = Instant::now();
        let (batch, geometry) = image_batch(images, size, &device)?;
        let t1 = Instant::now();
        let vv = VvOptions {
            vv_from: Some(self.config.vv_from),
            taps: self.config.taps.clone(),
            raw_taps: if raw {
                self.config.taps.clone()
            } else {
                Vec::new()
            },
        };
        let vision = self.vision.forward(batch, self.pos.clone(), &vv);
        wait()?;
        let t2 = Instant::now();
        let scores = score(
            &vision,
            &self.text,
            self.head.as_ref(),
            self.config.tau,
            grid,
        );
        let probs = softmax(scores.global_logits, 1);
        let no_taps = || Error::Invalid("no taps".into());
        let mut total = maps::zero_shot_grid(&scores.local).ok_or_else(no_taps)?;
        if let Some((memory, fs)) = self.memory()
            && fs.weight > 0.0
        {
            let patches: Vec<Tensor<3>> = vision
                .taps
                .iter()
                .map(|t| t.clone().narrow(1, 1, grid * grid))
                .collect();
            let mut few = memory.grid_map(&patches).ok_or_else(no_taps)?;
            if fs.normalize {
                few = few.div_scalar(memory.meta().scale);
            }
            total = total.mul_scalar(1.0 - fs.weight) + few.mul_scalar(fs.weight);
        }
        let raw = (vision.raw.iter())
            .map(|t| t.clone().narrow(1, 1, grid * grid))
            .collect();
        Ok(Grids {
            probs,
            grid: total,
            raw,
            geometry,
            times: [t0, t1, t2],
        })
    }

    /// Smoothing, scores and maps back at the original size, from the read-back values.
    /// A NaN or infinity in an image's probability or map is an error
    /// ([`Error::NonFinite`]): a maximum would skip a NaN and call the image normal.
    fn finish(&self, run: Run, probs: &[f32], maps: &[f32]) -> Result<Vec<Detection>> {
        let t3 = Instant::now();
        let size = self.config.input_size;
        let taps = self.config.taps.len() as f32;
        let w = run.global_weight as f32;
        let threshold = self.threshold();
        let mut out = Vec::with_capacity(run.geometry.len());
        for (i, g) in run.geometry.iter().enumerate() {
            let raw = &maps[i * size * size..(i + 1) * size * size];
            let p = probs[i * 2 + 1];
            if !p.is_finite() || raw.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "image {} of the batch got a NaN or infinite {} (the weights, head or \
                     reference memory hold values that make no sense)",
                    i + 1,
                    if p.is_finite() { "map" } else { "score" }
                )));
            }
            let mut smooth = maps::gaussian_blur(raw, size, size, self.config.sigma);
            smooth.iter_mut().for_each(|v| *v /= taps);
            let map_max = smooth.iter().copied().fold(f32::MIN, f32::max);
            let score = w * p + (1.0 - w) * map_max;
            let values = maps::to_original(&smooth, g);
            out.push(Detection {
                score,
                is_anomalous: f64::from(score) >= threshold,
                threshold,
                global_probability: p,
                map: AnomalyMap {
                    width: g.original.0,
                    height: g.original.1,
                    values,
                },
                timings: Timings::default(),
            });
        }
        let t4 = Instant::now();
        let [t0, t1, t2] = run.times;
        let n = run.geometry.len() as f64;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3 / n;
        let timings = Timings {
            preprocess_ms: ms(t0, t1),
            backbone_ms: ms(t1, t2),
            head_ms: ms(t2, t3),
            postprocess_ms: ms(t3, t4),
        };
        out.iter_mut().for_each(|d| d.timings = timings);
        Ok(out)
    }

    /// Set the threshold from images known to be normal, and return what was measured.
    ///
    /// Rule: `threshold = max(mean + 3·std, max + 1e-4)` over the normal images' scores —
    /// three standard deviations above their mean, and never at or below a calibration
    /// image's own score, so that none of them is flagged. One image is enough to run it,
    /// but the spread is only meaningful with several (10 or more).
    pub fn calibrate(&self, normal_images: &[DynamicImage]) -> Result<Calibration> {
        if normal_images.is_empty() {
            return Err(Error::Invalid(
                "calibration needs at least one normal image".into(),
            ));
        }
        let mut scores = Vec::with_capacity(normal_images.len());
        for chunk in normal_images.chunks(8) {
            scores.extend(
                self.detect_batch(chunk)?
                    .into_iter()
                    .map(|d| f64::from(d.score)),
            );
        }
        let cal = calibration_rule(&scores)?;
        self.set_threshold(cal.threshold)?;
        Ok(cal)
    }
}

/// The calibration rule of [`Detector::calibrate`], on scores alone.
pub fn calibration_rule(scores: &[f64]) -> Result<Calibration> {
    if scores.is_empty() || scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::Invalid(
            "calibration scores must be finite and non-empty".into(),
        ));
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = scores.iter().copied().fold(f64::MIN, f64::max);
    Ok(Calibration {
        threshold: (mean + 3.0 * std).max(max + 1e-4),
        images: scores.len(),
        mean,
        std,
        max,
    })
}

/// The renormalised mean of the normalised text features of `prompts`: `[1, D]`.
fn mean_text_feature(clip: &Clip, tokenizer: &Tokenizer, prompts: &[String]) -> Result<Tensor<2>> {
    let rows = tokenizer.tokenize_batch(prompts, clip.config.text.context_length)?;
    let mut sum: Option<Tensor<2>> = None;
    for chunk in rows.chunks(32) {
        let f = l2_normalize(clip.encode_text(chunk)?).sum_dim(0);
        sum = Some(match sum {
            Some(s) => s + f,
            None => f,
        });
    }
    let sum = sum.ok_or_else(|| Error::Knowledge("no texts".into()))?;
    Ok(l2_normalize(sum.div_scalar(rows.len() as f64)))
}
