//! `kanoclip detect`: inspect files and folders of images, write heatmaps, overlays and a
//! report. Exit 0 whenever it ran, anomalies or not; non-zero only if it could not run.
//!
//! The run in three steps: collecting the inputs ([`super::inputs`]), inspecting them a
//! batch at a time, and writing the report ([`super::report::ReportWriter`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::Args;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};

use super::inputs::{Shard, collect, is_image_name};
use super::model::ModelArgs;
use super::reference::{FewShotArgs, FewShotInfo};
use super::report::{Header, ReportWriter, Row, empty_row, failed};
use crate::clip::preprocess::decode_image_lenient;
use crate::detect::Detection;
use crate::detect::Detector;
use crate::detect::render::{heatmap, overlay};
use crate::tensor_io::sha256_hex;
use crate::{Error, Result, atomic};

#[derive(Args)]
pub struct DetectArgs {
    /// Image files and folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    few_shot: FewShotArgs,
    /// Output folder for heatmaps, overlays and the report (refused if it holds an
    /// earlier run's report, unless --resume).
    #[arg(long, default_value = "kanoclip-out")]
    out: PathBuf,
    /// Decision threshold (default: the head's, or 0.5).
    #[arg(long)]
    threshold: Option<f64>,
    /// Also write each raw anomaly map as `<name>_map.f32` (little-endian f32, row-major,
    /// the image's width × height), e.g. to compare with the browser build.
    #[arg(long)]
    raw_maps: bool,
    /// Score images whose file is cut short (the missing part decodes as filler) instead
    /// of refusing them; the report flags each as truncated.
    #[arg(long)]
    allow_truncated: bool,
    /// Inspect only shard i of n (0-based, e.g. `--shard 2/8`): a deterministic share of
    /// the inputs by a hash of each path, so that the n shards of a job array cover every
    /// input once; `kanoclip report merge` joins their reports.
    /// With it, the outputs go to `OUT/shard-I-of-N/`, so that the tasks of a job array
    /// can share one --out without touching each other's results.
    #[arg(long)]
    shard: Option<Shard>,
    /// Continue the run whose report is in --out: inputs it already scored (same path, same
    /// contents) are skipped, the rest are added. Without it, a --out that holds a report
    /// is refused: results are never overwritten.
    #[arg(long)]
    resume: bool,
    /// Images per forward pass (only this many are decoded at once); default: the fastest
    /// on the backend (1 on the CPU, 8 on GPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    batch: Option<u16>,
}

/// A unique output stem per input: the file stem, with `_2`, `_3`… on collisions with
/// this run's stems or with files already in `out` (an earlier run's outputs are never
/// overwritten).
fn stem_for(p: &Path, out: &Path, used: &mut HashSet<String>) -> String {
    let base: String = p
        .file_stem()
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| "image".into());
    let mut name = base.clone();
    let mut n = 1;
    let taken = |name: &str| {
        ["heatmap.png", "overlay.png", "map.f32"]
            .iter()
            .any(|k| out.join(format!("{name}_{k}")).exists())
    };
    while taken(&name) || !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}_{n}");
    }
    name
}

fn save_png(path: &Path, img: &image::RgbaImage) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::Image(e.to_string()))?;
    atomic::write(path, &buf.into_inner())
}

pub fn run(args: DetectArgs) -> Result<()> {
    let files = inputs(&args)?;
    let out = args.out_dir();
    // Before the model loads: a folder holding results is refused at once.
    let mut report = ReportWriter::open(&out, args.resume)?;
    let (detector, mode) = args.model.detector()?;
    let few_shot = args.few_shot.apply(&detector)?;
    if let Some(info) = &few_shot {
        warn_if_references(info, &files);
    }
    if let Some(t) = args.threshold {
        detector.set_threshold(t)?;
    }
    let skipped = inspect_all(&detector, &files, &args, &out, &mut report)?;
    let report = report.finish(Header {
        mode,
        shard: args.shard.map(|s| s.to_string()),
        backend: args.model.backend.to_string(),
        threshold: detector.threshold(),
        few_shot,
    })?;
    if skipped > 0 {
        eprintln!(
            "kanoclip: {skipped} input(s) already scored by the earlier run, kept as they were"
        );
    }
    eprintln!(
        "kanoclip: {} images, {} anomalous (threshold {:.4}), {} skipped; report in {}",
        report.images,
        report.anomalous,
        report.threshold,
        report.errors,
        out.join("report.json").display()
    );
    Ok(())
}

impl DetectArgs {
    /// Where this run writes: --out, or its shard's own folder in it.
    fn out_dir(&self) -> PathBuf {
        match self.shard {
            Some(s) => self.out.join(s.folder_name()),
            None => self.out.clone(),
        }
    }
}

/// The inputs: the files under the paths given, this shard's share of them with --shard.
fn inputs(args: &DetectArgs) -> Result<Vec<PathBuf>> {
    let mut files = collect(&args.paths)?;
    if let Some(shard) = args.shard {
        let all = files.len();
        files.retain(|f| shard.contains(f));
        eprintln!("kanoclip: shard {shard}: {} of {all} inputs", files.len());
    }
    Ok(files)
}

