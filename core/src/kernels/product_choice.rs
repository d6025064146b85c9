//! `HVQ_GPU_MATMUL=auto` (`device::gpu_matmul`, the CLI's and the desktop inspector's default):
//! for each distinct plain f32 product on a GPU, the first call times hvq's tiled kernel
//! (`gpu_matmul_tiled`: blocks of 64, 32 and 128, and of 64 and 128 read as quads) against
//! cubek's `SimpleUnit` (burn's own product) on that call's operands, and the fastest runs it
//! and every later product of the same kind in this process.
//!
//! Why at run time: which routine is faster depends on the GPU and on the product's shape. On
//! an H200 `SimpleUnit` ran the transformer's skinny products at about 1.2 TFLOP/s (2026-12-04),
//! where PyTorch's cuBLAS took a twentieth of the time; on lavapipe (a CPU driver) it beat the
//! tiled kernel at every one of the official model's 49 kinds of product, by 3 to 6 times
//! (2026-12-05). A model has a few dozen kinds of product, so timing each once costs the first
//! batch a few milliseconds per kind on a GPU. Not on a software adapter (no physical GPU
//! behind it: lavapipe, SwiftShader), where one launch of every candidate for the official
//! model's kinds took 5.5 s (a timing launches each three times or more) and burn's routine
//! always won: there burn's routine runs untimed.
//!
//! A product's kind is its device, the operands' shapes and their strides (a transposed view is
//! read differently), and whether a layer's bias, activation and residual follow it
//! (`products::linear_activated`): such a kind is timed with them, burn's product followed by their
//! kernel against the tiled kernel applying them as it writes, since that pass over the output is
//! work the tiled kernel saves. Each candidate is run once untimed (its kernel compiled), then
//! timed over enough launches to take [`TIMED_AT_LEAST`] of device time (at most
//! [`MOST_LAUNCHES`]), the candidates taking turns for [`ROUNDS`] rounds, each kept at its fastest
//! round. The tiled kernel (its faster block size) takes the product only when it is at least
//! [`MARGIN`] faster than burn's routine: near-ties stay with burn's, so that noise does not make
//! two runs of the same program choose apart. The choice is made once per process: every product of
//! a kind is computed the same way after it. The CLI and the inspector also keep it in a file for
//! later processes of the same build on the same GPU (`HVQ_PRODUCT_CHOICES`, `product_store`),
//! which take it from there instead of timing: the same routines, so the same scores, run after
//! run. Waiting for the device waits for other threads' work on it too (training's feature
//! prefetch): a round that overlapped such work reads slow, which the fastest of the rounds
//! discounts. [`timings`] lists what was measured (`hvq bench` reports it).

use serde::{Deserialize, Serialize};

/// What runs a kind of product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProductRoutine {
    /// burn's product (cubek's `SimpleUnit`).
    Burn,
    /// hvq's tiled kernel in blocks of 64.
    Tiled64,
    /// hvq's tiled kernel in blocks of 32.
    Tiled32,
    /// hvq's tiled kernel in blocks of 128.
    Tiled128,
    /// hvq's tiled kernel in blocks of 64, its stages read as quads.
    Quads64,
    /// hvq's tiled kernel in blocks of 128, its stages read as quads.
    Quads128,
}

/// One kind of product and what its candidates took ([`timings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductTiming {
    /// The device, as burn prints it.
    pub device: String,
    /// The left operand's shape.
    pub lhs: Vec<usize>,
    /// The left operand's strides (elements).
    pub lhs_strides: Vec<usize>,
    /// The right operand's shape.
    pub rhs: Vec<usize>,
    /// The right operand's strides (elements).
    pub rhs_strides: Vec<usize>,
    /// Microseconds per launch of burn's product (cubek `SimpleUnit`).
    pub burn_us: f64,
    /// Microseconds per launch of hvq's tiled kernel in each of its block sizes, by the
    /// routine's name (`tiled64`, `tiled32`, `tiled128`, `quads64`, `quads128`).
    pub tiled_us: std::collections::BTreeMap<ProductRoutine, f64>,
    /// What runs this kind of product.
    pub runs_on: ProductRoutine,
    /// Timed with a layer's epilogue (bias, activation, residual: `products::linear_activated`):
    /// burn's product followed by the epilogue's kernel against the tiled kernel applying it as
    /// it writes, the work each does for such a layer. A kind of its own beside the same
    /// operands without one.
    #[serde(default)]
    pub epilogue: bool,
    /// Read from the file of kept choices (`HVQ_PRODUCT_CHOICES`, `product_store`): timed by an
    /// earlier process of this build on this GPU, not by this one.
    #[serde(default)]
    pub stored: bool,
}

