//! The report of `kanoclip detect`: its rows and counts, the writer that streams them to
//! `report.jsonl` and ends with `report.json` and `report.csv`, and `kanoclip report
//! merge`, which joins the reports of `--shard i/n` runs.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::inputs::Shard;
use super::reference::FewShotInfo;
use crate::detect::Timings;
use crate::{Error, Result, atomic};

/// One input's line of the report.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Row {
    pub(super) file: String,
    /// SHA-256 of the input file's bytes (what `--resume` recognises a done input by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sha256: Option<String>,
    pub(super) score: Option<f32>,
    pub(super) is_anomalous: Option<bool>,
    pub(super) map_max: Option<f32>,
    pub(super) global_probability: Option<f32>,
    pub(super) heatmap: Option<String>,
    pub(super) overlay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) raw_map: Option<String>,
    pub(super) width: Option<u32>,
    pub(super) height: Option<u32>,
    pub(super) timings: Option<Timings>,
    /// Set when the file was cut short and scored anyway (`--allow-truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) truncated: Option<String>,
    pub(super) error: Option<String>,
}

#[derive(serde::Serialize)]
pub(super) struct Report<'a> {
    pub(super) mode: &'a str,
    /// `i/n` with `--shard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) shard: Option<String>,
    pub(super) backend: String,
    pub(super) threshold: f64,
    pub(super) images: usize,
    pub(super) anomalous: usize,
    pub(super) errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) few_shot: Option<FewShotInfo>,
    pub(super) results: Vec<Row>,
}

/// The rows that were scored.
pub(super) fn images(rows: &[Row]) -> usize {
    rows.iter().filter(|r| r.error.is_none()).count()
}

/// The rows found anomalous.
pub(super) fn anomalous(rows: &[Row]) -> usize {
    rows.iter().filter(|r| r.is_anomalous == Some(true)).count()
}

pub(super) fn empty_row(file: &Path) -> Row {
    Row {
        file: file.display().to_string(),
        sha256: None,
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

/// `row` with `e` as its error.
pub(super) fn failed(mut row: Row, e: &Error) -> Row {
    row.error = Some(e.to_string().replace('\n', "; "));
    row
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

/// The files of a report in an output folder.
pub(super) const LINES: &str = "report.jsonl";
const JSON: &str = "report.json";
const CSV: &str = "report.csv";

/// A run's report as it is written: each row appended to `report.jsonl` (and flushed) the
/// moment it is known, so a crash or a kill keeps every finished result; `report.json` and
/// `report.csv` from all the rows at the end.
///
/// A folder's earlier results are never truncated or overwritten. A folder that already
/// holds a report is refused, unless the run resumes it: then the rows already there are
/// read back, inputs already scored (same path, same SHA-256 of the bytes) are skipped,
/// the rest are appended, and the final report is written from all of them (a later row
/// for the same file, e.g. one that failed before, replaces the earlier).
pub(super) struct ReportWriter {
    dir: PathBuf,
    lines: std::fs::File,
    /// Every row, earlier runs' first, in the order written.
    rows: Vec<Row>,
}

impl ReportWriter {
    /// Start (or with `resume`, continue) the report in `dir`, which must be writable.
    pub fn open(dir: &Path, resume: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LINES);
        // An empty `report.jsonl` holds nothing to lose (a run that stopped before its
        // first result, e.g. on a model that would not load).
        let has_rows = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let earlier = has_rows || dir.join(JSON).exists();
        if earlier && !resume {
            return Err(Error::Invalid(format!(
                "{} already holds the report of an earlier run, and kanoclip never overwrites \
                 results: pass --resume to continue that run (inputs already scored are \
                 skipped), or choose another --out",
                dir.display()
            )));
        }
        let rows = if has_rows {
            read_lines(&path)?
        } else {
            Vec::new()
        };
        // `create_new` when starting: two runs started at once into one folder cannot
        // both believe it empty.
        let mut options = std::fs::OpenOptions::new();
        options.append(true);
        if resume || path.exists() {
            options.create(true);
        } else {
            options.create_new(true);
        }
        let mut lines = options.open(&path).map_err(|e| Error::io(&path, e))?;
        // A line cut short by a crash is ended, so that the next row starts a line of its own.
        let len = lines.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len > 0
            && !std::fs::read(&path)
                .map_err(|e| Error::io(&path, e))?
                .ends_with(b"\n")
        {
            use std::io::Write;
            lines.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        }
        Ok(ReportWriter {
            dir: dir.to_path_buf(),
            lines,
            rows,
        })
    }

    /// Whether an earlier run already scored `file` with these contents.
    pub fn done(&self, file: &Path, sha256: &str) -> bool {
        let name = file.display().to_string();
        self.rows
            .iter()
            .rev()
            .find(|r| r.file == name)
            .is_some_and(|r| {
                r.error.is_none() && r.score.is_some() && r.sha256.as_deref() == Some(sha256)
            })
    }

    /// Append one row to `report.jsonl`, flushed before this returns.
    pub fn push(&mut self, row: Row) -> Result<()> {
        use std::io::Write;
        let path = self.dir.join(LINES);
        let line = serde_json::to_string(&row)?;
        writeln!(self.lines, "{line}")
            .and_then(|()| self.lines.flush())
            .map_err(|e| Error::io(&path, e))?;
        self.rows.push(row);
        Ok(())
    }

    /// Write `report.json` and `report.csv` from every row (the latest for each file, in
    /// file order) under `header`'s fields, and return the report.
    pub fn finish<'a>(self, header: Header<'a>) -> Result<Report<'a>> {
        let mut latest: std::collections::BTreeMap<String, Row> = Default::default();
        for row in self.rows {
            latest.insert(row.file.clone(), row);
        }
        let rows: Vec<Row> = latest.into_values().collect();
        let report = Report {
            mode: header.mode,
            shard: header.shard,
            backend: header.backend,
            threshold: header.threshold,
            images: images(&rows),
            anomalous: anomalous(&rows),
            errors: rows.len() - images(&rows),
            few_shot: header.few_shot,
            results: rows,
        };
        let json = serde_json::to_vec_pretty(&report).map_err(Error::from)?;
        atomic::write(&self.dir.join(JSON), &json)?;
        atomic::write(&self.dir.join(CSV), csv(&report.results).as_bytes())?;
        Ok(report)
    }
}

