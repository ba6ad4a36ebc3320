//! What `kanoclip detect` and `kanoclip reference build` read: the input files under the
//! paths given, which of them are images by name, and a job array's share of them
//! (`--shard i/n`).
//!
//! A file's shard is the first 8 bytes of the SHA-256 of its path (as given on the command
//! line, or found below a folder given there), modulo n. It depends on nothing but the
//! path, so every machine of a job array (Slurm's `SLURM_ARRAY_TASK_ID`, a Kubernetes
//! indexed Job's `JOB_COMPLETION_INDEX`) agrees on it, even if one sees more files than
//! another, and the n shards together hold every input exactly once.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif"];

/// The input files under `paths`, folders walked recursively in name order. A folder holding `report.jsonl` is the
/// output of an earlier `kanoclip detect` (heatmaps, overlays): it is skipped with a
/// warning, never silently read back as input.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let earlier_output = |e: &walkdir::DirEntry| {
                let skip = e.file_type().is_dir() && e.path().join("report.jsonl").is_file();
                if skip {
                    eprintln!(
                        "kanoclip: warning: skipping {}: it holds the outputs of an earlier run",
                        e.path().display()
                    );
                }
                !skip
            };
            let walk = walkdir::WalkDir::new(p).sort_by_file_name().into_iter();
            for entry in walk.filter_entry(earlier_output) {
                let entry =
                    entry.map_err(|e| Error::io(p, std::io::Error::other(e.to_string())))?;
                if entry.file_type().is_file() {
                    files.push(entry.into_path());
                }
            }
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
    }
    Ok(files)
}

/// Whether `p` names an image file (by its extension).
pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `i/n`: shard i (0-based) of n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u64,
    /// The number of shards.
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: a shard is i/n with 0 ≤ i < n ≤ 100000, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || count > 100_000 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The folder a shard's outputs go to inside `--out`: `shard-I-of-N`.
    pub fn folder_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// Whether `path` belongs to this shard.
    pub fn contains(&self, path: &Path) -> bool {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(path.to_string_lossy().as_bytes());
        let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        head % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_file_exactly_once_and_parse_strictly() {
        let files: Vec<PathBuf> = (0..1000)
            .map(|i| PathBuf::from(format!("d/{i}.png")))
            .collect();
        let shards: Vec<Shard> = (0..7).map(|i| format!("{i}/7").parse().unwrap()).collect();
        let mut sizes = Vec::new();
        for f in &files {
            assert_eq!(shards.iter().filter(|s| s.contains(f)).count(), 1, "{f:?}");
        }
        for s in &shards {
            sizes.push(files.iter().filter(|f| s.contains(f)).count());
        }
        // Even enough: each within ±35 % of 1000/7.
        assert!(sizes.iter().all(|&n| (93..=193).contains(&n)), "{sizes:?}");
        for bad in ["", "1", "4/4", "-1/4", "0/0", "a/b", "1/2/3", "0/100001"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("3/10".parse::<Shard>().unwrap().to_string(), "3/10");
    }
}
