//! `kanoclip train`: learn the head on an auxiliary data set.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::detect::DetectorConfig;
use kanoclip::device::{BackendKind, device};
use kanoclip::head::HeadConfig;
use kanoclip::head::knowledge::KnowledgeBase;
use kanoclip::train::dataset::{Dataset, Format};
use kanoclip::train::fit::{FitOptions, fit, log_path};
use kanoclip::train::trainer::{TrainConfig, Trainer};
use kanoclip::{Error, Result};

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    #[arg(long)]
    clip_config: PathBuf,
    #[arg(long)]
    weights: PathBuf,
    #[arg(long, default_value = "weights/knowledge/industrial.json")]
    knowledge: PathBuf,
    /// The head file to write (after every epoch).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 111)]
    seed: u64,
    /// Model input size (default: the backbone's, 518 for ViT-L/14).
    #[arg(long)]
    input_size: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let data = Dataset::load(&args.data, args.format)?;
    let kb = KnowledgeBase::from_file(&args.knowledge)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tokenizer = Tokenizer::new()?;
    let dev = pollster::block_on(device(args.backend))?.autodiff();
    let clip = Clip::from_files(&args.clip_config, &args.weights, &dev)?;
    let mut det = DetectorConfig::for_clip(&clip.config);
    if let Some(s) = args.input_size {
        det.input_size = s;
    }
    let head = HeadConfig {
        levels: det.taps.len(),
        ..HeadConfig::default()
    };
    let cfg = TrainConfig {
        seed: args.seed,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(clip, &kb, &tokenizer, head, det, cfg)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "epoch {prefix} {bar:25} {pos}/{len}  {elapsed} elapsed, ETA {eta}  {msg}",
        )
        .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let epochs = args.epochs;
    let opts = FitOptions {
        epochs,
        batch: args.batch,
        out: args.out.clone(),
    };
    fit(&mut trainer, &data, &opts, |epoch, step, steps, l| {
        bar.set_length((steps * epochs) as u64);
        bar.set_position((epoch * steps + step + 1) as u64);
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        bar.set_message(format!(
            "loss {:.4} (kd {:.4}, global {:.4}, local {:.4})",
            l.total, l.kd, l.global, l.local
        ));
    })?;
    bar.finish_and_clear();
    eprintln!(
        "kanoclip: head written to {} (log {})",
        args.out.display(),
        log_path(&args.out).display()
    );
    Ok(())
}
