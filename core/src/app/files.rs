//! Image files inspected a batch at a time: decoded in parallel, run through the model as one
//! device batch, each file with its own result. What `hvq predict` and the inference worker (the
//! desktop's folder) both do.
//!
//! A batch that fails as a whole (a device error, a panic inside the backend) is retried one
//! image at a time, so the error lands on the image that causes it and the others still get
//! their results. Every error message names its file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use image::DynamicImage;

use super::inspect::{ClassChoice, Inspection, Inspector, MapResolution};
use crate::device::panic_capture::payload_text;
use crate::error::{HvqError, Result};

/// One file's outcome.
#[derive(Debug)]
pub struct FileInspection {
    /// The file.
    pub path: PathBuf,
    /// The decoded image and its inspection, or what went wrong in words that name the file.
    pub result: std::result::Result<(DynamicImage, Inspection), String>,
}

/// Inspect `files` as one batch (see the module documentation), in order.
///
/// `working_on` names each piece of work before it starts and the guard it returns lives until
/// the piece ends: the CLI passes its panic-report context (so an internal error names the
/// files), other callers `|_| ()`.
pub fn inspect_files<G>(
    inspector: &Inspector,
    files: &[PathBuf],
    class: &ClassChoice,
    resolution: MapResolution,
    working_on: impl Fn(String) -> G,
) -> Vec<FileInspection> {
    let decoded = decode_files(files, &working_on);
    inspect_decoded(inspector, files, decoded, class, resolution, &working_on)
}

/// Inspect `files` `batch` at a time, in order, handing each file's outcome to `finish` (which
/// writes it out), with the host's work kept off the device's path: the next batch is decoded
/// on one thread while the device runs the current one, and `finish` runs on another while the
/// device runs the next. At most one batch waits at each hand-over, so memory stays bounded.
/// Each batch is inspected as [`inspect_files`] does, so every file gets the same result.
///
/// The first error `finish` returns stops the work (no later file is finished) and is returned.
pub fn inspect_pipelined<G, E: Send>(
    inspector: &Inspector,
    files: &[PathBuf],
    batch: usize,
    class: &ClassChoice,
    resolution: MapResolution,
    working_on: impl Fn(String) -> G + Sync,
    mut finish: impl FnMut(FileInspection) -> std::result::Result<(), E> + Send,
) -> std::result::Result<(), E> {
    let (to_finish, inspected) = std::sync::mpsc::sync_channel::<Vec<FileInspection>>(1);
    let working_on = &working_on;
    let chunks: Vec<&[PathBuf]> = files.chunks(batch.max(1)).collect();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            for outcomes in inspected {
                for outcome in outcomes {
                    finish(outcome)?;
                }
            }
            Ok(())
        });
        // A failed send: the writer stopped on an error from `finish`, which its join returns.
        let _ = crate::prefetch::one_ahead(
            &chunks,
            |chunk| decode_files(chunk, working_on),
            |chunk, images| {
                let outcomes =
                    inspect_decoded(inspector, chunk, images, class, resolution, working_on);
                to_finish.send(outcomes)
            },
        );
        drop(to_finish);
        writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `files` decoded in parallel, in order. Those threads share one context, so it names no file:
/// should one panic, each file is read alone and the context names it.
fn decode_files<G>(
    files: &[PathBuf],
    working_on: &impl Fn(String) -> G,
) -> Vec<Result<DynamicImage>> {
    catch_unwind(AssertUnwindSafe(|| {
        let _work = working_on(format!("reading {} images", files.len()));
        crate::preprocess::load_all(files)
    }))
    .unwrap_or_else(|_| files.iter().map(|f| read_alone(f, working_on)).collect())
}

/// The decoded images of `files` (errors keep their places) inspected as one batch.
fn inspect_decoded<G>(
    inspector: &Inspector,
    files: &[PathBuf],
    decoded: Vec<Result<DynamicImage>>,
    class: &ClassChoice,
    resolution: MapResolution,
    working_on: &impl Fn(String) -> G,
) -> Vec<FileInspection> {
    let images: Vec<&DynamicImage> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
    let batch = catch_unwind(AssertUnwindSafe(|| {
        let _work = working_on(format!("inspecting {}", names_of(files)));
        inspector.inspect_batch(&images, class, resolution)
    }));
    let inspections: Vec<Result<Inspection>> = match batch {
        Ok(Ok(results)) => results,
        _ => files
            .iter()
            .zip(&decoded)
            .filter_map(|(file, d)| d.as_ref().ok().map(|img| (file, img)))
            .map(|(file, img)| inspect_alone(inspector, file, img, class, resolution, working_on))
            .collect(),
    };
    let mut inspections = inspections.into_iter();
    files
        .iter()
        .zip(decoded)
        .map(|(path, decoded)| {
            let result = decoded.and_then(|img| {
                let inspection = inspections
                    .next()
                    .unwrap_or_else(|| Err(HvqError::Device("the batch gave no result".into())))?;
                Ok((img, inspection))
            });
            FileInspection {
                result: result.map_err(|e| naming(path, e)),
                path: path.clone(),
            }
        })
        .collect()
}

/// The error's message, prefixed with the file unless it names it already.
fn naming(path: &Path, error: HvqError) -> String {
    let (message, name) = (error.to_string(), path.display().to_string());
    if message.contains(&name) {
        message
    } else {
        format!("{name}: {message}")
    }
}

fn read_alone<G>(file: &Path, working_on: &impl Fn(String) -> G) -> Result<DynamicImage> {
    alone(file, "reading", "decoding", working_on, || {
        crate::preprocess::load(file)
    })
}

