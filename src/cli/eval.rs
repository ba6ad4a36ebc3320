//! `kanoclip eval`: per-category metrics on a data set's test split.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::model::ModelArgs;
use super::mutual::MutualArgs;
use crate::data::dataset::{Dataset, Format};
use crate::detect::Mutual;
use crate::detect::memory::FewShot;
use crate::eval::evaluate::{CategoryMetrics, EvalReport, evaluate_mutual, evaluate_with};
use crate::eval::few_shot::{FewShotProtocol, FewShotReport, evaluate_few_shot};
use crate::{Error, Result, atomic};

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    out: PathBuf,
    /// Test images per forward pass (only this many are decoded at once); default: the
    /// fastest on the backend (1 on the CPU, 8 on GPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64), conflicts_with = "mutual")]
    batch: Option<u16>,
    #[command(flatten)]
    mutual: MutualArgs,
    /// Few-shot mode, WinCLIP's protocol: K normal images per category, drawn from its
    /// training split (`train/good`), are the reference memory. Not with --mutual.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with = "mutual")]
    shots: Option<u32>,
    /// Few-shot runs, with seeds 0, 1, …: the report gives each metric's mean and spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    seeds: u32,
    /// λ in [0, 1]: map = (1 − λ) · zero-shot + λ · few-shot.
    #[arg(long, default_value_t = 0.5)]
    few_shot_weight: f64,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("     –".into(), |x| format!("{:6.1}", 100.0 * x))
}

fn row(c: &CategoryMetrics) -> String {
    format!(
        "{:<16} {:>5} {} {} {} {} {} {}",
        c.category,
        c.images,
        pct(c.image_auroc),
        pct(c.image_ap),
        pct(c.image_f1_max),
        pct(c.pixel_auroc),
        pct(c.aupro),
        pct(c.pixel_ap)
    )
}

fn csv_num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

fn write_outputs(
    out: &std::path::Path,
    report: &EvalReport,
    few_shot: Option<&FewShotReport>,
    mutual: Option<&Mutual>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let summary = few_shot.map(|f| {
        serde_json::json!({"shots": f.shots, "seeds": f.seeds, "weight": f.weight, "std": f.std,
            "references": f.references,
            "note": "metrics are means over the seeds; every run is in few_shot.json"})
    });
    let json = serde_json::to_vec_pretty(&serde_json::json!({
        "categories": report.categories, "mean": report.mean, "images_per_second": report.images_per_second,
        "few_shot": summary, "failed": report.failed,
        "mutual": mutual, "scored_alone": report.scored_alone,
        "note": "null: undefined (a category without anomalies or masks); aupro is AUPRO@0.3, normalised",
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    atomic::write(&out.join("metrics.json"), &json)?;
    let mut csv = String::from(
        "category,images,anomalous,image_auroc,image_ap,image_f1_max,pixel_auroc,aupro,pixel_ap\n",
    );
    for c in report
        .categories
        .iter()
        .chain(std::iter::once(&report.mean))
    {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            c.category,
            c.images,
            c.anomalous,
            csv_num(c.image_auroc),
            csv_num(c.image_ap),
            csv_num(c.image_f1_max),
            csv_num(c.pixel_auroc),
            csv_num(c.aupro),
            csv_num(c.pixel_ap)
        ));
    }
    atomic::write(&out.join("metrics.csv"), csv.as_bytes())?;
    let mut scores = String::from("path,category,label,score\n");
    for s in &report.scores {
        scores.push_str(&format!(
            "\"{}\",{},{},{:.6}\n",
            s.path.replace('"', "\"\""),
            s.category,
            s.label,
            s.score
        ));
    }
    atomic::write(&out.join("scores.csv"), scores.as_bytes())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mutual = args.mutual.options()?;
    let data = Dataset::load(&args.data, args.format)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let (detector, _) = args.model.detector()?;
    let tests = data
        .samples
        .iter()
        .filter(|s| s.split == crate::data::dataset::Split::Test)
        .count();
    let runs = if args.shots.is_some() { args.seeds } else { 1 };
    let batch = args
        .batch
        .map_or(args.model.backend.default_batch(), usize::from);
    let bar = ProgressBar::new((tests * runs as usize) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {elapsed} elapsed, ETA {eta}")
            .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let (report, few_shot) = match args.shots {
        Some(k) => {
            let protocol = FewShotProtocol {
                shots: k as usize,
                seeds: (0..u64::from(args.seeds)).collect(),
                fusion: FewShot {
                    weight: args.few_shot_weight,
                    ..FewShot::default()
                },
            };
            let f = evaluate_few_shot(&detector, &data, &protocol, batch, |_| bar.inc(1))?;
            let n = f.mean.len() - 1;
            let summary = EvalReport {
                categories: f.mean[..n].to_vec(),
                mean: f.mean[n].clone(),
                scores: f.runs[0].scores.clone(),
                failed: f.runs[0].failed.clone(),
                scored_alone: 0,
                images_per_second: f.runs.iter().map(|r| r.images_per_second).sum::<f64>()
                    / f.runs.len() as f64,
            };
            (summary, Some(f))
        }
        None => match &mutual {
            Some(m) => (evaluate_mutual(&detector, &data, m, |_| bar.inc(1))?, None),
            None => (
                evaluate_with(&detector, &data, batch, |_| Ok(()), |_| bar.inc(1))?,
                None,
            ),
        },
    };
    bar.finish_and_clear();
    if let Some(m) = &mutual {
        println!(
            "mutual: groups of at most {} test images per category, λ {}",
            m.group, m.weight
        );
        if report.scored_alone > 0 {
            eprintln!(
                "kanoclip: warning: {} test image(s) were scored alone (zero-shot): their \
                 group had fewer than 3 readable images",
                report.scored_alone
            );
        }
    }
    if let Some(f) = &few_shot {
        println!(
            "few-shot: {} normal images per category, λ {}, mean over seeds {:?}",
            f.shots, f.weight, f.seeds
        );
    }
    println!(
        "{:<16} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "category", "n", "I-AUC", "I-AP", "I-F1", "P-AUC", "AUPRO", "P-AP"
    );
    for c in &report.categories {
        println!("{}", row(c));
    }
    println!("{}", row(&report.mean));
    if let Some(f) = &few_shot {
        println!("{}", row(&f.std));
        let json = serde_json::to_vec_pretty(f).map_err(Error::from)?;
        atomic::write(&args.out.join("few_shot.json"), &json)?;
    }
    println!("({:.2} images/s)", report.images_per_second);
    if !report.failed.is_empty() {
        eprintln!(
            "kanoclip: warning: {} test image(s) could not be scored and are left out of the \
             metrics (listed under `failed` in metrics.json); the first: {}: {}",
            report.failed.len(),
            report.failed[0].path,
            report.failed[0].error
        );
    }
    write_outputs(&args.out, &report, few_shot.as_ref(), mutual.as_ref())
}