/// Device time each candidate is timed over, at least, per round (seconds).
pub const TIMED_AT_LEAST: f64 = 3e-4;
/// The most launches a candidate is timed over in one round.
pub const MOST_LAUNCHES: usize = 16;
/// Rounds of the candidates, taking turns.
pub const ROUNDS: usize = 2;
/// How much faster (a fraction of burn's time) the tiled kernel must be to take a product.
pub const MARGIN: f64 = 0.05;

/// The tiled kernel's block size for `a · b` (followed by the epilogue `then`, if any, which the
/// tiled kernel applies as it writes) when it is the faster ([`MARGIN`]) for this kind of product,
/// taken from the kept choices ([`keep_choices_in`]) or else timed on `a` and `b` (and `then`) if
/// the kind was not met before; `None` (burn's routine) otherwise, and without timing when the
/// tiled kernel does not take the operands (`gpu_matmul_tiled::taken_strides`: not plain f32
/// tensors of a GPU backend, shapes it refuses), on a software adapter ([`Timings::timed_on`]) or
/// on a GPU this process cannot wait for (WebGPU in a browser).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn faster_tiled<const D: usize>(
    a: &burn::tensor::Tensor<D>,
    b: &burn::tensor::Tensor<D>,
    then: Option<&super::gpu_activations::RowEpilogue>,
) -> Option<super::gpu_matmul_tiled::BlockSize> {
    if cfg!(target_family = "wasm") {
        return None;
    }
    let kind = Kind::of(a, b, then.is_some())?;
    let mut known = timings_now();
    if !known.timed_on(&a.device(), &kind.device) {
        return None;
    }
    if let Some(routine) = known.by_kind.get(&kind) {
        return routine.block_size();
    }
    let adapter = known.adapter(&a.device(), &kind.device).name;
    if let Some(kept) = known.kept(&adapter, &kind) {
        let size = kept.runs_on.block_size();
        known.record(kept);
        return size;
    }
    // On a software adapter timed only so that every candidate is compiled (`hvq ptx-check`),
    // one launch each does that; the choice it makes is as good as any there.
    let launches = if known.time_software && !known.adapter(&a.device(), &kind.device).physical {
        Launches::Once
    } else {
        Launches::Timed
    };
    // Timed outside the lock's scope would let two threads time the same kind; holding it
    // keeps one timing per kind (another thread's product of a known kind waits meanwhile).
    let timing = match time(a, b, then, kind, launches) {
        Ok(t) => t,
        // The device could not be waited for: burn's routine, untimed, and asked again later.
        Err(_) => return None,
    };
    let size = timing.runs_on.block_size();
    known.keep(&adapter, &timing);
    known.record(timing);
    size
}

/// Keep the choices in the file at `path` for later processes of this build, and take those
/// it holds (`product_store`), inference and training attention's too (`attention_choice`,
/// `train_attention_choice`); `None`: time each kind in every process, keep nothing. Unset
/// until a program asks ([`apply_variable`]): the library's tests keep nothing.
pub fn keep_choices_in(path: Option<std::path::PathBuf>) {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        // The build's identity read once (a look at the executable) for both kinds of choice.
        let file = path.and_then(|path| Some((path, super::product_store::this_build()?)));
        super::attention_choice::keep_choices_in(file.clone());
        super::train_attention_choice::keep_choices_in(file.clone());
        timings_now().store =
            file.map(|(path, build)| super::product_store::Store::new(path, build));
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = path;
}

/// From now on, time products on a software adapter too (lavapipe, SwiftShader), where burn's
/// routine otherwise runs untimed: so that every candidate is launched, and compiled, there,
/// once per kind of product. For `hvq ptx-check`, which compiles every kernel a run launches for
/// an NVIDIA GPU as well.
pub fn time_on_software_adapters() {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        timings_now().time_software = true;
    }
}

/// Whether kinds are timed on software adapters too ([`time_on_software_adapters`]; the
/// attentions' `auto` follows it).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn timed_on_software_adapters() -> bool {
    timings_now().time_software
}

