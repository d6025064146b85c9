//! The `auto` product routine's choices kept between processes (`HVQ_PRODUCT_CHOICES`): a JSON
//! file of the kinds of product a build of hvq timed on each GPU, read by later processes of the
//! same build instead of timing again.
//!
//! Why: timed per process, the choice cost every process its first batch (each kind launched
//! on four routines a few dozen times, the tiled kernel compiled in every variant), which a
//! one-image `hvq predict` or a freshly opened inspector pays in full; and two processes could
//! choose apart where a kind's times sit near the margin, so the same image could score
//! differently in the last bits from one run to the next. Kept, the first process's choice
//! holds for every later one on that GPU: the same routines, the same scores.
//!
//! Entries are keyed by the adapter's name (two GPUs of one model share them) and the operands'
//! shapes and strides, and filed under the build that timed them: a rebuilt hvq (its
//! executable's size or modification time changed, or another version) may have other kernels,
//! so it reads only its own entries. The file keeps the [`BUILDS_KEPT`] builds written most
//! recently (the CLI and the desktop inspector are two builds sharing it; older ones are
//! dropped). Writes are atomic (`fs::write_atomic`) and merge what other processes wrote
//! meanwhile. A file that cannot be read as one is replaced, with a warning naming it; one that
//! cannot be written leaves the choices in the process only.
// A build without a GPU backend reads the variable (a typo is still refused) but times nothing.
#![cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::attention_choice::AttentionTiming;
use super::product_choice::ProductTiming;
use super::train_attention_choice::TrainAttentionTiming;
use crate::error::{HvqError, Result};

/// The variable: a file path, or `off` (time per process, keep nothing).
pub const VARIABLE: &str = "HVQ_PRODUCT_CHOICES";

/// The file's name in the cache directory when the variable is unset.
const FILE_NAME: &str = "product-choices.json";

/// Where the variable (or, unset, the user's cache directory: `$XDG_CACHE_HOME/hvq`, else
/// `$HOME/.cache/hvq`) says to keep the choices; `None` for `off` or where no cache directory is
/// known.
pub fn path_from_environment() -> Result<Option<PathBuf>> {
    crate::env_setting::read(
        VARIABLE,
        default_path(|name| std::env::var_os(name)),
        parse_path,
    )
}

/// The variable's value: `off` or a path.
fn parse_path(value: &str) -> Result<Option<PathBuf>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        Ok(None)
    } else if value.is_empty() {
        Err(HvqError::Config(format!(
            "{VARIABLE} is empty: expected a file path or `off`"
        )))
    } else {
        Ok(Some(PathBuf::from(value)))
    }
}

/// The file in the cache directory the environment (`variable`) names, if any.
fn default_path(variable: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let non_empty = |name| variable(name).filter(|v| !v.is_empty());
    let cache = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("hvq").join(FILE_NAME))
}

/// This build's identity: the version and the running executable's size and modification time
/// (`None` where the executable cannot be found: nothing is kept).
pub fn this_build() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "hvq {} ({} bytes, modified {}.{:09})",
        env!("CARGO_PKG_VERSION"),
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    ))
}

/// The builds whose choices a file keeps, the most recently written first.
pub const BUILDS_KEPT: usize = 4;

/// The file's contents.
#[derive(Default, Serialize, Deserialize)]
struct Contents {
    /// Each build's kinds, the build written most recently first.
    #[serde(default)]
    builds: Vec<BuildKinds>,
}

/// The kinds one build timed.
#[derive(Clone, Serialize, Deserialize)]
pub struct BuildKinds {
    /// The build ([`this_build`]).
    build: String,
    /// Every kind of product it timed, in the order first kept.
    kinds: Vec<Kept<ProductTiming>>,
    /// Every kind of inference attention it timed (`attention_choice`), in the order first
    /// kept (absent from files written before attention was timed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attention: Vec<Kept<AttentionTiming>>,
    /// Every kind of training attention it timed (`train_attention_choice`), in the order
    /// first kept (absent from files written before training attention was timed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    train_attention: Vec<Kept<TrainAttentionTiming>>,
}

/// One kind as kept: the adapter it was timed on and its timing (whose `device` is the timing
/// process's name for it, not read back).
#[derive(Clone, Serialize, Deserialize)]
pub struct Kept<T> {
    adapter: String,
    #[serde(flatten)]
    timing: T,
}

