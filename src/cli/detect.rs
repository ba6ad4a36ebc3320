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
use super::mutual::MutualArgs;
use super::reference::{FewShotArgs, FewShotInfo};
use super::report::{Header, ReportWriter, Row, empty_row, failed};
use crate::clip::preprocess::decode_image_lenient;
use crate::detect::mutual::{MIN_GROUP, group_sizes};
use crate::detect::render::{heatmap, overlay};
use crate::detect::{Detection, Detector, Mutual, Scored};
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
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64), conflicts_with = "mutual")]
    batch: Option<u16>,
    #[command(flatten)]
    mutual: MutualArgs,
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
    let mutual = args.mutual.options()?;
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
    let skipped = match &mutual {
        Some(m) => inspect_groups(&detector, m, &files, &args, &out, &mut report)?,
        None => inspect_all(&detector, &files, &args, &out, &mut report)?,
    };
    let report = report.finish(Header {
        mode,
        mutual,
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

/// A progress bar over `n` inputs (hidden for one).
fn progress_bar(n: usize) -> Result<ProgressBar> {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {elapsed} elapsed, ETA {eta}  {msg}",
        )
        .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    if n < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    Ok(bar)
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
    let bar = progress_bar(files.len())?;
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

/// `--mutual`: the inputs folder by folder (in the order first met), each folder's images
/// in groups of at most `mutual.group`, as even as [`group_sizes`] makes them. The groups
/// are formed as the files decode: a group is scored once it holds its share of the
/// images still to come, so an unreadable file shrinks its group instead of breaking it,
/// and only one group's images are held at once. Returns how many inputs an earlier run
/// had already scored.
fn inspect_groups(
    detector: &Detector,
    mutual: &Mutual,
    files: &[PathBuf],
    args: &DetectArgs,
    out: &Path,
    report: &mut ReportWriter,
) -> Result<usize> {
    let bar = progress_bar(files.len())?;
    let (mut used, mut skipped, mut groups) = (HashSet::new(), 0, report.last_group());
    let alone_mode = if detector.memory().is_some() {
        "few-shot"
    } else {
        "zero-shot"
    };
    for folder in by_folder(files) {
        // The group being filled: its rows and files, and their decoded images.
        let (mut pending, mut images): (Vec<(Row, &Path)>, Vec<DynamicImage>) = Default::default();
        for (i, file) in folder.iter().enumerate() {
            match open(file, args, report) {
                None => skipped += 1,
                Some((row, Some(image))) => {
                    pending.push((row, file));
                    images.push(image);
                }
                Some((row, None)) => report.push(row)?,
            }
            bar.inc(1);
            let to_come = pending.len() + folder.len() - i - 1;
            let share = group_sizes(to_come, mutual.group).first().copied();
            let last = i + 1 == folder.len();
            if pending.is_empty() || !(last || share.is_some_and(|n| pending.len() >= n)) {
                continue;
            }
            groups += 1;
            bar.set_message(format!("group {groups}"));
            // Stragglers (a folder's last images, after unreadable files or a resumed run
            // left fewer than a group): scored with other images of their folder as
            // context, read again from disk, rather than alone.
            let mut context = 0;
            if images.len() < MIN_GROUP {
                let others = context_images(&folder, &pending, mutual.group - images.len());
                context = others.len();
                images.splice(0..0, others);
            }
            let found = detector.detect_group_or_alone(&images, mutual);
            let scored = pending.drain(..).zip(&images[context..]);
            for (((mut row, file), image), found) in scored.zip(found.into_iter().skip(context)) {
                row.group = Some(groups);
                row.context = (context > 0).then_some(context);
                row = match found {
                    Ok((d, scored)) => {
                        match scored {
                            Scored::Mutual { group } => {
                                row.scored_as = Some("mutual".into());
                                row.group_size = Some(group);
                            }
                            Scored::Alone { why } => {
                                row.scored_as = Some(alone_mode.into());
                                row.fallback = Some(why);
                            }
                        }
                        write_outputs(&d, image, file, args, out, &mut used, row)
                    }
                    Err(e) => failed(row, &e),
                };
                report.push(row)?;
            }
            images.clear();
        }
    }
    bar.finish_and_clear();
    Ok(skipped)
}

/// Up to `n` readable images of `folder` other than the `pending` ones, the nearest before
/// them first: the context stragglers are scored with. A file that no longer reads is
/// passed over; at most `2n` files are tried.
fn context_images(folder: &[&PathBuf], pending: &[(Row, &Path)], n: usize) -> Vec<DynamicImage> {
    let mut found = Vec::new();
    let others = folder
        .iter()
        .rev()
        .filter(|f| !pending.iter().any(|(_, p)| p == &f.as_path()) && is_image_name(f));
    for file in others.take(2 * n) {
        let image = std::fs::read(file)
            .map_err(|e| Error::io(file, e))
            .and_then(|bytes| decode_image_lenient(&bytes));
        if let Ok((image, None)) = image {
            found.push(image);
        }
        if found.len() == n {
            break;
        }
    }
    found.reverse();
    found
}

/// `files` by the folder that holds them, folders in the order first met, files in order.
fn by_folder(files: &[PathBuf]) -> Vec<Vec<&PathBuf>> {
    let mut folders: Vec<(Option<&Path>, Vec<&PathBuf>)> = Vec::new();
    for f in files {
        let parent = f.parent();
        match folders.iter_mut().find(|(p, _)| *p == parent) {
            Some((_, list)) => list.push(f),
            None => folders.push((parent, vec![f])),
        }
    }
    folders.into_iter().map(|(_, list)| list).collect()
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