/// What a report says besides its rows.
pub(super) struct Header<'a> {
    pub mode: &'a str,
    pub shard: Option<String>,
    pub backend: String,
    pub threshold: f64,
    pub few_shot: Option<FewShotInfo>,
}

/// The rows of a `report.jsonl`; a line that does not parse (one cut short by a crash) is
/// left out with a warning.
fn read_lines(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Row>(line) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!(
                "kanoclip: warning: {}:{}: not a report line, left out ({e})",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(rows)
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Join the report.json files of `kanoclip detect --shard i/n` runs into one.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    /// The shards' report.json files, the folders holding them, or a --out folder that
    /// holds `shard-I-of-N` folders.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Where to write the joined report.json and report.csv (a new folder, or one without
    /// a report; never one of the inputs).
    #[arg(long)]
    out: PathBuf,
    /// Write the report even if shards are missing: it is marked `"complete": false` and
    /// names the missing shards. Without it, a set that does not hold every shard `0..n-1`
    /// of one n exactly once is refused.
    #[arg(long)]
    allow_incomplete: bool,
}

pub fn run(command: ReportCommand) -> Result<()> {
    let ReportCommand::Merge(args) = command;
    let files = report_files(&args.reports)?;
    refuse_overwrite(&args.out, &files)?;
    let (mut merged, rows) = merge(&files)?;
    let missing = missing_shards(&merged)?;
    if !missing.is_empty() {
        if !args.allow_incomplete {
            return Err(Error::Invalid(format!(
                "shards {} are missing: a merged report must cover every shard (pass \
                 --allow-incomplete to write it marked incomplete)",
                missing.join(", ")
            )));
        }
        eprintln!(
            "kanoclip: warning: shards {} are missing; the report says so",
            missing.join(", ")
        );
    }
    merged["complete"] = missing.is_empty().into();
    merged["missing_shards"] = missing.into();
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    atomic::write(
        &args.out.join(JSON),
        &serde_json::to_vec_pretty(&Merged {
            report: &merged,
            results: &rows,
        })?,
    )?;
    atomic::write(&args.out.join(CSV), csv(&rows).as_bytes())?;
    eprintln!(
        "kanoclip: {} reports, {} images, {} anomalous, {} skipped; report in {}",
        files.len(),
        merged["images"],
        merged["anomalous"],
        merged["errors"],
        args.out.join(JSON).display()
    );
    Ok(())
}

/// The report.json files named by `paths`: a file, a folder's `report.json`, or every
/// `shard-I-of-N/report.json` of a folder that has no report of its own.
fn report_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
        } else if p.join(JSON).exists() {
            files.push(p.join(JSON));
        } else {
            let mut shards: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|d| {
                    d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("shard-"))
                        && d.join(JSON).is_file()
                })
                .map(|d| d.join(JSON))
                .collect();
            if shards.is_empty() {
                return Err(Error::io(
                    p.join(JSON),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no report here"),
                ));
            }
            shards.sort();
            files.extend(shards);
        }
    }
    Ok(files)
}