fn warn_if_references(info: &FewShotInfo, files: &[PathBuf]) {
    let refs: HashSet<&str> = info.references.iter().map(|r| r.name.as_str()).collect();
    let both = files
        .iter()
        .filter(|f| refs.contains(f.display().to_string().as_str()))
        .count();
    if both > 0 {
        eprintln!(
            "kanoclip: warning: {both} input image(s) are also references; \
             their few-shot maps are 0 by construction"
        );
    }
}

/// Every input through the detector, `--batch` at a time, each row into the report as
/// soon as it is known. Returns how many inputs an earlier run had already scored.
fn inspect_all(
    detector: &Detector,
    files: &[PathBuf],
    args: &DetectArgs,
    out: &Path,
    report: &mut ReportWriter,
) -> Result<usize> {
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {elapsed} elapsed, ETA {eta}  {msg}",
        )
        .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    if files.len() < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut used = HashSet::new();
    let mut skipped = 0;
    let batch = args
        .batch
        .map_or(args.model.backend.default_batch(), usize::from);
    for chunk in files.chunks(batch) {
        bar.set_message(
            chunk[0]
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let rows = inspect_batch(detector, chunk, args, out, &mut used, report);
        skipped += chunk.len() - rows.len();
        bar.inc((chunk.len() - rows.len()) as u64);
        for row in rows {
            report.push(row)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(skipped)
}

/// What became of one input before the model: a row to write (with the image to score,
/// or the reason it was refused), or nothing when an earlier run already scored it.
type Opened = Option<(Row, Option<DynamicImage>)>;

/// Read and decode one input; without an image, the row says why it was refused.
fn open(file: &Path, args: &DetectArgs, report: &ReportWriter) -> Opened {
    let mut row = empty_row(file);
    let result = (|| -> Result<Option<DynamicImage>> {
        if !is_image_name(file) {
            return Err(Error::Image("not an image file name (skipped)".into()));
        }
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let sha256 = sha256_hex(&bytes);
        if report.done(file, &sha256) {
            return Ok(None);
        }
        row.sha256 = Some(sha256);
        let (image, truncated) = decode_image_lenient(&bytes)?;
        if let Some(why) = truncated {
            if !args.allow_truncated {
                return Err(Error::TruncatedImage(why.into()));
            }
            row.truncated = Some(why.into());
        }
        Ok(Some(image))
    })();
    match result {
        Ok(None) => None,
        Ok(image) => Some((row, image)),
        Err(e) => Some((failed(row, &e), None)),
    }
}

/// The rows of a chunk of inputs, in order: the ones that decode go through the detector
/// in one batch (one by one if the batch fails, so that one image cannot cost the others).
fn inspect_batch(
    detector: &Detector,
    files: &[PathBuf],
    args: &DetectArgs,
    out: &Path,
    used: &mut HashSet<String>,
    report: &ReportWriter,
) -> Vec<Row> {
    // Decoded images move into one batch (no copies); `decoded[i]` says whether input i has
    // one there.
    let (mut rows, mut images, mut decoded, mut todo) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for file in files {
        let Some((row, image)) = open(file, args, report) else {
            continue;
        };
        decoded.push(image.is_some());
        images.extend(image);
        rows.push(row);
        todo.push(file);
    }
    let mut found = match detector.detect_batch(&images) {
        Ok(found) => found.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(_) => images.iter().map(|img| detector.detect(img)).collect(),
    }
    .into_iter();
    let mut images = images.iter();
    let mut done = Vec::with_capacity(todo.len());
    for ((file, row), decoded) in todo.into_iter().zip(rows).zip(decoded) {
        if !decoded {
            done.push(row);
            continue;
        }
        done.push(match (images.next(), found.next()) {
            (Some(image), Some(Ok(d))) => write_outputs(&d, image, file, args, out, used, row),
            (_, Some(Err(e))) => failed(row, &e),
            _ => failed(row, &Error::Invalid("no result for this image".into())),
        });
    }
    done
}

/// Heatmap, overlay and (with --raw-maps) the raw map of one detection, and its row (with
/// the error, if an output could not be written).
fn write_outputs(
    d: &Detection,
    image: &DynamicImage,
    file: &Path,
    args: &DetectArgs,
    out: &Path,
    used: &mut HashSet<String>,
    mut row: Row,
) -> Row {
    let stem = stem_for(file, out, used);
    let result = (|| -> Result<()> {
        let (hp, op) = (
            out.join(format!("{stem}_heatmap.png")),
            out.join(format!("{stem}_overlay.png")),
        );
        save_png(&hp, &heatmap(&d.map)?)?;
        save_png(&op, &overlay(image, &d.map, 0.5)?)?;
        row.heatmap = Some(hp.display().to_string());
        row.overlay = Some(op.display().to_string());
        if args.raw_maps {
            let mp = out.join(format!("{stem}_map.f32"));
            let bytes: Vec<u8> = d.map.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            atomic::write(&mp, &bytes)?;
            row.raw_map = Some(mp.display().to_string());
        }
        Ok(())
    })();
    row.score = Some(d.score);
    row.is_anomalous = Some(d.is_anomalous);
    row.map_max = Some(d.map.max());
    row.global_probability = Some(d.global_probability);
    row.width = Some(d.map.width);
    row.height = Some(d.map.height);
    row.timings = Some(d.timings);
    match result {
        Ok(()) => row,
        Err(e) => failed(row, &e),
    }
}
