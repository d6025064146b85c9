//! `HVQ_GPU_ATTENTION=auto` (`inference_attention`, the CLI's and the desktop inspector's
//! default): for each distinct kind of inference attention on a GPU, the first call times hvq's
//! split kernel (`gpu_attention_split`) against burn's flash kernel (`gpu_attention`) on that
//! call's inputs, and the faster runs it and every later attention of the same kind in this
//! process, as `product_choice` does for the matrix products.
//!
//! Why at run time: neither kernel is the faster everywhere. hvq's was written because burn's
//! took 6.2 ms for the decoder's eight attentions on an H200 at batch 8 (PyTorch's 0.31 ms), and
//! on lavapipe (a CPU driver) hvq's is the slower: the official model end to end at batch 3 took
//! 6345 ms with it against 4312 ms with burn's (2026-12-05). A model has a handful of kinds (the
//! encoder's self-attention, the decoder's self- and cross-attention, per batch size), so timing
//! each costs the first batch a few launches of each kernel. Not on a software adapter
//! (lavapipe, SwiftShader), where a launch takes tens of milliseconds and burn's kernel ran the
//! model faster: there it runs untimed. A kind is the device, the number of heads and the
//! three inputs' shapes and strides (a packed projection's parts are read at its strides).
//!
//! Each kernel is launched once untimed (compiled; a kernel that does not take the inputs drops
//! out there), then timed as the products are (`product_choice`: growing batches of launches,
//! two rounds taking turns, each kept at its fastest). burn's kernel takes a kind only when it
//! is at least [`MARGIN`] faster than hvq's, so that noise does not make two processes choose
//! apart on a near tie. The choices are kept in the products' file (`HVQ_PRODUCT_CHOICES`,
//! `product_store`) for later processes of the same build on the same GPU, which take them from
//! there instead of timing: the same kernels, so the same scores, run after run. [`timings`]
//! lists what was measured (`hvq bench` reports it).

use serde::{Deserialize, Serialize};

use super::inference_attention::InferenceAttention;

/// How much faster (a fraction of hvq's kernel's time) burn's flash kernel must be to take a
/// kind of attention.
pub const MARGIN: f64 = 0.05;

/// One kind of inference attention and what its kernels took ([`timings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionTiming {
    /// The device, as burn prints it.
    pub device: String,
    /// Heads the projections are split into.
    pub heads: usize,
    /// The queries' shape `[B, Lq, E]`.
    pub q: Vec<usize>,
    /// Their strides (elements).
    pub q_strides: Vec<usize>,
    /// The keys' shape `[B, Lk, E]`.
    pub k: Vec<usize>,
    /// Their strides.
    pub k_strides: Vec<usize>,
    /// The values' shape `[B, Lk, E]`.
    pub v: Vec<usize>,
    /// Their strides.
    pub v_strides: Vec<usize>,
    /// Microseconds per launch of hvq's split kernel; `None` where it does not take the inputs.
    pub split_us: Option<f64>,
    /// Microseconds per launch of burn's flash kernel; `None` where it does not take them.
    pub flash_us: Option<f64>,
    /// What runs this kind: [`InferenceAttention::Split`] or [`InferenceAttention::Flash`].
    pub runs_on: InferenceAttention,
    /// Read from the file of kept choices (`HVQ_PRODUCT_CHOICES`): timed by an earlier process
    /// of this build on this GPU, not by this one.
    #[serde(default)]
    pub stored: bool,
}

impl AttentionTiming {
    /// Microseconds per launch of the kernel that runs this kind.
    pub fn chosen_us(&self) -> Option<f64> {
        match self.runs_on {
            InferenceAttention::Flash => self.flash_us,
            _ => self.split_us,
        }
    }
}

/// The kernel the times choose: burn's flash kernel when it is at least [`MARGIN`] faster than
/// hvq's split kernel or the split kernel does not take the inputs; hvq's otherwise.
pub fn faster(split_us: Option<f64>, flash_us: Option<f64>) -> InferenceAttention {
    match (split_us, flash_us) {
        (Some(split), Some(flash)) if flash < split * (1.0 - MARGIN) => InferenceAttention::Flash,
        (None, Some(_)) => InferenceAttention::Flash,
        _ => InferenceAttention::Split,
    }
}

