//! Every `kanoclip` command the READMEs show (README.md and pkg/README.md, in their code
//! blocks) runs: on the tiny model, with the placeholders (`C`, `W`, `DIR`, `parts/`…) put
//! to files made here, optional `[…]` groups left out and the first of `a|b` taken. The
//! commands run in document order (a later one may read what an earlier one wrote: the
//! head `train` writes, the memory `reference build` writes), each in a folder of its own
//! so that default output folders never meet. A placeholder the test does not know fails
//! it: a new command in the docs needs its files here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;

/// A README command, as written, and where.
struct Documented {
    file: &'static str,
    line: usize,
    text: String,
}

/// The `kanoclip …` commands in the fenced code blocks of `file`, continuation lines
/// joined and trailing `# comments` removed.
fn commands(file: &'static str) -> Vec<Documented> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut in_block = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("```") {
            in_block = !in_block;
        } else if in_block && line.starts_with("kanoclip ") {
            let start = i;
            let mut cmd = String::new();
            let mut part = line;
            while let Some(head) = part.trim_end().strip_suffix('\\') {
                cmd.push_str(head);
                cmd.push(' ');
                i += 1;
                part = lines[i].trim_start();
            }
            cmd.push_str(part);
            out.push(Documented {
                file,
                line: start + 1,
                text: strip_comment(&cmd),
            });
        }
        i += 1;
    }
    out
}

fn strip_comment(cmd: &str) -> String {
    match cmd.find(" #") {
        Some(at) => cmd[..at].trim().to_string(),
        None => cmd.trim().to_string(),
    }
}

/// The words of `cmd` with `[optional]` groups (nested too) left out, double quotes
/// honoured, and the first of `a|b|c` alternatives taken.
fn minimal_words(cmd: &str) -> Vec<String> {
    let mut depth = 0usize;
    let mut kept = String::new();
    for c in cmd.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in kept.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('|') {
            Some((first, _)) if !w.starts_with('-') => first.to_string(),
            _ => w,
        })
        .collect()
}

/// The files the commands read, made once.
struct Setup {
    dir: PathBuf,
    config: String,
    weights: String,
    images: String,
    good: String,
    data: String,
    bundle: String,
    shards: String,
    knowledge: String,
    head: String,
    memory: String,
}

fn kanoclip(cwd: &Path, args: &[String], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args(args)
        .current_dir(cwd)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap()
}

fn must(cwd: &Path, args: &[&str], cache: &Path) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = kanoclip(cwd, &args, cache);
    assert!(
        out.status.success(),
        "setup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup() -> Setup {
    let dir = std::env::temp_dir().join(format!("kanoclip-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let p = |name: &str| dir.join(name).display().to_string();
    for sub in ["images", "good", "cache"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for i in 0..2 {
        let src = fixture(&format!("images/tiny_quickgelu_{i}.png"));
        std::fs::copy(&src, dir.join(format!("images/part-{i}.png"))).unwrap();
        std::fs::copy(&src, dir.join(format!("good/good-{i}.png"))).unwrap();
    }
    let s = Setup {
        config: fixture("tiny_quickgelu_config.json").display().to_string(),
        weights: fixture("tiny_quickgelu.safetensors").display().to_string(),
        knowledge: fixture("knowledge_small.json").display().to_string(),
        images: p("images"),
        good: p("good"),
        data: p("data"),
        bundle: p("bundle"),
        shards: p("shards"),
        head: p("head.safetensors"),
        memory: p("good.memory"),
        dir,
    };
    let cache = s.dir.join("cache");
    let model = ["--clip-config", &s.config, "--weights", &s.weights];
    must(
        &s.dir,
        &[
            "synth",
            "--out",
            &s.data,
            "--size",
            "32",
            "--train-good",
            "4",
            "--test-good",
            "2",
            "--per-defect",
            "1",
        ],
        &cache,
    );
    let mut convert = vec!["convert", "--to", "web", "--out", &s.bundle];
    convert.extend(model);
    must(&s.dir, &convert, &cache);
    let mut shard = vec!["detect", &s.images, "--shard", "0/1", "--out", &s.shards];
    shard.extend(model);
    must(&s.dir, &shard, &cache);
    s
}

/// `word` with its placeholder put to a file of `s`; `prev` is the word before it.
fn substitute(prev: &str, word: &str, s: &Setup) -> Result<String, String> {
    let placeholder = word.chars().any(|c| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '…');
    Ok(match (prev, word) {
        ("--clip-config", _) => s.config.clone(),
        ("--weights", "bundle/manifest.json") => format!("{}/manifest.json", s.bundle),
        ("--weights", _) => s.weights.clone(),
        ("--data", _) => s.data.clone(),
        ("--knowledge", "industrial" | "medical") => word.into(),
        ("--knowledge", _) => s.knowledge.clone(),
        ("--out", "HEAD") => s.head.clone(),
        ("--out" | "--memory", "good.memory") => s.memory.clone(),
        ("--out", "DIR") => "out".into(),
        ("--out", "FILE") => "out.json".into(),
        ("--reference", _) | (_, "good/") => s.good.clone(),
        (_, "PATH…" | "parts/" | "photos/") => s.images.clone(),
        ("merge", "OUT") => s.shards.clone(),
        (_, "…") => return Err(format!("`…` after {prev}")),
        _ if placeholder => return Err(format!("placeholder {word} after {prev}")),
        _ => word.into(),
    })
}

#[test]
fn every_documented_command_runs() {
    let s = setup();
    let cache = s.dir.join("cache");
    let mut documented = commands("README.md");
    documented.extend(commands("pkg/README.md"));
    assert!(
        documented.len() >= 12,
        "{} commands found",
        documented.len()
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for (n, doc) in documented.iter().enumerate() {
        let words = minimal_words(&doc.text);
        // `kanoclip knowledge` asks an LLM endpoint (URL, NAME): tests/knowledge.rs runs it
        // against a loopback one.
        if words.get(1).map(String::as_str) == Some("knowledge") {
            continue;
        }
        let mut args = Vec::new();
        let mut prev = String::new();
        for w in &words[1..] {
            match substitute(&prev, w, &s) {
                Ok(a) => args.push(a),
                Err(e) => failures.push(format!("{}:{}: {e}: {}", doc.file, doc.line, doc.text)),
            }
            prev = w.clone();
        }
        let cwd = s.dir.join(format!("cmd-{n}"));
        std::fs::create_dir_all(&cwd).unwrap();
        let out = kanoclip(&cwd, &args, &cache);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("panicked") {
            failures.push(format!(
                "{}:{}: `{}` ran as {args:?}: {stderr}",
                doc.file, doc.line, doc.text
            ));
        }
        ran += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the commands wrote where the docs say: the head, the memory, a report.
    assert!(Path::new(&s.head).is_file() && Path::new(&s.memory).is_file());
    println!("{ran} documented commands ran");
    let _ = std::fs::remove_dir_all(&s.dir);
}
