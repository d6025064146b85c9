//! Which files the inspector opens: image extensions, folder listing, dropped paths.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Image file extensions opened from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The image files of a folder (not recursive), sorted by name, as `hvq predict` picks them.
pub fn images_in_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether the extension is one the inspector opens.
pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Expand dropped or chosen paths: folders become their images; files are kept as given (an
/// unreadable or non-image file then shows its error in the list). Errors listing a folder are
/// returned beside the files.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match images_in_folder(p) {
                Ok(f) => files.extend(f),
                Err(e) => errors.push((p.clone(), format!("{e:#}"))),
            }
        } else {
            files.push(p.clone());
        }
    }
    (files, errors)
}
