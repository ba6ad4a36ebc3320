//! `kanoclip convert --to web`: the browser bundle (see `crate::detect::bundle`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::clip::is_vision_tensor;
use crate::clip::{Clip, ClipConfig, Tokenizer};
use crate::detect::bundle::{FORMAT, Manifest, Mode, chunk, convert_dtype};
use crate::detect::{Detector, DetectorConfig};
use crate::head::BackboneId;
use crate::head::knowledge::Knowledge;
use crate::{Error, Result, atomic};

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Web,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreDtype {
    F16,
    F32,
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
    let backbone = BackboneId::of(&clip);
    let tokenizer = Tokenizer::new()?;
    let (detector, mode) = match &args.head {
        Some(h) => (Detector::load(clip, h, &tokenizer)?, Mode::Trained),
        None => {
            let kb = Knowledge::parse(&args.knowledge).load()?;
            let c = DetectorConfig::for_clip(&cfg);
            (
                Detector::training_free(clip, &kb, &tokenizer, c)?,
                Mode::TrainingFree,
            )
        }
    };
    let d = cfg.embed_dim;
    let text = crate::tensor_io::to_vec(detector.text_features().clone())?;
    let f16 = matches!(args.dtype, StoreDtype::F16);
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let mut files = Vec::new();
    let vision = convert_dtype(&weights, f16, is_vision_tensor)?;
    let mut parts = vec![chunk("vision", &vision)];
    if let Some(h) = &args.head {
        let bytes = std::fs::read(h).map_err(|e| Error::io(h, e))?;
        parts.push(chunk("head", &convert_dtype(&bytes, f16, |_| true)?));
    }
    for (file, chunks) in parts {
        for (path, bytes) in chunks {
            atomic::write(&args.out.join(&path), &bytes)?;
        }
        files.push(file);
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        name: args.name.clone(),
        notice: args.notice.clone(),
        mode,
        dtype: if f16 { "f16" } else { "f32" }.into(),
        clip: cfg.clone(),
        backbone,
        threshold: args.threshold.unwrap_or(detector.threshold()),
        detector: detector.config(),
        text_features: text.chunks(d).map(<[f32]>::to_vec).collect(),
        files,
    };
    // Written last: a manifest only ever names chunks that are complete.
    let json = serde_json::to_vec_pretty(&manifest).map_err(Error::from)?;
    atomic::write(&args.out.join("manifest.json"), &json)?;
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    eprintln!(
        "kanoclip: {} ({} files, {:.1} MB, {})",
        args.out.join("manifest.json").display(),
        manifest.files.iter().map(|f| f.chunks.len()).sum::<usize>(),
        total as f64 / 1e6,
        manifest.dtype
    );
    Ok(())
}
