//! `kanoclip knowledge` against a small OpenAI-compatible server started here on
//! 127.0.0.1: general texts, per-image descriptions, retries on 5xx/429/invalid JSON,
//! time-outs, fatal 4xx, and resuming where a failed run stopped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// What the server received: path, headers (lower-case names) and the JSON body.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

/// A reply: status, extra headers, body, and a delay before answering.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn chat(content: &str) -> Reply {
    ok(
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
            .to_string(),
    )
}

fn ok(body: String) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body,
        delay: Duration::ZERO,
    }
}

fn status(code: u16, body: &str) -> Reply {
    Reply {
        status: code,
        headers: vec![],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

type Handler = Box<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

/// Serve `handler(n, request)` for the n-th request (0-based) until the test ends.
fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: Arc<Handler> = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (log, handler) = (log.clone(), handler.clone());
            // One thread a connection, so a slow answer does not hold up the next request.
            std::thread::spawn(move || answer(stream, &log, &handler));
        }
    });
    (url, seen)
}

fn answer(mut stream: std::net::TcpStream, log: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Seen {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let n = {
        let mut l = log.lock().unwrap();
        l.push(req.clone());
        l.len() - 1
    };
    let reply = handler(n, &req);
    std::thread::sleep(reply.delay);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes());
}

fn knowledge(url: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kanoclip"))
        .args([
            "knowledge",
            "--endpoint",
            url,
            "--model",
            "test-llm",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--backoff-ms", "10", "--rate", "1000"])
        .args(extra)
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kanoclip-kn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text_of(req: &Seen) -> String {
    let c = &req.body["messages"][0]["content"];
    c.as_str()
        .map(String::from)
        .unwrap_or_else(|| c[0]["text"].as_str().unwrap_or("").to_string())
}

#[test]
fn general_knowledge_survives_errors_and_records_its_provenance() {
    let dir = scratch("general");
    // 500, then 429 (Retry-After: 0), then a body that is not JSON, then an answer that is
    // not a list: all retried. Then the two lists.
    let (url, seen) = serve(Box::new(|n, req| match n {
        0 => status(500, "overloaded"),
        1 => Reply {
            headers: vec![("Retry-After", "0".into())],
            ..status(429, "slow down")
        },
        2 => ok("<html>proxy error</html>".into()),
        3 => chat("Sure! Flawless things look flawless."),
        _ if text_of(req).contains("defect-free") => {
            chat("```json\n[\"a clean, smooth surface\", \"  an intact   object \"]\n```")
        }
        _ => chat("[\"a deep scratch\", \"a crack across the part\", \"a missing screw\"]"),
    }));
    let out = dir.join("kb.json");
    let run = knowledge(&url, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let kb = kanoclip::head::knowledge::KnowledgeBase::from_file(&out).unwrap();
    assert_eq!(
        kb.general.normal,
        ["a clean, smooth surface", "an intact object"]
    );
    assert_eq!(
        kb.general.abnormal,
        [
            "a deep scratch",
            "a crack across the part",
            "a missing screw"
        ]
    );
    let p = &kb.general_provenance;
    assert_eq!(p.model, "test-llm");
    assert_eq!(p.prompts.len(), 2);
    assert!(p.prompts[1].contains("defects"));
    assert!(p.date.starts_with("20"), "{}", p.date);
    assert!(p.notes.as_deref().unwrap().contains("/v1/chat/completions"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    for r in seen.iter() {
        assert_eq!(r.path, "/v1/chat/completions");
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer sk-test".into()))
        );
    }
    assert_eq!(seen[5].body["model"], "test-llm");
    // The same question is asked again on every retry.
    assert_eq!(text_of(&seen[0]), text_of(&seen[4]));
}

#[test]
fn image_knowledge_resumes_after_a_failure() {
    let dir = scratch("vision");
    let data = dir.join("data");
    let cfg = kanoclip::data::synth::SynthConfig {
        size: 32,
        textures: vec![kanoclip::data::synth::Texture::Grid],
        train_good: 1,
        test_good: 2,
        test_per_defect: 1,
        seed: 3,
    };
    kanoclip::data::synth::generate(&data, &cfg).unwrap();
    let out = dir.join("kb.json");
    // The general texts, five descriptions, then a fatal 400.
    let describe = |req: &Seen| {
        let url = req.body["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap_or("");
        chat(&format!("an image of {} bytes", url.len()))
    };
    let (url, seen) = serve(Box::new(move |n, req| match n {
        0 | 1 => chat("[\"fine\"]"),
        2..=6 => describe(req),
        _ => status(400, "{\"error\": \"model does not support images\"}"),
    }));
    let run = knowledge(&url, &out, &["--vision", "--data", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HTTP 400") && stderr.contains("grid/test/"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let kb = kanoclip::head::knowledge::KnowledgeBase::from_file(&out).unwrap();
    assert_eq!(kb.specific.len(), 5, "kept what it had");
    assert_eq!(seen.lock().unwrap().len(), 8, "a 400 is not retried");

    // Run again against a working server: only the two missing images are asked for.
    let (url2, seen2) = serve(Box::new(move |_, req| describe(req)));
    let run = knowledge(&url2, &out, &["--vision", "--data", data.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let kb = kanoclip::head::knowledge::KnowledgeBase::from_file(&out).unwrap();
    // 1 texture × (2 good + 5 defects) test images.
    assert_eq!(kb.specific.len(), 7);
    assert_eq!(seen2.lock().unwrap().len(), 2);
    assert_eq!(kb.specific_provenance.as_ref().unwrap().model, "test-llm");
    // Each request showed its image (base64 of the file's bytes) with the right question.
    let seen: Vec<Seen> = seen
        .lock()
        .unwrap()
        .iter()
        .chain(seen2.lock().unwrap().iter())
        .cloned()
        .collect();
    for req in seen
        .iter()
        .filter(|r| r.body["messages"][0]["content"].is_array())
    {
        let url = req.body["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap();
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let key = kb
            .specific
            .keys()
            .find(|k| std::fs::read(data.join(k)).unwrap() == bytes)
            .expect("the image is a training image");
        let flawless = key.contains("/good/");
        assert_eq!(text_of(req).contains("flawless"), flawless, "{key}");
        assert_eq!(kb.specific[key], format!("an image of {} bytes", url.len()));
    }
}

#[test]
fn timeouts_invalid_answers_and_bad_endpoints_fail_cleanly() {
    let dir = scratch("errors");
    let out = dir.join("kb.json");
    // Slower than the time-out: one attempt and one retry, then a clear error.
    let (url, seen) = serve(Box::new(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..chat("[\"x\"]")
    }));
    let run = knowledge(&url, &out, &["--timeout", "0.5", "--retries", "1"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr.contains("timed out") && stderr.contains("2 attempts"),
        "{stderr}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(!out.exists(), "nothing written");
    // Never valid JSON.
    let (url, _) = serve(Box::new(|_, _| ok("{\"choices\": [".into())));
    let run = knowledge(&url, &out, &["--retries", "2"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("not JSON") && stderr.contains("3 attempts"),
        "{stderr}"
    );
    // Nobody listening, and not an http URL.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = knowledge(
        &format!("http://127.0.0.1:{port}/v1"),
        &out,
        &["--retries", "1"],
    );
    assert!(!run.status.success());
    let run = knowledge("ftp://example.invalid", &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("not an http(s) URL"),
        "{stderr}"
    );
    assert!(!out.exists());
}
