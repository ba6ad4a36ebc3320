//! The flags that choose a detector, declared once for every command that builds one
//! (`detect`, `eval`, `train`, `convert`, `reference build`), with one rule: `--head` gives
//! trained mode, else training-free mode with `--knowledge` ([`DetectorSource::new`]).

use std::path::{Path, PathBuf};

use clap::Args;

use crate::clip::{Clip, Tokenizer};
use crate::detect::bundle::Manifest;
use crate::detect::{Detector, DetectorSource};
use crate::device::{BackendKind, device};
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
    /// Knowledge base for training-free mode (and for training): `industrial` or
    /// `medical` (built in), or a knowledge file.
    #[arg(long, default_value = "industrial")]
    pub knowledge: String,
    /// Accepted for scripts written for earlier versions: training-free mode is what runs
    /// without --head.
    #[arg(long, hide = true, conflicts_with = "head")]
    pub training_free: bool,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
}

impl ModelArgs {
    /// Where the detector's scoring comes from (the one rule).
    pub fn source(&self) -> DetectorSource {
        DetectorSource::new(self.head.clone(), &self.knowledge)
    }

    /// Whether --weights names a bundle manifest rather than CLIP weights.
    pub fn is_bundle(&self) -> bool {
        self.weights.extension().is_some_and(|e| e == "json")
    }

    /// The model config and weights, for the commands that need CLIP's own files (`train`
    /// needs the text tower, `convert` re-encodes the weights): a bundle is refused.
    pub fn clip_files(&self, command: &str) -> Result<(&Path, &Path)> {
        if self.is_bundle() {
            return Err(Error::Invalid(format!(
                "kanoclip {command} needs CLIP's own weights (safetensors) and --clip-config, \
                 not a bundle manifest"
            )));
        }
        Ok((self.clip_config()?, &self.weights))
    }

    fn clip_config(&self) -> Result<&Path> {
        self.clip_config.as_deref().ok_or_else(|| {
            Error::Invalid("--clip-config is needed unless --weights is a bundle manifest".into())
        })
    }

    /// The detector, and its mode's name (`trained` or `training-free`).
    pub fn detector(&self) -> Result<(Detector, &'static str)> {
        let dev = pollster::block_on(device(self.backend))?;
        if self.is_bundle() {
            return self.bundle(&dev);
        }
        let clip = Clip::from_files(self.clip_config()?, &self.weights, &dev)?;
        let source = self.source();
        let detector = Detector::new(clip, &source, &Tokenizer::new()?)?;
        Ok((detector, source.mode()))
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
        Ok((detector, manifest.mode.name()))
    }
}
