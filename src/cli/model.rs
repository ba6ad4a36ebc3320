//! The flags that choose a detector: CLIP, a head or a knowledge base, and the backend.

use std::path::PathBuf;

use clap::Args;

use crate::Result;
use crate::clip::{Clip, Tokenizer};
use crate::detect::{Detector, DetectorConfig};
use crate::device::{BackendKind, device};
use crate::head::knowledge::Knowledge;

#[derive(Args)]
pub struct ModelArgs {
    #[arg(long)]
    pub clip_config: PathBuf,
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
        let tokenizer = Tokenizer::new()?;
        let dev = pollster::block_on(device(self.backend))?;
        let clip = Clip::from_files(&self.clip_config, &self.weights, &dev)?;
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
}