fn inspect_alone<G>(
    inspector: &Inspector,
    file: &Path,
    img: &DynamicImage,
    class: &ClassChoice,
    resolution: MapResolution,
    working_on: &impl Fn(String) -> G,
) -> Result<Inspection> {
    alone(file, "inspecting", "inference", working_on, || {
        inspector.inspect_at(img, class, resolution)
    })
}

/// One file's piece of work on its own, named for the panic report (`<doing> <file>`); a panic
/// inside becomes that file's error (`<what> failed inside hvq`).
fn alone<T, G>(
    file: &Path,
    doing: &str,
    what: &str,
    working_on: &impl Fn(String) -> G,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    catch_unwind(AssertUnwindSafe(|| {
        let _work = working_on(format!("{doing} {}", file.display()));
        work()
    }))
    .unwrap_or_else(|p| {
        Err(HvqError::Image {
            path: file.display().to_string(),
            reason: format!(
                "{what} failed inside hvq ({}); this is a bug in hvq, please report it with the \
                 image",
                payload_text(p.as_ref())
            ),
        })
    })
}

fn names_of(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneConfig, HvqConfig, ModelConfig};
    use crate::detector::Detector;
    use burn::tensor::Device;

    fn inspector() -> Inspector {
        let backbone = BackboneConfig::efficientnet_lite0();
        let mut hvq = HvqConfig::official(backbone.feature_channels(), vec!["a".into()]);
        (hvq.embed_dim, hvq.heads, hvq.ffn_dim, hvq.codes) = (16, 2, 32, 8);
        let device = Device::flex();
        let detector = Detector::new(ModelConfig { backbone, hvq }, &device).unwrap();
        Inspector::new(detector, device)
    }

    /// Five files in `dir`: three images of different sizes, one that is not an image, one
    /// missing.
    fn some_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        let mut files = Vec::new();
        for (i, name) in ["a.png", "broken.png", "b.png", "missing.png", "c.png"]
            .iter()
            .enumerate()
        {
            let path = dir.join(name);
            match *name {
                "broken.png" => std::fs::write(&path, b"not an image").unwrap(),
                "missing.png" => {}
                _ => image::RgbImage::from_fn(40 + 9 * i as u32, 31, |x, y| {
                    image::Rgb([(x * 5) as u8, (y * 7) as u8, (i * 40) as u8])
                })
                .save(&path)
                .unwrap(),
            }
            files.push(path);
        }
        files
    }

    /// Unreadable files keep their place and name themselves; the readable ones around them
    /// get the results they get alone.
    #[test]
    fn each_file_keeps_its_place_and_its_own_result() {
        let _generator = crate::test_rng::lock();
        let inspector = inspector();
        let dir = std::env::temp_dir().join(format!("hvq-files-{}", std::process::id()));
        let files = some_files(&dir);
        let out = inspect_files(
            &inspector,
            &files,
            &ClassChoice::Auto,
            MapResolution::Model,
            |_| (),
        );
        assert_eq!(out.len(), files.len());
        for (o, f) in out.iter().zip(&files) {
            assert_eq!(&o.path, f);
            let name = f.file_name().unwrap().to_str().unwrap();
            match name {
                "broken.png" | "missing.png" => {
                    let e = o.result.as_ref().unwrap_err();
                    assert!(e.contains(&f.display().to_string()), "{e}");
                }
                _ => {
                    let (img, b) = o.result.as_ref().unwrap();
                    let alone = inspector.inspect_at(img, &ClassChoice::Auto, MapResolution::Model);
                    let a = alone.unwrap();
                    assert_eq!(a.model_map, b.model_map, "{name}");
                    assert_eq!((a.score, a.width), (b.score, b.width), "{name}");
                }
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// The pipelined run (decoding, the device and `finish` on three threads) hands every file
    /// over in order with the result one batch of [`inspect_files`] gives it, errors in their
    /// places; an error from `finish` stops it there and comes back.
    #[test]
    fn the_pipeline_finishes_every_file_in_order_as_a_batch_would() {
        let _generator = crate::test_rng::lock();
        let inspector = inspector();
        let dir = std::env::temp_dir().join(format!("hvq-pipeline-{}", std::process::id()));
        let files = some_files(&dir);
        let batch = 2;
        let expected: Vec<FileInspection> = files
            .chunks(batch)
            .flat_map(|chunk| {
                inspect_files(
                    &inspector,
                    chunk,
                    &ClassChoice::Auto,
                    MapResolution::Model,
                    |_| (),
                )
            })
            .collect();
        let mut got = Vec::new();
        let finished: std::result::Result<(), String> = inspect_pipelined(
            &inspector,
            &files,
            batch,
            &ClassChoice::Auto,
            MapResolution::Model,
            |_| (),
            |outcome| {
                got.push(outcome);
                Ok(())
            },
        );
        finished.unwrap();
        assert_eq!(got.len(), files.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.path, e.path);
            match (&g.result, &e.result) {
                (Ok((_, a)), Ok((_, b))) => {
                    assert_eq!(a.model_map, b.model_map, "{}", g.path.display());
                    assert_eq!(a.score, b.score, "{}", g.path.display());
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                _ => panic!(
                    "{}: one run failed where the other did not",
                    g.path.display()
                ),
            }
        }

        let mut calls = 0;
        let stopped = inspect_pipelined(
            &inspector,
            &files,
            1,
            &ClassChoice::Auto,
            MapResolution::Model,
            |_| (),
            |outcome| {
                calls += 1;
                if calls == 2 {
                    return Err(format!("disk full at {}", outcome.path.display()));
                }
                Ok(())
            },
        );
        assert_eq!(
            stopped.unwrap_err(),
            format!("disk full at {}", files[1].display())
        );
        assert_eq!(calls, 2, "nothing is finished after the error");
        std::fs::remove_dir_all(dir).ok();
    }
}
