//! Few-shot mode on the command line: `--reference`/`--memory` for `detect`, and
//! `kanoclip reference build`, which writes a memory file once for many runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use image::DynamicImage;
use serde::Serialize;

use super::inputs::{collect, is_image_name};
use super::model::ModelArgs;
use crate::detect::memory::{FewShot, ReferenceImage, ReferenceMemory};
use crate::detect::{Detector, MEMORY_BATCH, MemoryOptions};
use crate::{Error, Result, atomic};

/// Few-shot options shared by `detect` and `reference build`.
#[derive(Args, Clone, Debug, Default)]
pub struct ReferenceArgs {
    /// Known-good images, files or folders (searched recursively), for few-shot mode:
    /// their patch features sharpen the maps. Repeat the flag or list several after it.
    #[arg(long, num_args = 1..)]
    pub reference: Vec<PathBuf>,
    /// Use K of the reference images, drawn with --seed (default: all of them).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub shots: Option<u32>,
    /// Seed of the --shots draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `detect`'s few-shot flags.
#[derive(Args, Clone, Debug)]
pub struct FewShotArgs {
    #[command(flatten)]
    pub references: ReferenceArgs,
    /// A memory file from `kanoclip reference build`.
    #[arg(long, conflicts_with = "reference")]
    pub memory: Option<PathBuf>,
    /// λ in [0, 1]: map = (1 − λ) · zero-shot + λ · few-shot (1: the few-shot map alone).
    #[arg(long, default_value_t = 0.5)]
    pub few_shot_weight: f64,
}

/// What the report says about few-shot mode.
#[derive(Serialize)]
pub struct FewShotInfo {
    /// Reference images in the memory.
    pub references: Vec<ReferenceImage>,
    /// Reference files that could not be used, with why.
    pub skipped: Vec<Skipped>,
    /// λ.
    pub weight: f64,
    /// Tokens per tap.
    pub rows: Vec<usize>,
    /// The memory file, when one was loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_file: Option<String>,
}

/// A reference file left out.
#[derive(Serialize)]
pub struct Skipped {
    /// The file.
    pub file: String,
    /// Why.
    pub error: String,
}

#[derive(Subcommand)]
pub enum ReferenceCommand {
    /// Build a reference memory from known-good images and save it.
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// Known-good images, files or folders (searched recursively); the same as
    /// `--reference`, which may name more.
    #[arg(value_name = "IMAGES")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    references: ReferenceArgs,
    /// The memory file to write.
    #[arg(long)]
    out: PathBuf,
    /// The most tokens kept per tap (greedy coreset selection above it; default 16
    /// images' worth).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_rows: Option<u32>,
}

pub fn run(command: ReferenceCommand) -> Result<()> {
    match command {
        ReferenceCommand::Build(args) => {
            let (detector, _) = args.model.detector()?;
            let options = MemoryOptions {
                max_rows: args.max_rows.map(|r| r as usize),
                seed: args.references.seed,
            };
            let mut references = args.references;
            references.reference.extend(args.images);
            let (memory, skipped) = build(&detector, &references, options)?;
            report_skipped(&skipped);
            atomic::write(&args.out, &memory.to_bytes()?)?;
            let m = memory.meta();
            eprintln!(
                "kanoclip: reference memory of {} images ({} tokens per tap, {:.1} MB) in {}",
                m.images.len(),
                m.rows.iter().max().copied().unwrap_or(0),
                m.bytes() as f64 / 1e6,
                args.out.display()
            );
            Ok(())
        }
    }
}

fn report_skipped(skipped: &[Skipped]) {
    if !skipped.is_empty() {
        eprintln!("kanoclip: {} reference file(s) skipped:", skipped.len());
        for s in skipped {
            eprintln!("  {}: {}", s.file, s.error);
        }
    }
}

/// The reference files in name order, or `shots` of them drawn with `seed`.
pub fn pick(args: &ReferenceArgs) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = collect(&args.reference)?
        .into_iter()
        .filter(|p| is_image_name(p))
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::Invalid(
            "no reference images: --reference names no image files".into(),
        ));
    }
    if let Some(k) = args.shots {
        let k = k as usize;
        if k > files.len() {
            return Err(Error::Invalid(format!(
                "--shots {k}, but there are only {} reference images",
                files.len()
            )));
        }
        fastrand::Rng::with_seed(args.seed).shuffle(&mut files);
        files.truncate(k);
        files.sort();
    }
    Ok(files)
}

/// Decode the references (each named and skipped if it fails) and build the memory,
/// [`MEMORY_BATCH`] files at a time: no more decoded images are held than one forward pass takes.
pub fn build(
    detector: &Detector,
    args: &ReferenceArgs,
    options: MemoryOptions,
) -> Result<(ReferenceMemory, Vec<Skipped>)> {
    let files = pick(args)?;
    let mut builder = detector.memory_builder();
    let mut skipped = Vec::new();
    for chunk in files.chunks(MEMORY_BATCH) {
        let mut images: Vec<DynamicImage> = Vec::with_capacity(chunk.len());
        let mut sources = Vec::with_capacity(chunk.len());
        for file in chunk {
            match ReferenceImage::read(file) {
                Ok((image, record)) => {
                    images.push(image);
                    sources.push(record);
                }
                Err(e) => skipped.push(Skipped {
                    file: file.display().to_string(),
                    error: e.to_string(),
                }),
            }
        }
        builder.add(&images, sources)?;
    }
    if builder.is_empty() {
        report_skipped(&skipped);
        return Err(Error::Invalid(format!(
            "none of the {} reference images could be read",
            files.len()
        )));
    }
    Ok((builder.finish(options)?, skipped))
}

impl FewShotArgs {
    /// Put the memory the flags ask for in force; `None` without few-shot flags.
    pub fn apply(&self, detector: &Detector) -> Result<Option<FewShotInfo>> {
        let fusion = FewShot {
            weight: self.few_shot_weight,
            ..FewShot::default()
        };
        fusion.validate()?;
        let (memory, skipped, memory_file) =
            match (&self.memory, self.references.reference.is_empty()) {
                (Some(path), _) => {
                    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                    let device = detector.device();
                    let memory = ReferenceMemory::from_bytes(&bytes, &device)
                        .map_err(|e| e.in_file(path))?;
                    (memory, Vec::new(), Some(path.display().to_string()))
                }
                (None, false) => {
                    let (m, s) = build(
                        detector,
                        &self.references,
                        MemoryOptions {
                            seed: self.references.seed,
                            ..MemoryOptions::default()
                        },
                    )?;
                    (m, s, None)
                }
                (None, true) => return Ok(None),
            };
        report_skipped(&skipped);
        let info = FewShotInfo {
            references: memory.meta().images.clone(),
            skipped,
            weight: fusion.weight,
            rows: memory.meta().rows.clone(),
            memory_file,
        };
        detector.set_memory(memory, fusion)?;
        Ok(Some(info))
    }
}
