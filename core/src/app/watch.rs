//! Watching a folder: images are inspected as they appear (once completely written), each result
//! appended to `results.jsonl` and `results.csv` in the output folder, and the image optionally
//! moved or linked into a folder per verdict. What `hvq watch` runs next to a line camera.
//!
//! - **Complete files only.** A file is taken once its size and modification time have not
//!   changed for `settle` (seen unchanged across scans that long, or last modified that long
//!   ago when first seen). A file that then still fails to decode gets an error row; if it
//!   changes afterwards (a copy that had stalled), it is inspected again.
//! - **Restarts.** `results.jsonl` is the record of what was done: one line per image, written
//!   and flushed before the image is moved. On start it is read back (a line cut short by a kill
//!   is dropped, so that image is inspected again), files already recorded with the same size
//!   and time are skipped, a move the kill interrupted is finished, and `results.csv` is
//!   rewritten from it (so the two tables always agree).
//! - **Bad files never stop it.** An unreadable image is an error row (and goes to `error/` when
//!   sorting); only a failure to write the outputs stops the watch (then nothing is lost: a
//!   restart carries on).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::files::inspect_files;
use super::images::is_image_path;
use super::inspect::{ClassChoice, Inspector, MapResolution};
use super::results::{OutputNames, RESULTS_CSV, ResultRow, csv_row, to_csv, write_image_outputs};
use crate::error::{HvqError, Result};

/// The record of a watch, one JSON line per image.
pub const RESULTS_JSONL: &str = "results.jsonl";

/// Where inspected images go, if anywhere (folders `normal/`, `anomalous/`, `uncalibrated/`,
/// `error/` in the output folder: the verdict's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortImages {
    /// Moved out of the watched folder.
    Move,
    /// Hard-linked (copied where a link cannot be made, e.g. across file systems); the
    /// watched folder keeps them.
    Link,
}

impl std::str::FromStr for SortImages {
    type Err = HvqError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "move" => Ok(Self::Move),
            "link" => Ok(Self::Link),
            other => Err(HvqError::Config(format!(
                "--sort {other:?}: use move or link"
            ))),
        }
    }
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The folder images appear in (its own files; not subfolders).
    pub dir: PathBuf,
    /// The output folder (tables, overlays, sorted images).
    pub out: PathBuf,
    /// Class to use.
    pub class: ClassChoice,
    /// Images per pass through the model.
    pub batch: usize,
    /// How long a file must stay unchanged to count as completely written.
    pub settle: Duration,
    /// Write the maps (`.npy`) beside the overlays.
    pub maps: bool,
    /// Sort inspected images into verdict folders.
    pub sort: Option<SortImages>,
}

/// A file's size and modification time: a file whose stamp changed is another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    bytes: u64,
    modified_ns: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            bytes: meta.len(),
            modified_ns,
        }
    }

    /// How long ago the file was last modified (zero for a time in the future).
    fn age(&self) -> Duration {
        let modified = SystemTime::UNIX_EPOCH + Duration::from_nanos(self.modified_ns);
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO)
    }
}

/// One line of `results.jsonl`: the shared result row plus what the watch needs to resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchRecord {
    /// The result (the same columns as `results.csv`).
    #[serde(flatten)]
    pub row: ResultRow,
    /// Output stem of this image (its overlay is `<stem>_overlay.png`; sorted, it is
    /// `<verdict>/<stem>.<extension>`).
    pub stem: String,
    /// Where the image is sorted to, relative to the output folder.
    pub sorted: Option<String>,
    /// The file as inspected.
    stamp: Stamp,
}

/// What a [`Watch::step`] reports as it goes.
#[derive(Debug)]
pub enum WatchEvent<'a> {
    /// An image was inspected and recorded.
    Recorded(&'a WatchRecord),
    /// Something went wrong that does not stop the watch (an image that vanished before it
    /// could be sorted, say).
    Warning(String),
}

