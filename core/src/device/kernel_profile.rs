//! Which GPU kernels a piece of work launches and how long each ran on the device, attributed to
//! the pipeline stage that issued it (`hvq bench --kernels`).
//!
//! CubeCL (burn's GPU backends: wgpu and CUDA) tells an installed launch observer about every
//! kernel on the thread that issues it, and can hand over each launch's device timing unread, so
//! the kernels still run back to back while they are measured. Attribution is by issue: a kernel
//! belongs to the stage that was current when the host launched it, whenever it ran. The sum of
//! a stage's kernel times set beside the stage's wall time says whether the stage is bound by
//! its kernels (sum ≈ wall) or by the host launching them (sum ≪ wall), and the table of kernels
//! says which ones to replace.
//!
//! The CPU backend launches no kernels; profiling it is refused by the caller. The report types
//! exist in every build (bench reports carry them); the recorder only where a GPU backend is
//! compiled in, natively.

use serde::{Deserialize, Serialize};

#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
pub use recorder::KernelProfiler;

/// One kernel (by name) within a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelTime {
    /// The kernel as CubeCL names it, module path dropped (`direct_conv2d_kernel<f32, ..>`).
    pub name: String,
    /// How many times the stage launched it.
    pub launches: usize,
    /// Device time summed over its timed launches, milliseconds.
    pub ms: f64,
}

/// The kernels one stage launched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageKernels {
    /// Stage name.
    pub stage: String,
    /// Kernel launches issued during the stage.
    pub launches: usize,
    /// Of those, how many came back with a timing (a backend may refuse to time one).
    pub timed: usize,
    /// Device time of the timed launches, summed, milliseconds.
    pub kernel_ms: f64,
    /// Per kernel name, longest total first.
    pub kernels: Vec<KernelTime>,
}

impl StageKernels {
    /// The names of the kernels the stage launched, longest total first.
    pub fn names(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.name.as_str()).collect()
    }
}

/// Everything one profiled pass launched, stage by stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelProfile {
    /// How the backend timed the kernels: `device` (timestamps on the GPU), `system` (host wall
    /// around a blocking submit, which includes launch and sync: an upper bound), both, or
    /// `none`.
    pub timing: String,
    /// The stages in the order they ran.
    pub stages: Vec<StageKernels>,
}

impl KernelProfile {
    /// The stage called `name`, if it launched anything or was marked.
    pub fn stage(&self, name: &str) -> Option<&StageKernels> {
        self.stages.iter().find(|s| s.stage == name)
    }
}

/// A readable table: per stage its launches and kernel time beside the stage's wall time (from
/// `wall_ms`, where known), then its `top` longest kernels.
pub fn format_profile(
    profile: &KernelProfile,
    wall_ms: impl Fn(&str) -> Option<f64>,
    top: usize,
) -> String {
    let mut out = format!(
        "kernels of one profiled pass ({} timing)\n{:<30} {:>9} {:>11} {:>10} {:>7}\n",
        profile.timing, "stage", "launches", "kernel ms", "stage ms", "share"
    );
    for s in &profile.stages {
        let wall = wall_ms(&s.stage);
        out.push_str(&format!(
            "{:<30} {:>9} {:>11.2} {:>10} {:>7}\n",
            s.stage,
            s.launches,
            s.kernel_ms,
            wall.map_or("–".into(), |w| format!("{w:.1}")),
            wall.filter(|w| *w > 0.0).map_or("–".into(), |w| format!(
                "{:.0} %",
                100.0 * s.kernel_ms / w
            )),
        ));
        for k in s.kernels.iter().take(top) {
            let mut name = k.name.clone();
            if name.chars().count() > 60 {
                name = name.chars().take(59).collect::<String>() + "…";
            }
            out.push_str(&format!(
                "    {:<60} {:>5} × {:>9.3} ms\n",
                name, k.launches, k.ms
            ));
        }
    }
    out
}