/// A kind of choice the file keeps: products ([`ProductTiming`]), inference attention
/// ([`AttentionTiming`]) and training attention ([`TrainAttentionTiming`]), each in its own
/// list of a build's entry.
pub trait Choice: Clone + Serialize + serde::de::DeserializeOwned {
    /// What identifies the kind on an adapter: its operands' shapes and strides (and whatever
    /// else decides the kernel's work).
    fn operands(&self) -> Vec<&[usize]>;
    /// The timing as a process that found it kept sees it: on its `device`, marked stored.
    fn found_on(self, device: &str) -> Self;
    /// The timing as it is kept: not marked stored (the mark is for the process that reads it).
    fn unmarked(self) -> Self;
    /// This kind's list in a build's entry.
    fn kept_in(build: &BuildKinds) -> &Vec<Kept<Self>>;
    /// The same, to change.
    fn kept_in_mut(build: &mut BuildKinds) -> &mut Vec<Kept<Self>>;
}

impl Choice for ProductTiming {
    fn operands(&self) -> Vec<&[usize]> {
        product_operands(
            [&self.lhs, &self.lhs_strides],
            [&self.rhs, &self.rhs_strides],
            self.epilogue,
        )
    }
    fn found_on(self, device: &str) -> Self {
        ProductTiming {
            device: device.to_string(),
            stored: true,
            ..self
        }
    }
    fn unmarked(self) -> Self {
        ProductTiming {
            stored: false,
            ..self
        }
    }
    fn kept_in(build: &BuildKinds) -> &Vec<Kept<Self>> {
        &build.kinds
    }
    fn kept_in_mut(build: &mut BuildKinds) -> &mut Vec<Kept<Self>> {
        &mut build.kinds
    }
}

impl Choice for AttentionTiming {
    fn operands(&self) -> Vec<&[usize]> {
        vec![
            std::slice::from_ref(&self.heads),
            &self.q,
            &self.q_strides,
            &self.k,
            &self.k_strides,
            &self.v,
            &self.v_strides,
        ]
    }
    fn found_on(self, device: &str) -> Self {
        AttentionTiming {
            device: device.to_string(),
            stored: true,
            ..self
        }
    }
    fn unmarked(self) -> Self {
        AttentionTiming {
            stored: false,
            ..self
        }
    }
    fn kept_in(build: &BuildKinds) -> &Vec<Kept<Self>> {
        &build.attention
    }
    fn kept_in_mut(build: &mut BuildKinds) -> &mut Vec<Kept<Self>> {
        &mut build.attention
    }
}

impl Choice for TrainAttentionTiming {
    fn operands(&self) -> Vec<&[usize]> {
        super::train_attention_choice::operands(&self.heads, &self.inputs)
    }
    fn found_on(self, device: &str) -> Self {
        TrainAttentionTiming {
            device: device.to_string(),
            stored: true,
            ..self
        }
    }
    fn unmarked(self) -> Self {
        TrainAttentionTiming {
            stored: false,
            ..self
        }
    }
    fn kept_in(build: &BuildKinds) -> &Vec<Kept<Self>> {
        &build.train_attention
    }
    fn kept_in_mut(build: &mut BuildKinds) -> &mut Vec<Kept<Self>> {
        &mut build.train_attention
    }
}

/// What identifies a kind of product on an adapter, as [`Choice::operands`] lists it: the
/// operands' shapes and strides, then its epilogue ([`ProductTiming::epilogue`]: one value for
/// a kind timed with the epilogue, none for one without). For the timings and for the kinds
/// looked up before they are timed alike.
pub(super) fn product_operands<'a>(
    [lhs, lhs_strides]: [&'a [usize]; 2],
    [rhs, rhs_strides]: [&'a [usize]; 2],
    epilogue: bool,
) -> Vec<&'a [usize]> {
    let mark: &[usize] = if epilogue { &[1] } else { &[] };
    vec![lhs, lhs_strides, rhs, rhs_strides, mark]
}

