//! gzip decoding, kept behind one function so the decoder crate can be swapped in one place.
//! `flate2` (with its pure-Rust backends) is already in the dependency tree through burn's
//! PyTorch reader, so using it costs no new crate.

use std::io::Read;
use std::path::Path;

use crate::error::{HvqError, Result};

/// Inflate a gzip file's bytes (all members, as `gzip -d` does); `path` names it in errors.
/// More than `limit` inflated bytes is an error rather than an allocation without bound.
pub(super) fn gunzip(bytes: &[u8], path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            HvqError::Dataset(format!("{}: not a valid gzip file: {e}", path.display()))
        })?;
    if out.len() as u64 > limit {
        return Err(HvqError::Dataset(format!(
            "{}: inflates to more than {limit} bytes; refusing it",
            path.display()
        )));
    }
    Ok(out)
}
