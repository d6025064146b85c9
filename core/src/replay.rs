//! Inference recorded once as a graph of device launches and replayed for each later batch.
//!
//! A pass of the official model at batch 1 is some 350 kernel launches, and on a GPU the host's
//! work per launch (burn's operation, cubecl's allocation, kernel lookup and encoding) can take
//! longer than the kernel: the H200 spent more than half of a batch-1 pass queueing it
//! (docs/gpu.md). burn 0.22 records a closure's launches: CUDA keeps them as a CUDA graph,
//! replayed as one dispatch; wgpu keeps the resolved dispatches and encodes them again without
//! the launch path. An inspection's batches have one shape and, image after image, the same
//! classes, so the pass is recorded once for them and each batch replays it: its values are
//! written into the recorded input buffer in place ([`crate::device::write_in_place`]) and the
//! replay writes the recorded output buffers. Where the backend cannot record (the CPU), or the
//! recording failed, each batch runs the pass again instead: the same values, without the
//! saving ([`ReplayedInference::recorded`] says which). A batch whose classes are left to the
//! model records the choice too (made on the device, [`crate::class_choice`]): each replay
//! chooses again for its own images. `hvq bench` times both on a GPU; an `app::Inspector`
//! replays repeated batches when `HVQ_REPLAY` is on ([`apply_variable`]: the CLI's and the
//! desktop's default).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use burn::backend::{Backend, BackendGraph, Dispatch, ExecutionError};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::class_choice::{BatchClasses, Resolved};
use crate::detector::Detector;
use crate::device::write_in_place;
use crate::error::{HvqError, Result};
use crate::map::ScoreKind;

/// The environment variable that turns replaying off for a process (`off`) or on (`on`, the
/// CLI's and the desktop inspector's default).
pub const VARIABLE: &str = "HVQ_REPLAY";

/// Whether inspections replay a recorded pass when their batches repeat (the library's default:
/// no; the CLI and the desktop turn it on through [`apply_variable`]).
static REPLAY: AtomicBool = AtomicBool::new(false);

/// Read `HVQ_REPLAY` (`on` or `off`; unset: on) and set it for the inspectors created afterwards.
pub fn apply_variable() -> Result<bool> {
    let on = crate::env_setting::read(VARIABLE, true, parse)?;
    REPLAY.store(on, Ordering::Relaxed);
    Ok(on)
}

/// `on` or `off`.
pub fn parse(name: &str) -> Result<bool> {
    crate::env_setting::named(VARIABLE, name, &[true, false], |on| {
        if on { "on" } else { "off" }
    })
}

/// Whether inspectors created now replay ([`apply_variable`]).
pub fn enabled() -> bool {
    REPLAY.load(Ordering::Relaxed)
}

/// The pass a graph records: the images in the shared input scored under their classes (chosen
/// on the device when left to the model), or why it failed.
type Pass = Box<dyn FnMut() -> Result<Resolved> + Send>;

/// Passes run before the recorded one: the first compiles the kernels and times the routines
/// chosen per device (products, attention), the next fill the memory pools with what the pass
/// allocates from then on, which the recording must take from them (a fresh allocation while
/// recording fails it). burn's own `capture` runs three for the same reasons.
const WARM_UP_PASSES: usize = 3;

/// A detector's inference for batches of one shape and one class list (or classes left to the
/// model), recorded once; images are scored by their maps' maximum ([`ScoreKind::Max`]).
///
/// The input writes and the replays must come from the thread that recorded, whose device
/// stream the graph was recorded on, so that they run in the order they are issued: from
/// another thread [`ReplayedInference::run`] refuses.
pub struct ReplayedInference {
    pass: Pass,
    recording: Recording,
    /// The images the pass reads: the recorded buffer, written in place before each replay.
    input: Arc<Mutex<Tensor<4>>>,
    shape: [usize; 4],
    classes: BatchClasses,
    device: Device,
    thread: ThreadId,
    /// The kept index tensors when the pass was recorded (those it selected with among
    /// them), held so that their buffers outlive the recording ([`crate::model::kept_now`]).
    index_tensors: Vec<Tensor<1, Int>>,
}

