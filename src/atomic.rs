//! Atomic file output: write a temporary file beside the target, sync it, rename it over
//! the target, sync the folder. A crash, a full disk or an error leaves either the old file
//! or none, never a half-written one. The temporary file gets a fresh random name and is
//! created exclusively (`create_new`, O_EXCL): a file or symlink planted at a name an
//! attacker could guess is never followed, and two writers never share a temporary file.
//! (`tempfile` does the same; as a dependency it changed the features of crates the GPU
//! stack shares and rebuilt all of it, for these few lines.)

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let (tmp, file) = create_temporary(dir, &name.to_string_lossy())?;
    // The file is closed when `written` returns, before the rename.
    let written = |mut file: std::fs::File| -> std::io::Result<()> {
        fill(&mut file)?;
        file.sync_all()
    };
    let result = written(file)
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| sync_dir(dir));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// A new file `.NAME.RANDOM.tmp` in `dir`, created exclusively: an existing file or
/// symlink of that name is an error (and another name is tried), never opened.
fn create_temporary(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    Err(Error::io(dir, e))
}

/// Make a rename in `dir` durable (POSIX: the new entry is only on disk once the folder
/// is synced). Elsewhere the rename is as durable as the platform makes it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
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

    /// A symlink planted at the temporary name the old code used (`.NAME.tmp-PID`) is not
    /// followed, and writers racing on one path each leave a whole file.
    #[cfg(unix)]
    #[test]
    fn planted_links_are_not_followed_and_racing_writers_leave_whole_files() {
        let dir = std::env::temp_dir().join(format!("kanoclip-atomic-l-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let path = dir.join("report.json");
        let planted = dir.join(format!(".report.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write(&path, b"the report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&path).unwrap(), b"the report");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 16]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || write(path, c).unwrap());
            }
        });
        assert!(contents.contains(&std::fs::read(&path).unwrap()));
        std::fs::remove_dir_all(dir).ok();
    }
}
