//! The flags that choose a detector: CLIP, a head or a knowledge base, and the backend.

use std::path::PathBuf;

use clap::Args;

use crate::clip::{Clip, Tokenizer};
use crate::detect::bundle::{Manifest, Mode};
use crate::detect::{Detector, DetectorConfig};
use crate::device::{BackendKind, device};
use crate::head::knowledge::Knowledge;
use crate::{Error, Result};

#[derive(Args)]
pub struct ModelArgs {
    /// The model config (open_clip JSON); not needed when --weights is a bundle manifest.
    #[arg(long)]
    pub clip_config: Option<PathBuf>,
    /// CLIP weights (safetensors), or the `manifest.json` of a bundle from `kanoclip
    /// convert --to web`, whose chunks are verified against their SHA-256 before use.
    #[arg(long)]
    pub weights: PathBuf,
    /// A trained head; without it, training-free mode.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Knowledge base for training-free mode: `industrial` or `medical` (built in), or a
    /// knowledge file.
    #[arg(long, default_value = "industrial")]
    pub knowledge: String,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
}

impl ModelArgs {
    /// The detector, and its mode's name (`trained` or `training-free`).
    pub fn detector(&self) -> Result<(Detector, &'static str)> {
        let dev = pollster::block_on(device(self.backend))?;
        if self.weights.extension().is_some_and(|e| e == "json") {
            return self.bundle(&dev);
        }
        let Some(clip_config) = &self.clip_config else {
            return Err(Error::Invalid(
                "--clip-config is needed unless --weights is a bundle manifest".into(),
            ));
        };
        let tokenizer = Tokenizer::new()?;
        let clip = Clip::from_files(clip_config, &self.weights, &dev)?;
        Ok(match &self.head {
            Some(head) => (Detector::load(clip, head, &tokenizer)?, "trained"),
            None => {
                let kb = Knowledge::parse(&self.knowledge).load()?;
                let cfg = DetectorConfig::for_clip(&clip.config);
                (
                    Detector::training_free(clip, &kb, &tokenizer, cfg)?,
                    "training-free",
                )
            }
        })
    }

    /// A detector from a verified bundle: its mode, head and texts come from the bundle.
    fn bundle(&self, dev: &burn::prelude::Device) -> Result<(Detector, &'static str)> {
        if self.head.is_some() || self.clip_config.is_some() {
            return Err(Error::Invalid(
                "a bundle manifest carries its config and head: drop --clip-config and --head"
                    .into(),
            ));
        }
        let (manifest, vision, head) = Manifest::read(&self.weights)?;
        let detector = manifest
            .detector(&vision, head.as_deref(), dev)
            .map_err(|e| e.in_file(&self.weights))?;
        let mode = match manifest.mode {
            Mode::Trained => "trained",
            Mode::TrainingFree => "training-free",
        };
        Ok((detector, mode))
    }
}