/// What the backend made of the recording.
enum Recording {
    /// The recorded launches, and the recorded pass's results: the buffers each replay writes
    /// (boxed: burn's graph and tensors take some two kilobytes, the refusal a string).
    Recorded(Box<(BackendGraph<Dispatch>, Resolved)>),
    /// Not recorded, for the reason given: the pass runs again for each batch.
    Refused(String),
}

impl std::fmt::Debug for ReplayedInference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayedInference")
            .field("shape", &self.shape)
            .field("classes", &self.classes)
            .field("recorded", &self.recorded())
            .field("not_recorded", &self.not_recorded())
            .finish_non_exhaustive()
    }
}

impl ReplayedInference {
    /// Record `detector`'s inference of normalised `images` `[B, 3, S, S]` under `classes`
    /// (one per image, or left to the model), after [`WARM_UP_PASSES`] passes. The recording keeps `detector` (a
    /// clone shares its weights): it computes with the weights as they are now. An error of the
    /// pass itself (a class out of range) or of the device is returned; a backend that cannot
    /// record, or a recording it refused, leaves the pass to run again for each batch
    /// ([`Self::not_recorded`] says why).
    pub fn record(detector: Detector, images: Tensor<4>, classes: &BatchClasses) -> Result<Self> {
        let shape = images.dims();
        if let BatchClasses::Given(given) = classes
            && given.len() != shape[0]
        {
            return Err(HvqError::Config(format!(
                "{} classes for a batch of {} images",
                given.len(),
                shape[0]
            )));
        }
        let device = images.device();
        // The buffer each batch is written into: without the row padding CUDA may give it.
        let input = Arc::new(Mutex::new(crate::device::writable(images)));
        let read = Arc::clone(&input);
        let pass_classes = classes.clone();
        let mut pass: Pass = Box::new(move || {
            let images = read.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let features = detector.features(images);
            detector.score_resolved(features, &pass_classes, ScoreKind::Max)
        });
        let dispatch = device.as_dispatch();
        let device_error = |what: &str, e: ExecutionError| {
            HvqError::Device(format!(
                "recording the inference pass: {what}: {}",
                reason(e)
            ))
        };
        Dispatch::graph_prepare(dispatch).map_err(|e| device_error("preparing", e))?;
        for _ in 0..WARM_UP_PASSES {
            // Kept until the device is done: the pass's buffers are what the recording reuses.
            let warmed = pass().and_then(|resolved| {
                Dispatch::sync(dispatch).map_err(|e| device_error("warming up", e))?;
                drop(resolved);
                Ok(())
            });
            if let Err(e) = warmed {
                // A prepared stream waits for its recording: open and close one (recording
                // nothing) so that the device's stream is as before, then report.
                if Dispatch::graph_start_capture(dispatch).is_ok() {
                    let _ = Dispatch::graph_stop_capture(dispatch);
                }
                return Err(e);
            }
        }
        let mut index_tensors = Vec::new();
        let recording = match Dispatch::graph_start_capture(dispatch) {
            Ok(()) => {
                let scores = pass();
                index_tensors = crate::model::kept_now();
                // A failed stop still ends the recording, so the device goes on as before.
                match (Dispatch::graph_stop_capture(dispatch), scores) {
                    (Ok(graph), Ok(scores)) => Recording::Recorded(Box::new((graph, scores))),
                    (Err(e), Ok(_)) => Recording::Refused(reason(e)),
                    (_, Err(e)) => return Err(e),
                }
            }
            Err(e) => Recording::Refused(reason(e)),
        };
        Ok(Self {
            pass,
            recording,
            input,
            shape,
            classes: classes.clone(),
            device,
            thread: std::thread::current().id(),
            index_tensors,
        })
    }

    /// Whether the pass was recorded (CUDA, wgpu): a batch replays its launches. `false` where
    /// the backend records nothing or the recording failed, and each batch runs the pass.
    pub fn recorded(&self) -> bool {
        matches!(self.recording, Recording::Recorded(_))
    }