/// Whether `device` (printed as `name`) is a physical GPU (kinds timed there), and its
/// adapter's name as kept choices are keyed: asked of the backend once per device.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn adapter_of(device: &burn::tensor::Device, name: &str) -> (bool, String) {
    let adapter = timings_now().adapter(device, name);
    (adapter.physical, adapter.name)
}

/// Read `HVQ_PRODUCT_CHOICES` (unset: the user's cache directory) and keep the choices there
/// ([`keep_choices_in`]); an empty value is an error naming the variable.
pub fn apply_variable() -> crate::error::Result<()> {
    keep_choices_in(super::product_store::path_from_environment()?);
    Ok(())
}

impl ProductRoutine {
    /// The tiled kernel's block size (`None`: burn's routine).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn block_size(self) -> Option<super::gpu_matmul_tiled::BlockSize> {
        use super::gpu_matmul_tiled::BlockSize;
        match self {
            ProductRoutine::Burn => None,
            ProductRoutine::Tiled64 => Some(BlockSize::Of64),
            ProductRoutine::Tiled32 => Some(BlockSize::Of32),
            ProductRoutine::Tiled128 => Some(BlockSize::Of128),
            ProductRoutine::Quads64 => Some(BlockSize::Quads64),
            ProductRoutine::Quads128 => Some(BlockSize::Quads128),
        }
    }

    /// The routine of the tiled kernel in blocks of `size`.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn tiled(size: super::gpu_matmul_tiled::BlockSize) -> Self {
        use super::gpu_matmul_tiled::BlockSize;
        match size {
            BlockSize::Of64 => ProductRoutine::Tiled64,
            BlockSize::Of32 => ProductRoutine::Tiled32,
            BlockSize::Of128 => ProductRoutine::Tiled128,
            BlockSize::Quads64 => ProductRoutine::Quads64,
            BlockSize::Quads128 => ProductRoutine::Quads128,
        }
    }

    /// The name reports print (the JSON's).
    pub fn name(self) -> String {
        serde_json::to_string(&self)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    }
}

impl ProductTiming {
    /// Multiply-adds counted twice: `2·batch·m·k·n` (batch axes broadcast).
    pub fn flops(&self) -> f64 {
        let rank = self.lhs.len().min(self.rhs.len());
        if rank < 2 {
            return 0.0;
        }
        let batch: usize = (0..rank - 2)
            .map(|axis| self.lhs[axis].max(self.rhs[axis]))
            .product();
        let (m, k, n) = (self.lhs[rank - 2], self.lhs[rank - 1], self.rhs[rank - 1]);
        2.0 * (batch * m * k * n) as f64
    }

    /// Microseconds per launch of the routine that runs this kind.
    pub fn chosen_us(&self) -> f64 {
        match self.runs_on {
            ProductRoutine::Burn => self.burn_us,
            tiled => self.tiled_us.get(&tiled).copied().unwrap_or(f64::NAN),
        }
    }

    /// The slowest candidate's microseconds per launch (the time at stake).
    pub fn slowest_us(&self) -> f64 {
        self.tiled_us
            .values()
            .fold(self.burn_us, |most, &us| most.max(us))
    }
}

/// Every kind of product timed so far in this process, in the order first met.
pub fn timings() -> Vec<ProductTiming> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return timings_now().list.clone();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    Vec::new()
}

/// The kinds timed so far: in the order met, and each kind's routine by its kind (every
/// product looks its kind up: a hash, not a walk over a few dozen entries); and each device met
/// (as burn prints it): whether it is a physical GPU and its adapter's name.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[derive(Default)]
struct Timings {
    list: Vec<ProductTiming>,
    by_kind: std::collections::HashMap<Kind, ProductRoutine>,
    adapters: std::collections::HashMap<String, Adapter>,
    /// Where choices are kept between processes ([`keep_choices_in`]).
    store: Option<super::product_store::Store>,
    /// Products on a software adapter are timed too, each candidate launched once
    /// ([`time_on_software_adapters`]).
    time_software: bool,
}

