//! Spreading `kanoclip detect` over many machines: `--shard i/n` picks a deterministic
//! share of the inputs, and `kanoclip report merge` joins the shards' reports.
//!
//! A file's shard is the first 8 bytes of the SHA-256 of its path (as given on the command
//! line, or found below a folder given there), modulo n. It depends on nothing but the
//! path, so every machine of a job array (Slurm's `SLURM_ARRAY_TASK_ID`, a Kubernetes
//! indexed Job's `JOB_COMPLETION_INDEX`) agrees on it, even if one sees more files than
//! another, and the n shards together hold every input exactly once.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::detect::{Row, anomalous, csv, images};
use crate::{Error, Result, atomic};

/// `i/n`: shard i (0-based) of n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u64,
    /// The number of shards.
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: a shard is i/n with 0 ≤ i < n ≤ 100000, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || count > 100_000 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether `path` belongs to this shard.
    pub fn contains(&self, path: &Path) -> bool {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(path.to_string_lossy().as_bytes());
        let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        head % self.count == self.index
    }
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Join the report.json files of `kanoclip detect --shard i/n` runs into one.
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    /// The shards' report.json files (or the folders holding them).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Where to write the joined report.json and report.csv.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: ReportCommand) -> Result<()> {
    let ReportCommand::Merge(args) = command;
    let (merged, rows) = merge(&args.reports)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    atomic::write(
        &args.out.join("report.json"),
        &serde_json::to_vec_pretty(&Merged {
            report: &merged,
            results: &rows,
        })?,
    )?;
    atomic::write(&args.out.join("report.csv"), csv(&rows).as_bytes())?;
    eprintln!(
        "kanoclip: {} reports, {} images, {} anomalous, {} skipped; report in {}",
        args.reports.len(),
        merged["images"],
        merged["anomalous"],
        merged["errors"],
        args.out.join("report.json").display()
    );
    Ok(())
}

/// The shards' reports as one: their results in file order, the counts recomputed. The
/// shards must agree on the mode, the threshold and the few-shot references, and no shard
/// label or file may appear twice (the same shard given twice, or shards of different
/// splits). Returns
/// the merged report's fields and its rows.
pub fn merge(paths: &[PathBuf]) -> Result<(Value, Vec<Row>)> {
    let mut merged: Option<Value> = None;
    let mut results: Vec<Row> = Vec::new();
    let mut shards = Vec::new();
    for p in paths {
        let file = if p.is_dir() {
            p.join("report.json")
        } else {
            p.clone()
        };
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let mut report: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("not a kanoclip report: {e}")).in_file(&file))?;
        if !report["results"].is_array() {
            return Err(Error::Invalid("not a kanoclip report: no `results`".into()).in_file(&file));
        }
        // Every row must be one `kanoclip detect` writes.
        let rows: Vec<Row> = serde_json::from_value(report["results"].take())
            .map_err(|e| Error::Invalid(format!("a result row: {e}")).in_file(&file))?;
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
    fn shards_split_every_file_exactly_once_and_parse_strictly() {
        let files: Vec<PathBuf> = (0..1000)
            .map(|i| PathBuf::from(format!("d/{i}.png")))
            .collect();
        let shards: Vec<Shard> = (0..7).map(|i| format!("{i}/7").parse().unwrap()).collect();
        let mut sizes = Vec::new();
        for f in &files {
            assert_eq!(shards.iter().filter(|s| s.contains(f)).count(), 1, "{f:?}");
        }
        for s in &shards {
            sizes.push(files.iter().filter(|f| s.contains(f)).count());
        }
        // Even enough: each within ±35 % of 1000/7.
        assert!(sizes.iter().all(|&n| (93..=193).contains(&n)), "{sizes:?}");
        for bad in ["", "1", "4/4", "-1/4", "0/0", "a/b", "1/2/3", "0/100001"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("3/10".parse::<Shard>().unwrap().to_string(), "3/10");
    }

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
        assert!(merge(&[a, b]).is_ok());
        std::fs::remove_dir_all(dir).ok();
    }
}
