//! `kanoclip convert --to web`: the browser bundle (see `crate::detect::bundle`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::model::ModelArgs;
use crate::clip::{Clip, ClipConfig, Tokenizer};
use crate::detect::Detector;
use crate::detect::bundle::{BundleInfo, StoreDtype, build};
use crate::device::device;
use crate::{Error, Result, atomic};

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Web,
}

#[derive(Args)]
pub struct ConvertArgs {
    #[arg(long, value_enum)]
    to: Target,
    /// The model: CLIP's own files (not a bundle), and a head or a knowledge base.
    #[command(flatten)]
    model: ModelArgs,
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
    let (config_path, weights_path) = args.model.clip_files("convert")?;
    let device = pollster::block_on(device(args.model.backend))?;
    let cfg = ClipConfig::from_file(config_path)?;
    let weights = std::fs::read(weights_path).map_err(|e| Error::io(weights_path, e))?;
    let clip = Clip::from_safetensors(&cfg, &weights, &device)?;
    let detector = Detector::new(clip, &args.model.source(), &Tokenizer::new()?)?;
    let head = match &args.model.head {
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
