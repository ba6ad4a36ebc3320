//! `kanoclip train`: learn the head on an auxiliary data set.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::model::ModelArgs;
use crate::clip::{Clip, Tokenizer};
use crate::data::dataset::{Dataset, Format};
use crate::detect::DetectorConfig;
use crate::device::devices;
use crate::head::HeadConfig;
use crate::head::knowledge::Knowledge;
use crate::train::fit::{FitEnd, FitOptions, checkpoint_path, fit, log_path};
use crate::train::trainer::{TrainConfig, Trainer};
use crate::{Error, Result};

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// CLIP's own files (not a bundle) and the knowledge base (with `specific` texts);
    /// `--head` is refused: training writes one (`--out`).
    #[command(flatten)]
    model: ModelArgs,
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
    /// Train data-parallel on this many devices of the backend (GPUs 0..N).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Continue from HEAD.ckpt, written after every epoch and on Ctrl-C.
    #[arg(long)]
    resume: bool,
    /// Folder of the frozen-feature cache [default: $XDG_CACHE_HOME/kanoclip/features].
    #[arg(long, conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Compute the frozen features every time instead of caching them on disk.
    #[arg(long)]
    no_cache: bool,
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kanoclip/features")
}

/// Set by Ctrl-C: training stops after the current step with a checkpoint.
static STOP: AtomicBool = AtomicBool::new(false);

/// Ctrl-C sets [`STOP`]; a second Ctrl-C while the checkpoint is written ends the process
/// at once.
fn stop_on_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nkanoclip: stopping after this step (Ctrl-C again to quit at once)");
    })
    .map_err(|e| Error::Invalid(format!("cannot handle Ctrl-C: {e}")))
}

pub fn run(args: TrainArgs) -> Result<()> {
    let (clip_config, weights) = args.model.clip_files("train")?;
    if args.model.head.is_some() {
        return Err(Error::Invalid(
            "kanoclip train writes a head (--out); --head is for detect, eval and convert".into(),
        ));
    }
    let data = Dataset::load(&args.data, args.format)?;
    let kb = Knowledge::parse(&args.model.knowledge).load()?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tokenizer = Tokenizer::new()?;
    let mut devs = pollster::block_on(devices(args.model.backend, args.devices))?
        .into_iter()
        .map(|d| d.autodiff());
    let dev = devs
        .next()
        .ok_or_else(|| Error::Invalid("no device".into()))?;
    let others: Vec<_> = devs.collect();
    let clip = Clip::from_files(clip_config, weights, &dev)?;
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
    let mut trainer = Trainer::new(clip, &kb, &tokenizer, head, det, cfg)?.with_devices(&others)?;
    stop_on_ctrl_c()?;
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
        cache: (!args.no_cache).then(|| args.cache.clone().unwrap_or_else(default_cache)),
        resume: args.resume,
        stop: Some(&STOP),
    };
    let end = fit(&mut trainer, &data, &opts, |epoch, step, steps, l| {
        bar.set_length((steps * epochs) as u64);
        bar.set_position((epoch * steps + step + 1) as u64);
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        bar.set_message(format!(
            "loss {:.4} (kd {:.4}, global {:.4}, local {:.4})",
            l.total, l.kd, l.global, l.local
        ));
    })?;
    bar.finish_and_clear();
    if let FitEnd::Stopped { epoch, step } = end {
        eprintln!(
            "kanoclip: interrupted; checkpoint {} continues at epoch {}, step {} (run again with --resume)",
            checkpoint_path(&args.out).display(),
            epoch + 1,
            step + 1
        );
        std::process::exit(130);
    }
    eprintln!(
        "kanoclip: head written to {} (log {}, checkpoint {})",
        args.out.display(),
        log_path(&args.out).display(),
        checkpoint_path(&args.out).display()
    );
    Ok(())
}
