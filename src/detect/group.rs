//! Mutual scoring on the detector (spec §11): a group of images of one product, each scored
//! against the others ([`super::mutual`]), fused with the detector's own map by §10's rule.

use burn::prelude::*;
use image::DynamicImage;
use web_time::Instant;

use super::mutual::{MAX_GROUP, MIN_GROUP, Mutual, group_sizes, mutual_grid};
use super::reference::BATCH;
use super::{Detection, Detector, Run, maps};
use crate::error::{Error, Result};
use crate::tensor_io::{to_vec, to_vec_async};

/// How [`Detector::detect_group_or_alone`] scored an image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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

impl Detector {
    /// Score `images` as one group (spec §11): each against the others, no text and no
    /// references needed. The map is `(1 − λ) · this detector's map + λ · mutual map`
    /// (`mutual.weight` is λ; `mutual.group` is not used here, see
    /// [`Self::detect_mutual`]), and the image score is the map's maximum: the mutual map
    /// is not on the scale of the text's probability `p`, which MuSc does not use either
    /// (`global_probability` still reports it).
    ///
    /// A group holds `MIN_GROUP..=MAX_GROUP` images of one product; timings are per image.
    pub fn detect_group(&self, images: &[DynamicImage], mutual: &Mutual) -> Result<Vec<Detection>> {
        let run = self.group_forward(images, mutual, true)?;
        let probs = to_vec(run.probs.clone())?;
        let maps = to_vec(run.maps.clone())?;
        self.finish(run, &probs, &maps)
    }

    /// [`Self::detect_group`] with asynchronous read-back (WebGPU).
    pub async fn detect_group_async(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
    ) -> Result<Vec<Detection>> {
        let run = self.group_forward(images, mutual, false)?;
        let probs = to_vec_async(run.probs.clone()).await?;
        let maps = to_vec_async(run.maps.clone()).await?;
        self.finish(run, &probs, &maps)
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
    /// another. The images are scored as one group when they can be; if the group fails
    /// (an image the detector refuses), each image is tried alone to find the ones at
    /// fault, and the rest are scored as a group again. With fewer than [`MIN_GROUP`]
    /// images left, they are scored alone (zero-shot, or few-shot with a memory set) and
    /// [`Scored::Alone`] says so. One result per image, in order.
    pub fn detect_group_or_alone(
        &self,
        images: &[DynamicImage],
        mutual: &Mutual,
    ) -> Vec<Result<(Detection, Scored)>> {
        let alone = |why: String| Scored::Alone { why };
        let n = images.len();
        // A bad λ or G fails every group alike: no use trying each image.
        if mutual.validate().is_err() {
            return images
                .iter()
                .map(|_| Err(mutual.validate().expect_err("checked")))
                .collect();
        }
        if n >= MIN_GROUP
            && let Ok(found) = self.detect_group(images, mutual)
        {
            let scored = Scored::Mutual { group: n };
            return found.into_iter().map(|d| Ok((d, scored.clone()))).collect();
        }
        let each: Vec<Result<Detection>> = images.iter().map(|img| self.detect(img)).collect();
        let good: Vec<usize> = (0..n).filter(|&i| each[i].is_ok()).collect();
        let why = if n < MIN_GROUP {
            format!("a group of {n}: mutual scoring needs {MIN_GROUP} images")
        } else {
            format!("{} of the group's {n} images could be scored", good.len())
        };
        if good.len() >= MIN_GROUP && good.len() < n {
            let subset: Vec<DynamicImage> = good.iter().map(|&i| images[i].clone()).collect();
            if let Ok(found) = self.detect_group(&subset, mutual) {
                let group = good.len();
                let mut found = found.into_iter();
                return each
                    .into_iter()
                    .map(|r| match r {
                        Ok(_) => Ok((
                            found.next().expect("one per image"),
                            Scored::Mutual { group },
                        )),
                        Err(e) => Err(e),
                    })
                    .collect();
            }
        }
        each.into_iter()
            .map(|r| r.map(|d| (d, alone(why.clone()))))
            .collect()
    }

    /// The group's forward passes, a few images at a time, then the mutual map over all of
    /// them, fused and up-sampled, queued on the device.
    fn group_forward(&self, images: &[DynamicImage], mutual: &Mutual, sync: bool) -> Result<Run> {
        mutual.validate()?;
        let n = images.len();
        if !(MIN_GROUP..=MAX_GROUP).contains(&n) {
            return Err(Error::Invalid(format!(
                "mutual scoring needs a group of {MIN_GROUP}..={MAX_GROUP} images, not {n}"
            )));
        }
        let size = self.config.input_size;
        let grid = size / self.vision.patch_size;
        let t0 = Instant::now();
        let mut preprocess = std::time::Duration::ZERO;
        let (mut probs, mut base, mut geometry) = (Vec::new(), Vec::new(), Vec::new());
        let mut raw: Vec<Vec<Tensor<3>>> = vec![Vec::new(); self.config.taps.len()];
        for chunk in images.chunks(BATCH) {
            let g = self.forward_grid(chunk, sync, true)?;
            preprocess += g.times[1] - g.times[0];
            probs.push(g.probs);
            base.push(g.grid);
            geometry.extend(g.geometry);
            for (all, tap) in raw.iter_mut().zip(g.raw) {
                all.push(tap);
            }
        }
        let t2 = Instant::now();
        let raw: Vec<Tensor<3>> = raw.into_iter().map(|t| Tensor::cat(t, 0)).collect();
        let taps = self.config.taps.len() as f64;
        // On the tap-summed scale of the other maps: `finish` divides by the taps.
        let mutual_map = mutual_grid(&raw, grid)
            .ok_or_else(|| Error::Invalid("no taps".into()))?
            .mul_scalar(taps);
        let lambda = mutual.weight;
        let total = if lambda >= 1.0 {
            mutual_map
        } else {
            Tensor::cat(base, 0).mul_scalar(1.0 - lambda) + mutual_map.mul_scalar(lambda)
        };
        Ok(Run {
            probs: Tensor::cat(probs, 0),
            maps: maps::upsample_grid(total, grid, size),
            geometry,
            times: [t0, t0 + preprocess, t2],
            global_weight: 0.0,
        })
    }
}
