//! CLIP's byte-level BPE tokenizer, giving the ids of open_clip's `SimpleTokenizer`
//! (`get_tokenizer('ViT-B-32')`): its cleaning, `<start_of_text>`/`<end_of_text>`, zero
//! padding, and truncation that keeps EOT last.
//!
//! The merge list is open_clip's `bpe_simple_vocab_16e6.txt.gz` (MIT, see
//! `src/clip/vocab/LICENSE`), embedded in the binary so that the browser build needs no
//! extra download. `instant-clip-tokenizer` was considered; it skips open_clip's text
//! cleaning (ftfy, HTML entities), so it does not give identical ids.

use std::collections::HashMap;
use std::io::Read;

use regex::Regex;

use super::text_clean::clean_lower;
use crate::error::{Error, Result};

const VOCAB_GZ: &[u8] = include_bytes!("vocab/bpe_simple_vocab_16e6.txt.gz");
const SOT: &str = "<start_of_text>";
const EOT: &str = "<end_of_text>";

/// open_clip's byte-level BPE tokenizer with its text cleaning (vocabulary embedded).
pub struct Tokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    pattern: Regex,
    sot: u32,
    eot: u32,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut pairs: Vec<(u8, char)> = (0u32..256)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).unwrap_or('?')))
        .collect();
    let mut n = 0;
    for b in 0u32..256 {
        if !printable(b) {
            pairs.push((b as u8, char::from_u32(256 + n).unwrap_or('?')));
            n += 1;
        }
    }
    pairs
}

impl Tokenizer {
    /// Build the tokenizer from the embedded vocabulary.
    pub fn new() -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .map_err(|e| Error::Invalid(format!("embedded BPE vocabulary is corrupt: {e}")))?;
        // open_clip: merges = lines[1 : 49152 - 256 - 2 + 1]
        let merges: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .take(49152 - 256 - 2)
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let pairs = bytes_to_unicode();
        let mut byte_encoder = ['\0'; 256];
        for &(b, c) in &pairs {
            byte_encoder[b as usize] = c;
        }
        let mut vocab: Vec<String> = pairs.iter().map(|&(_, c)| c.to_string()).collect();
        vocab.extend(pairs.iter().map(|&(_, c)| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(SOT.into());
        vocab.push(EOT.into());
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as u32))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let pattern = Regex::new(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
            .map_err(|e| Error::Invalid(format!("tokenizer pattern: {e}")))?;
        Ok(Self {
            sot: encoder[SOT],
            eot: encoder[EOT],
            encoder,
            ranks,
            byte_encoder,
            pattern,
        })
    }

    /// The start-of-text id.
    pub fn sot(&self) -> u32 {
        self.sot
    }

    /// The end-of-text id.
    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// BPE ids of a text, without SOT/EOT.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = clean_lower(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&text) {
            let word = m.as_str();
            if word == SOT || word == EOT {
                ids.push(self.encoder[word]);
                continue;
            }
            let mapped: String = word
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            ids.extend(
                self.bpe(&mapped)
                    .iter()
                    .filter_map(|piece| self.encoder.get(piece)),
            );
        }
        ids
    }

    /// Merge the lowest-ranked adjacent pair until none is in the merge list.
    fn bpe(&self, token: &str) -> Vec<String> {
        let mut word: Vec<String> = token.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p))
                })
                .min_by_key(|&(r, _)| r)
                .map(|(_, p)| (p[0].clone(), p[1].clone()));
            let Some((first, second)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        word
    }

    /// One row of `context_length` ids: SOT, the text, EOT, zero padding. Over-long text is
    /// cut so that EOT stays last, as open_clip does.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Result<Vec<u32>> {
        if context_length < 2 {
            return Err(Error::Invalid(format!(
                "context length {context_length} cannot hold SOT and EOT"
            )));
        }
        let mut row = Vec::with_capacity(context_length);
        row.push(self.sot);
        row.extend(self.encode(text));
        row.push(self.eot);
        if row.len() > context_length {
            row.truncate(context_length);
            row[context_length - 1] = self.eot;
        }
        row.resize(context_length, 0);
        Ok(row)
    }

    /// Tokenize several texts, each to `context_length` ids.
    pub fn tokenize_batch(
        &self,
        texts: &[impl AsRef<str>],
        context_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| self.tokenize(t.as_ref(), context_length))
            .collect()
    }
}
