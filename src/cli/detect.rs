//! `kanoclip detect`: inspect files and folders of images, write heatmaps, overlays and a
//! report. Exit 0 whenever it ran, anomalies or not; non-zero only if it could not run.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::clip::preprocess::load_image;
use crate::clip::{Clip, Tokenizer};
use crate::detect::render::{heatmap, overlay};
use crate::detect::{Detector, DetectorConfig, Timings};
use crate::device::{BackendKind, device};
use crate::head::knowledge::Knowledge;
use crate::{Error, Result, atomic};

#[derive(Args)]
pub struct DetectArgs {
    /// Image files and folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long)]
    clip_config: PathBuf,
    #[arg(long)]
    weights: PathBuf,
    /// A trained head; without it, training-free mode.
    #[arg(long)]
    head: Option<PathBuf>,
    /// Knowledge base for training-free mode: `industrial` or `medical` (built in), or a
    /// knowledge file.
    #[arg(long, default_value = "industrial")]
    knowledge: String,
    /// Output folder for heatmaps, overlays and the report.
    #[arg(long, default_value = "kanoclip-out")]
    out: PathBuf,
    /// Decision threshold (default: the head's, or 0.5).
    #[arg(long)]
    threshold: Option<f64>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
    /// Also write each raw anomaly map as `<name>_map.f32` (little-endian f32, row-major,
    /// the image's width × height), e.g. to compare with the browser build.
    #[arg(long)]
    raw_maps: bool,
}

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif"];

#[derive(Serialize)]
struct Row {
    file: String,
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
    error: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    mode: &'a str,
    backend: String,
    threshold: f64,
    images: usize,
    anomalous: usize,
    errors: usize,
    results: Vec<Row>,
}

/// Every file under `paths`, folders walked recursively in name order.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
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

fn is_image_name(p: &Path) -> bool {
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
    let files = collect(&args.paths)?;
    check_writable(&args.out)?;
    let tokenizer = Tokenizer::new()?;
    let dev = pollster::block_on(device(args.backend))?;
    let clip = Clip::from_files(&args.clip_config, &args.weights, &dev)?;
    let (detector, mode) = match &args.head {
        Some(head) => (Detector::load(clip, head, &tokenizer)?, "trained"),
        None => {
            let kb = Knowledge::parse(&args.knowledge).load()?;
            let cfg = DetectorConfig::for_clip(&clip.config);
            (
                Detector::training_free(clip, &kb, &tokenizer, cfg)?,
                "training-free",
            )
        }
    };
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
    for file in &files {
        bar.set_message(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        rows.push(inspect(
            &detector,
            file,
            &args.out,
            args.raw_maps,
            &mut used,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let report = Report {
        mode,
        backend: args.backend.to_string(),
        threshold: detector.threshold(),
        images: rows.iter().filter(|r| r.error.is_none()).count(),
        anomalous: rows.iter().filter(|r| r.is_anomalous == Some(true)).count(),
        errors: rows.iter().filter(|r| r.error.is_some()).count(),
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

fn inspect(
    detector: &Detector,
    file: &Path,
    out: &Path,
    raw_maps: bool,
    used: &mut std::collections::HashSet<String>,
) -> Row {
    let mut row = Row {
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
        error: None,
    };
    let result = (|| -> Result<()> {
        if !is_image_name(file) {
            return Err(Error::Image("not an image file name (skipped)".into()));
        }
        let image = load_image(file)?;
        let d = detector.detect(&image)?;
        let stem = stem_for(file, used);
        let (hp, op) = (
            out.join(format!("{stem}_heatmap.png")),
            out.join(format!("{stem}_overlay.png")),
        );
        save_png(&hp, &heatmap(&d.map)?)?;
        save_png(&op, &overlay(&image, &d.map, 0.5)?)?;
        row.score = Some(d.score);
        row.is_anomalous = Some(d.is_anomalous);
        row.map_max = Some(d.map.max());
        row.global_probability = Some(d.global_probability);
        row.heatmap = Some(hp.display().to_string());
        row.overlay = Some(op.display().to_string());
        if raw_maps {
            let mp = out.join(format!("{stem}_map.f32"));
            let bytes: Vec<u8> = d.map.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            atomic::write(&mp, &bytes)?;
            row.raw_map = Some(mp.display().to_string());
        }
        row.width = Some(d.map.width);
        row.height = Some(d.map.height);
        row.timings = Some(d.timings);
        Ok(())
    })();
    if let Err(e) = result {
        row.error = Some(e.to_string().replace('\n', "; "));
    }
    row
}

fn csv(rows: &[Row]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let num = |v: Option<f32>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut out = String::from(
        "file,score,is_anomalous,map_max,global_probability,preprocess_ms,backbone_ms,head_ms,postprocess_ms,error\n",
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
            "{},{},{},{},{},{},{},{},{},{}\n",
            q(&r.file),
            num(r.score),
            r.is_anomalous.map(|b| b.to_string()).unwrap_or_default(),
            num(r.map_max),
            num(r.global_probability),
            ms(t.preprocess_ms),
            ms(t.backbone_ms),
            ms(t.head_ms),
            ms(t.postprocess_ms),
            q(r.error.as_deref().unwrap_or(""))
        ));
    }
    out
}
