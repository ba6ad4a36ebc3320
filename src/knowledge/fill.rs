//! Filling a knowledge base (spec §3) from a chat model: the general texts from a text
//! model, and with a vision model one description per training image, keyed by its path
//! relative to the data root (as the trainer joins them).
//!
//! The file is rewritten atomically after every answer, so an interrupted or failed run
//! keeps what it had; run again and only the missing parts are asked for.

use std::path::Path;

use super::llm::{ChatClient, Message};
use crate::data::dataset::{Dataset, Split};
use crate::error::{Error, Result};
use crate::head::knowledge::{FORMAT, KnowledgeBase, MAX_TEXT_CHARS, Provenance, StateTexts};

/// How many general texts to ask for per state.
pub const GENERAL_TEXTS: usize = 12;

fn general_question(domain: &str, abnormal: bool) -> String {
    let what = if abnormal {
        "visible defects or anomalies (such as scratches, cracks, holes, dents, stains, \
         contamination, or missing, bent or misplaced parts)"
    } else {
        "a flawless, defect-free object or surface"
    };
    format!(
        "You help build a zero-shot anomaly detector for {domain} inspection images. \
         List {GENERAL_TEXTS} different short phrases (3 to 12 words each) that describe \
         {what} as seen in a photograph. Answer with a JSON array of strings and nothing else."
    )
}

/// The spec's questions for one image (§3).
pub fn specific_question(anomalous: bool) -> &'static str {
    if anomalous {
        "Describe the defect in this image in one sentence of at most 30 words."
    } else {
        "Describe this flawless object in one sentence of at most 30 words."
    }
}

/// One line of text, whitespace collapsed, cut to the knowledge base's limit.
fn clean(t: &str) -> String {
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let t = t.trim_matches(|c| c == '"' || c == '\'');
    t.chars().take(MAX_TEXT_CHARS).collect()
}

/// A JSON array of strings, possibly inside a Markdown code fence.
pub(crate) fn parse_list(answer: &str) -> std::result::Result<Vec<String>, String> {
    let start = answer.find('[').ok_or("no JSON array")?;
    let end = answer.rfind(']').ok_or("no JSON array")?;
    if end < start {
        return Err("no JSON array".into());
    }
    let items: Vec<String> = serde_json::from_str(&answer[start..=end])
        .map_err(|e| format!("not a list of strings: {e}"))?;
    let items: Vec<String> = items
        .iter()
        .map(|s| clean(s))
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("an empty list".into());
    }
    Ok(items)
}

pub(crate) fn parse_sentence(answer: &str) -> std::result::Result<String, String> {
    let t = clean(answer);
    if t.is_empty() {
        Err("an empty answer".into())
    } else {
        Ok(t)
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn mime(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        Some("webp") => "image/webp",
        _ => "image/png",
    }
}

fn save(out: &Path, kb: &KnowledgeBase) -> Result<()> {
    kb.validate()?;
    let json = serde_json::to_vec_pretty(kb).map_err(Error::from)?;
    crate::atomic::write(out, &json)
}

/// What [`fill`] asks, and whom.
pub struct Request<'a> {
    /// The chat endpoint.
    pub client: &'a ChatClient,
    /// `industrial` or `medical`.
    pub domain: &'a str,
    /// Also describe every training image.
    pub vision: bool,
    /// Ask for the general texts again even if the file has them.
    pub force_general: bool,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Whether the general texts were asked for.
    pub general: bool,
    /// Images described in this run.
    pub images_asked: usize,
    /// Images that already had a description.
    pub images_kept: usize,
}

/// Fill `out` (created, or resumed if it exists). `progress(done, total)` follows the images.
pub fn fill(
    req: &Request,
    data: Option<&Dataset>,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<Filled> {
    let existing = if out.exists() {
        Some(KnowledgeBase::from_file(out)?)
    } else {
        None
    };
    let mut filled = Filled::default();
    let notes = Some(format!(
        "OpenAI-compatible chat completions at {}, temperature 0",
        req.client.url()
    ));
    let kb = match existing {
        Some(kb) if !req.force_general => kb,
        existing => {
            let kb = ask_general(req, existing, notes.clone())?;
            save(out, &kb)?;
            filled.general = true;
            kb
        }
    };
    if !req.vision {
        return Ok(filled);
    }
    let data = data.ok_or_else(|| Error::Invalid("--vision needs --data".into()))?;
    ask_specific(req, data, kb, out, notes, &mut filled, progress)?;
    Ok(filled)
}

/// The general texts from the text model, into `existing` (whose specific texts are kept)
/// or a new knowledge base.
fn ask_general(
    req: &Request,
    existing: Option<KnowledgeBase>,
    notes: Option<String>,
) -> Result<KnowledgeBase> {
    let q_normal = general_question(req.domain, false);
    let q_abnormal = general_question(req.domain, true);
    let ask = |q: &str| {
        req.client.ask(
            &Message {
                text: q,
                image: None,
            },
            parse_list,
        )
    };
    let general = StateTexts {
        normal: ask(&q_normal)?,
        abnormal: ask(&q_abnormal)?,
    };
    let provenance = Provenance {
        model: model_name(req),
        prompts: vec![q_normal, q_abnormal],
        date: now(),
        notes,
    };
    Ok(match existing {
        Some(mut k) => {
            k.general = general;
            k.general_provenance = provenance;
            k
        }
        None => KnowledgeBase {
            format: FORMAT.into(),
            domain: req.domain.into(),
            general,
            general_provenance: provenance,
            specific: Default::default(),
            specific_provenance: None,
        },
    })
}

/// One description per test image from the vision model, for the images that have none
/// yet; the file is rewritten after every answer.
fn ask_specific(
    req: &Request,
    data: &Dataset,
    mut kb: KnowledgeBase,
    out: &Path,
    notes: Option<String>,
    filled: &mut Filled,
    mut progress: impl FnMut(usize, usize),
) -> Result<()> {
    let images: Vec<_> = data
        .samples
        .iter()
        .filter(|s| s.split == Split::Test)
        .collect();
    let total = images.len();
    for (i, s) in images.iter().enumerate() {
        let key = s
            .path
            .strip_prefix(&data.root)
            .unwrap_or(&s.path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if kb.specific.contains_key(&key) {
            filled.images_kept += 1;
            progress(i + 1, total);
            continue;
        }
        let bytes = std::fs::read(&s.path).map_err(|e| Error::io(&s.path, e))?;
        let text = req
            .client
            .ask(
                &Message {
                    text: specific_question(s.label),
                    image: Some((&bytes, mime(&s.path))),
                },
                parse_sentence,
            )
            .map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
        kb.specific.insert(key, text);
        kb.specific_provenance = Some(Provenance {
            model: model_name(req),
            prompts: vec![
                specific_question(true).into(),
                specific_question(false).into(),
            ],
            date: now(),
            notes: notes.clone(),
        });
        save(out, &kb)?;
        filled.images_asked += 1;
        progress(i + 1, total);
    }
    Ok(())
}

fn model_name(req: &Request) -> String {
    req.client.model().to_string()
}
