//! Building, setting and clearing a detector's reference memory (few-shot mode, spec §10).

use std::sync::Arc;

use burn::prelude::*;
use image::DynamicImage;

use super::Detector;
use super::coreset::{gather_rows, greedy_coreset};
use super::memory::{
    FewShot, MIN_SCALE, MemoryMeta, ReferenceImage, ReferenceMemory, SCALE_PERCENTILE,
    leave_one_out, percentile,
};
use crate::clip::VvOptions;
use crate::clip::preprocess::image_batch;
use crate::error::{Error, Result};
use crate::head::prompts::l2_normalize;
use crate::tensor_io::{to_vec, to_vec_async};

/// Images per forward pass while building a memory.
pub const BATCH: usize = 8;

/// How a memory is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// The most tokens kept per tap; above it, greedy coreset selection reduces the
    /// memory to this size. `None`: 16 images' worth (16 · grid²).
    pub max_rows: Option<usize>,
    /// Seed of the coreset's projection and first pick.
    pub seed: u64,
}

/// The memory's tokens and the references' leave-one-out map, queued on the device.
struct Pending {
    taps: Vec<Tensor<2>>,
    loo: Tensor<1>,
}

/// A memory built a few references at a time ([`Detector::memory_builder`]): only the
/// tokens stay, on the device, so a caller that decodes [`BATCH`] images, adds them and
/// drops them holds no more decoded images than that, however many references there are.
pub struct MemoryBuilder<'a> {
    detector: &'a Detector,
    per_tap: Vec<Vec<Tensor<2>>>,
    sources: Vec<ReferenceImage>,
}

impl<'a> MemoryBuilder<'a> {
    /// Add known-good images (`sources` names each), [`BATCH`] per forward pass.
    pub fn add(&mut self, images: &[DynamicImage], sources: Vec<ReferenceImage>) -> Result<()> {
        if sources.len() != images.len() {
            return Err(Error::Invalid(format!(
                "{} reference names for {} images",
                sources.len(),
                images.len()
            )));
        }
        let d = self.detector;
        let device = d.device();
        let size = d.config.input_size;
        let n = (size / d.vision.patch_size).pow(2);
        let vv = VvOptions {
            vv_from: Some(d.config.vv_from),
            taps: d.config.taps.clone(),
            ..Default::default()
        };
        for chunk in images.chunks(BATCH) {
            let (batch, _) = image_batch(chunk, size, &device)?;
            let out = d.vision.forward(batch, d.pos.clone(), &vv);
            for (acc, tap) in self.per_tap.iter_mut().zip(out.taps) {
                let [b, _, dim] = tap.dims();
                acc.push(l2_normalize(tap.narrow(1, 1, n)).reshape([b * n, dim]));
            }
        }
        self.sources.extend(sources);
        Ok(())
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The memory of every image added (at least one).
    pub fn finish(self, options: MemoryOptions) -> Result<ReferenceMemory> {
        let (detector, sources, pending) = self.pending()?;
        let host = (pending.taps.into_iter().map(to_vec)).collect::<Result<Vec<_>>>()?;
        let loo = to_vec(pending.loo)?;
        detector.finish_memory(host, &loo, sources, options)
    }

    /// [`Self::finish`] with asynchronous read-back (WebGPU's requirement).
    pub async fn finish_async(self, options: MemoryOptions) -> Result<ReferenceMemory> {
        let (detector, sources, pending) = self.pending()?;
        let mut host = Vec::with_capacity(pending.taps.len());
        for t in pending.taps {
            host.push(to_vec_async(t).await?);
        }
        let loo = to_vec_async(pending.loo).await?;
        detector.finish_memory(host, &loo, sources, options)
    }

    fn pending(self) -> Result<(&'a Detector, Vec<ReferenceImage>, Pending)> {
        if self.sources.is_empty() {
            return Err(Error::Invalid(
                "a reference memory needs at least one known-good image".into(),
            ));
        }
        let d = self.detector;
        let n = (d.config.input_size / d.vision.patch_size).pow(2);
        let taps: Vec<Tensor<2>> = (self.per_tap.into_iter())
            .map(|t| Tensor::cat(t, 0))
            .collect();
        let loo = leave_one_out(&taps, self.sources.len(), n)
            .ok_or_else(|| Error::Invalid("no taps".into()))?;
        Ok((d, self.sources, Pending { taps, loo }))
    }
}

impl Detector {
    /// The reference memory in force and how it is fused, if any (few-shot mode).
    pub fn memory(&self) -> Option<(Arc<ReferenceMemory>, FewShot)> {
        self.few_shot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Use `memory` for every detection from now on (few-shot mode). A memory made for
    /// another backbone, input size or taps is refused ([`Error::Incompatible`]).
    pub fn set_memory(
        &self,
        memory: impl Into<Arc<ReferenceMemory>>,
        fusion: FewShot,
    ) -> Result<()> {
        let memory = memory.into();
        fusion.validate()?;
        memory.meta().check_against(&self.backbone, &self.config)?;
        *self.few_shot.write().unwrap_or_else(|e| e.into_inner()) = Some((memory, fusion));
        Ok(())
    }

    /// Change how the memory in force is fused (λ, normalisation).
    pub fn set_few_shot(&self, fusion: FewShot) -> Result<()> {
        fusion.validate()?;
        match self
            .few_shot
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some((_, f)) => {
                *f = fusion;
                Ok(())
            }
            None => Err(Error::Invalid(
                "there is no reference memory to fuse".into(),
            )),
        }
    }

