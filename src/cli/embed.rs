//! `kanoclip embed`: the backbone's outputs as JSON, to compare with any reference.

use std::io::Write;
use std::path::PathBuf;

use crate::clip::embed::embed;
use crate::clip::preprocess::load_image;
use crate::clip::{Clip, Tokenizer, VvOptions};
use crate::device::{BackendKind, device};
use crate::{Error, Result};
use clap::Args;

#[derive(Args)]
pub struct EmbedArgs {
    /// open_clip model-config JSON or Hugging Face config.json.
    #[arg(long)]
    clip_config: PathBuf,
    /// safetensors checkpoint (OpenAI/open_clip or Hugging Face names).
    #[arg(long)]
    weights: PathBuf,
    /// An image to embed (repeatable).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text to embed (repeatable).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// First CLIP-VV dual block, 1-indexed.
    #[arg(long)]
    vv_from: Option<usize>,
    /// Blocks to tap, 1-indexed, comma-separated.
    #[arg(long, value_delimiter = ',')]
    taps: Vec<usize>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.images.is_empty() && args.texts.is_empty() {
        return Err(Error::Invalid(
            "nothing to embed: give at least one --image or --text".into(),
        ));
    }
    // Inputs are all read and checked before the model is loaded.
    let images = args
        .images
        .iter()
        .map(load_image)
        .collect::<Result<Vec<_>>>()?;
    let tokenizer = Tokenizer::new()?;
    let device = pollster::block_on(device(args.backend))?;
    let clip = Clip::from_files(&args.clip_config, &args.weights, &device)?;
    let vv = VvOptions {
        vv_from: args.vv_from,
        taps: args.taps,
        ..Default::default()
    };
    let out = embed(
        &clip,
        &tokenizer,
        &images,
        &args.texts,
        &vv,
        clip.config.vision.image_size,
    )?;
    let json = serde_json::to_string(&out).map_err(Error::from)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{json}").map_err(|e| Error::io("<stdout>", e))
}