/// The operands of a kind, as [`Choice::operands`] lists them.
pub type Operands<'a> = &'a [&'a [usize]];

/// Whether `kept` is the kind on `adapter` with these operands.
fn is_kind<T: Choice>(kept: &Kept<T>, adapter: &str, wanted: Operands) -> bool {
    kept.adapter == adapter && kept.timing.operands() == wanted
}

/// The kept choices of one file for one build, read on first use.
pub struct Store {
    path: PathBuf,
    build: String,
    /// This build's entry as last read or written (`None`: not read yet).
    read: Option<BuildKinds>,
}

impl Store {
    /// The store at `path` for `build` ([`this_build`]); nothing is read yet.
    pub fn new(path: PathBuf, build: String) -> Self {
        Store {
            path,
            build,
            read: None,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind on `adapter` with these operands as kept by an earlier process of this build,
    /// as a timing on `device` (this process's name for it) marked `stored`; `None` if it was
    /// not kept. (A linear search: a process asks once per kind, of a few dozen.)
    pub fn find<T: Choice>(&mut self, adapter: &str, device: &str, wanted: Operands) -> Option<T> {
        let build = match &self.read {
            Some(build) => build,
            None => {
                let mine = self
                    .read_file()
                    .builds
                    .into_iter()
                    .find(|b| b.build == self.build)
                    .unwrap_or_else(|| BuildKinds::new(&self.build));
                self.read.insert(mine)
            }
        };
        let found = T::kept_in(build)
            .iter()
            .find(|k| is_kind(k, adapter, wanted))?;
        Some(found.timing.clone().found_on(device))
    }

    /// Keep `timing` (timed on `adapter`): the file rewritten with what it holds now (other
    /// processes' kinds, other builds') and this one, this build first.
    pub fn keep<T: Choice>(&mut self, adapter: &str, timing: &T) -> Result<()> {
        let mut contents = self.read_file();
        let at = contents.builds.iter().position(|b| b.build == self.build);
        let mut mine = match at {
            Some(at) => contents.builds.remove(at),
            None => BuildKinds::new(&self.build),
        };
        let kept = T::kept_in_mut(&mut mine);
        kept.retain(|k| !is_kind(k, adapter, &timing.operands()));
        kept.push(Kept {
            adapter: adapter.to_string(),
            timing: timing.clone().unmarked(),
        });
        contents.builds.insert(0, mine.clone());
        contents.builds.truncate(BUILDS_KEPT);
        let json = serde_json::to_string_pretty(&contents)
            .map_err(|e| HvqError::Config(format!("{}: {e}", self.path.display())))?;
        crate::fs::write_atomic(&self.path, json.as_bytes())?;
        self.read = Some(mine);
        Ok(())
    }

    /// The file's contents: none when it is missing; a file that is not a store's is reported
    /// (it will be replaced) and read as none.
    fn read_file(&self) -> Contents {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Contents::default(),
            Err(e) => {
                warn(&format!("cannot read {}: {e}", self.path.display()));
                return Contents::default();
            }
        };
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn(&format!(
                "{} is not a file of product choices ({e}); it will be replaced",
                self.path.display()
            ));
            Contents::default()
        })
    }
}

impl BuildKinds {
    fn new(build: &str) -> Self {
        BuildKinds {
            build: build.to_string(),
            kinds: Vec::new(),
            attention: Vec::new(),
            train_attention: Vec::new(),
        }
    }
}