    /// Back to zero-shot detection.
    pub fn clear_memory(&self) {
        *self.few_shot.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A memory built a few references at a time, with the same forward as detection
    /// (spec §10); see [`MemoryBuilder`].
    pub fn memory_builder(&self) -> MemoryBuilder<'_> {
        MemoryBuilder {
            detector: self,
            per_tap: vec![Vec::new(); self.config.taps.len()],
            sources: Vec::new(),
        }
    }

    /// Build a reference memory from known-good images (spec §10), with the same forward
    /// as detection, [`BATCH`] images at a time. `sources` names each image (and its
    /// bytes' SHA-256) for the memory file. At least one image is needed.
    pub fn build_memory(
        &self,
        images: &[DynamicImage],
        sources: Vec<ReferenceImage>,
        options: MemoryOptions,
    ) -> Result<ReferenceMemory> {
        let mut b = self.memory_builder();
        b.add(images, sources)?;
        b.finish(options)
    }

    /// [`Self::build_memory`] with asynchronous read-back (WebGPU's requirement).
    pub async fn build_memory_async(
        &self,
        images: &[DynamicImage],
        sources: Vec<ReferenceImage>,
        options: MemoryOptions,
    ) -> Result<ReferenceMemory> {
        let mut b = self.memory_builder();
        b.add(images, sources)?;
        b.finish_async(options).await
    }

    fn finish_memory(
        &self,
        mut host: Vec<Vec<f32>>,
        loo: &[f32],
        sources: Vec<ReferenceImage>,
        options: MemoryOptions,
    ) -> Result<ReferenceMemory> {
        let n = (self.config.input_size / self.vision.patch_size).pow(2);
        let d = self.vision.proj.dims()[1];
        let scale = percentile(loo, SCALE_PERCENTILE)
            .ok_or_else(|| Error::Invalid("the reference features are not finite".into()))?
            .max(MIN_SCALE);
        let max_rows = options.max_rows.unwrap_or(16 * n).max(1);
        if sources.len() * n > max_rows {
            for (i, tokens) in host.iter_mut().enumerate() {
                let seed = options.seed.wrapping_add(i as u64);
                let keep = greedy_coreset(tokens, d, max_rows, seed);
                *tokens = gather_rows(tokens, d, &keep);
            }
        }
        let rows = host.iter().map(|t| t.len() / d.max(1)).collect();
        let meta = MemoryMeta {
            backbone: self.backbone.clone(),
            input_size: self.config.input_size,
            vv_from: self.config.vv_from,
            taps: self.config.taps.clone(),
            images: sources,
            rows,
            scale,
        };
        ReferenceMemory::from_host(meta, host, &self.device())
    }
}
