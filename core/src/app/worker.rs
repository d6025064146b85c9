//! The inference thread: it owns the compute device and the [`Inspector`]; a front end queues
//! [`Request`]s and polls [`Reply`]s, so a window never waits for a forward pass. Inspections
//! queued together (a folder) run through the model in batches, each image with its own reply.
//! Requests can be cancelled in bulk (a new folder, a new model), and a panic inside the backend
//! becomes that image's error instead of taking the thread down.
//!
//! Each inspection carries a caller's `Tag` back with its reply (the desktop tags list images and
//! calibration images differently).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use burn::tensor::Device;

use super::files::inspect_files;
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

/// One queued inspection.
struct Job<Tag> {
    id: u64,
    path: PathBuf,
    tag: Tag,
    generation: u64,
}

fn run<Tag>(
    choice: DeviceChoice,
    requests: Receiver<Request<Tag>>,
    replies: Sender<Reply<Tag>>,
    generation_now: Arc<AtomicU64>,
    wake: impl Fn(),
) {
    let send = |r: Reply<Tag>| {
        let _ = replies.send(r);
        wake();
    };
    let (device, batch) = match crate::device::select(choice) {
        Ok(s) => {
            send(Reply::Device(device_name(&s.device)));
            (s.device, s.backend.inspection_batch())
        }
        Err(e) => {
            crate::device::flush_denormals();
            let d = Device::flex();
            send(Reply::Device(format!(
                "{} ({choice:?} unavailable: {e})",
                device_name(&d)
            )));
            (d, DeviceChoice::Cpu.inspection_batch())
        }
    };
    let mut inspector: Option<Inspector> = None;
    // A request taken off the channel while gathering a batch that was not part of it: the
    // next one handled.
    let mut set_aside: Option<Request<Tag>> = None;
    while let Some(request) = set_aside.take().or_else(|| requests.recv().ok()) {
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
                generation,
            } => {
                // A folder arrives as many requests at once: what is already queued for the
                // same class joins this one in a batch (up to the device's batch size; the first
                // other request ends the batch and is handled next, so requests keep their
                // order).
                let mut jobs = vec![Job {
                    id,
                    path,
                    tag,
                    generation,
                }];
                while jobs.len() < batch {
                    match requests.try_recv() {
                        Ok(Request::Inspect {
                            id,
                            path,
                            class: c,
                            tag,
                            generation,
                        }) if c == class => jobs.push(Job {
                            id,
                            path,
                            tag,
                            generation,
                        }),
                        Ok(other) => {
                            set_aside = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let current = |g: u64| g >= generation_now.load(Ordering::SeqCst);
                jobs.retain(|job| current(job.generation));
                if jobs.is_empty() {
                    continue;
                }
                let paths: Vec<PathBuf> = jobs.iter().map(|j| j.path.clone()).collect();
                let results: Vec<std::result::Result<Inspection, String>> = match &inspector {
                    // The map at the model's resolution only (the one at the image's is
                    // `overlay::resize_map` of it, computed when needed): a list of thousands
                    // of photos keeps 200 kB per image, not 4 bytes per pixel.
                    Some(ins) => inspect_files(ins, &paths, &class, MapResolution::Model, |_| ())
                        .into_iter()
                        .map(|f| f.result.map(|(_, inspection)| inspection))
                        .collect(),
                    None => paths
                        .iter()
                        .map(|_| Err("no model loaded".into()))
                        .collect(),
                };
                for (job, result) in jobs.into_iter().zip(results) {
                    // Cancelled while running: drop the answer too.
                    if current(job.generation) {
                        send(Reply::Inspected {
                            id: job.id,
                            tag: job.tag,
                            result,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneConfig, HvqConfig, ModelConfig};
    use std::time::Duration;

    fn model(seed: u64) -> ModelLoad {
        ModelLoad::Custom(
            format!("seed {seed}"),
            Box::new(move |device: &Device| {
                let backbone = BackboneConfig::efficientnet_lite0();
                let mut hvq = HvqConfig::official(backbone.feature_channels(), vec!["a".into()]);
                (hvq.embed_dim, hvq.heads, hvq.ffn_dim, hvq.codes) = (16, 2, 32, 8);
                device.seed(seed);
                Detector::new(ModelConfig { backbone, hvq }, device)
            }),
        )
    }

    fn scores(worker: &Worker<()>, n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        let mut left = n;
        while left > 0 {
            match worker
                .recv_timeout(Duration::from_secs(300))
                .expect("a reply")
            {
                Reply::Inspected { id, result, .. } => {
                    out[id as usize] = result.expect("inspected").score;
                    left -= 1;
                }
                Reply::Model(m) => {
                    m.expect("model loads");
                }
                Reply::Device(_) => {}
            }
        }
        out
    }

    /// Inspections queued together are batched, but never across a model change: what was
    /// queued after a new model uses the new model.
    #[test]
    fn a_model_change_between_queued_inspections_keeps_its_place() {
        let _generator = crate::test_rng::lock();
        let dir = std::env::temp_dir().join(format!("hvq-worker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let photo = dir.join("part.png");
        image::RgbImage::from_fn(50, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
        })
        .save(&photo)
        .unwrap();
        // The same photo under each model, alone.
        let alone: Vec<f32> = [1, 2]
            .into_iter()
            .map(|seed| {
                let worker = Worker::<()>::spawn(DeviceChoice::Cpu, || {});
                worker.load(model(seed));
                worker.inspect(0, photo.clone(), ClassChoice::Auto, ());
                scores(&worker, 1)[0]
            })
            .collect();
        assert_ne!(alone[0], alone[1], "two seeds, two models");
        // Queued in one go: three under model 1, then model 2, then two more.
        let worker = Worker::<()>::spawn(DeviceChoice::Cpu, || {});
        worker.load(model(1));
        for id in 0..3 {
            worker.inspect(id, photo.clone(), ClassChoice::Auto, ());
        }
        worker.load(model(2));
        for id in 3..5 {
            worker.inspect(id, photo.clone(), ClassChoice::Auto, ());
        }
        let got = scores(&worker, 5);
        assert_eq!(got, [alone[0], alone[0], alone[0], alone[1], alone[1]]);
        std::fs::remove_dir_all(dir).ok();
    }
}
