//! `kanoclip report merge`: the reports of `kanoclip detect --shard i/n` runs joined into
//! one, which must cover every shard exactly once.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::inputs::Shard;
use super::report::{CSV, JSON, LINES, Row, anomalous, csv, images};
use crate::{Error, Result, atomic};

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
/// shards must agree on the mode, the threshold, the few-shot references and mutual scoring, and no shard
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
                for key in ["mode", "threshold", "few_shot", "mutual"] {
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