/// Runs `f` under a [`KernelProfiler`] named `stage` where one exists (a native build with a GPU
/// backend), for tests that run the same code on the CPU and on a GPU and look at the launches
/// only on the GPU. Without a GPU backend nothing launches kernels: one empty stage.
#[cfg(test)]
pub(crate) fn profile<T>(stage: &str, f: impl FnOnce() -> T) -> (T, KernelProfile) {
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
    {
        let profiler = KernelProfiler::start(stage);
        let value = f();
        (value, profiler.finish())
    }
    #[cfg(not(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm"))))]
    {
        let empty = StageKernels {
            stage: stage.to_string(),
            launches: 0,
            timed: 0,
            kernel_ms: 0.0,
            kernels: Vec::new(),
        };
        let profile = KernelProfile {
            timing: "none".into(),
            stages: vec![empty],
        };
        (f(), profile)
    }
}

#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
mod recorder {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use burn::cubecl::config::{TypeNameFormatLevel, type_name_format};
    use burn::cubecl::future::block_on;
    use burn::cubecl::logging::{
        Duration, LaunchObservation, LaunchObserver, ProfileDuration, TimingMethod, TimingRequest,
    };

    use super::{KernelProfile, KernelTime, StageKernels};

    /// A launch's measurement, as the backend delivered it.
    enum Measurement {
        /// Not yet read back (deferred device timing).
        Pending(ProfileDuration),
        /// Already a length (the backend or the profiling logger read it).
        Read(Duration, TimingMethod),
    }

