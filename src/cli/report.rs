//! The report of `kanoclip detect`: its rows and counts, and the writer that streams them
//! to `report.jsonl` and ends with `report.json` and `report.csv` (`kanoclip report
//! merge` joins several: `super::merge`).

use std::path::{Path, PathBuf};

use super::reference::FewShotInfo;
use crate::detect::{Mutual, Timings};
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
    /// With `--mutual`: how the image was scored, `mutual`, or alone by the detector's own
    /// map (`zero-shot`, `few-shot`) when its group could not be scored mutually.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) scored_as: Option<String>,
    /// With `--mutual`: the group's number in this run (from 1) and how many images it
    /// scored together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group_size: Option<usize>,
    /// How many of the group were context: other images of the folder, scored again with
    /// a folder's last one or two images so that those are not scored alone (their own
    /// rows are the earlier ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) context: Option<usize>,
    /// Why the image was scored alone in a `--mutual` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fallback: Option<String>,
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
    /// With `--mutual`: λ and the largest group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mutual: Option<Mutual>,
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
        scored_as: None,
        group: None,
        group_size: None,
        context: None,
        fallback: None,
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
        "file,score,is_anomalous,map_max,global_probability,preprocess_ms,backbone_ms,head_ms,postprocess_ms,scored_as,group,group_size,truncated,error\n",
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
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            q(&r.file),
            num(r.score),
            r.is_anomalous.map(|b| b.to_string()).unwrap_or_default(),
            num(r.map_max),
            num(r.global_probability),
            ms(t.preprocess_ms),
            ms(t.backbone_ms),
            ms(t.head_ms),
            ms(t.postprocess_ms),
            r.scored_as.as_deref().unwrap_or(""),
            r.group.map(|g| g.to_string()).unwrap_or_default(),
            r.group_size.map(|g| g.to_string()).unwrap_or_default(),
            r.truncated.is_some(),
            q(r.error.as_deref().unwrap_or(""))
        ));
    }
    out
}

/// The files of a report in an output folder.
pub(super) const LINES: &str = "report.jsonl";
pub(super) const JSON: &str = "report.json";
pub(super) const CSV: &str = "report.csv";

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

    /// The highest group number the report's rows hold (0 without groups), so that a
    /// resumed `--mutual` run numbers its groups after the earlier run's.
    pub fn last_group(&self) -> usize {
        self.rows.iter().filter_map(|r| r.group).max().unwrap_or(0)
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
            mutual: header.mutual,
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
    pub mutual: Option<Mutual>,
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