    /// Why the pass was not recorded (the backend's words), when it was not.
    pub fn not_recorded(&self) -> Option<&str> {
        match &self.recording {
            Recording::Recorded(_) => None,
            Recording::Refused(why) => Some(why),
        }
    }

    /// How many index tensors the recording holds: those kept when it was made, among them
    /// every one the pass selected with ([`crate::model::kept_now`]).
    pub fn held_index_tensors(&self) -> usize {
        self.index_tensors.len()
    }

    /// Whether this thread recorded the pass (the only one that may replay it).
    pub fn on_this_thread(&self) -> bool {
        self.thread == std::thread::current().id()
    }

    /// Whether batches of `shape` under `classes`, from this thread, replay this recording.
    pub fn takes(&self, shape: [usize; 4], classes: &BatchClasses) -> bool {
        self.shape == shape && self.classes == *classes && self.on_this_thread()
    }

    /// The maps, scores and classes of the images `values` (normalised, `[B, 3, S, S]`
    /// row-major), queued on the device (read them back to wait for them). Replayed, the
    /// tensors are the recorded outputs, which the next batch overwrites: read them before
    /// running it.
    pub fn run(&mut self, values: &[f32]) -> Result<Resolved> {
        let expected: usize = self.shape.iter().product();
        if values.len() != expected {
            return Err(HvqError::Config(format!(
                "a batch of {} values for a recorded pass of shape {:?} ({expected} values)",
                values.len(),
                self.shape
            )));
        }
        if !self.on_this_thread() {
            return Err(HvqError::Device(
                "a recorded inference pass replays only on the thread that recorded it".into(),
            ));
        }
        let Recording::Recorded(recorded) = &self.recording else {
            // The pass runs again and reads whatever tensor the input holds.
            *self.input.lock().unwrap_or_else(|e| e.into_inner()) =
                Tensor::from_data(TensorData::new(values.to_vec(), self.shape), &self.device);
            return (self.pass)();
        };
        write_in_place(
            &self.input.lock().unwrap_or_else(|e| e.into_inner()),
            values,
        )?;
        // Safety: every buffer the recorded launches read or write stays alive as long as
        // `self`: the input (held here and by the pass), the detector's weights and the caches
        // derived from them (held by the pass's detector), the index tensors the pass selected
        // with (held here), and the outputs (held here). The
        // input write above and the replay are issued from the recording thread (checked
        // above), on the stream of the recording, so the replay reads the new values and a
        // later write or read waits for it.
        let (graph, resolved) = recorded.as_ref();
        unsafe { Dispatch::graph_replay(self.device.as_dispatch(), graph) }.map_err(|e| {
            HvqError::Device(format!("replaying the inference pass: {}", reason(e)))
        })?;
        Ok(resolved.clone())
    }
}

/// A backend error's own words on one line: burn nests each cause under a generic heading and
/// ends with a backtrace section, which say nothing to the reader of a report.
fn reason(e: ExecutionError) -> String {
    let text = e.to_string();
    let said: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !matches!(
                    *line,
                    "An error happened during execution"
                        | "Caused by:"
                        | "Backtrace:"
                        | "No backtrace available"
                )
        })
        .collect();
    said.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `on` and `off` parse (space and case as the other switches take them); a typo is an
    /// error naming the variable; the library's default, which no test changes, is off.
    #[test]
    fn the_switch_parses_and_a_typo_is_refused_naming_the_variable() {
        assert!(parse("on").unwrap());
        assert!(!parse(" OFF ").unwrap());
        let err = parse("yes").unwrap_err().to_string();
        assert!(err.contains(VARIABLE) && err.contains("yes"), "{err}");
        assert!(!enabled(), "the library's default");
    }

    /// The reason shown for a backend error keeps its own words, without burn's headings and
    /// backtrace section.
    #[test]
    fn a_backend_error_reads_as_one_line_of_its_own_words() {
        let e = ExecutionError::WithContext {
            reason: "write: a wgpu capture window records dispatches only\nBacktrace:\nNo \
                     backtrace available"
                .into(),
        };
        assert_eq!(
            reason(e),
            "write: a wgpu capture window records dispatches only"
        );
    }
}
