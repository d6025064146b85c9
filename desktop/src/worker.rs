//! The inference thread. It owns the compute device and the [`hvq::Inspector`]; the UI sends it
//! [`Request`]s and polls its [`Reply`]s, so the window never waits for a forward pass.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use burn::tensor::Device;
use hvq::device::DeviceChoice;
use hvq::{ClassChoice, Detector, Inspector};

use crate::state::Outcome;

/// Builds a detector on the worker's device (tests use it for small in-memory models).
pub type DetectorFactory = Box<dyn FnOnce(&Device) -> hvq::Result<Detector> + Send>;

/// Which model to load.
pub enum ModelSource {
    /// The model shipped inside the binary.
    Default,
    /// A model directory (`config.json` + `model.safetensors`).
    Dir(PathBuf),
    /// Built by a function: a name for display and the builder.
    Custom(String, DetectorFactory),
}

impl ModelSource {
    /// Name for display.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Default => "default model (elpv-lite0)".into(),
            ModelSource::Dir(d) => d.display().to_string(),
            ModelSource::Custom(name, _) => name.clone(),
        }
    }
}

/// What a finished inspection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// An image of the list.
    List,
    /// A known-good image for calibration.
    Calibration,
}

/// Work for the inference thread.
pub enum Request {
    /// Replace the model.
    LoadModel(ModelSource),
    /// Inspect one image file.
    Inspect {
        /// The list entry (or calibration image) it answers.
        id: u64,
        /// The file.
        path: PathBuf,
        /// Class to use.
        class: ClassChoice,
        /// What it is for.
        purpose: Purpose,
        /// Generation it belongs to: requests older than [`Worker::cancel_pending`] are skipped.
        generation: u64,
    },
}

/// What the loaded model offers the UI.
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
pub enum Reply {
    /// The device in use (or why wgpu could not start and the CPU is used instead).
    Device(String),
    /// A model load finished.
    Model(Result<ModelInfo, String>),
    /// An inspection finished.
    Inspected {
        /// Request id.
        id: u64,
        /// Its purpose.
        purpose: Purpose,
        /// The outcome or the error, in words.
        result: Result<Outcome, String>,
    },
}

/// Handle to the inference thread.
pub struct Worker {
    tx: Option<Sender<Request>>,
    rx: Receiver<Reply>,
    generation: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start the thread on the given device kind; `wake` is called after each reply (the UI passes
    /// `ctx.request_repaint`). When wgpu cannot start, the CPU backend is used and a
    /// [`Reply::Device`] says why.
    pub fn spawn(device: DeviceChoice, wake: impl Fn() + Send + 'static) -> Self {
        let (tx, requests) = channel::<Request>();
        let (replies, rx) = channel::<Reply>();
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
    pub fn send(&self, request: Request) {
        if let Some(tx) = &self.tx {
            // The thread only ends when this handle drops; a failed send means it panicked,
            // which the next `poll` reports.
            let _ = tx.send(request);
        }
    }

    /// Queue an inspection in the current generation.
    pub fn inspect(&self, id: u64, path: PathBuf, class: ClassChoice, purpose: Purpose) {
        self.send(Request::Inspect {
            id,
            path,
            class,
            purpose,
            generation: self.generation(),
        });
    }

    /// Replies received so far, without waiting.
    pub fn poll(&self) -> Vec<Reply> {
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

    /// Wait for the next reply (tests).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Reply> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for Worker {
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

fn load(source: ModelSource, device: &Device) -> hvq::Result<Detector> {
    match source {
        ModelSource::Default => hvq::pretrained::default_model(device),
        ModelSource::Dir(dir) => Detector::load_dir(&dir, device),
        ModelSource::Custom(_, build) => build(device),
    }
}

/// Inspect one file: decode, run, keep what the list needs. Panics inside the backend become
/// errors, so a bad image never takes the thread down.
pub fn inspect_file(
    inspector: &Inspector,
    path: &std::path::Path,
    class: &ClassChoice,
) -> Result<Outcome, String> {
    let run = || -> hvq::Result<Outcome> {
        let img = hvq::preprocess::load(path)?;
        Ok(Outcome::from_inspection(inspector.inspect(&img, class)?))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "inference panicked".into())),
    }
}

fn run(
    choice: DeviceChoice,
    requests: Receiver<Request>,
    replies: Sender<Reply>,
    generation: Arc<AtomicU64>,
    wake: impl Fn(),
) {
    let send = |r: Reply| {
        let _ = replies.send(r);
        wake();
    };
    let device = match hvq::device::create(choice) {
        Ok(d) => {
            send(Reply::Device(device_name(&d)));
            d
        }
        Err(e) => {
            let d = Device::flex();
            send(Reply::Device(format!(
                "{} (wgpu unavailable: {e})",
                device_name(&d)
            )));
            d
        }
    };
    let mut inspector: Option<Inspector> = None;
    while let Ok(request) = requests.recv() {
        match request {
            Request::LoadModel(source) => {
                let name = source.describe();
                inspector = None;
                let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(source, &device)
                }));
                let reply = match loaded {
                    Ok(Ok(detector)) => {
                        let info = ModelInfo {
                            source: name,
                            classes: detector.config.hvq.class_names.clone(),
                            threshold: detector.calibration.as_ref().map(|c| c.threshold),
                            threshold_source: detector
                                .calibration
                                .as_ref()
                                .map(|c| c.source.clone()),
                            device: device_name(&device),
                        };
                        inspector = Some(Inspector::new(detector, device.clone()));
                        Ok(info)
                    }
                    Ok(Err(e)) => Err(format!("{name}: {e}")),
                    Err(_) => Err(format!("{name}: loading panicked")),
                };
                send(Reply::Model(reply));
            }
            Request::Inspect {
                id,
                path,
                class,
                purpose,
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
                send(Reply::Inspected {
                    id,
                    purpose,
                    result,
                });
            }
        }
    }
}
