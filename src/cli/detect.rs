//! `kanoclip detect`: inspect files and folders of images, write heatmaps, overlays and a
//! report. Exit 0 whenever it ran, anomalies or not; non-zero only if it could not run.

use std::path::{Path, PathBuf};

use clap::Args;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::model::ModelArgs;
use super::reference::{FewShotArgs, FewShotInfo};
use crate::clip::preprocess::decode_image_lenient;
use crate::detect::render::{heatmap, overlay};
use crate::detect::{Detection, Detector, Timings};
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
    /// Output folder for heatmaps, overlays and the report.
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
    #[arg(long)]
    shard: Option<super::report::Shard>,
    /// Images per forward pass (only this many are decoded at once); default: the fastest
    /// on the backend (1 on the CPU, 8 on GPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    batch: Option<u16>,
}

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif"];

/// One input's line of the report.
#[derive(Serialize, serde::Deserialize)]
pub(super) struct Row {
    pub(super) file: String,
    score: Option<f32>,
    is_anomalous: Option<bool>,
    map_max: Option<f32>,
    global_probability: Option<f32>,
    heatmap: Option<String>,
    overlay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_map: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    timings: Option<Timings>,
    /// Set when the file was cut short and scored anyway (`--allow-truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    mode: &'a str,
    /// `i/n` with `--shard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    backend: String,
    threshold: f64,
    images: usize,
    anomalous: usize,
    errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    few_shot: Option<FewShotInfo>,
    results: Vec<Row>,
}

/// The input files under `paths`, folders walked recursively in name order. A folder holding `report.jsonl` is the
/// output of an earlier `kanoclip detect` (heatmaps, overlays): it is skipped with a
/// warning, never silently read back as input.
pub(super) fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let earlier_output = |e: &walkdir::DirEntry| {
                let skip = e.file_type().is_dir() && e.path().join("report.jsonl").is_file();
                if skip {
                    eprintln!(
                        "kanoclip: warning: skipping {}: it holds the outputs of an earlier run",
                        e.path().display()
                    );
                }
                !skip
            };
            let walk = walkdir::WalkDir::new(p).sort_by_file_name().into_iter();
            for entry in walk.filter_entry(earlier_output) {
                let entry =
                    entry.map_err(|e| Error::io(p, std::io::Error::other(e.to_string())))?;
                if entry.file_type().is_file() {
                    files.push(entry.into_path());
                }
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    Ok(files)
}

pub(super) fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A unique output stem per input: the file stem, with `_2`, `_3`… on collisions.
fn stem_for(p: &Path, used: &mut std::collections::HashSet<String>) -> String {
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
    while !used.insert(name.clone()) {
        n += 1;
        name = format!("{base}_{n}");
    }
    name
}

fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(format!(".kanoclip-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::io(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(dir, e))
}

fn save_png(path: &Path, img: &image::RgbaImage) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::Image(e.to_string()))?;
    atomic::write(path, &buf.into_inner())
}

