//! Entry points for the fuzz targets (`tests/fuzz/`, run by `scripts/fuzz`) and for the
//! replay of their corpora in the tests (`tests/fuzz_corpus.rs`). Each takes arbitrary
//! bytes and must return, whatever they are: an `Err` is the expected outcome for most
//! inputs; a panic, an abort or a runaway allocation is a bug. Each also checks the
//! invariants of what it accepts, by panicking, so that the fuzzer reports a broken one.

use std::sync::OnceLock;

use burn::prelude::Device;

use crate::clip::preprocess::{decode_image_lenient, preprocess};
use crate::clip::{Clip, ClipConfig};
use crate::detect::bundle::Manifest;
use crate::detect::head_file::{load_head, read_meta};
use crate::detect::maps::to_original;
use crate::detect::memory::ReferenceMemory;
use crate::device::{BackendKind, device};
use crate::head::knowledge::KnowledgeBase;
use crate::train::checkpoint::Checkpoint;

/// The fuzz targets by name, as `tests/fuzz/fuzz_targets/*.rs` and the corpora name them.
pub const TARGETS: [&str; 9] = [
    "image",
    "config",
    "head",
    "manifest",
    "knowledge",
    "llm_reply",
    "checkpoint",
    "visa_csv",
    "memory",
];

/// The images a fuzz run decodes in full: larger headers are covered by the unit tests
/// (`tests/bad_input.rs`), and would only slow the fuzzer.
const FUZZ_PIXELS: u64 = 1 << 22;

fn cpu() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| pollster::block_on(device(BackendKind::Cpu)).expect("the CPU device"))
}

/// Run the target `name` on `data`; `weights` is the tiny model's safetensors, which the
/// config and manifest targets load against.
pub fn run(name: &str, data: &[u8], weights: &[u8]) {
    match name {
        "image" => image(data),
        "config" => config(data, weights),
        "head" => head(data),
        "manifest" => manifest(data, weights),
        "knowledge" => knowledge(data),
        "llm_reply" => llm_reply(data),
        "checkpoint" => checkpoint(data),
        "visa_csv" => visa_csv(data),
        "memory" => memory(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Decode (leniently) → pre-process at 32 → map back to the image's size.
pub fn image(data: &[u8]) {
    if let Ok(size) = imagesize::blob_size(data)
        && (size.width as u64).saturating_mul(size.height as u64) > FUZZ_PIXELS
    {
        return;
    }
    let Ok((img, _)) = decode_image_lenient(data) else {
        return;
    };
    if u64::from(img.width()) * u64::from(img.height()) > FUZZ_PIXELS {
        return;
    }
    let Ok(p) = preprocess(&img, 32) else { return };
    assert_eq!(p.pixels.len(), 3 * 32 * 32);
    assert!(p.pixels.iter().all(|v| v.is_finite()));
    let back = to_original(&vec![0.25; 32 * 32], &p.geometry);
    assert_eq!(back.len(), img.width() as usize * img.height() as usize);
}

/// A config (JSON) → import against the tiny model's weights.
pub fn config(data: &[u8], weights: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ClipConfig::from_json_str(text) else {
        return;
    };
    cfg.validate().expect("a parsed config is valid");
    let _ = Clip::from_safetensors(&cfg, weights, cpu());
}

/// A head file: its metadata, then its tensors for the backbone it names.
pub fn head(data: &[u8]) {
    let Ok(meta) = read_meta(data) else { return };
    let _ = load_head(data, &meta.backbone, 77, cpu());
}

/// A manifest → checks → (with the tiny weights as its vision file) a detector.
pub fn manifest(data: &[u8], weights: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::from_json_str(text) else {
        return;
    };
    let _ = m.assemble("vision", |_| Ok(weights.to_vec()));
    let _ = m.detector(weights, None, cpu());
}

/// A knowledge base (JSON).
pub fn knowledge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(kb) = KnowledgeBase::from_json_str(text) {
        kb.validate().expect("a parsed knowledge base is valid");
    }
}

/// An LLM reply body, its message as a list and as a sentence, and a `Retry-After`.
pub fn llm_reply(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(content) = crate::knowledge::llm::parse_reply(&text) {
        let _ = crate::knowledge::fill::parse_list(&content);
        let _ = crate::knowledge::fill::parse_sentence(&content);
    }
    let _ = crate::knowledge::fill::parse_list(&text);
    if let Some(wait) = crate::knowledge::llm::parse_retry_after(&text) {
        assert!(wait <= crate::knowledge::llm::MAX_WAIT);
    }
}

/// A training checkpoint, and the head inside it.
pub fn checkpoint(data: &[u8]) {
    if let Ok(ck) = Checkpoint::from_bytes(data) {
        head(&ck.head);
    }
}

/// VisA's `split_csv/1cls.csv`: every sample it yields stays inside the data root.
pub fn visa_csv(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root = std::path::Path::new("/nonexistent/kanoclip-fuzz-root");
    let mut problems = Vec::new();
    let csv = root.join("split_csv/1cls.csv");
    if let Ok(samples) = crate::data::dataset::visa_csv(root, &csv, &text, &mut problems) {
        for s in samples {
            assert!(
                s.path.starts_with(root),
                "{} left the root",
                s.path.display()
            );
            assert!(s.masks.iter().all(|m| m.starts_with(root)));
        }
    }
}

/// A reference-memory file: its checks, and what it accepts holds together; its few-shot
/// map of a small query is finite.
pub fn memory(data: &[u8]) {
    let Ok(m) = ReferenceMemory::from_bytes(data, cpu()) else {
        return;
    };
    let meta = m.meta();
    let d = meta.backbone.embed_dim;
    assert_eq!(m.tokens().len(), meta.taps.len());
    for (tokens, &rows) in m.tokens().iter().zip(&meta.rows) {
        assert_eq!(tokens.len(), rows * d);
        assert!(tokens.iter().all(|v| v.is_finite()));
    }
    let q = burn::tensor::Tensor::<3>::ones([1, 4, d], cpu());
    let map = m
        .grid_map(&vec![q; meta.taps.len()])
        .expect("a memory has taps");
    let values = crate::tensor_io::to_vec(map).expect("read back");
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
}
