//! A bundle file cut into chunks named by their content, and the checks on chunk names.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tensor_io::sha256_hex;

/// The largest chunk: 32 MB (decimal, so also under 32 MiB).
pub const MAX_CHUNK: usize = 32_000_000;

/// One chunk file of a bundle file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// File name, relative to the manifest.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the chunk, hex.
    pub sha256: String,
}

/// One file of the bundle, cut into chunks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleFile {
    /// `vision` or `head`.
    pub name: String,
    /// Bytes, all chunks together.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Its chunks, in order.
    pub chunks: Vec<Chunk>,
}

/// A bundle's chunk files: `(path beside the manifest, bytes)`.
pub type ChunkFiles = Vec<(String, Vec<u8>)>;

/// Cut a file into chunks named by content, `NAME-000-<first 16 hex digits of the
/// chunk's SHA-256>.bin`, `NAME-001-….bin`, …: a redeployed bundle names new chunks, so a
/// browser never meets a stale cached chunk under a name it trusts.
pub fn chunk(name: &str, bytes: &[u8]) -> (BundleFile, ChunkFiles) {
    let mut chunks = Vec::new();
    let mut out = Vec::new();
    for (i, part) in bytes.chunks(MAX_CHUNK).enumerate() {
        let sha256 = sha256_hex(part);
        let path = format!("{name}-{i:03}-{}.bin", &sha256[..16]);
        chunks.push(Chunk {
            path: path.clone(),
            size: part.len() as u64,
            sha256,
        });
        out.push((path, part.to_vec()));
    }
    (
        BundleFile {
            name: name.into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            chunks,
        },
        out,
    )
}

pub(super) fn check_sha256(hex: &str) -> Result<()> {
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{hex}` is not a SHA-256 (64 lower-case hex digits)"
        )))
    }
}

/// A chunk path is a bare file name beside the manifest: letters, digits, `-`, `_` and
/// `.`, not starting with `.`, at most 128 characters, holding the first 16 hex digits of
/// its SHA-256 (chunks are named by content). This refuses, as one class, absolute URLs,
/// `//host`, `..`, sub-folders, schemes, queries and percent-escapes: a bundle can only
/// fetch files from its own folder, on its own origin.
pub fn check_chunk_path(path: &str, sha256: &str) -> Result<()> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if path.is_empty() || path.len() > 128 || path.starts_with('.') || !path.bytes().all(safe) {
        return Err(Error::Config(format!(
            "chunk path `{path}` is not a plain file name beside the manifest"
        )));
    }
    if !sha256.get(..16).is_some_and(|p| path.contains(p)) {
        return Err(Error::Config(format!(
            "chunk path `{path}` is not named by its content (the first 16 digits of {sha256})"
        )));
    }
    Ok(())
}
