//! Atomic file output: write a temporary file beside the target, sync it, rename it over
//! the target. A crash, a full disk or an error leaves either the old file or none, never a
//! half-written one.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `data` to `path` atomically.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    write_with(path, |f| f.write_all(data))
}

/// [`write`] with the writing done by `fill` (a failing `fill` stands for a full disk in
/// the tests).
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("kanoclip-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("head.safetensors");
        write(&path, b"the good head").unwrap();
        // A disk that fills up half-way through the write.
        let e = write_with(&path, |f| {
            f.write_all(b"half a ")?;
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        })
        .expect_err("must fail");
        assert!(matches!(&e, Error::Io { path: p, .. } if p == &path), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the good head");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(dir).ok();
    }
}
