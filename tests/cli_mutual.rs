//! Mutual scoring on the command line: `detect --mutual` (groups per folder, unreadable
//! files, stragglers, `--resume`) against the Python reference, `eval --mutual`, and the
//! flags' bad values.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, kanoclip, ok, read_json, s, scratch};
use serde_json::Value;

/// The fixture model with its trained head: the detector settings the reference used.
fn model() -> Vec<String> {
    [
        ("--clip-config", "tiny_quickgelu_config.json"),
        ("--weights", "tiny_quickgelu.safetensors"),
        ("--head", "tiny_quickgelu_head.safetensors"),
    ]
    .iter()
    .flat_map(|(flag, file)| [flag.to_string(), s(&fixture(file))])
    .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn rows(out: &Path) -> Vec<Value> {
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    report["results"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], file: &Path) -> &'a Value {
    let name = s(file);
    rows.iter()
        .find(|r| r["file"] == name.as_str())
        .unwrap_or_else(|| panic!("no row for {name}"))
}

/// Copy a reference case's images into `dir` as `1.png`, `2.png`… (their order there is
/// the reference's order).
fn copy_case(case: &Value, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (case["images"].as_array().unwrap().iter().enumerate())
        .map(|(i, p)| {
            let to = dir.join(format!("{}.png", i + 1));
            std::fs::copy(fixture(p.as_str().unwrap()), &to).unwrap();
            to
        })
        .collect()
}