/// What the timings need to know of a device's adapter, asked once per device.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[derive(Clone)]
struct Adapter {
    /// A physical GPU (products timed), not a software adapter.
    physical: bool,
    /// Its name, as the kept choices are keyed (the printed device where the backend gives
    /// none).
    name: String,
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl Timings {
    /// `device`'s adapter (`name`: the device as burn prints it), asked of the backend once.
    fn adapter(&mut self, device: &burn::tensor::Device, name: &str) -> Adapter {
        if let Some(adapter) = self.adapters.get(name) {
            return adapter.clone();
        }
        let info = crate::device::adapter_info(device);
        let adapter = Adapter {
            physical: info.as_ref().is_some_and(|a| a.physical),
            name: info.map_or_else(|| name.to_string(), |a| a.name),
        };
        self.adapters.insert(name.to_string(), adapter.clone());
        adapter
    }

    /// Whether products on `device` (printed as `name`) are timed: on a physical GPU, not on a
    /// software adapter, where burn's routine runs untimed (module documentation).
    fn timed_on(&mut self, device: &burn::tensor::Device, name: &str) -> bool {
        #[cfg(all(test, feature = "wgpu"))]
        if TIME_SOFTWARE_HERE.with(std::cell::Cell::get) {
            return true;
        }
        self.time_software || self.adapter(device, name).physical
    }

    /// The kind as an earlier process of this build kept it, if the store has it.
    fn kept(&mut self, adapter: &str, kind: &Kind) -> Option<ProductTiming> {
        let operands = super::product_store::product_operands(
            [&kind.lhs.0, &kind.lhs.1],
            [&kind.rhs.0, &kind.rhs.1],
            kind.epilogue,
        );
        self.store.as_mut()?.find(adapter, &kind.device, &operands)
    }

    /// Keep a timing for later processes; a store that cannot be written is dropped with a
    /// warning (the choices stay in the process).
    fn keep(&mut self, adapter: &str, t: &ProductTiming) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = store.keep(adapter, t) {
            super::product_store::warn(&format!(
                "choices not kept: {e}; they hold for this process only"
            ));
            self.store = None;
        }
    }

    /// Forget a kind, as a process that never met it (tests of the kept choices).
    #[cfg(all(test, feature = "wgpu"))]
    fn forget(&mut self, kind: &Kind) {
        self.by_kind.remove(kind);
        self.list.retain(|t| Kind::timed_in(t) != *kind);
    }

