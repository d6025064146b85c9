//! The inference thread: it owns the compute device and the [`Inspector`]; a front end queues
//! [`Request`]s and polls [`Reply`]s, so a window never waits for a forward pass. Requests can be
//! cancelled in bulk (a new folder, a new model), and a panic inside the backend becomes that
//! image's error instead of taking the thread down.
//!
//! Each inspection carries a caller's `Tag` back with its reply (the desktop tags list images and
//! calibration images differently).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use burn::tensor::Device;

use super::inspect::{ClassChoice, Inspection, Inspector, MapResolution};
use super::source::ModelSource;
use crate::detector::Detector;
use crate::device::DeviceChoice;
use crate::error::Result;

/// Builds a detector on the worker's device (tests use it for small in-memory models).
pub type DetectorFactory = Box<dyn FnOnce(&Device) -> Result<Detector> + Send>;

/// A model for the worker to load.
pub enum ModelLoad {
    /// From a [`ModelSource`].
    Source(ModelSource),
    /// Built by a function: a name for display and the builder.
    Custom(String, DetectorFactory),
}

impl From<ModelSource> for ModelLoad {
    fn from(source: ModelSource) -> Self {
        ModelLoad::Source(source)
    }
}

impl ModelLoad {
    /// Name for display.
    pub fn describe(&self) -> String {
        match self {
            ModelLoad::Source(s) => s.describe(),
            ModelLoad::Custom(name, _) => name.clone(),
        }
    }

    fn load(self, device: &Device) -> Result<Detector> {
        match self {
            ModelLoad::Source(s) => s.load(device),
            ModelLoad::Custom(_, build) => build(device),
        }
    }
}

/// Work for the inference thread.
pub enum Request<Tag> {
    /// Replace the model.
    LoadModel(ModelLoad),
    /// Inspect one image file.
    Inspect {
        /// The caller's identifier, returned with the reply.
        id: u64,
        /// The file.
        path: PathBuf,
        /// Class to use.
        class: ClassChoice,
        /// The caller's tag, returned with the reply.
        tag: Tag,
        /// Generation it belongs to: requests older than [`Worker::cancel_pending`] are skipped.
        generation: u64,
    },
}

/// What the loaded model offers a front end.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Where it came from.
    pub source: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Calibrated threshold stored with it.
    pub threshold: Option<f32>,
    /// Where the threshold came from.
    pub threshold_source: Option<String>,
    /// The compute device, in words.
    pub device: String,
}

/// Answers from the inference thread.
#[derive(Debug)]
pub enum Reply<Tag> {
    /// The device in use (or why it could not start and the CPU is used instead).
    Device(String),
    /// A model load finished.
    Model(std::result::Result<ModelInfo, String>),
    /// An inspection finished.
    Inspected {
        /// Request id.
        id: u64,
        /// Its tag.
        tag: Tag,
        /// The result, or the error in words (naming the file).
        result: std::result::Result<Inspection, String>,
    },
}