/// A folder being watched: call [`Watch::step`] again and again.
pub struct Watch {
    options: WatchOptions,
    inspector: Inspector,
    /// Recorded images by path, with the stamp they had.
    done: HashMap<PathBuf, WatchRecord>,
    /// Files seen but not yet complete: the stamp and when it was first seen unchanged.
    pending: HashMap<PathBuf, (Stamp, std::time::Instant)>,
    names: OutputNames,
    jsonl: File,
    csv: File,
}

impl Watch {
    /// Open the output folder, reading back what an earlier run recorded.
    pub fn open(options: WatchOptions, inspector: Inspector) -> Result<Self> {
        if options.batch == 0 {
            return Err(HvqError::Config("the batch must be at least 1".into()));
        }
        let out = &options.out;
        std::fs::create_dir_all(out).map_err(|e| HvqError::io(out, e))?;
        let jsonl_path = out.join(RESULTS_JSONL);
        let records = read_records(&jsonl_path)?;
        let mut names = OutputNames::default();
        let mut done = HashMap::new();
        for record in &records {
            names.reserve(record.stem.clone());
            done.insert(PathBuf::from(&record.row.image), record.clone());
        }
        // The CSV table is rebuilt from the record, so a kill between the two appends never
        // leaves them disagreeing.
        let rows: Vec<ResultRow> = records.into_iter().map(|r| r.row).collect();
        crate::fs::write_atomic(&out.join(RESULTS_CSV), to_csv(&rows).as_bytes())?;
        let append = |path: &Path| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| HvqError::io(path, e))
        };
        let jsonl = append(&jsonl_path)?;
        let csv = append(&out.join(RESULTS_CSV))?;
        Ok(Self {
            options,
            inspector,
            done,
            pending: HashMap::new(),
            names,
            jsonl,
            csv,
        })
    }

    /// How many images the record holds (this run's and earlier runs').
    pub fn recorded(&self) -> usize {
        self.done.len()
    }

    /// Files of the watched folder seen but not yet complete.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Scan the folder once and inspect every image that is complete and not recorded yet, a
    /// batch at a time, reporting each to `on_event` once recorded. Returns how many images were
    /// recorded. An error means the outputs could not be written.
    pub fn step(&mut self, mut on_event: impl FnMut(WatchEvent<'_>)) -> Result<usize> {
        let ready = self.scan(&mut on_event)?;
        let mut count = 0;
        for chunk in ready.chunks(self.options.batch) {
            let paths: Vec<PathBuf> = chunk.iter().map(|(p, _)| p.clone()).collect();
            let inspected = inspect_files(
                &self.inspector,
                &paths,
                &self.options.class,
                MapResolution::Model,
                |_| (),
            );
            for (file, (_, stamp)) in inspected.into_iter().zip(chunk) {
                let stem = self.names.stem(&file.path);
                let row = match &file.result {
                    Ok((img, r)) => {
                        let mut row = ResultRow::inspected(&file.path, r, r.threshold);
                        let (overlay, map) = write_image_outputs(
                            &self.options.out,
                            &stem,
                            img,
                            r,
                            self.options.maps,
                        )?;
                        row.overlay = Some(overlay);
                        row.map = map;
                        row
                    }
                    Err(e) => ResultRow::failed(&file.path, e),
                };
                let mut record = WatchRecord {
                    row,
                    stem,
                    sorted: None,
                    stamp: *stamp,
                };
                let target = self
                    .options
                    .sort
                    .map(|_| self.sorted_path(&record, &file.path));
                record.sorted = target.as_ref().map(|t| self.relative(t));
                self.record(&record)?;
                if let (Some(mode), Some(target)) = (self.options.sort, &target)
                    && let Err(e) = place(mode, &file.path, target)
                {
                    on_event(WatchEvent::Warning(e.to_string()));
                }
                on_event(WatchEvent::Recorded(&record));
                self.pending.remove(&file.path);
                self.done.insert(file.path, record);
                count += 1;
            }
        }
        Ok(count)
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.options.out)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Append the record (the commit point: flushed to the disk before anything else happens
    /// to the image) and its CSV row.
    fn record(&mut self, record: &WatchRecord) -> Result<()> {
        let jsonl_path = self.options.out.join(RESULTS_JSONL);
        let mut line = serde_json::to_string(record)
            .map_err(|e| HvqError::Config(format!("{}: {e}", jsonl_path.display())))?;
        line.push('\n');
        self.jsonl
            .write_all(line.as_bytes())
            .and_then(|()| self.jsonl.sync_data())
            .map_err(|e| HvqError::io(&jsonl_path, e))?;
        let csv_path = self.options.out.join(RESULTS_CSV);
        self.csv
            .write_all(csv_row(&record.row).as_bytes())
            .and_then(|()| self.csv.flush())
            .map_err(|e| HvqError::io(&csv_path, e))
    }

    fn sorted_path(&self, record: &WatchRecord, source: &Path) -> PathBuf {
        let extension = source
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        self.options
            .out
            .join(record.row.verdict.as_str())
            .join(format!("{}{extension}", record.stem))
    }

    /// The complete, unrecorded images of the folder, in name order, with their stamps; moves
    /// that a kill interrupted are finished on the way.
    fn scan(&mut self, on_event: &mut impl FnMut(WatchEvent<'_>)) -> Result<Vec<(PathBuf, Stamp)>> {
        let dir = &self.options.dir;
        // A folder that is briefly missing (a network share reconnecting) is not an error: the
        // next scan looks again.
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(Vec::new());
        };
        let mut files: Vec<(PathBuf, std::fs::Metadata)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_image_path(p) && !is_hidden(p))
            .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m)))
            .filter(|(_, m)| m.is_file())
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let now = std::time::Instant::now();
        let settle = self.options.settle;
        let mut ready = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (path, meta) in files {
            let stamp = Stamp::of(&meta);
            present.insert(path.clone());
            if self.done.get(&path).is_some_and(|r| r.stamp == stamp) {
                if let Err(e) = self.finish_sort(&path) {
                    on_event(WatchEvent::Warning(e.to_string()));
                }
                continue;
            }
            let since = match self.pending.get(&path) {
                Some((seen, since)) if *seen == stamp => *since,
                _ if stamp.age() >= settle => now - settle,
                _ => now,
            };
            self.pending.insert(path.clone(), (stamp, since));
            if now.duration_since(since) >= settle {
                ready.push((path, stamp));
            }
        }
        self.pending.retain(|p, _| present.contains(p));
        Ok(ready)
    }

    /// A recorded image still in the watched folder although it was to be moved (the watch was
    /// stopped between recording and moving it): move it now. Links are made again if missing.
    fn finish_sort(&mut self, path: &Path) -> Result<()> {
        let Some(mode) = self.options.sort else {
            return Ok(());
        };
        let Some(record) = self.done.get(path) else {
            return Ok(());
        };
        let target = self.sorted_path(record, path);
        if mode == SortImages::Move || !target.exists() {
            place(mode, path, &target)?;
        }
        Ok(())
    }
}

/// Dot files are what copy tools write before renaming (`.photo.png.XXXX`).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn place(mode: SortImages, source: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| HvqError::io(parent, e))?;
    }
    let result = match mode {
        SortImages::Move => std::fs::rename(source, target).or_else(|_| {
            // Another file system: copy, then remove.
            std::fs::copy(source, target).and_then(|_| std::fs::remove_file(source))
        }),
        SortImages::Link => {
            if target.exists() {
                std::fs::remove_file(target).ok();
            }
            std::fs::hard_link(source, target)
                .or_else(|_| std::fs::copy(source, target).map(|_| ()))
        }
    };
    result.map_err(|e| HvqError::io(target, e))
}

/// The records of an earlier run; a last line cut short (the process was killed while writing
/// it) is dropped from the file, so that image is inspected again.
fn read_records(path: &Path) -> Result<Vec<WatchRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HvqError::io(path, e)),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    if complete.len() != text.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| HvqError::io(path, e))?;
        file.set_len(complete.len() as u64)
            .map_err(|e| HvqError::io(path, e))?;
    }
    complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                HvqError::Config(format!(
                    "{} line {}: not a watch record ({e}); move the file away to start afresh",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}
