//! Mutual scoring on the detector (spec §11): a group of images of one product, each scored
//! against the others ([`super::mutual`]), fused with the detector's own map by §10's rule.
//!
//! A [`GroupScorer`] takes the group's images a few at a time (only their tokens stay, on
//! the device), so a caller can report progress, stop between images, and hold one
//! image decoded at a time; the `detect_group*` calls are built on it.

use std::ops::Deref;
use std::time::Duration;

use burn::prelude::*;
use image::DynamicImage;
use web_time::Instant;

use super::mutual::{MAX_GROUP, MIN_GROUP, Mutual, group_sizes, mutual_grid};
use super::reference::BATCH;
use super::{Detection, Detector, Run, maps};
use crate::clip::preprocess::Geometry;
use crate::error::{Error, Result};
use crate::tensor_io::{to_vec, to_vec_async};

/// How an image of a group was scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scored {
    /// Mutually, in a group of this many images.
    Mutual {
        /// The group's size.
        group: usize,
    },
    /// Alone, by the detector's own map (zero-shot, or few-shot with a memory set),
    /// because its group could not be scored mutually.
    Alone {
        /// Why.
        why: String,
    },
}

/// A group being filled ([`Detector::group_scorer`]): each added image's forward pass is
/// queued on the device, and [`Self::finish`] scores them all against each other, or,
/// with fewer than [`MIN_GROUP`], each alone.
///
/// `D` is how the scorer holds its detector: a reference, or a shared pointer (`Rc`,
/// `Arc`) where the group must outlive a borrow (the browser's).
pub struct GroupScorer<D: Deref<Target = Detector>> {
    detector: D,
    mutual: Mutual,
    sync: bool,
    probs: Vec<Tensor<2>>,
    base: Vec<Tensor<2>>,
    /// Per tap, per added chunk, the raw tokens `[b, P, W]`.
    raw: Vec<Vec<Tensor<3>>>,
    geometry: Vec<Geometry>,
    started: Instant,
    preprocess: Duration,
}

impl<D: Deref<Target = Detector>> GroupScorer<D> {
    /// An empty group on `detector`; `mutual` is checked here. With `sync`, the device is
    /// waited on after each forward pass (native timings); without, nothing blocks
    /// (WebGPU), and [`Self::finish_async`] reads the results.
    pub fn new(detector: D, mutual: &Mutual, sync: bool) -> Result<Self> {
        mutual.validate()?;
        let taps = detector.config.taps.len();
        Ok(GroupScorer {
            detector,
            mutual: *mutual,
            sync,
            probs: Vec::new(),
            base: Vec::new(),
            raw: vec![Vec::new(); taps],
            geometry: Vec::new(),
            started: Instant::now(),
            preprocess: Duration::ZERO,
        })
    }

    /// Images added so far.
    pub fn len(&self) -> usize {
        self.geometry.len()
    }

    /// Whether no image was added.
    pub fn is_empty(&self) -> bool {
        self.geometry.is_empty()
    }

    /// Add images, [`BATCH`] per forward pass. If this fails (an image the detector
    /// refuses), none of them is added, and the group is as it was.
    pub fn add(&mut self, images: &[DynamicImage]) -> Result<()> {
        if self.len() + images.len() > MAX_GROUP {
            return Err(Error::Invalid(format!(
                "a group holds at most {MAX_GROUP} images"
            )));
        }
        let mut grids = Vec::new();
        for chunk in images.chunks(BATCH) {
            grids.push(self.detector.forward_grid(chunk, self.sync, true)?);
        }
        for g in grids {
            self.preprocess += g.times[1] - g.times[0];
            self.probs.push(g.probs);
            self.base.push(g.grid);
            self.geometry.extend(g.geometry);
            for (all, tap) in self.raw.iter_mut().zip(g.raw) {
                all.push(tap);
            }
        }
        Ok(())
    }

    /// Every image's result, in the order added, and how it was scored: mutually, or with
    /// fewer than [`MIN_GROUP`] images each alone (as [`Detector::detect`] scores it).
    pub fn finish(self) -> Result<Vec<(Detection, Scored)>> {
        let (run, scored, detector) = self.run()?;
        let probs = to_vec(run.probs.clone())?;
        let maps = to_vec(run.maps.clone())?;
        Ok(with(detector.finish(run, &probs, &maps)?, scored))
    }

    /// [`Self::finish`] with asynchronous read-back (WebGPU).
    pub async fn finish_async(self) -> Result<Vec<(Detection, Scored)>> {
        let (run, scored, detector) = self.run()?;
        let probs = to_vec_async(run.probs.clone()).await?;
        let maps = to_vec_async(run.maps.clone()).await?;
        Ok(with(detector.finish(run, &probs, &maps)?, scored))
    }