/// Held by the tests that point the process's kept choices at a file of their own: the
/// products' `keep_choices_in` sets inference and training attention's stores too, so a test
/// of one kind running beside a test of another would otherwise swap the file under it.
#[cfg(all(test, feature = "wgpu"))]
pub(crate) fn test_file_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A problem with the store, on standard error: it never stops the work (the choices are then
/// timed, or kept, in the process only).
pub fn warn(message: &str) {
    eprintln!("warning: {VARIABLE}: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::product_choice::ProductRoutine;

    fn timing(rows: usize, runs_on: ProductRoutine) -> ProductTiming {
        ProductTiming {
            device: "DefaultDevice".into(),
            lhs: vec![rows, 64],
            lhs_strides: vec![64, 1],
            rhs: vec![64, 32],
            rhs_strides: vec![1, 64],
            burn_us: 10.0,
            tiled_us: [
                (ProductRoutine::Tiled64, 8.0),
                (ProductRoutine::Quads64, 7.5),
            ]
            .into(),
            runs_on,
            epilogue: false,
            stored: false,
        }
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hvq-store-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir.join("nested").join(FILE_NAME)
    }

    /// A kind kept by one store is found by another of the same build on the same adapter
    /// (marked stored, with the finder's device name), not on another adapter, nor by another
    /// build, nor as the same operands with an epilogue; two stores writing in turn keep both
    /// their kinds (merged, not overwritten); the same kind kept again replaces its entry.
    #[test]
    fn kept_kinds_are_found_by_later_stores_of_the_same_build_and_adapter() {
        let path = temp_file("keep");
        let mut first = Store::new(path.clone(), "build A".into());
        let find = |store: &mut Store, adapter: &str, t: &ProductTiming| {
            store.find::<ProductTiming>(adapter, "Wgpu(DiscreteGpu(1))", &t.operands())
        };
        assert!(find(&mut first, "GPU", &timing(100, ProductRoutine::Burn)).is_none());
        first
            .keep("GPU", &timing(100, ProductRoutine::Tiled64))
            .unwrap();
        let mut second = Store::new(path.clone(), "build A".into());
        second
            .keep("GPU", &timing(200, ProductRoutine::Tiled128))
            .unwrap();
        // The first store wrote before the second: it merges the second's kind on its next write.
        first
            .keep("GPU", &timing(100, ProductRoutine::Burn))
            .unwrap();

        let mut later = Store::new(path.clone(), "build A".into());
        let asked = timing(100, ProductRoutine::Burn);
        let found = find(&mut later, "GPU", &asked).unwrap();
        assert_eq!(found.runs_on, ProductRoutine::Burn, "kept again: replaced");
        assert!(found.stored);
        assert_eq!(found.device, "Wgpu(DiscreteGpu(1))");
        assert_eq!(
            find(&mut later, "GPU", &timing(200, ProductRoutine::Burn))
                .unwrap()
                .runs_on,
            ProductRoutine::Tiled128
        );
        assert!(find(&mut later, "Other GPU", &asked).is_none());
        let mut strides = asked.clone();
        strides.rhs_strides = vec![32, 1];
        assert!(find(&mut later, "GPU", &strides).is_none());
        // The same operands timed with a layer's epilogue are another kind.
        let with_epilogue = ProductTiming {
            epilogue: true,
            ..asked.clone()
        };
        assert!(find(&mut later, "GPU", &with_epilogue).is_none());
        let read =
            || -> Contents { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
        let contents = read();
        assert_eq!(contents.builds.len(), 1);
        assert_eq!(contents.builds[0].kinds.len(), 2);

        // Another build (the desktop inspector beside the CLI, or a rebuilt hvq) keeps its own
        // kinds beside the first build's, and reads only its own.
        let mut rebuilt = Store::new(path.clone(), "build B".into());
        assert!(find(&mut rebuilt, "GPU", &asked).is_none());
        rebuilt
            .keep("GPU", &timing(300, ProductRoutine::Tiled32))
            .unwrap();
        let builds: Vec<(String, usize)> = read()
            .builds
            .iter()
            .map(|b| (b.build.clone(), b.kinds.len()))
            .collect();
        assert_eq!(
            builds,
            [("build B".to_string(), 1), ("build A".to_string(), 2)]
        );
        let mut again = Store::new(path.clone(), "build A".into());
        assert!(find(&mut again, "GPU", &asked).is_some());
        // Only the builds written most recently stay.
        for n in 0..BUILDS_KEPT {
            Store::new(path.clone(), format!("build {n}"))
                .keep("GPU", &asked)
                .unwrap();
        }
        let contents = read();
        assert_eq!(contents.builds.len(), BUILDS_KEPT);
        assert_eq!(
            contents.builds[0].build,
            format!("build {}", BUILDS_KEPT - 1)
        );
        assert!(contents.builds.iter().all(|b| b.build != "build A"));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
    }

    /// A file that is not a store's reads as empty and is replaced by the next write; a store
    /// that cannot write (its directory is a file) says so and leaves the file system alone.
    #[test]
    fn a_damaged_or_unwritable_store_is_no_failure() {
        let path = temp_file("damaged");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            b"{\"builds\": [{\"build\": \"build A\", \"kinds\": [",
        )
        .unwrap();
        let mut store = Store::new(path.clone(), "build A".into());
        let asked = timing(100, ProductRoutine::Burn);
        let wanted = &asked.operands();
        assert!(store.find::<ProductTiming>("GPU", "gpu", wanted).is_none());
        store
            .keep("GPU", &timing(100, ProductRoutine::Tiled32))
            .unwrap();
        let mut later = Store::new(path.clone(), "build A".into());
        assert_eq!(
            later
                .find::<ProductTiming>("GPU", "gpu", wanted)
                .unwrap()
                .runs_on,
            ProductRoutine::Tiled32
        );

        let blocked = path.parent().unwrap().join("a-file");
        std::fs::write(&blocked, b"").unwrap();
        let mut store = Store::new(blocked.join(FILE_NAME), "build A".into());
        let err = store
            .keep("GPU", &timing(100, ProductRoutine::Burn))
            .unwrap_err();
        assert!(err.to_string().contains("a-file"), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).ok();
    }

    /// The variable: a path or `off` (any case); empty is refused. Unset: `hvq/` in
    /// `$XDG_CACHE_HOME`, else in `$HOME/.cache`, else nothing kept.
    #[test]
    fn the_variable_names_a_file_or_turns_keeping_off() {
        assert_eq!(
            parse_path(" /tmp/choices.json").unwrap(),
            Some(PathBuf::from("/tmp/choices.json"))
        );
        assert_eq!(parse_path(" OFF ").unwrap(), None);
        assert!(parse_path(" ").unwrap_err().to_string().contains(VARIABLE));
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            default_path(env(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/hvq/product-choices.json"))
        );
        assert_eq!(
            default_path(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/hvq/product-choices.json"))
        );
        assert_eq!(default_path(env(&[])), None);
    }
}