    fn record(&mut self, t: ProductTiming) {
        self.by_kind.insert(Kind::timed_in(&t), t.runs_on);
        self.list.push(t);
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
static TIMINGS: std::sync::LazyLock<std::sync::Mutex<Timings>> =
    std::sync::LazyLock::new(Default::default);

#[cfg(all(test, feature = "wgpu"))]
thread_local! {
    /// A test's choice to time products on a software adapter too (lavapipe is what CI has).
    static TIME_SOFTWARE_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The timings, locked (a thread that panicked while holding them left whole entries only).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn timings_now() -> std::sync::MutexGuard<'static, Timings> {
    TIMINGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What makes two products the same kind.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Kind {
    device: String,
    lhs: (Vec<usize>, Vec<usize>),
    rhs: (Vec<usize>, Vec<usize>),
    /// Followed by a layer's epilogue ([`ProductTiming::epilogue`]).
    epilogue: bool,
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl Kind {
    /// The kind a timing was taken of.
    fn timed_in(t: &ProductTiming) -> Self {
        Kind {
            device: t.device.clone(),
            lhs: (t.lhs.clone(), t.lhs_strides.clone()),
            rhs: (t.rhs.clone(), t.rhs_strides.clone()),
            epilogue: t.epilogue,
        }
    }

    /// The kind of `a · b` (followed by an epilogue or not), with the strides the tiled kernel
    /// reads; `None` when it does not take the operands (`gpu_matmul_tiled::taken_strides`).
    fn of<const D: usize>(
        a: &burn::tensor::Tensor<D>,
        b: &burn::tensor::Tensor<D>,
        epilogue: bool,
    ) -> Option<Self> {
        let [lhs_strides, rhs_strides] = super::gpu_matmul_tiled::taken_strides(a, b)?;
        Some(Kind {
            device: format!("{:?}", a.device()),
            lhs: (a.dims().to_vec(), lhs_strides),
            rhs: (b.dims().to_vec(), rhs_strides),
            epilogue,
        })
    }
}

/// How each candidate is launched when a kind of product is timed.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[derive(Clone, Copy)]
enum Launches {
    /// [`ROUNDS`] rounds of [`per_launch_us`]: times a GPU's choice can rest on.
    Timed,
    /// One launch each, its compilation included: every candidate compiled, at a third or less
    /// of the launches (on lavapipe, where `hvq ptx-check` times products, the official model's
    /// products take milliseconds each).
    Once,
}

/// Every candidate timed on `a · b`, followed by the epilogue `then` if any (burn's product
/// then the epilogue's kernel; the tiled kernel applying it).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn time<const D: usize>(
    a: &burn::tensor::Tensor<D>,
    b: &burn::tensor::Tensor<D>,
    then: Option<&super::gpu_activations::RowEpilogue>,
    kind: Kind,
    launches: Launches,
) -> Result<ProductTiming, String> {
    use super::gpu_matmul_tiled::{BlockSize, matmul_then};
    let device = a.device();
    let burn_product = || {
        let product = a.clone().matmul(b.clone());
        if let Some(then) = then {
            drop(then.after(product));
        }
    };
    let tiled = BlockSize::ALL.map(|size| move || drop(matmul_then(a, b, size, then)));
    let mut candidates: Vec<&dyn Fn()> = vec![&burn_product];
    candidates.extend(tiled.iter().map(|run| run as &dyn Fn()));
    let mut us = [f64::INFINITY; 1 + BlockSize::ALL.len()];
    match launches {
        Launches::Timed => {
            for round in 0..ROUNDS {
                for (best, run) in us.iter_mut().zip(&candidates) {
                    *best = best.min(per_launch_us(&device, *run, round == 0)?);
                }
            }
        }
        Launches::Once => {
            for (took, run) in us.iter_mut().zip(&candidates) {
                *took = one_launch_us(&device, *run)?;
            }
        }
    }
    let tiled_us: std::collections::BTreeMap<_, _> = BlockSize::ALL
        .iter()
        .zip(&us[1..])
        .map(|(&size, &took)| (ProductRoutine::tiled(size), took))
        .collect();
    Ok(ProductTiming {
        device: kind.device,
        lhs: kind.lhs.0,
        lhs_strides: kind.lhs.1,
        rhs: kind.rhs.0,
        rhs_strides: kind.rhs.1,
        burn_us: us[0],
        runs_on: fastest(us[0], tiled_us.iter().map(|(&r, &t)| (r, t))),
        tiled_us,
        epilogue: kind.epilogue,
        stored: false,
    })
}

/// The routine the times choose: the fastest block size of the tiled kernel when it beats
/// burn's routine by [`MARGIN`] (a tie between sizes goes to the first given), else burn's.
#[cfg(any(feature = "wgpu", feature = "cuda", test))]
fn fastest(burn_us: f64, tiled: impl IntoIterator<Item = (ProductRoutine, f64)>) -> ProductRoutine {
    let Some((routine, us)) = tiled
        .into_iter()
        .reduce(|best, next| if next.1 < best.1 { next } else { best })
    else {
        return ProductRoutine::Burn;
    };
    if us < burn_us * (1.0 - MARGIN) {
        routine
    } else {
        ProductRoutine::Burn
    }
}

/// Microseconds of `run` launched once, the device idle before and waited for after.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn one_launch_us(device: &burn::tensor::Device, run: &dyn Fn()) -> Result<f64, String> {
    let wait = || device.sync().map_err(|e| format!("{e:?}"));
    wait()?;
    let start = web_time::Instant::now();
    run();
    wait()?;
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

/// Microseconds of one launch of `run`: launches in growing batches (1, 4, 16, …) until a batch
/// takes [`TIMED_AT_LEAST`] or [`MOST_LAUNCHES`], the device idle before and waited for after.
/// With `warm_up`, one untimed launch first (the kernel's compilation).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn per_launch_us(
    device: &burn::tensor::Device,
    run: &dyn Fn(),
    warm_up: bool,
) -> Result<f64, String> {
    let wait = || device.sync().map_err(|e| format!("{e:?}"));
    if warm_up {
        run();
    }
    wait()?;
    let mut launches = 1;
    loop {
        let start = web_time::Instant::now();
        for _ in 0..launches {
            run();
        }
        wait()?;
        let took = start.elapsed().as_secs_f64();
        if took >= TIMED_AT_LEAST || launches >= MOST_LAUNCHES {
            return Ok(took * 1e6 / launches as f64);
        }
        launches = (launches * 4).min(MOST_LAUNCHES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiled_kernel_needs_to_win_by_the_margin_with_its_faster_size() {
        use ProductRoutine::*;
        let tiled = |us: [f64; 4]| {
            [
                (Tiled64, us[0]),
                (Tiled32, us[1]),
                (Tiled128, us[2]),
                (Quads128, us[3]),
            ]
        };
        assert_eq!(fastest(100.0, tiled([90.0, 120.0, 130.0, 99.0])), Tiled64);
        assert_eq!(fastest(100.0, tiled([120.0, 90.0, 95.0, 99.0])), Tiled32);
        assert_eq!(fastest(100.0, tiled([120.0, 90.0, 60.0, 99.0])), Tiled128);
        assert_eq!(fastest(100.0, tiled([120.0, 90.0, 60.0, 40.0])), Quads128);
        assert_eq!(fastest(100.0, tiled([80.0, 80.0, 80.0, 80.0])), Tiled64);
        assert_eq!(fastest(100.0, tiled([96.0, 97.0, 99.0, 98.0])), Burn);
        assert_eq!(fastest(100.0, tiled([100.0, 100.0, 100.0, 100.0])), Burn);
        assert_eq!(fastest(100.0, tiled([150.0, 200.0, 101.0, 100.0])), Burn);
        assert_eq!(fastest(100.0, []), Burn);
    }

    /// A kind's flops count its broadcast batch; the chosen routine's time is its own.
    #[test]
    fn a_kind_counts_its_flops_and_the_chosen_time() {
        let t = ProductTiming {
            device: "gpu".into(),
            lhs: vec![2, 196, 256],
            lhs_strides: vec![50176, 256, 1],
            rhs: vec![1, 256, 128],
            rhs_strides: vec![32768, 1, 256],
            burn_us: 10.0,
            tiled_us: [(ProductRoutine::Quads64, 4.0)].into(),
            runs_on: ProductRoutine::Quads64,
            epilogue: false,
            stored: false,
        };
        assert_eq!(t.flops(), 2.0 * 2.0 * 196.0 * 256.0 * 128.0);
        assert_eq!(t.chosen_us(), 4.0);
        assert_eq!(
            ProductTiming {
                runs_on: ProductRoutine::Burn,
                ..t
            }
            .chosen_us(),
            10.0
        );
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod gpu_tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::device::gpu_matmul::{TiledUse, tiled_here};
    use crate::device::kernel_profile::KernelProfiler;
    use crate::kernels::gpu::{stored_as, values};
    use crate::kernels::{gpu_matmul_tiled, products};

    /// The timings of products whose left operand has `lhs`'s shape.
    fn timed(lhs: [usize; 3]) -> Vec<ProductTiming> {
        timings().into_iter().filter(|t| t.lhs == lhs).collect()
    }

    /// With `auto` (on this thread), on a software adapter (lavapipe) burn's routine runs
    /// untimed; where products are timed (here: told to), the first product of a kind is timed
    /// once: one entry with every candidate's time and the margin rule's choice of them; that
    /// product and every later one of its kind are computed by the chosen routine (bit for bit
    /// its result) and later ones launch only its kernel. Other strides (a transposed view) make another kind;
    /// tracked operands, which the tiled kernel does not take, are never timed.
    #[test]
    fn each_kind_of_product_is_timed_once_and_runs_on_the_faster_routine() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        // A shape no other test multiplies (the timings are the process's).
        let (dims_a, dims_b) = ([3, 37, 53], [3, 53, 29]);
        let a = Tensor::<3>::random(dims_a, Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<3>::random(dims_b, Distribution::Normal(0.0, 1.0), &device);
        tiled_here(Some(TiledUse::WhenFaster));
        assert!(timed(dims_a).is_empty());
        // lavapipe is a software adapter: burn's routine, untimed.
        let profiler = KernelProfiler::start("software");
        let product = products::matmul(a.clone(), b.clone());
        let profile = profiler.finish();
        let names = profile.stages[0].names();
        assert!(
            names.len() == 1 && names[0].starts_with("MatmulEntry"),
            "{names:?}"
        );
        assert_eq!(values(product), values(a.clone().matmul(b.clone())));
        assert!(timed(dims_a).is_empty(), "{:?}", timed(dims_a));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));

        let first = values(products::matmul(a.clone(), b.clone()));
        let entries = timed(dims_a);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let t = &entries[0];
        assert_eq!(
            (t.rhs.as_slice(), t.lhs_strides.as_slice()),
            (&dims_b[..], &[37 * 53, 53, 1][..])
        );
        assert_eq!(t.tiled_us.len(), gpu_matmul_tiled::BlockSize::ALL.len());
        for us in std::iter::once(&t.burn_us).chain(t.tiled_us.values()) {
            assert!(us.is_finite() && *us > 0.0, "{t:?}");
        }
        assert_eq!(
            t.runs_on,
            fastest(t.burn_us, t.tiled_us.iter().map(|(&r, &u)| (r, u)))
        );
        let want = match t.runs_on.block_size() {
            Some(size) => values(gpu_matmul_tiled::matmul_in(&a, &b, size).unwrap()),
            None => values(a.clone().matmul(b.clone())),
        };
        assert_eq!(first, want);

        let profiler = KernelProfiler::start("auto");
        let again = products::matmul(a.clone(), b.clone());
        let profile = profiler.finish();
        assert_eq!(values(again), want);
        assert_eq!(timed(dims_a).len(), 1, "timed once");
        let names = profile.stages[0].names();
        let prefix = match t.runs_on {
            ProductRoutine::Burn => "MatmulEntry",
            ProductRoutine::Quads64 | ProductRoutine::Quads128 => "QuadMatmul",
            _ => "TiledMatmul",
        };
        assert!(
            names.len() == 1 && names[0].starts_with(prefix),
            "{t:?}: {names:?}"
        );

        let b_columns = stored_as(b.clone(), [0, 2, 1]);
        let _ = values(products::matmul(a.clone(), b_columns));
        let entries = timed(dims_a);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[1].rhs_strides, [53 * 29, 1, 53]);

        let tracked = device.clone().autodiff();
        let (a, b) = (
            Tensor::<3>::from_data(a.into_data(), &tracked).require_grad(),
            Tensor::<3>::from_data(b.into_data(), &tracked),
        );
        let _ = values(products::matmul(a, b));
        assert_eq!(timed(dims_a).len(), 2, "tracked operands are not timed");
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        tiled_here(None);
    }

    /// A kind of product recorded as the tiled kernel's (in blocks of 32) runs on it: one
    /// launch of the tiled kernel, its values bit for bit, nothing timed again.
    #[test]
    fn a_kind_recorded_for_the_tiled_kernel_runs_on_it() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let (dims_a, dims_b) = ([2, 41, 19], [2, 19, 23]);
        let a = Tensor::<3>::random(dims_a, Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<3>::random(dims_b, Distribution::Normal(0.0, 1.0), &device);
        let kind = Kind::of(&a, &b, false).unwrap();
        timings_now().record(ProductTiming {
            device: kind.device,
            lhs: kind.lhs.0,
            lhs_strides: kind.lhs.1,
            rhs: kind.rhs.0,
            rhs_strides: kind.rhs.1,
            burn_us: 10.0,
            tiled_us: [
                (ProductRoutine::Tiled64, 9.0),
                (ProductRoutine::Tiled32, 5.0),
            ]
            .into(),
            runs_on: ProductRoutine::Tiled32,
            epilogue: false,
            stored: false,
        });
        tiled_here(Some(TiledUse::WhenFaster));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let want =
            values(gpu_matmul_tiled::matmul_in(&a, &b, gpu_matmul_tiled::BlockSize::Of32).unwrap());
        let profiler = KernelProfiler::start("recorded");
        let got = products::matmul(a, b);
        let profile = profiler.finish();
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        tiled_here(None);
        assert_eq!(values(got), want);
        let names = profile.stages[0].names();
        assert!(
            names.len() == 1 && names[0].starts_with("TiledMatmul"),
            "{names:?}"
        );
        assert_eq!(timed(dims_a).len(), 1);
    }

    /// A product followed by a layer's epilogue (`products::linear_activated`) is a kind of its
    /// own, timed with the epilogue: one entry marked `epilogue` with every candidate's time;
    /// its value bit for bit the chosen routine's product followed by the epilogue's kernel;
    /// later calls launch the chosen routine only (the tiled kernel alone, applying the
    /// epilogue, or burn's product and the epilogue's kernel) and time nothing. The same
    /// operands without an epilogue are another kind, timed apart.
    #[test]
    fn a_product_with_an_epilogue_is_timed_with_it() {
        let _generator = crate::test_rng::lock();
        use crate::kernels::Activation;
        use crate::kernels::gpu_activations::RowEpilogue;
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        // Shapes no other test multiplies (the timings are the process's).
        let (m, k, n) = (43, 35, 27);
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 0.5), &device);
        let bias = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let residual = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
        let timed_here = || -> Vec<ProductTiming> {
            timings().into_iter().filter(|t| t.lhs == [m, k]).collect()
        };
        tiled_here(Some(TiledUse::WhenFaster));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        assert!(timed_here().is_empty());
        let layer = || {
            products::linear_activated(&x, &w, &bias, Some(&residual), Activation::Swish).unwrap()
        };

        let first = values(layer());
        let entries = timed_here();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let t = entries[0].clone();
        assert!(t.epilogue, "{t:?}");
        assert_eq!(t.tiled_us.len(), gpu_matmul_tiled::BlockSize::ALL.len());
        let product = match t.runs_on.block_size() {
            Some(size) => gpu_matmul_tiled::matmul_in(&x, &w, size).unwrap(),
            None => x.clone().matmul(w.clone()),
        };
        let then = RowEpilogue::new(&bias, Some(&residual), Activation::Swish, [m, n]).unwrap();
        let want = values(then.after(product).unwrap());
        assert_eq!(first, want, "{t:?}");

        let profiler = KernelProfiler::start("epilogue");
        let again = values(layer());
        let profile = profiler.finish();
        assert_eq!(again, want);
        assert_eq!(timed_here().len(), 1, "timed once");
        let names = profile.stages[0].names();
        match t.runs_on {
            ProductRoutine::Burn => assert!(
                names.len() == 2
                    && names.iter().any(|n| n.starts_with("MatmulEntry"))
                    && names.iter().any(|n| n.starts_with("BiasActivation")),
                "{names:?}"
            ),
            _ => assert!(
                names.len() == 1 && names[0].contains("MatmulKernel"),
                "{t:?}: {names:?}"
            ),
        }

        let _ = values(products::matmul(x.clone(), w.clone()));
        let entries = timed_here();
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        tiled_here(None);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(!entries[1].epilogue);
        assert_eq!(entries[1].lhs_strides, t.lhs_strides);
    }