/// Handle to the inference thread; dropping it cancels what is queued and joins the thread.
pub struct Worker<Tag: Send + 'static> {
    tx: Option<Sender<Request<Tag>>>,
    rx: Receiver<Reply<Tag>>,
    generation: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl<Tag: Send + 'static> Worker<Tag> {
    /// Start the thread on the given device; `wake` is called after each reply (a UI passes its
    /// repaint request). When the device cannot start, the CPU backend is used and a
    /// [`Reply::Device`] says why.
    pub fn spawn(device: DeviceChoice, wake: impl Fn() + Send + 'static) -> Self {
        let (tx, requests) = channel::<Request<Tag>>();
        let (replies, rx) = channel::<Reply<Tag>>();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let thread = std::thread::Builder::new()
            .name("hvq-inference".into())
            .spawn(move || run(device, requests, replies, current, wake))
            .expect("spawning the inference thread");
        Self {
            tx: Some(tx),
            rx,
            generation,
            thread: Some(thread),
        }
    }

    /// The current generation (stamp new inspection requests with it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Drop every inspection request queued so far (their replies never come).
    pub fn cancel_pending(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queue a request.
    pub fn send(&self, request: Request<Tag>) {
        if let Some(tx) = &self.tx {
            // The thread only ends when this handle drops; a failed send means it stopped,
            // which the next `poll` reports.
            let _ = tx.send(request);
        }
    }

    /// Queue a model load.
    pub fn load(&self, model: impl Into<ModelLoad>) {
        self.send(Request::LoadModel(model.into()));
    }

    /// Queue an inspection in the current generation.
    pub fn inspect(&self, id: u64, path: PathBuf, class: ClassChoice, tag: Tag) {
        self.send(Request::Inspect {
            id,
            path,
            class,
            tag,
            generation: self.generation(),
        });
    }

    /// Replies received so far, without waiting.
    pub fn poll(&self) -> Vec<Reply<Tag>> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(r) => out.push(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if self.tx.is_some() {
                        out.push(Reply::Model(Err("the inference thread stopped".into())));
                    }
                    break;
                }
            }
        }
        out
    }

    /// Wait for the next reply (tests, command-line tools).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Reply<Tag>> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl<Tag: Send + 'static> Drop for Worker<Tag> {
    fn drop(&mut self) {
        self.cancel_pending();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn device_name(d: &Device) -> String {
    format!("{d:?}")
}

/// Inspect one file: decode, run; the map at the model's resolution only (the one at the
/// image's is `overlay::resize_map` of it, computed when needed: a list of thousands of
/// photos keeps 200 kB per image, not 4 bytes per pixel). A panic inside the backend becomes an error naming the file,
/// so a bad image never takes the thread down.
pub fn inspect_file(
    inspector: &Inspector,
    path: &Path,
    class: &ClassChoice,
) -> std::result::Result<Inspection, String> {
    let run = || -> Result<Inspection> {
        let img = crate::preprocess::load(path)?;
        inspector.inspect_at(&img, class, MapResolution::Model)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(format!(
            "{}: inference failed inside the backend ({}); this is a bug in hvq, please report it \
             with the image",
            path.display(),
            crate::device::panic_capture::payload_text(p.as_ref())
        )),
    }
}

fn run<Tag>(
    choice: DeviceChoice,
    requests: Receiver<Request<Tag>>,
    replies: Sender<Reply<Tag>>,
    generation: Arc<AtomicU64>,
    wake: impl Fn(),
) {
    let send = |r: Reply<Tag>| {
        let _ = replies.send(r);
        wake();
    };
    let device = match crate::device::create(choice) {
        Ok(d) => {
            send(Reply::Device(device_name(&d)));
            d
        }
        Err(e) => {
            let d = Device::flex();
            send(Reply::Device(format!(
                "{} ({choice:?} unavailable: {e})",
                device_name(&d)
            )));
            d
        }
    };
    let mut inspector: Option<Inspector> = None;
    while let Ok(request) = requests.recv() {
        match request {
            Request::LoadModel(model) => {
                let name = model.describe();
                inspector = None;
                let loaded =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load(&device)));
                let reply = match loaded {
                    Ok(Ok(detector)) => {
                        let calibration = detector.calibration.as_ref();
                        let info = ModelInfo {
                            source: name,
                            classes: detector.config.hvq.class_names.clone(),
                            threshold: calibration.map(|c| c.threshold),
                            threshold_source: calibration.map(|c| c.source.clone()),
                            device: device_name(&device),
                        };
                        inspector = Some(Inspector::new(detector, device.clone()));
                        Ok(info)
                    }
                    Ok(Err(e)) => Err(format!("{name}: {e}")),
                    Err(p) => Err(format!(
                        "{name}: loading failed inside the backend ({})",
                        crate::device::panic_capture::payload_text(p.as_ref())
                    )),
                };
                send(Reply::Model(reply));
            }
            Request::Inspect {
                id,
                path,
                class,
                tag,
                generation: g,
            } => {
                if g < generation.load(Ordering::SeqCst) {
                    continue;
                }
                let result = match &inspector {
                    Some(ins) => inspect_file(ins, &path, &class),
                    None => Err("no model loaded".into()),
                };
                // Cancelled while running: drop the answer too.
                if g < generation.load(Ordering::SeqCst) {
                    continue;
                }
                send(Reply::Inspected { id, tag, result });
            }
        }
    }
}