    /// The maps, fused and up-sampled, queued on the device (and the detector back).
    fn run(self) -> Result<(Run, Scored, D)> {
        let n = self.len();
        let d = self.detector;
        if n == 0 {
            return Err(Error::Invalid("the group holds no images".into()));
        }
        let size = d.config.input_size;
        let grid = size / d.vision.patch_size;
        let t2 = Instant::now();
        let base = Tensor::cat(self.base, 0);
        let times = [self.started, self.started + self.preprocess, t2];
        let probs = Tensor::cat(self.probs, 0);
        if n < MIN_GROUP {
            let why = format!("a group of {n}: mutual scoring needs {MIN_GROUP} images");
            let run = Run {
                probs,
                maps: maps::upsample_grid(base, grid, size),
                geometry: self.geometry,
                times,
                global_weight: d.config.global_weight,
            };
            return Ok((run, Scored::Alone { why }, d));
        }
        let raw: Vec<Tensor<3>> = self.raw.into_iter().map(|t| Tensor::cat(t, 0)).collect();
        let taps = d.config.taps.len() as f64;
        // On the tap-summed scale of the other maps: `finish` divides by the taps.
        let mutual_map = mutual_grid(&raw, grid)
            .ok_or_else(|| Error::Invalid("no taps".into()))?
            .mul_scalar(taps);
        let lambda = self.mutual.weight;
        let total = if lambda >= 1.0 {
            mutual_map
        } else {
            base.mul_scalar(1.0 - lambda) + mutual_map.mul_scalar(lambda)
        };
        let run = Run {
            probs,
            maps: maps::upsample_grid(total, grid, size),
            geometry: self.geometry,
            times,
            global_weight: 0.0,
        };
        Ok((run, Scored::Mutual { group: n }, d))
    }
}

fn with(found: Vec<Detection>, scored: Scored) -> Vec<(Detection, Scored)> {
    found.into_iter().map(|d| (d, scored.clone())).collect()
}

impl Detector {
    /// An empty group to add images to ([`GroupScorer`]); `mutual` is checked here. With
    /// `sync`, the device is waited on after each forward pass (native timings); without,
    /// nothing blocks (WebGPU), and [`GroupScorer::finish_async`] reads the results.
    pub fn group_scorer(&self, mutual: &Mutual, sync: bool) -> Result<GroupScorer<&Detector>> {
        GroupScorer::new(self, mutual, sync)
    }

    /// Score `images` as one group (spec §11): each against the others, no text and no
    /// references needed. The map is `(1 − λ) · this detector's map + λ · mutual map`
    /// (`mutual.weight` is λ; `mutual.group` is not used here, see
    /// [`Self::detect_mutual`]), and the image score is the map's maximum: the mutual map
    /// is not on the scale of the text's probability `p`, which MuSc does not use either
    /// (`global_probability` still reports it).
    ///
    /// A group holds `MIN_GROUP..=MAX_GROUP` images of one product; timings are per image.
    pub fn detect_group(&self, images: &[DynamicImage], mutual: &Mutual) -> Result<Vec<Detection>> {
        let scorer = self.filled(images, mutual, true)?;
        Ok(scorer.finish()?.into_iter().map(|(d, _)| d).collect())
    }

    /// [`Self::detect_group`] with asynchronous read-back (WebGPU).
    pub async fn detect_group_async(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
    ) -> Result<Vec<Detection>> {
        let scorer = self.filled(images, mutual, false)?;
        Ok(scorer
            .finish_async()
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// A scorer holding `images`, which must be a whole group.
    fn filled(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
        sync: bool,
    ) -> Result<GroupScorer<&Detector>> {
        let mut scorer = self.group_scorer(mutual, sync)?;
        let n = images.len();
        if !(MIN_GROUP..=MAX_GROUP).contains(&n) {
            return Err(Error::Invalid(format!(
                "mutual scoring needs a group of {MIN_GROUP}..={MAX_GROUP} images, not {n}"
            )));
        }
        scorer.add(images)?;
        Ok(scorer)
    }

    /// Any number of images of one product, scored in groups of at most `mutual.group`
    /// ([`group_sizes`]), in order. Fewer than [`MIN_GROUP`] images in all is an error:
    /// there is nothing to compare them with.
    pub fn detect_mutual(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
    ) -> Result<Vec<Detection>> {
        mutual.validate()?;
        let mut out = Vec::with_capacity(images.len());
        let mut start = 0;
        for n in group_sizes(images.len(), mutual.group) {
            out.extend(self.detect_group(&images[start..start + n], mutual)?);
            start += n;
        }
        Ok(out)
    }

    /// One group of images as a run over real files needs it: never losing an image to
    /// another. The images go in [`BATCH`] at a time; a batch the detector refuses goes in
    /// one image at a time, and an image it still refuses gets its own error and stays
    /// out. The rest are scored as a group, or with fewer than [`MIN_GROUP`] left, each
    /// alone (zero-shot, or few-shot with a memory set), and [`Scored::Alone`] says so.
    /// One result per image, in order.
    pub fn detect_group_or_alone(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
    ) -> Vec<Result<(Detection, Scored)>> {
        let mut scorer = match self.group_scorer(mutual, true) {
            Ok(s) => s,
            // A bad λ or G fails every image alike.
            Err(e) => {
                let why = match e {
                    Error::Invalid(why) => why,
                    other => other.to_string(),
                };
                return images
                    .iter()
                    .map(|_| Err(Error::Invalid(why.clone())))
                    .collect();
            }
        };
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            if scorer.add(chunk).is_ok() {
                refused.extend(chunk.iter().map(|_| None));
                continue;
            }
            for image in chunk {
                refused.push(scorer.add(std::slice::from_ref(image)).err());
            }
        }
        let scored: Vec<Result<(Detection, Scored)>> = if scorer.is_empty() {
            Vec::new()
        } else {
            match scorer.finish() {
                Ok(found) => found.into_iter().map(Ok).collect(),
                Err(e) => {
                    let why = e.to_string();
                    let n = images.len() - refused.iter().flatten().count();
                    (0..n).map(|_| Err(Error::Invalid(why.clone()))).collect()
                }
            }
        };
        let mut scored = scored.into_iter();
        refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => scored
                    .next()
                    .unwrap_or_else(|| Err(Error::Invalid("no result for this image".into()))),
            })
            .collect()
    }
}
