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
    let cfg = fixture("tiny_quickgelu_config.json").display().to_string();
    let weights = fixture("tiny_quickgelu.safetensors").display().to_string();
    let png = fixture("images/tiny_quickgelu_0.png").display().to_string();
    let dir = std::env::temp_dir().join(format!("kanoclip-cli-{}", std::process::id()));
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