/// Every kind of attention timed (or taken from the kept choices) so far in this process, in
/// the order first met.
pub fn timings() -> Vec<AttentionTiming> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu::choices_now().list().to_vec();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    Vec::new()
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) use gpu::{attention, keep_choices_in};

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use std::sync::{LazyLock, Mutex, MutexGuard};

    use burn::tensor::Tensor;

    use super::{AttentionTiming, InferenceAttention, faster};
    use crate::kernels::gpu::plain_f32;
    use crate::kernels::timed_choice::{self, time_candidates, timing_on};
    use crate::kernels::{gpu_attention, gpu_attention_split};

    /// The kinds met so far and where choices are kept.
    pub(super) type Choices = timed_choice::Choices<Kind, AttentionTiming, InferenceAttention>;

    static CHOICES: LazyLock<Mutex<Choices>> =
        LazyLock::new(|| Mutex::new(Choices::new("attention")));

    /// The choices, locked (a thread that panicked while holding them left whole entries only).
    pub(super) fn choices_now() -> MutexGuard<'static, Choices> {
        CHOICES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep the choices in `file`, the products' (its path and this build's identity,
    /// `product_store`); `None`: keep nothing. Set with the products'
    /// (`product_choice::keep_choices_in`).
    pub fn keep_choices_in(file: Option<(std::path::PathBuf, String)>) {
        choices_now().keep_in(file);
    }

    /// What makes two attentions the same kind.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(super) struct Kind {
        device: String,
        pub(super) heads: usize,
        inputs: [(Vec<usize>, Vec<usize>); 3],
    }

    impl Kind {
        /// The kind of an attention on `q`, `k`, `v`; `None` when they are not plain f32
        /// tensors of a GPU backend (neither kernel takes them).
        fn of(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, heads: usize) -> Option<Self> {
            let layout = |t: &Tensor<3>| {
                let t = plain_f32(t.clone())?;
                Some((t.meta.shape().to_vec(), t.meta.strides().to_vec()))
            };
            Some(Kind {
                device: format!("{:?}", q.device()),
                heads,
                inputs: [layout(q)?, layout(k)?, layout(v)?],
            })
        }

        fn operands(&self) -> Vec<&[usize]> {
            let mut operands: Vec<&[usize]> = vec![std::slice::from_ref(&self.heads)];
            for (shape, strides) in &self.inputs {
                operands.push(shape);
                operands.push(strides);
            }
            operands
        }

        fn timing(self, split_us: Option<f64>, flash_us: Option<f64>) -> AttentionTiming {
            let [(q, q_strides), (k, k_strides), (v, v_strides)] = self.inputs;
            AttentionTiming {
                device: self.device,
                heads: self.heads,
                q,
                q_strides,
                k,
                k_strides,
                v,
                v_strides,
                split_us,
                flash_us,
                runs_on: faster(split_us, flash_us),
                stored: false,
            }
        }
    }

    /// `kernel`'s attention (burn's flash kernel or hvq's split kernel); `None` where it does
    /// not take the inputs.
    fn launch(
        kernel: InferenceAttention,
        q: &Tensor<3>,
        k: &Tensor<3>,
        v: &Tensor<3>,
        heads: usize,
    ) -> Option<Tensor<3>> {
        match kernel {
            InferenceAttention::Flash => gpu_attention::attention_merged(q, k, v, heads),
            _ => gpu_attention_split::attention(q, k, v, heads),
        }
    }

    /// `kernel`'s attention, the other kernel's where it does not take the inputs.
    fn run(
        kernel: InferenceAttention,
        q: &Tensor<3>,
        k: &Tensor<3>,
        v: &Tensor<3>,
        heads: usize,
    ) -> Option<Tensor<3>> {
        let other = match kernel {
            InferenceAttention::Flash => InferenceAttention::Split,
            _ => InferenceAttention::Flash,
        };
        launch(kernel, q, k, v, heads).or_else(|| launch(other, q, k, v, heads))
    }

    /// Inference's attention with `HVQ_GPU_ATTENTION=auto` (module documentation): the kernel
    /// chosen for this kind, timed now if it was neither met nor kept before; burn's flash
    /// kernel untimed on a software adapter, hvq's split kernel untimed where the device cannot
    /// be waited for (WebGPU in a browser). `None` where neither kernel takes the inputs.
    pub fn attention(
        q: &Tensor<3>,
        k: &Tensor<3>,
        v: &Tensor<3>,
        heads: usize,
    ) -> Option<Tensor<3>> {
        if cfg!(target_family = "wasm") {
            return run(InferenceAttention::Split, q, k, v, heads);
        }
        let kind = Kind::of(q, k, v, heads)?;
        let mut known = choices_now();
        if let Some(kernel) = known.chosen(&kind) {
            drop(known);
            return run(kernel, q, k, v, heads);
        }
        let device = q.device();
        let Some((physical, adapter)) = timing_on(&device, &kind.device) else {
            drop(known);
            return run(InferenceAttention::Flash, q, k, v, heads);
        };
        let kept = known.kept(
            kind.clone(),
            &adapter,
            &kind.device,
            &kind.operands(),
            |t: &AttentionTiming| t.runs_on,
        );
        if let Some(kernel) = kept {
            drop(known);
            return run(kernel, q, k, v, heads);
        }
        // Timed under the lock, as the products are: one timing per kind, however many threads.
        // A kernel that does not take the inputs drops out at its first launch.
        let launched = |kernel| move || launch(kernel, q, k, v, heads).is_some();
        let (split, flash) = (
            launched(InferenceAttention::Split),
            launched(InferenceAttention::Flash),
        );
        let us = match time_candidates(&device, [&split, &flash], physical) {
            Ok(us) => us,
            // The device could not be waited for: hvq's kernel, untimed, asked again later.
            Err(_) => {
                drop(known);
                return run(InferenceAttention::Split, q, k, v, heads);
            }
        };
        if us == [None, None] {
            return None;
        }
        let timing = kind.clone().timing(us[0], us[1]);
        let kernel = timing.runs_on;
        known.timed(kind, &adapter, timing, kernel);
        drop(known);
        run(kernel, q, k, v, heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_s_kernel_needs_to_win_by_the_margin() {
        use InferenceAttention::*;
        assert_eq!(faster(Some(100.0), Some(90.0)), Flash);
        assert_eq!(faster(Some(100.0), Some(96.0)), Split);
        assert_eq!(faster(Some(100.0), Some(150.0)), Split);
        assert_eq!(faster(None, Some(150.0)), Flash);
        assert_eq!(faster(Some(100.0), None), Split);
        assert_eq!(faster(None, None), Split);
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod gpu_tests {
    use burn::tensor::{Distribution, Tensor};

    use super::gpu::choices_now;
    use super::*;
    use crate::device::kernel_profile::KernelProfiler;
    use crate::kernels::gpu::{stored_as, values};
    use crate::kernels::timed_choice::TIME_SOFTWARE_HERE;
    use crate::kernels::{gpu_attention, gpu_attention_split};

    /// The timings of attentions with `heads` heads (each test uses a count no other does).
    fn timed(heads: usize) -> Vec<AttentionTiming> {
        timings().into_iter().filter(|t| t.heads == heads).collect()
    }

    fn inputs(heads: usize) -> [Tensor<3>; 3] {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let e = 4 * heads;
        [[2, 9, e], [2, 13, e], [2, 13, e]]
            .map(|dims| Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device))
    }

    /// The names of the kernels `f` launched.
    fn launched(f: impl FnOnce()) -> Vec<String> {
        let profiler = KernelProfiler::start("attention");
        f();
        let profile = profiler.finish();
        profile.stages[0]
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// On a software adapter (lavapipe) burn's flash kernel runs untimed; where attention is
    /// timed (here: told to), the first attention of a kind times both kernels once: one entry
    /// with both times and the margin rule's choice; that attention and every later one of the
    /// kind are computed by the chosen kernel (bit for bit its result), later ones launching
    /// only it. Other strides make another kind.
    #[test]
    fn each_kind_of_attention_is_timed_once_and_runs_on_the_faster_kernel() {
        let heads = 3;
        let [q, k, v] = inputs(heads);
        let flash_alone = values(gpu_attention::attention_merged(&q, &k, &v, heads).unwrap());
        let split_alone = values(gpu_attention_split::attention(&q, &k, &v, heads).unwrap());
        assert_ne!(flash_alone, split_alone, "the kernels must be told apart");

        let mut out = None;
        let names = launched(|| out = gpu::attention(&q, &k, &v, heads));
        assert_eq!(values(out.unwrap()), flash_alone, "software adapter: flash");
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(timed(heads).is_empty(), "untimed: {:?}", timed(heads));

        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let first = values(gpu::attention(&q, &k, &v, heads).unwrap());
        let entries = timed(heads);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let t = &entries[0];
        assert_eq!(
            (t.q.as_slice(), t.k.as_slice()),
            (&[2, 9, 12][..], &[2, 13, 12][..])
        );
        assert_eq!(t.q_strides, [9 * 12, 12, 1]);
        for us in [t.split_us, t.flash_us] {
            assert!(us.is_some_and(|us| us.is_finite() && us > 0.0), "{t:?}");
        }
        assert_eq!(t.runs_on, faster(t.split_us, t.flash_us));
        let want = match t.runs_on {
            InferenceAttention::Flash => flash_alone.clone(),
            _ => split_alone.clone(),
        };
        assert_eq!(first, want);

        let mut again = None;
        let names = launched(|| again = gpu::attention(&q, &k, &v, heads));
        assert_eq!(values(again.unwrap()), want);
        assert_eq!(names.len(), 1, "only the chosen kernel: {names:?}");
        assert_eq!(timed(heads).len(), 1, "timed once");

        // The queries stored sequence-major (`[Lq, B, E]` seen as `[B, Lq, E]`): another kind,
        // which hvq's kernel does not take (a batch's rows must follow each other) and burn's
        // does: burn's, its time alone.
        let q_seq = stored_as(q.clone(), [1, 0, 2]);
        let got = values(gpu::attention(&q_seq, &k, &v, heads).unwrap());
        let entries = timed(heads);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let t = &entries[1];
        assert_eq!(t.q_strides, [12, 2 * 12, 1]);
        assert!(t.split_us.is_none() && t.flash_us.is_some(), "{t:?}");
        assert_eq!(t.runs_on, InferenceAttention::Flash);
        assert_eq!(got, flash_alone, "the same values, read at other strides");
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
    }

    /// With a file of kept choices, a kind timed here is kept in it beside the products; a
    /// process that has not met the kind (here: forgotten, the file read anew) takes it from
    /// the file: the kernel the file names (an entry edited to the other one runs that one, bit
    /// for bit, one launch, nothing timed), marked stored.
    #[test]
    fn kept_attention_choices_are_taken_instead_of_timing() {
        let _kept_choices = crate::kernels::product_store::test_file_lock();
        let heads = 5;
        let [q, k, v] = inputs(heads);
        let dir = std::env::temp_dir().join(format!("hvq-kept-attention-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let path = dir.join("choices.json");
        let build = crate::kernels::product_store::this_build().expect("the test's build");
        gpu::keep_choices_in(Some((path.clone(), build.clone())));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let _ = values(gpu::attention(&q, &k, &v, heads).unwrap());
        let timed_here = timed(heads);
        assert_eq!(timed_here.len(), 1);
        assert!(!timed_here[0].stored);

        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = file["builds"][0]["attention"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|k| k["heads"] == serde_json::json!(heads))
            .expect("the kind is kept");
        assert_eq!(
            entry["runs_on"],
            serde_json::json!(timed_here[0].runs_on.name())
        );
        let edited = match timed_here[0].runs_on {
            InferenceAttention::Flash => InferenceAttention::Split,
            _ => InferenceAttention::Flash,
        };
        entry["runs_on"] = serde_json::json!(edited.name());
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

        choices_now().forget(|kind| kind.heads == heads, |t| t.heads == heads);
        gpu::keep_choices_in(Some((path.clone(), build)));
        let want = values(
            match edited {
                InferenceAttention::Flash => gpu_attention::attention_merged(&q, &k, &v, heads),
                _ => gpu_attention_split::attention(&q, &k, &v, heads),
            }
            .unwrap(),
        );
        let mut got = None;
        let names = launched(|| got = gpu::attention(&q, &k, &v, heads));
        gpu::keep_choices_in(None);
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        std::fs::remove_dir_all(&dir).ok();

        assert_eq!(values(got.unwrap()), want);
        assert_eq!(names.len(), 1, "taken from the file, not timed: {names:?}");
        let entries = timed(heads);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(
            entries[0].stored && entries[0].runs_on == edited,
            "{entries:?}"
        );
    }
}