#[test]
fn detect_scores_each_folder_as_a_group_like_the_reference() {
    let doc = read_json("mutual_cases.json");
    let dir = scratch("climu", "detect");
    // Folder a: the reference's group of eight, after an unreadable file (`0_bad.png`
    // sorts first), which is reported and does not break the group.
    let a = copy_case(&doc["cases"][0], &dir.join("in/a"));
    let bad = dir.join("in/a/0_bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    // Folder b: the reference's group of three. Folder c: two images, scored alone.
    let b = copy_case(&doc["cases"][1], &dir.join("in/b"));
    let c: Vec<PathBuf> = a[..2]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let to = dir.join(format!("in/c/{i}.png"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    let out = dir.join("out");
    let mut cmd = args(&["detect", &s(&dir.join("in"))]);
    cmd.extend(model());
    cmd.extend(args(&["--mutual", "--group", "8", "--out", &s(&out)]));
    ok(&kanoclip(&cmd));
    let rows = rows(&out);
    assert!(row(&rows, &bad)["error"].is_string());
    let mut worst: f64 = 0.0;
    for (files, case, group) in [(&a, &doc["cases"][0], 1), (&b, &doc["cases"][1], 2)] {
        for (file, want) in files.iter().zip(case["scores"].as_array().unwrap()) {
            let r = row(&rows, file);
            assert_eq!(r["scored_as"], "mutual", "{r}");
            assert_eq!(r["group"], group, "{r}");
            assert_eq!(r["group_size"], files.len(), "{r}");
            worst = worst.max((r["score"].as_f64().unwrap() - want.as_f64().unwrap()).abs());
        }
    }
    assert!(
        worst <= 1e-4,
        "scores differ from the reference by {worst:e}"
    );
    // Folder c: too few to compare, scored zero-shot, and the rows say why; the scores are
    // a plain `detect`'s.
    let plain = dir.join("plain");
    let mut cmd = args(&["detect", &s(&dir.join("in/c"))]);
    cmd.extend(model());
    cmd.extend(args(&["--out", &s(&plain)]));
    ok(&kanoclip(&cmd));
    let plain_rows = self::rows(&plain);
    for file in &c {
        let r = row(&rows, file);
        assert_eq!(r["scored_as"], "zero-shot", "{r}");
        assert!(
            r["fallback"].as_str().unwrap().contains("group of 2"),
            "{r}"
        );
        assert_eq!(r["score"], row(&plain_rows, file)["score"]);
    }
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains("scored_as,group,group_size")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stragglers_and_resumed_runs_are_scored_with_their_folder_as_context() {
    let doc = read_json("mutual_cases.json");
    let dir = scratch("climu", "resume");
    let a = copy_case(&doc["cases"][0], &dir.join("in"));
    // Six of the eight first; then the last two arrive and the run is resumed.
    let later: Vec<Vec<u8>> = a[6..].iter().map(|p| std::fs::read(p).unwrap()).collect();
    for p in &a[6..] {
        std::fs::remove_file(p).unwrap();
    }
    let out = dir.join("out");
    let mut cmd = args(&["detect", &s(&dir.join("in"))]);
    cmd.extend(model());
    cmd.extend(args(&["--mutual", "--out", &s(&out)]));
    ok(&kanoclip(&cmd));
    let first = rows(&out);
    for (p, bytes) in a[6..].iter().zip(&later) {
        std::fs::write(p, bytes).unwrap();
    }
    cmd.push("--resume".into());
    ok(&kanoclip(&cmd));
    let all = rows(&out);
    // The earlier rows are kept as they were.
    for file in &a[..6] {
        assert_eq!(row(&first, file), row(&all, file));
        assert_eq!(row(&all, file)["group"], 1);
    }
    // The newcomers: one group of eight, six of them context, numbered after group 1.
    for file in &a[6..] {
        let r = row(&all, file);
        assert_eq!(r["scored_as"], "mutual", "{r}");
        assert_eq!(r["group"], 2, "{r}");
        assert_eq!(r["group_size"], 8, "{r}");
        assert_eq!(r["context"], 6, "{r}");
    }
    // Scored against the other six, as the reference's group of eight scores them.
    let want = doc["cases"][0]["scores"].as_array().unwrap();
    for (file, want) in a[6..].iter().zip(&want[6..]) {
        let got = row(&all, file)["score"].as_f64().unwrap();
        assert!((got - want.as_f64().unwrap()).abs() <= 1e-4, "{got} {want}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_mutual_writes_its_settings_and_beats_zero_shot_on_synthetic_defects() {
    let dir = scratch("climu", "eval");
    let data = dir.join("data");
    ok(&kanoclip(&args(&[
        "synth",
        "--out",
        &s(&data),
        "--seed",
        "2",
    ])));
    let metrics = |extra: &[&str], out: &str| -> Value {
        let mut cmd = args(&["eval", "--data", &s(&data), "--format", "mvtec"]);
        cmd.extend(model());
        cmd.extend(args(&["--out", &s(&dir.join(out))]));
        cmd.extend(args(extra));
        ok(&kanoclip(&cmd));
        serde_json::from_slice(&std::fs::read(dir.join(out).join("metrics.json")).unwrap()).unwrap()
    };
    let zero = metrics(&[], "zero");
    let mutual = metrics(&["--mutual", "--group", "16"], "mutual");
    assert_eq!(mutual["mutual"]["group"], 16);
    assert_eq!(mutual["mutual"]["weight"], 1.0);
    assert_eq!(mutual["scored_alone"], 0);
    assert!(zero["mutual"].is_null());
    // Random weights: mechanics only. benches/mutual.rs measured the smallest pixel AUROC
    // gain on this tiny model at +38 points over five seeds; assert half of it.
    let p = |m: &Value| m["mean"]["pixel_auroc"].as_f64().unwrap();
    assert!(
        p(&mutual) - p(&zero) >= 0.19,
        "{} vs {}",
        p(&mutual),
        p(&zero)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_mutual_flags_exit_non_zero_with_one_line() {
    let dir = scratch("climu", "flags");
    let input = fixture("images/mutual_0.png");
    for extra in [
        vec!["--mutual", "--group", "2"],
        vec!["--mutual", "--group", "257"],
        vec!["--mutual", "--group", "x"],
        vec!["--group", "8"],
        vec!["--mutual-weight", "0.5"],
        vec!["--mutual", "--mutual-weight", "1.5"],
        vec!["--mutual", "--mutual-weight", "NaN"],
        vec!["--mutual", "--batch", "4"],
    ] {
        let out = dir.join("out");
        let mut cmd = args(&["detect", &s(&input)]);
        cmd.extend(model());
        cmd.extend(args(&["--out", &s(&out)]));
        cmd.extend(args(&extra));
        let run = kanoclip(&cmd);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{extra:?}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
        // Refused before anything is written.
        assert!(!out.join("report.jsonl").exists(), "{extra:?}");
    }
    let mut cmd = args(&["eval", "--data", &s(&dir), "--format", "mvtec", "--out"]);
    cmd.push(s(&dir.join("e")));
    cmd.extend(model());
    cmd.extend(args(&["--mutual", "--shots", "2"]));
    assert!(!kanoclip(&cmd).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
