//! The knowledge base of KnPL (spec §3): short texts describing normal and abnormal states,
//! with a record of which model wrote them and what it was asked.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Files over this size are refused before they are read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Longest accepted description, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Who wrote a part of the knowledge base, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The model that wrote the texts, or `"curated by hand"`.
    pub model: String,
    /// The questions asked, verbatim.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// When (ISO 8601 date or date-time).
    pub date: String,
    /// Anything else worth keeping (endpoint, temperature, curator's notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Texts for the two states.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateTexts {
    /// Descriptions of the normal state.
    pub normal: Vec<String>,
    /// Descriptions of the abnormal state.
    pub abnormal: Vec<String>,
}

/// One domain's knowledge base (`weights/knowledge/*.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeBase {
    /// Always `"kanoclip-knowledge/1"`.
    pub format: String,
    /// What the texts describe (`industrial`, `medical`, …).
    pub domain: String,
    /// General knowledge from a language model (or a curator).
    pub general: StateTexts,
    /// Who wrote the general texts.
    pub general_provenance: Provenance,
    /// Optional image-specific knowledge: training-image path (relative to the dataset root)
    /// to the description a vision model gave for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub specific: BTreeMap<String, String>,
    /// Who wrote the specific texts (required when there are any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_provenance: Option<Provenance>,
}

/// The `format` of a knowledge file.
pub const FORMAT: &str = "kanoclip-knowledge/1";

/// Which knowledge base to use: one of those compiled into kanoclip, or a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Knowledge {
    /// `weights/knowledge/industrial.json`: products and parts (MVTec AD, VisA).
    Industrial,
    /// `weights/knowledge/medical.json`: medical images.
    Medical,
    /// A knowledge file.
    File(std::path::PathBuf),
}

impl Knowledge {
    /// `industrial`, `medical`, or else a path.
    pub fn parse(name_or_path: &str) -> Self {
        match name_or_path {
            "industrial" => Knowledge::Industrial,
            "medical" => Knowledge::Medical,
            path => Knowledge::File(path.into()),
        }
    }

    /// Read and check the knowledge base.
    pub fn load(&self) -> Result<KnowledgeBase> {
        match self {
            Knowledge::Industrial => KnowledgeBase::from_json_str(include_str!(
                "../../weights/knowledge/industrial.json"
            )),
            Knowledge::Medical => {
                KnowledgeBase::from_json_str(include_str!("../../weights/knowledge/medical.json"))
            }
            Knowledge::File(path) => KnowledgeBase::from_file(path),
        }
    }
}

impl KnowledgeBase {
    /// Parse and check a knowledge base from its JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let kb: KnowledgeBase = serde_json::from_str(text)
            .map_err(|e| Error::Knowledge(format!("malformed knowledge JSON: {e}")))?;
        kb.validate()?;
        Ok(kb)
    }

    /// Read, parse and check a knowledge file (at most [`MAX_FILE_BYTES`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::Knowledge(format!(
                "{} bytes is over the {MAX_FILE_BYTES}-byte limit for a knowledge file",
                meta.len()
            ))
            .in_file(path));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// Check the format, that both states have texts, and every text's length.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Knowledge(m));
        if self.format != FORMAT {
            return bad(format!("format is `{}`, expected `{FORMAT}`", self.format));
        }
        for (state, texts) in [
            ("normal", &self.general.normal),
            ("abnormal", &self.general.abnormal),
        ] {
            if texts.is_empty() {
                return bad(format!("general.{state} is empty"));
            }
            for (i, t) in texts.iter().enumerate() {
                check_text(&format!("general.{state}[{i}]"), t)?;
            }
        }
        for (path, t) in &self.specific {
            check_text(&format!("specific[{path:?}]"), t)?;
        }
        if !self.specific.is_empty() && self.specific_provenance.is_none() {
            return bad("specific texts need a specific_provenance".into());
        }
        Ok(())
    }
}

fn check_text(what: &str, t: &str) -> Result<()> {
    if t.trim().is_empty() {
        return Err(Error::Knowledge(format!("{what} is blank")));
    }
    if t.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::Knowledge(format!(
            "{what} is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(())
}
