//! Replays the fuzz corpora and every committed crash (`tests/fuzz/corpus/<target>/`,
//! `tests/fuzz/regressions/<target>/`) through the same entry points the fuzz targets call
//! (`kanoclip::fuzzing`). CI runs this on stable; `scripts/fuzz` runs the fuzzers.
//! `cargo test --release --test fuzz_corpus -- --ignored` rewrites the seed files.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::fixture;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use kanoclip::fuzzing::{TARGETS, run};

fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(target)
}

fn files(d: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_is_handled() {
    let weights = std::fs::read(fixture("tiny_quickgelu.safetensors")).unwrap();
    let mut total = 0;
    for target in TARGETS {
        let corpus = files(&dir("corpus", target));
        assert!(!corpus.is_empty(), "{target}: no seed corpus");
        for f in corpus.iter().chain(&files(&dir("regressions", target))) {
            let data = std::fs::read(f).unwrap();
            // A panic here names the file; the fuzzers found it or it is a seed.
            let ok = std::panic::catch_unwind(|| run(target, &data, &weights));
            assert!(ok.is_ok(), "{target}: {} panicked", f.display());
            total += 1;
        }
    }
    println!("fuzz corpora: {total} inputs replayed");
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// Writes the seed corpora (small valid inputs of each kind, and a few near misses).
#[test]
#[ignore = "writes the seed corpora into tests/fuzz/corpus"]
fn write_seed_corpus() {
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir("corpus", target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let img = |w: u32, h: u32| {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 9) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
        }))
    };
    for (name, format) in [
        ("small.png", ImageFormat::Png),
        ("small.jpg", ImageFormat::Jpeg),
        ("small.bmp", ImageFormat::Bmp),
        ("small.webp", ImageFormat::WebP),
        ("small.tif", ImageFormat::Tiff),
    ] {
        let bytes = encode(&img(24, 20), format);
        put("image", name, &bytes);
        put(
            "image",
            &format!("cut-{name}"),
            &bytes[..bytes.len() * 3 / 4],
        );
    }
    put("image", "line.png", &encode(&img(300, 1), ImageFormat::Png));
    put(
        "image",
        "column.jpg",
        &encode(&img(1, 200), ImageFormat::Jpeg),
    );
    put(
        "image",
        "grey.png",
        &encode(&img(16, 16).grayscale(), ImageFormat::Png),
    );
    let jpg = encode(&img(24, 20), ImageFormat::Jpeg);
    put("image", "no-eoi.jpg", &jpg[..jpg.len() - 2]);

    for f in [
        "tiny_quickgelu_config.json",
        "tiny_quickgelu_hf_config.json",
        "small_gelu_config.json",
    ] {
        put("config", f, &std::fs::read(fixture(f)).unwrap());
    }
    let head = std::fs::read(fixture("tiny_quickgelu_head.safetensors")).unwrap();
    put("head", "tiny_head.safetensors", &head);
    let ck = kanoclip::train::checkpoint::Checkpoint {
        progress: kanoclip::train::checkpoint::Progress {
            epoch: 1,
            step: 2,
            seed: 3,
            batch: 4,
            images: 5,
        },
        head,
        optimizer: vec![1, 2, 3],
        param_ids: vec![7, 8],
    };
    put("checkpoint", "tiny.ckpt", &ck.to_bytes().unwrap());

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["industrial.json", "medical.json"] {
        put(
            "knowledge",
            f,
            &std::fs::read(root.join("weights/knowledge").join(f)).unwrap(),
        );
    }
    put(
        "knowledge",
        "small.json",
        &std::fs::read(fixture("knowledge_small.json")).unwrap(),
    );
    let reply = |content: &str| {
        serde_json::json!({"choices": [{"message": {"content": content}}]}).to_string()
    };
    put(
        "llm_reply",
        "list.json",
        reply(r#"["a scratch", "a dent"]"#).as_bytes(),
    );
    put(
        "llm_reply",
        "fenced.json",
        reply("```json\n[\"crack\", \"hole\"]\n```").as_bytes(),
    );
    put(
        "llm_reply",
        "sentence.json",
        reply("A flawless part.").as_bytes(),
    );
    put("llm_reply", "no-choices.json", br#"{"choices": []}"#);
    put("llm_reply", "retry-after.txt", b"3.5");
    put(
        "visa_csv",
        "1cls.csv",
        b"object,split,label,image,mask\ncandle,train,normal,candle/Data/Images/Normal/0000.JPG,\n\
          candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n",
    );
    put(
        "visa_csv",
        "escape.csv",
        b"object,split,label,image,mask\ncandle,test,anomaly,../../etc/passwd,/abs/mask.png\n",
    );
    // A memory of the tiny detector (two references), and one whose backbone claims
    // embed_dim 0 (a panic once).
    let memory = common::tiny_memory_bytes(&common::tiny_detector(&common::backends()[0].1));
    put("memory", "tiny.memory", &memory);
    // Same length, so the header's offsets still hold.
    let (from, to) = (br#"\"embed_dim\":32"#, br#"\"embed_dim\": 0"#);
    let at = (memory.windows(from.len()))
        .position(|w| w == from)
        .expect("the memory metadata names embed_dim");
    let mut zero = memory.clone();
    zero[at..at + from.len()].copy_from_slice(to);
    put("memory", "embed-zero.memory", &zero);
    // A manifest as `kanoclip convert --to web` writes it (scripts/build-web's www/model).
    let manifest = root.join("www/model/manifest.json");
    if let Ok(bytes) = std::fs::read(&manifest) {
        put("manifest", "tiny.json", &bytes);
    }
}