    /// With a file of kept choices (`keep_choices_in`), a kind timed here is kept in it; a
    /// process that has not met the kind (here: the kind forgotten, the file read anew) takes
    /// it from the file instead of timing it: the routine the file names (an entry edited to
    /// another one runs that one, bit for bit, one launch, nothing timed), marked stored.
    #[test]
    fn kept_choices_are_taken_instead_of_timing() {
        let _generator = crate::test_rng::lock();
        let _kept_choices = crate::kernels::product_store::test_file_lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let (dims_a, dims_b) = ([2, 45, 27], [2, 27, 31]);
        let a = Tensor::<3>::random(dims_a, Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<3>::random(dims_b, Distribution::Normal(0.0, 1.0), &device);
        let dir = std::env::temp_dir().join(format!("hvq-kept-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let path = dir.join("choices.json");
        keep_choices_in(Some(path.clone()));
        tiled_here(Some(TiledUse::WhenFaster));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));

        let _ = values(products::matmul(a.clone(), b.clone()));
        let timed_here = timed(dims_a);
        assert_eq!(timed_here.len(), 1);
        assert!(!timed_here[0].stored);
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = file["builds"][0]["kinds"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|k| k["lhs"] == serde_json::json!(dims_a))
            .expect("the kind is kept");
        assert_eq!(
            entry["runs_on"],
            serde_json::to_value(timed_here[0].runs_on).unwrap()
        );
        assert!(entry["adapter"].as_str().is_some_and(|a| !a.is_empty()));
        // Another routine than the one timed, so that running it shows the file was read.
        let edited = if timed_here[0].runs_on == ProductRoutine::Tiled32 {
            ProductRoutine::Tiled128
        } else {
            ProductRoutine::Tiled32
        };
        entry["runs_on"] = serde_json::to_value(edited).unwrap();
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

        timings_now().forget(&Kind::of(&a, &b, false).unwrap());
        keep_choices_in(Some(path.clone()));
        let size = edited.block_size().unwrap();
        let want = values(gpu_matmul_tiled::matmul_in(&a, &b, size).unwrap());
        let profiler = KernelProfiler::start("kept");
        let got = products::matmul(a, b);
        let profile = profiler.finish();
        keep_choices_in(None);
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        tiled_here(None);
        std::fs::remove_dir_all(&dir).ok();

        assert_eq!(values(got), want);
        let names = profile.stages[0].names();
        assert!(
            names.len() == 1 && names[0].starts_with("TiledMatmul"),
            "taken from the file, not timed: {names:?}"
        );
        let entries = timed(dims_a);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(
            entries[0].stored && entries[0].runs_on == edited,
            "{entries:?}"
        );
    }
}
