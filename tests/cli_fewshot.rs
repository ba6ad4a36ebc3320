//! Few-shot mode on the command line: `detect --reference/--memory`, `reference build`,
//! `eval --shots --seeds`, and their bad inputs.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use common::{fixture, kanoclip, ok, s, scratch};
use kanoclip::clip::Clip;
use kanoclip::clip::Tokenizer;
use kanoclip::detect::memory::{FewShot, ReferenceImage};
use kanoclip::detect::{Detector, DetectorConfig, MemoryOptions};
use kanoclip::head::knowledge::Knowledge;

fn model_args() -> Vec<String> {
    vec![
        "--clip-config".into(),
        s(&fixture("tiny_quickgelu_config.json")),
        "--weights".into(),
        s(&fixture("tiny_quickgelu.safetensors")),
    ]
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

fn scores(report: &serde_json::Value) -> Vec<f64> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect()
}

#[test]
fn detect_with_references_or_a_memory_file_scores_as_the_library() {
    let dir = scratch("clifs", "detect");
    let refs = dir.join("good");
    std::fs::create_dir_all(&refs).unwrap();
    for i in 0..3 {
        std::fs::copy(
            fixture(&format!("images/fewshot_ref_{i}.png")),
            refs.join(format!("ref{i}.png")),
        )
        .unwrap();
    }
    std::fs::write(refs.join("broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let query = s(&fixture("images/tiny_quickgelu_0.png"));

    // --reference: the broken file is named and skipped, the rest form the memory.
    let out1 = dir.join("out1");
    let mut args = vec!["detect".into(), query.clone()];
    args.extend(model_args());
    args.extend(["--out".into(), s(&out1), "--reference".into(), s(&refs)]);
    let o = kanoclip(&args);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.png"));
    let r1 = report(&out1);
    assert_eq!(r1["few_shot"]["references"].as_array().unwrap().len(), 3);
    assert_eq!(r1["few_shot"]["skipped"].as_array().unwrap().len(), 1);
    assert!(
        r1["few_shot"]["skipped"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.png")
    );

    // The library, given the same three files, scores the same.
    let device = Device::flex();
    let clip = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        &device,
    )
    .unwrap();
    let cfg = DetectorConfig::for_clip(&clip.config);
    let kb = Knowledge::Industrial.load().unwrap();
    let det = Detector::training_free(clip, &kb, &Tokenizer::new().unwrap(), cfg).unwrap();
    let images: Vec<_> = (0..3)
        .map(|i| kanoclip::load_image(refs.join(format!("ref{i}.png"))).unwrap())
        .collect();
    let names = (0..3)
        .map(|i| ReferenceImage {
            name: format!("ref{i}"),
            sha256: String::new(),
        })
        .collect();
    let memory = det
        .build_memory(&images, names, MemoryOptions::default())
        .unwrap();
    det.set_memory(memory, FewShot::default()).unwrap();
    let want = det
        .detect(&kanoclip::load_image(&query).unwrap())
        .unwrap()
        .score;
    assert!((scores(&r1)[0] - f64::from(want)).abs() < 1e-5);

    // reference build, then --memory: the same scores.
    let memory = dir.join("good.memory");
    let mut args = vec!["reference".into(), "build".into()];
    args.extend(model_args());
    args.extend(["--reference".into(), s(&refs), "--out".into(), s(&memory)]);
    ok(&kanoclip(&args));
    let out2 = dir.join("out2");
    let mut args = vec!["detect".into(), query.clone()];
    args.extend(model_args());
    args.extend(["--out".into(), s(&out2), "--memory".into(), s(&memory)]);
    ok(&kanoclip(&args));
    let r2 = report(&out2);
    assert_eq!(scores(&r2), scores(&r1));
    assert_eq!(r2["few_shot"]["references"], r1["few_shot"]["references"]);

    // --shots draws K with --seed; λ = 0 is the zero-shot detector.
    let out3 = dir.join("out3");
    let mut args = vec!["detect".into(), query.clone()];
    args.extend(model_args());
    args.extend(["--out".into(), s(&out3), "--reference".into(), s(&refs)]);
    args.extend(["--shots".into(), "1".into(), "--seed".into(), "5".into()]);
    args.extend(["--few-shot-weight".into(), "0".into()]);
    ok(&kanoclip(&args));
    let r3 = report(&out3);
    assert_eq!(r3["few_shot"]["references"].as_array().unwrap().len(), 1);
    let out4 = dir.join("out4");
    let mut args = vec!["detect".into(), query.clone()];
    args.extend(model_args());
    args.extend(["--out".into(), s(&out4)]);
    ok(&kanoclip(&args));
    assert_eq!(scores(&r3), scores(&report(&out4)));
    assert!(report(&out4).get("few_shot").is_none());

    // Bad input: no references, too many shots, λ out of range, a truncated memory file,
    // both --reference and --memory. One line, non-zero exit, no panic.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cut = dir.join("cut.memory");
    std::fs::write(&cut, &std::fs::read(&memory).unwrap()[..200]).unwrap();
    let bad: Vec<(Vec<String>, &str)> = vec![
        (vec!["--reference".into(), s(&empty)], "no reference images"),
        (
            vec!["--reference".into(), s(&refs), "--shots".into(), "9".into()],
            "only 4",
        ),
        (
            vec![
                "--reference".into(),
                s(&refs),
                "--few-shot-weight".into(),
                "1.5".into(),
            ],
            "not in [0, 1]",
        ),
        (vec!["--memory".into(), s(&cut)], "cut.memory"),
        (
            vec![
                "--memory".into(),
                s(&memory),
                "--reference".into(),
                s(&refs),
            ],
            "cannot be used with",
        ),
    ];
    for (extra, says) in bad {
        let mut args = vec!["detect".into(), query.clone()];
        args.extend(model_args());
        args.extend(["--out".into(), s(&dir.join("bad"))]);
        args.extend(extra.clone());
        let o = kanoclip(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kanoclip synth` into `data`: 32-px images, per category 3 normal training images, 2
/// normal test images and one of each defect.
fn small_synth(data: &Path) {
    ok(&kanoclip(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--size",
        "32",
        "--train-good",
        "3",
        "--test-good",
        "2",
        "--per-defect",
        "1",
    ]));
}

#[test]
fn eval_with_shots_reports_the_mean_and_spread_over_seeds() {
    let dir = scratch("clifs", "eval");
    let data = dir.join("data");
    small_synth(&data);
    let out = dir.join("metrics");
    let mut args = vec![
        "eval".into(),
        "--data".into(),
        s(&data),
        "--format".into(),
        "mvtec".into(),
        "--training-free".into(),
        "--out".into(),
        s(&out),
    ];
    args.extend(model_args());
    let mut few = args.clone();
    few.extend(["--shots".into(), "2".into(), "--seeds".into(), "2".into()]);
    let o = kanoclip(&few);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("few-shot: 2 normal images"));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["few_shot"]["shots"], 2);
    assert_eq!(metrics["few_shot"]["seeds"], serde_json::json!([0, 1]));
    let runs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("few_shot.json")).unwrap()).unwrap();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // The reported mean is the mean of the runs.
    let per_run: Vec<f64> = runs
        .iter()
        .map(|r| r["mean"]["pixel_auroc"].as_f64().unwrap())
        .collect();
    let mean = metrics["mean"]["pixel_auroc"].as_f64().unwrap();
    assert!((mean - (per_run[0] + per_run[1]) / 2.0).abs() < 1e-12);
    let std = metrics["few_shot"]["std"]["pixel_auroc"].as_f64().unwrap();
    assert!((std - (per_run[0] - per_run[1]).abs() / 2.0).abs() < 1e-12);

    // More shots than a category has normal training images: refused, named.
    let mut too_many = args.clone();
    too_many.extend(["--shots".into(), "4".into()]);
    let o = kanoclip(&too_many);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 normal training images"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The folder layout (`normal/`, `abnormal/`, `masks/`) has no training split: `--shots K`
/// draws the references from `normal/`, scores the rest, and says so in `metrics.json`.
#[test]
fn eval_with_shots_on_the_folder_layout_draws_from_normal() {
    let dir = scratch("clifs", "eval-folder");
    let data = dir.join("mvtec");
    small_synth(&data);
    // One category, re-laid as a folder: 5 normal images, the defects with their masks.
    let cat = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let folder = dir.join("folder");
    for sub in ["normal", "abnormal", "masks"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    let files = |p: PathBuf| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    for (split, prefix) in [("train", "train"), ("test", "test")] {
        for f in files(cat.join(split).join("good")) {
            let name = format!("{prefix}_{}", f.file_name().unwrap().to_str().unwrap());
            std::fs::copy(&f, folder.join("normal").join(name)).unwrap();
        }
    }
    let mut abnormal = 0;
    for kind in files(cat.join("test")) {
        let kind_name = kind.file_name().unwrap().to_str().unwrap().to_string();
        if kind_name == "good" {
            continue;
        }
        for f in files(kind.clone()) {
            let stem = f.file_stem().unwrap().to_str().unwrap();
            let name = format!("{kind_name}_{stem}");
            std::fs::copy(&f, folder.join("abnormal").join(format!("{name}.png"))).unwrap();
            let mask = cat
                .join("ground_truth")
                .join(&kind_name)
                .join(format!("{stem}_mask.png"));
            std::fs::copy(mask, folder.join("masks").join(format!("{name}_mask.png"))).unwrap();
            abnormal += 1;
        }
    }
    let out = dir.join("metrics");
    let mut args = vec![
        "eval".into(),
        "--data".into(),
        s(&folder),
        "--format".into(),
        "folder".into(),
        "--out".into(),
        s(&out),
    ];
    args.extend(model_args());
    let mut few = args.clone();
    few.extend(["--shots".into(), "2".into(), "--seeds".into(), "2".into()]);
    ok(&kanoclip(&few));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let references = metrics["few_shot"]["references"].as_str().unwrap();
    assert!(references.starts_with("test:"), "{references}");
    // Each seed scores the 3 normal images that are not its references, and every defect.
    let runs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("few_shot.json")).unwrap()).unwrap();
    for r in runs["runs"].as_array().unwrap() {
        assert_eq!(r["mean"]["images"], 3 + abnormal, "{r}");
        assert_eq!(r["mean"]["anomalous"], abnormal, "{r}");
    }
    // Five normal images: five references would leave none to score.
    let mut too_many = args.clone();
    too_many.extend(["--shots".into(), "5".into()]);
    let o = kanoclip(&too_many);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("5 normal images"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
