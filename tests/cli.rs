//! `kanoclip embed` end to end: its JSON matches the reference, and bad input gives a
//! one-line error and a non-zero exit, never a panic.

mod common;

use std::process::Command;

use common::{fixture, flatten, max_abs_diff, read_json};

fn kanoclip(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args(args)
        .output()
        .expect("runs")
}

/// `kanoclip ARGS`, which must succeed (its stderr is the failure message).
fn kanoclip_ok(args: &[&str]) -> std::process::Output {
    let run = kanoclip(args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}

/// A JSON file a run wrote.
fn json_file(path: impl AsRef<std::path::Path>) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A fresh scratch folder for one test: `kanoclip-NAME-<pid>` under the temp folder.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kanoclip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The tiny test model's config and weights, as command-line arguments.
fn tiny_model() -> (String, String) {
    (
        fixture("tiny_quickgelu_config.json").display().to_string(),
        fixture("tiny_quickgelu.safetensors").display().to_string(),
    )
}

#[test]
fn embed_prints_the_reference_outputs() {
    let parity = read_json("parity.json");
    let case = &parity["cases"][0];
    let cfg = fixture(case["config"].as_str().unwrap());
    let weights = fixture(case["weights"].as_str().unwrap());
    let mut args: Vec<String> = vec![
        "embed".into(),
        "--clip-config".into(),
        cfg.display().to_string(),
    ];
    args.extend(["--weights".into(), weights.display().to_string()]);
    for img in case["images"].as_array().unwrap() {
        args.extend([
            "--image".into(),
            fixture(img.as_str().unwrap()).display().to_string(),
        ]);
    }
    for text in case["texts"].as_array().unwrap() {
        args.extend(["--text".into(), text.as_str().unwrap().to_string()]);
    }
    let taps: Vec<String> = case["taps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    args.extend([
        "--vv-from".into(),
        case["vv_from"].to_string(),
        "--taps".into(),
        taps.join(","),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kanoclip(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = &case["expected"];
    for key in ["image_embeds", "text_embeds", "patch_taps"] {
        let e = max_abs_diff(&flatten(&got[key]), &flatten(&want[key]));
        assert!(e <= 1e-4, "{key}: {e}");
    }
    assert_eq!(got["token_ids"], want["token_ids"]);
}

#[test]
fn bad_input_exits_non_zero_with_one_line() {
    let (cfg, weights) = tiny_model();
    let png = fixture("images/tiny_quickgelu_0.png").display().to_string();
    let dir = scratch("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let text_file = dir.join("notes.png");
    std::fs::write(&text_file, "not an image").unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &std::fs::read(&weights).unwrap()[..1000]).unwrap();
    let text_file = text_file.display().to_string();
    let truncated = truncated.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "embed",
                "--clip-config",
                "/nonexistent.json",
                "--weights",
                &weights,
                "--text",
                "a",
            ],
            "nonexistent.json",
        ),
        (
            vec![
                "embed",
                "--clip-config",
                &cfg,
                "--weights",
                &truncated,
                "--text",
                "a",
            ],
            "invalid weights file",
        ),
        (
            vec![
                "embed",
                "--clip-config",
                &cfg,
                "--weights",
                &weights,
                "--image",
                &text_file,
            ],
            "invalid image",
        ),
        (
            vec![
                "embed",
                "--clip-config",
                &cfg,
                "--weights",
                &weights,
                "--image",
                &png,
                "--taps",
                "9",
            ],
            "tap 9",
        ),
        (
            vec![
                "embed",
                "--clip-config",
                &cfg,
                "--weights",
                &weights,
                "--image",
                &png,
                "--vv-from",
                "0",
            ],
            "vv_from 0",
        ),
        (
            vec!["embed", "--clip-config", &cfg, "--weights", &weights],
            "nothing to embed",
        ),
        (
            vec![
                "embed",
                "--clip-config",
                &weights,
                "--weights",
                &weights,
                "--text",
                "a",
            ],
            "invalid model config",
        ),
    ];
    for (args, want) in cases {
        let out = kanoclip(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: want `{want}` in {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn detect_inspects_a_folder_and_records_what_it_skips() {
    let dir = scratch("detect");
    let input = dir.join("in");
    let nested = input.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(fixture("images/tiny_quickgelu_0.png"), input.join("a.png")).unwrap();
    std::fs::copy(fixture("images/nonsquare_120x90.png"), nested.join("b.png")).unwrap();
    std::fs::copy(fixture("images/tiny_quickgelu_1.png"), nested.join("a.png")).unwrap();
    std::fs::write(input.join("notes.txt"), "not an image").unwrap();
    std::fs::write(input.join("broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let out = dir.join("out");
    let (cfg, weights) = tiny_model();
    let head = fixture("tiny_quickgelu_head.safetensors")
        .display()
        .to_string();
    let args = [
        "detect",
        input.to_str().unwrap(),
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--head",
        &head,
        "--out",
        out.to_str().unwrap(),
        "--threshold",
        "0.0",
    ];
    kanoclip_ok(&args);
    let report: serde_json::Value = json_file(out.join("report.json"));
    assert_eq!(report["images"], 3);
    assert_eq!(report["errors"], 2);
    assert_eq!(report["anomalous"], 3, "threshold 0 flags everything");
    let results = report["results"].as_array().unwrap();
    let errors: Vec<&str> = results
        .iter()
        .filter_map(|r| r["file"].as_str().filter(|_| !r["error"].is_null()))
        .collect();
    assert!(
        errors.iter().any(|f| f.ends_with("notes.txt"))
            && errors.iter().any(|f| f.ends_with("broken.png"))
    );
    // Outputs at the original size; the two a.png files do not overwrite each other.
    for (stem, size) in [("a", (32, 32)), ("a_2", (32, 32)), ("b", (120, 90))] {
        for kind in ["heatmap", "overlay"] {
            let img = image::open(out.join(format!("{stem}_{kind}.png"))).unwrap();
            assert_eq!((img.width(), img.height()), size, "{stem}_{kind}");
        }
    }
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5);
    assert!(csv.starts_with("file,score,is_anomalous,map_max"));

    // Training-free mode with the shipped knowledge base.
    let out2 = dir.join("out2");
    let kb =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/knowledge/industrial.json");
    kanoclip_ok(&[
        "detect",
        input.join("a.png").to_str().unwrap(),
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--knowledge",
        kb.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    let report: serde_json::Value = json_file(out2.join("report.json"));
    assert_eq!(report["mode"], "training-free");

    // Could not run: unwritable output, a head for another backbone, a bad knowledge file.
    std::fs::write(dir.join("file"), "x").unwrap();
    let blocked = dir.join("file").join("out");
    let small_cfg = fixture("small_gelu_config.json").display().to_string();
    let small_w = fixture("small_gelu.safetensors").display().to_string();
    let bad_kb = dir.join("kb.json");
    std::fs::write(&bad_kb, r#"{"format": "kanoclip-knowledge/1"}"#).unwrap();
    let a_png = input.join("a.png");
    let a = a_png.to_str().unwrap();
    // A fresh folder: out2 holds a report now, which would be refused before the model.
    let out3 = dir.join("out3");
    let (out2, blocked, bad_kb) = (
        out3.to_str().unwrap(),
        blocked.to_str().unwrap(),
        bad_kb.to_str().unwrap(),
    );
    let with = |c: &str, w: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["detect", a, "--clip-config", c, "--weights", w]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&cfg, &weights, &["--out", blocked]), "file/out"),
        (
            with(&small_cfg, &small_w, &["--head", &head, "--out", out2]),
            "another backbone",
        ),
        (
            with(&cfg, &weights, &["--knowledge", bad_kb, "--out", out2]),
            "invalid knowledge base",
        ),
        (
            vec![
                "detect".into(),
                "/nonexistent/dir".into(),
                "--clip-config".into(),
                cfg.clone(),
                "--weights".into(),
                weights.clone(),
            ],
            "nonexistent",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = kanoclip(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(want) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `kanoclip synth` into `data`: 4 categories × (2 good + 5 defect) test images.
fn synth(data: &std::path::Path, size: &str) {
    kanoclip_ok(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--size",
        size,
        "--train-good",
        "1",
        "--test-good",
        "2",
        "--per-defect",
        "1",
    ]);
}

#[test]
fn synth_then_eval_writes_metrics_and_scores() {
    let dir = scratch("eval");
    let data = dir.join("data");
    let out = dir.join("out");
    synth(&data, "40");
    let (cfg, weights) = tiny_model();
    let head = fixture("tiny_quickgelu_head.safetensors")
        .display()
        .to_string();
    let base = [
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
    ];
    let mut args = base.to_vec();
    args.extend(["--head", &head, "--out", out.to_str().unwrap()]);
    let run = kanoclip_ok(&args);
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        table.contains("I-AUC") && table.contains("mean") && table.contains("wood"),
        "{table}"
    );
    let scores = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 4 * (2 + 5));
    assert!(scores.starts_with("path,category,label,score"));
    let metrics: serde_json::Value = json_file(out.join("metrics.json"));
    assert_eq!(metrics["categories"].as_array().unwrap().len(), 4);
    // AUPRO is defined for every category (each has defects with masks), and the mean is
    // the mean of the categories'.
    let per: Vec<f64> = metrics["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["aupro"].as_f64().expect("aupro defined"))
        .collect();
    assert!(per.iter().all(|a| (0.0..=1.0).contains(a)));
    let mean = metrics["mean"]["aupro"].as_f64().unwrap();
    assert!((mean - per.iter().sum::<f64>() / 4.0).abs() < 1e-12);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        1 + 4 + 1
    );
    // --batch 3 (7 test images per category: batches of 3, 3 and 1) scores every image as
    // the default does (one image per pass on the CPU), up to float rounding.
    let out3 = dir.join("out-batch3");
    let mut args = base.to_vec();
    args.extend([
        "--head",
        &head,
        "--batch",
        "3",
        "--out",
        out3.to_str().unwrap(),
    ]);
    kanoclip_ok(&args);
    let by_path = |text: &str| -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .skip(1)
            .map(|l| {
                let (path, score) = l.rsplit_once(',').unwrap();
                (path.to_string(), score.parse().unwrap())
            })
            .collect()
    };
    let (one, three) = (
        by_path(&scores),
        by_path(&std::fs::read_to_string(out3.join("scores.csv")).unwrap()),
    );
    assert_eq!(one.len(), 28);
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        three.keys().collect::<Vec<_>>()
    );
    for (path, s) in &one {
        assert!(
            (s - three[path]).abs() < 1e-5,
            "{path}: {s} vs {}",
            three[path]
        );
    }
    // One rule for every command: without --head, training-free mode; `--training-free`
    // is still accepted (earlier versions required it here) and changes nothing.
    let free_scores = |extra: &[&str], name: &str| {
        let out = dir.join(name);
        let mut args = base.to_vec();
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        kanoclip_ok(&args);
        std::fs::read_to_string(out.join("scores.csv")).unwrap()
    };
    let inferred = free_scores(&[], "out-free");
    assert_eq!(inferred.lines().count(), 29);
    assert_eq!(inferred, free_scores(&["--training-free"], "out-free-flag"));
    assert_ne!(inferred, scores, "training-free scored like the head");
    // --training-free with --head contradicts itself: refused.
    let mut args = base.to_vec();
    args.extend([
        "--head",
        &head,
        "--training-free",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!kanoclip(&args).status.success());
    let run = kanoclip(&[
        "eval",
        "--data",
        "/nonexistent",
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--training-free",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("nonexistent"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn train_writes_a_head_that_eval_and_detect_can_use() {
    let dir = scratch("train");
    let data = dir.join("data");
    synth(&data, "32");
    let (cfg, weights) = tiny_model();
    let kb = fixture("knowledge_small.json").display().to_string();
    let head = dir.join("head.safetensors");
    kanoclip_ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--knowledge",
        &kb,
        "--out",
        head.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch",
        "4",
        "--input-size",
        "32",
        "--cache",
        dir.join("cache").to_str().unwrap(),
    ]);
    let log = std::fs::read_to_string(dir.join("head.safetensors.log.jsonl")).unwrap();
    // 4 categories × 7 test images = 28 images, 7 batches of 4, 2 epochs.
    assert_eq!(log.lines().count(), 14);
    let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(line["epoch"], 1);
    assert!(line["total"].as_f64().unwrap().is_finite());
    let out = dir.join("eval");
    kanoclip_ok(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--head",
        head.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // A half-formed data set is refused with the file named, and no head is written.
    std::fs::remove_file(data.join("wood/ground_truth/hole/000_mask.png")).unwrap();
    let head2 = dir.join("head2.safetensors");
    let run = kanoclip(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--knowledge",
        &kb,
        "--out",
        head2.to_str().unwrap(),
        "--input-size",
        "32",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("wood/test/hole/000.png"),
        "{stderr}"
    );
    assert!(!head2.exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_finishes() {
    let dir = scratch("sigint");
    let data = dir.join("data");
    synth(&data, "32");
    let head = dir.join("head.safetensors");
    let (cfg, weights, kb) = (
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        fixture("knowledge_small.json"),
    );
    let args = |resume: bool| {
        let mut a: Vec<String> = [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "mvtec",
            "--clip-config",
            cfg.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
            "--knowledge",
            kb.to_str().unwrap(),
            "--out",
            head.to_str().unwrap(),
            "--epochs",
            "20",
            "--batch",
            "2",
            "--input-size",
            "32",
            "--no-cache",
        ]
        .map(String::from)
        .to_vec();
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let child = Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args(args(false))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once training is under way.
    let log = dir.join("head.safetensors.log.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(dir.join("head.safetensors.ckpt").exists());
    let done = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(done < 280, "interrupted before the end ({done} steps)");
    // Resume: the remaining steps, each logged once; 28 images in batches of 2, 20 epochs.
    let run = Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args(args(true))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 280);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            (l["epoch"].as_u64(), l["step"].as_u64()),
            (Some(i as u64 / 14), Some(i as u64 % 14))
        );
    }
    assert!(head.exists());
}

/// A folder with a JPEG and a PNG cut short and images 1 px high or wide: the cut files
/// are refused by name (or, with --allow-truncated, scored and flagged), the thin ones are
/// scored at their own size, and report.jsonl holds every result as it came.
#[test]
fn detect_refuses_truncated_files_and_scores_thin_ones() {
    use image::{DynamicImage, ImageFormat, RgbImage};
    let dir = scratch("detect-cut");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let encode = |img: &RgbImage, format: ImageFormat| {
        let mut buf = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut buf, format)
            .unwrap();
        buf.into_inner()
    };
    let picture = RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    let jpeg = encode(&picture, ImageFormat::Jpeg);
    let png = encode(&picture, ImageFormat::Png);
    // Without the end-of-image marker: every scan is there, so the decoder succeeds.
    std::fs::write(input.join("cut.jpg"), &jpeg[..jpeg.len() - 2]).unwrap();
    // The IEND chunk without its CRC: the png decoder accepts it.
    std::fs::write(input.join("cut_end.png"), &png[..png.len() - 4]).unwrap();
    std::fs::write(input.join("whole.jpg"), &jpeg).unwrap();
    let line = RgbImage::from_fn(5000, 1, |x, _| image::Rgb([(x % 256) as u8, 0, 0]));
    std::fs::write(input.join("line.png"), encode(&line, ImageFormat::Png)).unwrap();
    let column = RgbImage::from_fn(1, 3000, |_, y| image::Rgb([0, (y % 256) as u8, 0]));
    std::fs::write(input.join("column.png"), encode(&column, ImageFormat::Png)).unwrap();
    let (cfg, weights) = tiny_model();
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "detect",
            input.to_str().unwrap(),
            "--clip-config",
            &cfg,
            "--weights",
            &weights,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        kanoclip_ok(&args);
        let report: serde_json::Value = json_file(out.join("report.json"));
        let lines = std::fs::read_to_string(out.join("report.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 5, "one line per input, as it came");
        report
    };
    let by_name = |report: &serde_json::Value, name: &str| -> serde_json::Value {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(name))
            .unwrap()
            .clone()
    };
    let strict = run(&dir.join("strict"), &[]);
    assert_eq!(
        (strict["images"].as_u64(), strict["errors"].as_u64()),
        (Some(3), Some(2))
    );
    for (name, why) in [("cut.jpg", "end-of-image marker"), ("cut_end.png", "IEND")] {
        let e = by_name(&strict, name)["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(e.contains("truncated") && e.contains(why), "{name}: {e}");
    }
    for (name, w, h) in [
        ("line.png", 5000, 1),
        ("column.png", 1, 3000),
        ("whole.jpg", 64, 48),
    ] {
        let r = by_name(&strict, name);
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(w), Some(h)),
            "{name}"
        );
        assert!(r["score"].as_f64().is_some_and(f64::is_finite), "{name}");
    }
    // In batches of 3 (a batch holding a refused file too), the same results.
    let batched = run(&dir.join("batched"), &["--batch", "3"]);
    for name in ["line.png", "column.png", "whole.jpg"] {
        let (a, b) = (by_name(&strict, name), by_name(&batched, name));
        let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{name}: {a} vs {b} in a batch");
    }
    assert_eq!(batched["errors"].as_u64(), Some(2));
    let lenient = run(&dir.join("lenient"), &["--allow-truncated"]);
    assert_eq!(lenient["errors"].as_u64(), Some(0));
    assert!(by_name(&lenient, "cut.jpg")["truncated"].is_string());
    assert!(by_name(&lenient, "whole.jpg").get("truncated").is_none());
    std::fs::remove_dir_all(dir).ok();
}

/// `eval` scores what it can: an unreadable image and an unreadable mask are each listed
/// under `failed` (with the error's kind) and left out of the metrics; the run succeeds.
#[test]
fn eval_records_a_bad_image_and_goes_on() {
    let dir = scratch("eval-bad");
    let (data, out) = (dir.join("data"), dir.join("out"));
    synth(&data, "40");
    let files: Vec<std::path::PathBuf> = walk(&data);
    let image = files
        .iter()
        .find(|p| p.to_string_lossy().contains("/test/good/"))
        .unwrap();
    std::fs::write(image, b"not an image").unwrap();
    let mask = files
        .iter()
        .find(|p| p.to_string_lossy().contains("/ground_truth/"))
        .unwrap();
    let bytes = std::fs::read(mask).unwrap();
    std::fs::write(mask, &bytes[..bytes.len() / 3]).unwrap();
    let (cfg, weights) = tiny_model();
    let run = kanoclip(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "mvtec",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--training-free",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 test image(s) could not be scored"),
        "{stderr}"
    );
    let metrics: serde_json::Value = json_file(out.join("metrics.json"));
    let failed = metrics["failed"].as_array().unwrap();
    let paths: Vec<&str> = failed.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(paths.contains(&image.to_str().unwrap()), "{paths:?}");
    assert!(failed.iter().all(|f| f["kind"] == "image"), "{failed:?}");
    let scores = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 4 * (2 + 5) - 2);
    std::fs::remove_dir_all(dir).ok();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `--weights bundle/manifest.json` loads a verified bundle (the same scores as the
/// safetensors it came from); a tampered chunk is refused; and a folder holding an earlier
/// run's outputs is skipped, not read back as input.
#[test]
fn detect_reads_verified_bundles_and_skips_earlier_outputs() {
    let dir = scratch("bundle-cli");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..2 {
        let name = format!("images/tiny_quickgelu_{i}.png");
        std::fs::copy(fixture(&name), input.join(format!("{i}.png"))).unwrap();
    }
    let (cfg, weights) = tiny_model();
    let bundle = dir.join("bundle");
    kanoclip_ok(&[
        "convert",
        "--to",
        "web",
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--dtype",
        "f32",
        "--name",
        "t",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    let manifest = bundle.join("manifest.json");
    let detect = |out: &std::path::Path, model: &[&str]| {
        let mut args = vec![
            "detect",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(model);
        kanoclip(&args)
    };
    let scores = |out: &std::path::Path| -> Vec<f64> {
        let r: serde_json::Value = json_file(out.join("report.json"));
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect()
    };
    // The outputs go inside the input folder, twice: the second run must not read the
    // first one's heatmaps and overlays.
    let from_st = input.join("out-safetensors");
    let run1 = detect(&from_st, &["--clip-config", &cfg, "--weights", &weights]);
    assert!(
        run1.status.success(),
        "{}",
        String::from_utf8_lossy(&run1.stderr)
    );
    let from_bundle = input.join("out-bundle");
    let run2 = detect(&from_bundle, &["--weights", manifest.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run2.stderr);
    assert!(run2.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping") && stderr.contains("out-safetensors"),
        "{stderr}"
    );
    let (a, b) = (scores(&from_st), scores(&from_bundle));
    assert_eq!(
        (a.len(), b.len()),
        (2, 2),
        "only the two inputs: {a:?} {b:?}"
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    // One byte of a chunk changed: refused by its SHA-256, before any detection.
    let chunk = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"))
        .unwrap();
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&chunk, &bytes).unwrap();
    let run3 = detect(
        &dir.join("out3"),
        &["--weights", manifest.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&run3.stderr);
    assert!(
        !run3.status.success() && stderr.contains("integrity check failed"),
        "{stderr}"
    );
    assert!(stderr.contains("SHA-256"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

/// `--shard i/n` runs cover every input once, and `report merge` joins them into the
/// report a single run writes (same files, same scores, same counts).
#[test]
fn sharded_detect_runs_merge_into_the_whole_report() {
    let dir = scratch("shard");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..6 {
        let src = fixture(&format!(
            "images/{}",
            [
                "tiny_quickgelu_0.png",
                "tiny_quickgelu_1.png",
                "small_gelu_0.png"
            ][i % 3]
        ));
        std::fs::copy(src, input.join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(input.join("broken.png"), b"not a png").unwrap();
    let (cfg, weights) = tiny_model();
    let detect = |out: &str, shard: Option<&str>| {
        let out = dir.join(out);
        let mut args = vec![
            "detect",
            input.to_str().unwrap(),
            "--clip-config",
            &cfg,
            "--weights",
            &weights,
        ];
        let o = out.to_str().unwrap().to_string();
        args.extend(["--out", &o]);
        if let Some(s) = shard {
            args.extend(["--shard", s]);
        }
        kanoclip_ok(&args);
        // A shard's outputs go to its own folder inside --out.
        let folder = shard.map_or(out.clone(), |s| {
            let (i, n) = s.split_once('/').unwrap();
            out.join(format!("shard-{i}-of-{n}"))
        });
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(folder.join("report.json")).unwrap(),
        )
        .unwrap()
    };
    let whole = detect("whole", None);
    let shards: Vec<serde_json::Value> = (0..3)
        .map(|i| detect(&format!("s{i}"), Some(&format!("{i}/3"))))
        .collect();
    let sizes: Vec<usize> = shards
        .iter()
        .map(|s| s["results"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 7, "{sizes:?}");
    let reports: Vec<String> = (0..3)
        .map(|i| dir.join(format!("s{i}")).display().to_string())
        .collect();
    let merged_dir = dir.join("merged").display().to_string();
    let mut args = vec!["report", "merge"];
    args.extend(reports.iter().map(String::as_str));
    args.extend(["--out", &merged_dir]);
    kanoclip_ok(&args);
    let merged: serde_json::Value = json_file(dir.join("merged/report.json"));
    for key in ["images", "anomalous", "errors", "mode", "threshold"] {
        assert_eq!(merged[key], whole[key], "{key}");
    }
    let by_file = |r: &serde_json::Value| -> Vec<(String, Option<f64>)> {
        let mut v: Vec<_> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["file"].as_str().unwrap().to_string(), x["score"].as_f64()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(by_file(&merged), by_file(&whole));
    assert_eq!(
        std::fs::read_to_string(dir.join("merged/report.csv"))
            .unwrap()
            .lines()
            .count(),
        1 + 7
    );
    // The same shard twice, or a bad shard: refused (into a fresh --out: merged_dir holds
    // a report now, which merge would refuse for that reason first).
    let twice_dir = dir.join("twice").display().to_string();
    let twice = kanoclip(&[
        "report",
        "merge",
        &reports[0],
        &reports[0],
        "--out",
        &twice_dir,
    ]);
    assert!(
        !twice.status.success() && String::from_utf8_lossy(&twice.stderr).contains("two reports")
    );
    let bad = kanoclip(&[
        "detect",
        input.to_str().unwrap(),
        "--clip-config",
        &cfg,
        "--weights",
        &weights,
        "--shard",
        "3/3",
    ]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("0 ≤ i < n"));
    std::fs::remove_dir_all(dir).ok();
}

/// A run into a folder that holds results never truncates or overwrites them: it is
/// refused, or with --resume continued (inputs already scored, by path and contents, are
/// skipped); the shards of a job array share one --out without touching each other; and
/// `report merge` proves completeness and never writes over its inputs.
#[test]
fn output_folders_keep_what_they_hold() {
    let dir = scratch("keep");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (d, names) in [(&a, ["x.png", "y.png"]), (&b, ["x.png", "z.png"])] {
        std::fs::create_dir_all(d).unwrap();
        for (i, n) in names.iter().enumerate() {
            let src = ["tiny_quickgelu_0.png", "tiny_quickgelu_1.png"][i];
            std::fs::copy(fixture(&format!("images/{src}")), d.join(n)).unwrap();
        }
    }
    let (cfg, weights) = tiny_model();
    let out = dir.join("out");
    let o = out.to_str().unwrap().to_string();
    let detect = |input: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "detect",
            input.to_str().unwrap(),
            "--clip-config",
            &cfg,
            "--weights",
            &weights,
            "--out",
            &o,
        ];
        args.extend(extra);
        kanoclip(&args)
    };
    let lines = || std::fs::read_to_string(out.join("report.jsonl")).unwrap();
    assert!(detect(&a, &[]).status.success());
    let first = lines();
    let heatmap = std::fs::read(out.join("x_heatmap.png")).unwrap();
    assert_eq!(first.lines().count(), 2);
    // A second folder into the same --out: refused, nothing touched.
    let again = detect(&b, &[]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("--resume") && stderr.contains("never overwrites"),
        "{stderr}"
    );
    assert_eq!(lines(), first);
    // --resume over the same folder: nothing is redone.
    assert!(detect(&a, &["--resume"]).status.success());
    assert_eq!(lines(), first);
    // --resume with the other folder: its two images are added; b/x.png gets outputs of
    // its own name, a/x.png's are kept byte for byte.
    let run = detect(&b, &["--resume"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(lines().starts_with(&first) && lines().lines().count() == 4);
    assert_eq!(std::fs::read(out.join("x_heatmap.png")).unwrap(), heatmap);
    assert!(out.join("x_2_heatmap.png").is_file());
    let report: serde_json::Value = json_file(out.join("report.json"));
    assert_eq!(report["results"].as_array().unwrap().len(), 4);
    assert_eq!(report["images"], 4);
    // An input whose contents changed since is scored again, and its latest row counts.
    std::fs::copy(fixture("images/small_gelu_0.png"), a.join("y.png")).unwrap();
    assert!(detect(&a, &["--resume"]).status.success());
    assert_eq!(lines().lines().count(), 5);
    let report: serde_json::Value = json_file(out.join("report.json"));
    assert_eq!(report["results"].as_array().unwrap().len(), 4);
    // A line cut short by a crash is left out on resume, and the next row starts its own.
    let mut cut = lines();
    cut.push_str("{\"file\": \"half");
    std::fs::write(out.join("report.jsonl"), &cut).unwrap();
    std::fs::copy(fixture("images/tiny_quickgelu_0.png"), a.join("w.png")).unwrap();
    assert!(detect(&a, &["--resume"]).status.success());
    let report: serde_json::Value = json_file(out.join("report.json"));
    assert_eq!(report["results"].as_array().unwrap().len(), 5);

    // Shards of a job array into one --out: each in its own folder, merged from the
    // folder; two of three shards are refused unless marked incomplete.
    let jobs = dir.join("jobs");
    let j = jobs.to_str().unwrap().to_string();
    for i in 0..3 {
        let s = format!("{i}/3");
        let run = kanoclip(&[
            "detect",
            a.to_str().unwrap(),
            "--clip-config",
            &cfg,
            "--weights",
            &weights,
            "--out",
            &j,
            "--shard",
            &s,
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(jobs.join(format!("shard-{i}-of-3/report.json")).is_file());
    }
    let merged = dir.join("merged").to_str().unwrap().to_string();
    kanoclip_ok(&["report", "merge", &j, "--out", &merged]);
    let m: serde_json::Value = json_file(dir.join("merged/report.json"));
    assert_eq!(
        (m["complete"].clone(), m["images"].clone()),
        (true.into(), 3.into())
    );
    // Merging again into the same --out, or into one of the inputs: refused.
    let twice = kanoclip(&["report", "merge", &j, "--out", &merged]);
    assert!(!twice.status.success());
    let s0 = jobs.join("shard-0-of-3").to_str().unwrap().to_string();
    let s1 = jobs.join("shard-1-of-3").to_str().unwrap().to_string();
    let into_input = kanoclip(&["report", "merge", &s0, &s1, "--out", &s0]);
    assert!(!into_input.status.success());
    assert!(String::from_utf8_lossy(&into_input.stderr).contains("one of the reports"));
    let part = dir.join("part").to_str().unwrap().to_string();
    let two = kanoclip(&["report", "merge", &s0, &s1, "--out", &part]);
    assert!(!two.status.success());
    assert!(
        String::from_utf8_lossy(&two.stderr).contains("2/3"),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    assert!(!dir.join("part/report.json").exists());
    kanoclip_ok(&[
        "report",
        "merge",
        &s0,
        &s1,
        "--out",
        &part,
        "--allow-incomplete",
    ]);
    let m: serde_json::Value = json_file(dir.join("part/report.json"));
    assert_eq!(m["complete"], false);
    assert_eq!(m["missing_shards"], serde_json::json!(["2/3"]));
    std::fs::remove_dir_all(dir).ok();
}