/// `out` may be neither one of the reports read nor a folder that already holds a report.
fn refuse_overwrite(out: &Path, files: &[PathBuf]) -> Result<()> {
    let target = out.join(JSON);
    let same = |f: &PathBuf| match (f.canonicalize(), target.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if files.iter().any(same) {
        return Err(Error::Invalid(format!(
            "--out {} is one of the reports being merged",
            out.display()
        )));
    }
    if target.exists() || out.join(LINES).exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a report, and kanoclip never overwrites results: choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// The shards `0..n-1` of the merged reports' one n that none of them is: every report
/// must be a shard (`i/n`), all of one n.
fn missing_shards(merged: &Value) -> Result<Vec<String>> {
    let mut count = None;
    let mut present = std::collections::BTreeSet::new();
    for label in merged["merged_from"].as_array().into_iter().flatten() {
        let shard: Shard = label
            .as_str()
            .ok_or_else(|| {
                Error::Invalid(
                    "a report that is not a shard's (no `shard`) cannot be merged".into(),
                )
            })?
            .parse()
            .map_err(Error::Invalid)?;
        if *count.get_or_insert(shard.count) != shard.count {
            return Err(Error::Incompatible(format!(
                "shards of {} and of {} runs cannot be merged",
                count.unwrap_or(0),
                shard.count
            )));
        }
        present.insert(shard.index);
    }
    let n = count.unwrap_or(0);
    Ok((0..n)
        .filter(|i| !present.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect())
}

/// The shards' reports as one: their results in file order, the counts recomputed. The
/// shards must agree on the mode, the threshold and the few-shot references, and no shard
/// label or file may appear twice (the same shard given twice, or shards of different
/// splits). Returns the merged report's fields and its rows.
pub fn merge(files: &[PathBuf]) -> Result<(Value, Vec<Row>)> {
    let mut merged: Option<Value> = None;
    let mut results: Vec<Row> = Vec::new();
    let mut shards = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let mut report: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("not a kanoclip report: {e}")).in_file(file))?;
        if !report["results"].is_array() {
            return Err(Error::Invalid("not a kanoclip report: no `results`".into()).in_file(file));
        }
        // Every row must be one `kanoclip detect` writes.
        let rows: Vec<Row> = serde_json::from_value(report["results"].take())
            .map_err(|e| Error::Invalid(format!("a result row: {e}")).in_file(file))?;
        results.extend(rows);
        shards.push(report["shard"].clone());
        match &merged {
            None => merged = Some(report),
            Some(first) => {
                for key in ["mode", "threshold", "few_shot"] {
                    if first[key] != report[key] {
                        return Err(Error::Incompatible(format!(
                            "{}: `{key}` is {}, the first report's is {}",
                            file.display(),
                            report[key],
                            first[key]
                        )));
                    }
                }
            }
        }
    }
    let mut merged = merged.ok_or_else(|| Error::Invalid("no reports to merge".into()))?;
    // The same shard twice, caught by its label: an empty shard has no file to repeat.
    for (i, s) in shards.iter().enumerate() {
        if !s.is_null() && shards[..i].contains(s) {
            return Err(Error::Invalid(format!(
                "shard {s} is in two reports (a shard given twice?)"
            )));
        }
    }
    results.sort_by(|a, b| a.file.cmp(&b.file));
    if let Some(w) = results.windows(2).find(|w| w[0].file == w[1].file) {
        return Err(Error::Invalid(format!(
            "{} appears in two reports (a shard given twice?)",
            w[0].file
        )));
    }
    merged["images"] = images(&results).into();
    merged["anomalous"] = anomalous(&results).into();
    merged["errors"] = (results.len() - images(&results)).into();
    merged["shard"] = Value::Null;
    merged["merged_from"] = Value::Array(shards);
    if let Some(m) = merged.as_object_mut() {
        m.remove("results");
    }
    Ok((merged, results))
}

/// A merged report as written: the shards' shared fields, then the rows (serialised from
/// the rows themselves, so that scores keep their f32 form).
#[derive(serde::Serialize)]
struct Merged<'a> {
    #[serde(flatten)]
    report: &'a Value,
    results: &'a [Row],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_shard_given_twice_is_refused_by_its_label() {
        let dir = std::env::temp_dir().join(format!("kanoclip-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = |shard: &str| {
            let path = dir.join(format!("{}.json", shard.replace('/', "-")));
            let json = serde_json::json!({"mode": "training-free", "threshold": 0.5,
                "shard": shard, "results": []});
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        let (a, b) = (report("0/3"), report("1/3"));
        let Err(err) = merge(&[a.clone(), a.clone()]) else {
            panic!("the same shard twice was merged");
        };
        let err = err.to_string();
        assert!(err.contains("shard \"0/3\" is in two reports"), "{err}");
        let (merged, _) = merge(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(missing_shards(&merged).unwrap(), ["2/3"]);
        let c = report("2/3");
        let (merged, _) = merge(&[c, b.clone(), a.clone()]).unwrap();
        assert!(missing_shards(&merged).unwrap().is_empty());
        // Shards of different splits, or a report that is no shard's: refused.
        let (merged, _) = merge(&[a.clone(), report("1/4")]).unwrap();
        assert!(missing_shards(&merged).is_err());
        let whole = dir.join("whole.json");
        std::fs::write(
            &whole,
            r#"{"mode": "training-free", "threshold": 0.5, "results": []}"#,
        )
        .unwrap();
        let (merged, _) = merge(&[a, whole]).unwrap();
        assert!(missing_shards(&merged).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
