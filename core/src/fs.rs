//! File writes that are never half-done: the model, checkpoints, caches and result tables.

use std::io::Write;
use std::path::Path;

use crate::error::{HvqError, Result};

/// Write bytes to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |file, bytes| file.write_all(bytes))
}

/// [`write_atomic`] with the write step given (tests make it fail half-way, as a full disk does).
/// Whatever fails, the file at `path` is the old one or the new one, never a mix, and the
/// temporary file does not stay behind to fill the disk further.
pub(crate) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| HvqError::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "weights".into());
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        write(&mut f, bytes)?;
        f.sync_all()
    });
    let result = written
        .map_err(|e| HvqError::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| HvqError::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