pub fn run(args: DetectArgs) -> Result<()> {
    let mut files = collect(&args.paths)?;
    if let Some(shard) = args.shard {
        let all = files.len();
        files.retain(|f| shard.contains(f));
        eprintln!("kanoclip: shard {shard}: {} of {all} inputs", files.len());
    }
    check_writable(&args.out)?;
    let (detector, mode) = args.model.detector()?;
    let few_shot = args.few_shot.apply(&detector)?;
    if let Some(info) = &few_shot {
        let refs: std::collections::HashSet<&str> =
            info.references.iter().map(|r| r.name.as_str()).collect();
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
    if let Some(t) = args.threshold {
        detector.set_threshold(t)?;
    }

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
    let mut used = std::collections::HashSet::new();
    let mut rows = Vec::with_capacity(files.len());
    // Every result is appended to report.jsonl as soon as it is known, so a crash or a kill
    // keeps what was done; report.json and report.csv are written at the end.
    let lines_path = args.out.join("report.jsonl");
    let mut lines = std::fs::File::create(&lines_path).map_err(|e| Error::io(&lines_path, e))?;
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
        for row in inspect_batch(&detector, chunk, &args, &mut used) {
            use std::io::Write;
            let line = serde_json::to_string(&row)?;
            writeln!(lines, "{line}")
                .and_then(|()| lines.flush())
                .map_err(|e| Error::io(&lines_path, e))?;
            rows.push(row);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let report = Report {
        mode,
        shard: args.shard.map(|s| s.to_string()),
        backend: args.model.backend.to_string(),
        threshold: detector.threshold(),
        images: images(&rows),
        anomalous: anomalous(&rows),
        errors: rows.len() - images(&rows),
        few_shot,
        results: rows,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(Error::from)?;
    atomic::write(&args.out.join("report.json"), &json)?;
    atomic::write(
        &args.out.join("report.csv"),
        csv(&report.results).as_bytes(),
    )?;
    eprintln!(
        "kanoclip: {} images, {} anomalous (threshold {:.4}), {} skipped; report in {}",
        report.images,
        report.anomalous,
        report.threshold,
        report.errors,
        args.out.join("report.json").display()
    );
    Ok(())
}

/// The rows that were scored.
pub(super) fn images(rows: &[Row]) -> usize {
    rows.iter().filter(|r| r.error.is_none()).count()
}

/// The rows found anomalous.
pub(super) fn anomalous(rows: &[Row]) -> usize {
    rows.iter().filter(|r| r.is_anomalous == Some(true)).count()
}

fn empty_row(file: &Path) -> Row {
    Row {
        file: file.display().to_string(),
        score: None,
        is_anomalous: None,
        map_max: None,
        global_probability: None,
        heatmap: None,
        overlay: None,
        raw_map: None,
        width: None,
        height: None,
        timings: None,
        truncated: None,
        error: None,
    }
}

fn failed(mut row: Row, e: &Error) -> Row {
    row.error = Some(e.to_string().replace('\n', "; "));
    row
}

/// Read and decode one input; without an image, the row says why it was refused.
fn open(file: &Path, args: &DetectArgs) -> (Row, Option<DynamicImage>) {
    let mut row = empty_row(file);
    let result = (|| -> Result<DynamicImage> {
        if !is_image_name(file) {
            return Err(Error::Image("not an image file name (skipped)".into()));
        }
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let (image, truncated) = decode_image_lenient(&bytes)?;
        if let Some(why) = truncated {
            if !args.allow_truncated {
                return Err(Error::TruncatedImage(why.into()));
            }
            row.truncated = Some(why.into());
        }
        Ok(image)
    })();
    match result {
        Ok(image) => (row, Some(image)),
        Err(e) => (failed(row, &e), None),
    }
}

/// The rows of a chunk of inputs, in order: the ones that decode go through the detector
/// in one batch (one by one if the batch fails, so that one image cannot cost the others).
fn inspect_batch(
    detector: &Detector,
    files: &[PathBuf],
    args: &DetectArgs,
    used: &mut std::collections::HashSet<String>,
) -> Vec<Row> {
    // Decoded images move into one batch (no copies); `decoded[i]` says whether input i has
    // one there.
    let (mut rows, mut images, mut decoded) = (Vec::new(), Vec::new(), Vec::new());
    for file in files {
        let (row, image) = open(file, args);
        decoded.push(image.is_some());
        images.extend(image);
        rows.push(row);
    }
    let mut found = match detector.detect_batch(&images) {
        Ok(found) => found.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(_) => images.iter().map(|img| detector.detect(img)).collect(),
    }
    .into_iter();
    let mut images = images.iter();
    let mut out = Vec::with_capacity(files.len());
    for ((file, row), decoded) in files.iter().zip(rows).zip(decoded) {
        if !decoded {
            out.push(row);
            continue;
        }
        out.push(match (images.next(), found.next()) {
            (Some(image), Some(Ok(d))) => write_outputs(&d, image, file, args, used, row),
            (_, Some(Err(e))) => failed(row, &e),
            _ => failed(row, &Error::Invalid("no result for this image".into())),
        });
    }
    out
}

/// Heatmap, overlay and (with --raw-maps) the raw map of one detection, and its row (with
/// the error, if an output could not be written).
fn write_outputs(
    d: &Detection,
    image: &DynamicImage,
    file: &Path,
    args: &DetectArgs,
    used: &mut std::collections::HashSet<String>,
    mut row: Row,
) -> Row {
    let out = &args.out;
    let stem = stem_for(file, used);
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

pub(super) fn csv(rows: &[Row]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let num = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut out = String::from(
        "file,score,is_anomalous,map_max,global_probability,preprocess_ms,backbone_ms,head_ms,postprocess_ms,truncated,error\n",
    );
    for r in rows {
        let t = r.timings.unwrap_or_default();
        let ms = |v: f64| {
            if r.timings.is_some() {
                format!("{v:.3}")
            } else {
                String::new()
            }
        };
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            q(&r.file),
            num(r.score),
            r.is_anomalous.map(|b| b.to_string()).unwrap_or_default(),
            num(r.map_max),
            num(r.global_probability),
            ms(t.preprocess_ms),
            ms(t.backbone_ms),
            ms(t.head_ms),
            ms(t.postprocess_ms),
            r.truncated.is_some(),
            q(r.error.as_deref().unwrap_or(""))
        ));
    }
    out
}
