//! Which files are inspected: the one listing policy of the CLI, the desktop inspector and
//! calibration from a folder.
//!
//! A folder contributes its image files (PNG and JPEG by extension, any case; not recursive;
//! sorted by path). A file named explicitly is kept as given, whatever its extension: if it
//! cannot be decoded, its result row says why. A path that does not exist, or a folder that
//! cannot be read, is a problem reported beside the files.

use std::path::{Path, PathBuf};

use crate::error::{HvqError, Result};

/// Image file extensions picked from folders (lower case; matched in any case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Whether the path's extension is one picked from folders.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a folder, sorted.
pub fn images_in_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| HvqError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Files to inspect from paths given by a user, and what could not be listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageListing {
    /// Files in order: each folder's images, sorted, at the folder's place.
    pub files: Vec<PathBuf>,
    /// Paths that could not be listed, with the reason.
    pub problems: Vec<(PathBuf, String)>,
}

/// Expand paths as [the module](self) describes.
///
/// ```
/// use hvq::app::list_images;
///
/// let listing = list_images(&["../samples".into(), "no-such-file.png".into()]);
/// assert_eq!(listing.files.len(), 4); // the four sample cells, sorted
/// assert_eq!(listing.problems.len(), 1);
/// ```
pub fn list_images(paths: &[PathBuf]) -> ImageListing {
    let mut listing = ImageListing::default();
    for path in paths {
        if path.is_dir() {
            match images_in_folder(path) {
                Ok(files) => listing.files.extend(files),
                Err(e) => listing.problems.push((path.clone(), e.to_string())),
            }
        } else if path.exists() {
            listing.files.push(path.clone());
        } else {
            listing
                .problems
                .push((path.clone(), "no such file or directory".into()));
        }
    }
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_to_their_sorted_images_and_missing_paths_are_problems() {
        let dir = std::env::temp_dir().join(format!("hvq-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub.png")).unwrap();
        for f in ["b.PNG", "a.jpg", "notes.txt", "c.jpeg"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let notes = dir.join("notes.txt");
        let missing = dir.join("nothing-here");
        let listing = list_images(&[dir.clone(), notes.clone(), missing.clone()]);
        let names: Vec<_> = listing
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        // A folder named like an image is not a file; an explicit non-image file is kept.
        assert_eq!(names, ["a.jpg", "b.PNG", "c.jpeg", "notes.txt"]);
        assert_eq!(listing.problems.len(), 1);
        assert_eq!(listing.problems[0].0, missing);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
