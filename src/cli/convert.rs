//! `kanoclip convert --to web`: the browser bundle (see `crate::detect::bundle`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::clip::{Clip, ClipConfig, Tokenizer};
use crate::detect::bundle::{BundleInfo, StoreDtype, build};
use crate::detect::{Detector, DetectorConfig};
use crate::head::knowledge::Knowledge;
use crate::{Error, Result, atomic};

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Web,
}

#[derive(Args)]
pub struct ConvertArgs {
    #[arg(long, value_enum)]
    to: Target,
    #[arg(long)]
    clip_config: PathBuf,
    #[arg(long)]
    weights: PathBuf,
    /// A trained head; without it, the bundle runs training-free with --knowledge.
    #[arg(long)]
    head: Option<PathBuf>,
    /// `industrial` or `medical` (built in), or a knowledge file.
    #[arg(long, default_value = "industrial")]
    knowledge: String,
    /// How tensors are stored: f16 (default), f32, or int8 (the blocks' matrices as
    /// weight-only int8 with per-output-channel scales, the rest f16: about half of f16).
    #[arg(long, value_enum, default_value_t = StoreDtype::F16)]
    dtype: StoreDtype,
    /// Decision threshold (default: the head's, or 0.5).
    #[arg(long)]
    threshold: Option<f64>,
    /// A name for people, shown by the page.
    #[arg(long, default_value = "KAnoCLIP")]
    name: String,
    /// A notice the page shows with every result (e.g. that the model is untrained).
    #[arg(long)]
    notice: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let Target::Web = args.to;
    let device = burn::prelude::Device::flex();
    let cfg = ClipConfig::from_file(&args.clip_config)?;
    let weights = std::fs::read(&args.weights).map_err(|e| Error::io(&args.weights, e))?;
    let clip = Clip::from_safetensors(&cfg, &weights, &device)?;
    let tokenizer = Tokenizer::new()?;
    let detector = match &args.head {
        Some(h) => Detector::load(clip, h, &tokenizer)?,
        None => {
            let kb = Knowledge::parse(&args.knowledge).load()?;
            Detector::training_free(clip, &kb, &tokenizer, DetectorConfig::for_clip(&cfg))?
        }
    };
    let head = match &args.head {
        Some(h) => Some(std::fs::read(h).map_err(|e| Error::io(h, e))?),
        None => None,
    };
    let info = BundleInfo {
        name: args.name.clone(),
        notice: args.notice.clone(),
        threshold: args.threshold,
    };
    let (manifest, chunks) = build(
        &detector,
        &cfg,
        &weights,
        head.as_deref(),
        args.dtype,
        &info,
    )?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    for (path, bytes) in &chunks {
        atomic::write(&args.out.join(path), bytes)?;
    }
    // Written last: a manifest only ever names chunks that are complete.
    let json = serde_json::to_vec_pretty(&manifest).map_err(Error::from)?;
    atomic::write(&args.out.join("manifest.json"), &json)?;
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    eprintln!(
        "kanoclip: {} ({} files, {:.1} MB, {})",
        args.out.join("manifest.json").display(),
        chunks.len(),
        total as f64 / 1e6,
        manifest.dtype.name()
    );
    Ok(())
}
