//! The image list: entries, their order (sort key and direction), selection and counts.

use std::cmp::Ordering;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Outcome, Status, Verdict, verdict};

/// One image of the list.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Stable identifier (the worker's replies carry it).
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// Its state.
    pub status: Status,
}

impl Entry {
    /// File name for display.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The score, once inspected.
    pub fn score(&self) -> Option<f32> {
        match &self.status {
            Status::Done(o) => Some(o.score),
            _ => None,
        }
    }

    /// Verdict under `threshold`.
    pub fn verdict(&self, threshold: Option<f32>) -> Verdict {
        match &self.status {
            Status::Queued => Verdict::Pending,
            Status::Failed(_) => Verdict::Error,
            Status::Done(o) => verdict(o.score, threshold),
        }
    }
}

/// Column the list is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortKey {
    /// File name.
    #[default]
    Name,
    /// Image score (pending and failed images last).
    Score,
    /// Verdict, then score.
    Verdict,
}

/// Direction of the sort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// Counts for the status bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Images in the list.
    pub total: usize,
    /// Still waiting.
    pub queued: usize,
    /// Judged normal.
    pub normal: usize,
    /// Judged anomalous.
    pub anomalous: usize,
    /// Unreadable or failed.
    pub errors: usize,
}

/// The list of images, its order and the selection.
#[derive(Clone, Debug, Default)]
pub struct ImageList {
    entries: Vec<Entry>,
    /// Indices into `entries` in display order.
    order: Vec<usize>,
    next_id: u64,
    /// Selected entry id.
    pub selected: Option<u64>,
    /// Sort column.
    pub sort: SortKey,
    /// Sort direction.
    pub sort_order: SortOrder,
}

impl ImageList {
    /// An empty list with this order.
    pub fn new(sort: SortKey, sort_order: SortOrder) -> Self {
        Self {
            sort,
            sort_order,
            ..Default::default()
        }
    }

    /// Entries in display order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().map(|&i| &self.entries[i])
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No images.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry by id.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The selected entry.
    pub fn selected_entry(&self) -> Option<&Entry> {
        self.selected.and_then(|id| self.get(id))
    }

    /// Add files (duplicates of paths already listed are skipped); returns the new entries'
    /// ids and paths, to be sent to the worker. The first image is selected if none was.
    pub fn add(&mut self, paths: impl IntoIterator<Item = PathBuf>) -> Vec<(u64, PathBuf)> {
        let mut added = Vec::new();
        for path in paths {
            if self.entries.iter().any(|e| e.path == path) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.entries.push(Entry {
                id,
                path: path.clone(),
                status: Status::Queued,
            });
            added.push((id, path));
        }
        self.resort(None);
        if self.selected.is_none() {
            self.selected = self.order.first().map(|&i| self.entries[i].id);
        }
        added
    }

    /// Record a failure to even list a file (e.g. an unreadable folder) as an entry.
    pub fn add_failed(&mut self, path: PathBuf, error: String) {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            path,
            status: Status::Failed(error),
        });
        self.resort(None);
    }

    /// Store the worker's answer for `id` (ignored when the entry is gone).
    pub fn set_result(
        &mut self,
        id: u64,
        result: std::result::Result<Outcome, String>,
        threshold: Option<f32>,
    ) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.status = match result {
                Ok(o) => Status::Done(o),
                Err(msg) => Status::Failed(msg),
            };
        }
        self.resort(threshold);
    }

    /// Mark every image for inspection again (class or model changed); returns the work.
    pub fn requeue_all(&mut self) -> Vec<(u64, PathBuf)> {
        for e in &mut self.entries {
            e.status = Status::Queued;
        }
        self.entries
            .iter()
            .map(|e| (e.id, e.path.clone()))
            .collect()
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.selected = None;
    }

    /// Sort by `key`; choosing the current key again flips the direction.
    pub fn sort_by(&mut self, key: SortKey, threshold: Option<f32>) {
        if self.sort == key {
            self.sort_order = match self.sort_order {
                SortOrder::Ascending => SortOrder::Descending,
                SortOrder::Descending => SortOrder::Ascending,
            };
        } else {
            self.sort = key;
            self.sort_order = match key {
                SortKey::Name => SortOrder::Ascending,
                SortKey::Score | SortKey::Verdict => SortOrder::Descending,
            };
        }
        self.resort(threshold);
    }

    /// Recompute the display order (stable; ties by name). Images without a score always come
    /// after scored ones when sorting by score.
    pub fn resort(&mut self, threshold: Option<f32>) {
        let entries = &self.entries;
        let mut order: Vec<usize> = (0..entries.len()).collect();
        let desc = self.sort_order == SortOrder::Descending;
        let dir = |o: Ordering| if desc { o.reverse() } else { o };
        let by_name = |a: &Entry, b: &Entry| a.path.cmp(&b.path);
        order.sort_by(|&a, &b| {
            let (a, b) = (&entries[a], &entries[b]);
            match self.sort {
                SortKey::Name => dir(by_name(a, b)),
                SortKey::Score => match (a.score(), b.score()) {
                    (Some(x), Some(y)) => dir(x.total_cmp(&y)).then_with(|| by_name(a, b)),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => by_name(a, b),
                },
                SortKey::Verdict => {
                    // Descending: anomalous first, then normal; pending and errors at the end.
                    let rank = |e: &Entry| match e.verdict(threshold) {
                        Verdict::Anomalous => 3,
                        Verdict::Uncalibrated => 2,
                        Verdict::Normal => 1,
                        Verdict::Error => 0,
                        Verdict::Pending => -1,
                    };
                    dir(rank(a).cmp(&rank(b)))
                        .then_with(|| {
                            dir(a
                                .score()
                                .unwrap_or(0.0)
                                .total_cmp(&b.score().unwrap_or(0.0)))
                        })
                        .then_with(|| by_name(a, b))
                }
            }
        });
        self.order = order;
    }

    /// Move the selection `delta` rows in display order (clamped); selects the first row when
    /// nothing is selected.
    pub fn move_selection(&mut self, delta: isize) {
        if self.order.is_empty() {
            return;
        }
        let pos = self
            .selected
            .and_then(|id| self.order.iter().position(|&i| self.entries[i].id == id));
        let next = match pos {
            None => 0,
            Some(p) => (p as isize + delta).clamp(0, self.order.len() as isize - 1) as usize,
        };
        self.selected = Some(self.entries[self.order[next]].id);
    }

    /// Select the first (`false`) or last (`true`) row.
    pub fn select_end(&mut self, last: bool) {
        let idx = if last {
            self.order.last()
        } else {
            self.order.first()
        };
        self.selected = idx.map(|&i| self.entries[i].id);
    }

    /// Counts under `threshold`.
    pub fn counts(&self, threshold: Option<f32>) -> Counts {
        let mut c = Counts {
            total: self.entries.len(),
            ..Default::default()
        };
        for e in &self.entries {
            match e.verdict(threshold) {
                Verdict::Pending => c.queued += 1,
                Verdict::Normal => c.normal += 1,
                Verdict::Anomalous => c.anomalous += 1,
                Verdict::Error => c.errors += 1,
                Verdict::Uncalibrated => {}
            }
        }
        c
    }

    /// Scores of all inspected images, in list order.
    pub fn scores(&self) -> Vec<f32> {
        self.iter().filter_map(Entry::score).collect()
    }
}