    #[derive(Default)]
    struct Log {
        /// Stage names in the order they were entered; the last is current.
        stages: Vec<String>,
        /// (stage index, kernel) per launch.
        launches: Vec<(usize, &'static str)>,
        /// (stage index, kernel, measurement) per timed launch.
        measurements: Vec<(usize, &'static str, Measurement)>,
    }

    impl Log {
        fn current(&self) -> usize {
            self.stages.len().saturating_sub(1)
        }
    }

    /// The observer: appends the launches of one thread to the log. CubeCL's observer sees the
    /// whole process; the thread that runs the profiled work is the one whose launches count
    /// (other threads, such as concurrent tests, launch work of their own).
    struct Recorder {
        log: Mutex<Log>,
        thread: std::thread::ThreadId,
    }

    impl Recorder {
        /// The log, when the calling thread is the one recorded.
        fn mine(&self) -> Option<std::sync::MutexGuard<'_, Log>> {
            (std::thread::current().id() == self.thread).then(|| self.log())
        }

        fn log(&self) -> std::sync::MutexGuard<'_, Log> {
            // A panic while holding the lock leaves a log that is still a valid list of launches.
            self.log.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl LaunchObserver for Recorder {
        fn launched(&self, kernel: &'static str) {
            let Some(mut log) = self.mine() else { return };
            let stage = log.current();
            log.launches.push((stage, kernel));
        }

        fn timing(&self) -> TimingRequest {
            TimingRequest::Deferred
        }

        fn profiled(&self, kernel: &'static str, profile: ProfileDuration) {
            let Some(mut log) = self.mine() else { return };
            let stage = log.current();
            log.measurements
                .push((stage, kernel, Measurement::Pending(profile)));
        }

        fn timed(&self, kernel: &'static str, duration: Duration, method: TimingMethod) {
            let Some(mut log) = self.mine() else { return };
            let stage = log.current();
            log.measurements
                .push((stage, kernel, Measurement::Read(duration, method)));
        }
    }

    /// Records every kernel launch of the thread that started it while it lives; [`finish`](Self::finish) reads
    /// the timings and returns the profile. One at a time: CubeCL has one observer slot, so a
    /// profiler started while another records (on another thread: concurrent tests) waits for
    /// it to finish rather than take the slot from it. Do not start one inside another on the
    /// same thread.
    pub struct KernelProfiler {
        recorder: Arc<Recorder>,
        observation: Option<LaunchObservation>,
        _slot: std::sync::MutexGuard<'static, ()>,
    }

    /// The observer slot: held by the profiler recording now.
    static SLOT: Mutex<()> = Mutex::new(());

    impl KernelProfiler {
        /// Start recording; launches from now on belong to `first_stage`.
        pub fn start(first_stage: &str) -> Self {
            // A profiler that panicked mid-way released the slot all the same.
            let slot = SLOT.lock().unwrap_or_else(|e| e.into_inner());
            let recorder = Arc::new(Recorder {
                log: Mutex::default(),
                thread: std::thread::current().id(),
            });
            recorder.log().stages.push(first_stage.to_string());
            let observation = LaunchObservation::new(recorder.clone());
            Self {
                recorder,
                observation: Some(observation),
                _slot: slot,
            }
        }

        /// Launches from now on belong to `name`.
        pub fn stage(&self, name: &str) {
            self.recorder.log().stages.push(name.to_string());
        }

        /// Stop recording, wait for the timings and aggregate them by stage and kernel. Stages with
        /// the same name (entered twice) are merged.
        pub fn finish(mut self) -> KernelProfile {
            drop(self.observation.take());
            let log = std::mem::take(&mut *self.recorder.log());
            aggregate(log)
        }
    }

    /// `name` without module paths (`cubek_convolution::..::direct_conv2d_kernel<f32>` →
    /// `direct_conv2d_kernel<f32>`).
    fn short_name(name: &str) -> String {
        type_name_format(name, TypeNameFormatLevel::Balanced)
    }

    fn aggregate(log: Log) -> KernelProfile {
        let Log {
            stages,
            launches,
            measurements,
        } = log;
        // Stage order by first entry; a name entered again maps to its first index.
        let mut order: Vec<String> = Vec::new();
        let index: Vec<usize> = stages
            .iter()
            .map(|s| match order.iter().position(|o| o == s) {
                Some(i) => i,
                None => {
                    order.push(s.clone());
                    order.len() - 1
                }
            })
            .collect();
        let slot = |stage: usize| index.get(stage).copied().unwrap_or(0);

        // Per stage: kernel name → (launches, ms).
        let mut tables: Vec<BTreeMap<String, (usize, f64)>> = vec![BTreeMap::new(); order.len()];
        let mut timed = vec![0usize; order.len()];
        for (stage, kernel) in launches {
            tables[slot(stage)].entry(short_name(kernel)).or_default().0 += 1;
        }
        let (mut device, mut system) = (false, false);
        for (stage, kernel, measurement) in measurements {
            let (length, method) = match measurement {
                Measurement::Read(d, m) => (Some(d), m),
                Measurement::Pending(p) => {
                    let method = p.timing_method();
                    (block_on(p.resolve()).map(|t| t.duration()), method)
                }
            };
            let Some(length) = length else { continue };
            match method {
                TimingMethod::Device => device = true,
                TimingMethod::System => system = true,
            }
            let stage = slot(stage);
            timed[stage] += 1;
            tables[stage].entry(short_name(kernel)).or_default().1 += length.as_secs_f64() * 1e3;
        }

        let stages = order
            .into_iter()
            .zip(tables)
            .zip(timed)
            .map(|((stage, table), timed)| {
                let mut kernels: Vec<KernelTime> = table
                    .into_iter()
                    .map(|(name, (launches, ms))| KernelTime { name, launches, ms })
                    .collect();
                kernels.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(b.launches.cmp(&a.launches)));
                StageKernels {
                    launches: kernels.iter().map(|k| k.launches).sum(),
                    // From +0.0 (an empty `sum` of f64 is −0.0).
                    kernel_ms: kernels.iter().fold(0.0, |total, k| total + k.ms),
                    stage,
                    timed,
                    kernels,
                }
            })
            .collect();
        KernelProfile {
            timing: match (device, system) {
                (true, true) => "device and system",
                (true, false) => "device",
                (false, true) => "system",
                (false, false) => "none",
            }
            .to_string(),
            stages,
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use crate::device::{DeviceChoice, create};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};

    /// On wgpu (lavapipe here), the kernels a piece of work launches are attributed to the stage
    /// that issued them, counted per launch, and timed: an element-wise sum repeated 5 times is
    /// 5 launches of one kernel in its stage and none in the next; a convolution's stage holds
    /// a convolution kernel; neither another thread's launches nor any after the profile is
    /// finished are recorded.
    #[test]
    fn launches_are_counted_timed_and_attributed_to_their_stage() {
        let _generator = crate::test_rng::lock();
        let device = create(DeviceChoice::Wgpu).unwrap();
        let a: Tensor<2> = Tensor::random([64, 64], Distribution::Default, &device);
        let x: Tensor<4> = Tensor::random([1, 8, 16, 16], Distribution::Default, &device);
        let w: Tensor<4> = Tensor::random([8, 8, 3, 3], Distribution::Default, &device);
        let conv = || {
            conv2d(
                x.clone(),
                w.clone(),
                None,
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
        };
        // Compile the kernels first, as a bench's warm-up does.
        let _ = (a.clone() + a.clone()).into_data();
        let _ = conv().into_data();
        device.sync().unwrap();

        let profiler = KernelProfiler::start("sums");
        let mut sum = a.clone();
        for _ in 0..5 {
            sum = sum + a.clone();
        }
        // Another thread's launches are its own, not this profile's.
        std::thread::scope(|scope| {
            scope.spawn(|| (a.clone() + a.clone()).into_data());
        });
        profiler.stage("convolution");
        let y = conv();
        profiler.stage("nothing");
        profiler.stage("sums");
        let _ = sum.clone() + a.clone();
        let profile = profiler.finish();
        let _ = (y.into_data(), sum.into_data());
        // Launched after finishing: not recorded anywhere.
        let _ = (a.clone() + a).into_data();

        let names: Vec<&str> = profile.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["sums", "convolution", "nothing"], "{profile:#?}");
        let sums = profile.stage("sums").unwrap();
        assert_eq!(sums.kernels.len(), 1, "{sums:#?}");
        assert_eq!(
            sums.launches, 6,
            "5 sums and one more after re-entering: {sums:#?}"
        );
        assert_eq!(sums.timed, 6, "{sums:#?}");
        assert!(sums.kernel_ms > 0.0, "{sums:#?}");
        let convolution = profile.stage("convolution").unwrap();
        assert!(
            convolution
                .kernels
                .iter()
                .any(|k| k.name.to_lowercase().contains("conv")),
            "{convolution:#?}"
        );
        assert!(
            !convolution
                .kernels
                .iter()
                .any(|k| k.name == sums.kernels[0].name)
        );
        assert_eq!(profile.stage("nothing").unwrap().launches, 0);
        assert_ne!(profile.timing, "none");
        let table = format_profile(&profile, |s| (s == "sums").then_some(1.0), 3);
        assert!(table.contains("sums") && table.contains(" × "), "{table}");
    }

    /// Profilers started at the same time on several threads (concurrent tests) each record
    /// their own launches, all of them: the second waits for the first to finish instead of
    /// taking CubeCL's one observer slot from it.
    #[test]
    fn concurrent_profilers_each_get_their_own_launches() {
        let _generator = crate::test_rng::lock();
        let device = create(DeviceChoice::Wgpu).unwrap();
        let a: Tensor<2> = Tensor::random([32, 32], Distribution::Default, &device);
        let _ = (a.clone() + a.clone()).into_data();
        let profiles: Vec<KernelProfile> = std::thread::scope(|scope| {
            let runs: Vec<_> = (1..=4)
                .map(|n| {
                    let a = a.clone();
                    scope.spawn(move || {
                        let profiler = KernelProfiler::start("sums");
                        let mut sum = a.clone();
                        for _ in 0..n {
                            sum = sum + a.clone();
                        }
                        let _ = sum.into_data();
                        profiler.finish()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (n, profile) in (1..=4).zip(&profiles) {
            let sums = profile.stage("sums").unwrap();
            let adds: usize = sums
                .kernels
                .iter()
                .filter(|k| k.name.contains("AddOp"))
                .map(|k| k.launches)
                .sum();
            assert_eq!(adds, n, "{profile:#?}");
        }
    }
}
