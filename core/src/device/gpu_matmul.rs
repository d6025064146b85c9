//! Which routine burn's GPU backends run a matrix product on when no tensor core takes it
//! (every f32 product at `--precision f32`, every product on wgpu), and `HVQ_GPU_MATMUL`, which
//! picks it for a process.
//!
//! Built without autotune (hvq's build: measured on the H200 through wgpu, it did not pay),
//! burn runs such products on cubek's `SimpleUnit` routine at its largest tile. Its autotuner
//! would weigh four more (double-buffered stages, the smallest tile, the plane-level `Gemm`),
//! and on an NVIDIA GPU, where PyTorch's f32 products are cuBLAS's, which one wins decides most
//! of the transformer's time. The patched cubek-matmul (`vendor/`) takes the choice as a
//! process-wide setting, so `scripts/gpu-bench.sh` measures each on the device in one binary.
//! A sixth, `tiled`, is hvq's own kernel (`kernels/gpu_matmul_tiled.rs`: 64×64 blocks, the
//! inner dimension split across cubes when the blocks are few), which `kernels::products` runs
//! for plain f32 products on a GPU when chosen, cubek's `SimpleUnit` taking the rest. A
//! seventh, `auto`, lets the device decide: for each distinct product the first call times the
//! tiled kernel against `SimpleUnit` on its own operands and the faster takes it for the rest
//! of the process (`kernels/product_choice.rs`). Which wins depends on the GPU (on lavapipe, a
//! CPU driver, `SimpleUnit` by far; on an H200 `SimpleUnit` ran the products at about 1.2
//! TFLOP/s), and no single default fits every GPU hvq runs on.
//!
//! Read once, at start-up ([`apply_variable`]: the CLI and the desktop inspector), where unset
//! means `auto`. A program that never reads it (the library's tests, the web page, whose
//! WebGPU cannot wait for the device to time anything) runs `simple`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::Result;

/// The environment variable that picks the routine.
pub const VARIABLE: &str = "HVQ_GPU_MATMUL";

/// The routines, by the names the variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuMatmul {
    /// `SimpleUnit` at its largest tile: upstream's choice, the default.
    Simple,
    /// `SimpleUnit` at its smallest tile.
    SimpleMinTile,
    /// `DoubleUnit` (double-buffered stages) at its largest tile.
    Double,
    /// `DoubleUnit` at its smallest tile.
    DoubleMinTile,
    /// cubek's plane-level `Gemm`.
    Gemm,
    /// hvq's tiled kernel for plain f32 products (`kernels::products`), `SimpleUnit` for others.
    Tiled,
    /// For each distinct plain f32 product, whichever of `Tiled` and `Simple` its first call
    /// timed faster on this device; `SimpleUnit` for other products.
    Auto,
}

impl GpuMatmul {
    /// Every routine, the library's default first.
    pub const ALL: [GpuMatmul; 7] = [
        GpuMatmul::Simple,
        GpuMatmul::SimpleMinTile,
        GpuMatmul::Double,
        GpuMatmul::DoubleMinTile,
        GpuMatmul::Gemm,
        GpuMatmul::Tiled,
        GpuMatmul::Auto,
    ];

    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            GpuMatmul::Simple => "simple",
            GpuMatmul::SimpleMinTile => "simple-min-tile",
            GpuMatmul::Double => "double",
            GpuMatmul::DoubleMinTile => "double-min-tile",
            GpuMatmul::Gemm => "gemm",
            GpuMatmul::Tiled => "tiled",
            GpuMatmul::Auto => "auto",
        }
    }

    /// The routine named `name` (one of [`GpuMatmul::ALL`]'s names).
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// Read `HVQ_GPU_MATMUL` (unset: [`GpuMatmul::Auto`]) and set the routine for this process: a
/// typo is an error rather than a silent measurement of the default.
pub fn apply_variable() -> Result<GpuMatmul> {
    let routine = crate::env_setting::read(VARIABLE, GpuMatmul::Auto, GpuMatmul::parse)?;
    set(routine);
    Ok(routine)
}

/// The patched cubek-matmul's name for `routine`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn unit_routine(routine: GpuMatmul) -> cubek_matmul::strategy::UnitRoutine {
    use cubek_matmul::strategy::UnitRoutine;
    match routine {
        GpuMatmul::Simple => UnitRoutine::SimpleMaxTile,
        GpuMatmul::SimpleMinTile => UnitRoutine::SimpleMinTile,
        GpuMatmul::Double => UnitRoutine::DoubleMaxTile,
        GpuMatmul::DoubleMinTile => UnitRoutine::DoubleMinTile,
        GpuMatmul::Gemm => UnitRoutine::Gemm,
        GpuMatmul::Tiled | GpuMatmul::Auto => UnitRoutine::SimpleMaxTile,
    }
}

/// When plain f32 products on a GPU run on hvq's tiled kernel (`kernels::products`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiledUse {
    /// Never: cubek's routine takes every product.
    Never,
    /// Always ([`GpuMatmul::Tiled`]).
    Always,
    /// For the products it was timed faster on ([`GpuMatmul::Auto`]).
    WhenFaster,
}

impl TiledUse {
    fn of(routine: GpuMatmul) -> Self {
        match routine {
            GpuMatmul::Tiled => TiledUse::Always,
            GpuMatmul::Auto => TiledUse::WhenFaster,
            _ => TiledUse::Never,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Self {
        [TiledUse::Never, TiledUse::Always, TiledUse::WhenFaster][code as usize]
    }
}

/// The process's [`TiledUse`] (the cubek setting cannot tell `Tiled` or `Auto` from `Simple`).
static TILED_USE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// A test's choice for its own thread's products, over the process's: the tiled kernel may
    /// take two launches where `SimpleUnit` takes one, which other tests running meanwhile
    /// would count.
    static TILED_HERE: Cell<Option<TiledUse>> = const { Cell::new(None) };
}

/// When plain f32 products on a GPU run on hvq's tiled kernel.
pub fn tiled_use() -> TiledUse {
    TILED_HERE
        .with(Cell::get)
        .unwrap_or_else(|| TiledUse::from_code(TILED_USE.load(Ordering::Relaxed)))
}

/// [`tiled_use`] for this thread only (`None`: the process's setting again), for tests.
#[cfg(all(test, feature = "wgpu"))]
pub(crate) fn tiled_here(choice: Option<TiledUse>) {
    TILED_HERE.with(|here| here.set(choice));
}

/// Set the routine for the products launched afterwards (a no-op without a GPU backend).
pub fn set(routine: GpuMatmul) {
    TILED_USE.store(TiledUse::of(routine).code(), Ordering::Relaxed);
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    cubek_matmul::strategy::set_unit_routine(unit_routine(routine));
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = routine;
}

/// The routine in use now ([`GpuMatmul::Simple`] without a GPU backend).
pub fn current() -> GpuMatmul {
    match tiled_use() {
        TiledUse::Always => return GpuMatmul::Tiled,
        TiledUse::WhenFaster => return GpuMatmul::Auto,
        TiledUse::Never => {}
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        let now = cubek_matmul::strategy::unit_routine();
        GpuMatmul::ALL
            .into_iter()
            .find(|r| unit_routine(*r) == now)
            .unwrap_or(GpuMatmul::Simple)
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    GpuMatmul::Simple
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for r in GpuMatmul::ALL {
            assert_eq!(GpuMatmul::parse(r.name()).unwrap(), r);
        }
        let e = GpuMatmul::parse("doubel").unwrap_err().to_string();
        assert!(
            e.contains("HVQ_GPU_MATMUL=doubel") && e.contains("double-min-tile"),
            "{e}"
        );
    }

    /// On wgpu each routine runs the product (the kernel this thread launches is the routine's:
    /// cubek names its double-buffered family apart from the simple one, and `Gemm` apart from
    /// both) and gives the f64 product within f32 rounding of a 96-term sum. The setting is
    /// the process's: another test's product launched meanwhile runs on the routine set here,
    /// which computes the same values. `tiled` (hvq's kernel, which `kernels::products` runs and
    /// its tests check) is chosen here for this thread only.
    #[cfg(feature = "wgpu")]
    #[test]
    fn each_routine_runs_the_product() {
        let _generator = crate::test_rng::lock();
        use burn::tensor::{Distribution, Tensor};
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let a: Tensor<2> = Tensor::random([70, 96], Distribution::Normal(0.0, 1.0), &wgpu);
        let b: Tensor<2> = Tensor::random([96, 50], Distribution::Normal(0.0, 1.0), &wgpu);
        let (av, bv) = (
            a.clone().into_data().try_to_vec::<f32>().unwrap(),
            b.clone().into_data().try_to_vec::<f32>().unwrap(),
        );
        // The f64 product and, per value, the bound of an f32 sum of its 96 terms in any order.
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for i in 0..70 {
            for j in 0..50 {
                let terms = (0..96).map(|k| av[i * 96 + k] as f64 * bv[k * 50 + j] as f64);
                want.push(terms.clone().sum::<f64>());
                bound.push(96.0 * 2f64.powi(-24) * terms.map(f64::abs).sum::<f64>());
            }
        }
        let mut names = Vec::new();
        // cubek's routines; `tiled` and `auto` are taken by `kernels::products`, whose tests
        // run them.
        for routine in GpuMatmul::ALL
            .into_iter()
            .filter(|r| !matches!(r, GpuMatmul::Tiled | GpuMatmul::Auto))
        {
            set(routine);
            assert_eq!(current(), routine);
            let profiler = crate::device::kernel_profile::KernelProfiler::start("matmul");
            let got = a.clone().matmul(b.clone());
            let got = got.into_data().try_to_vec::<f32>().unwrap();
            let profile = profiler.finish();
            // The product's kernel (`Gemm` copies an operand into its layout first).
            let products: Vec<_> = profile.stages[0]
                .kernels
                .iter()
                .filter(|k| k.name.starts_with("MatmulEntry"))
                .collect();
            assert_eq!(products.len(), 1, "{routine:?}: {profile:#?}");
            names.push((routine, products[0].name.clone()));
            for ((g, w), e) in got.iter().zip(&want).zip(&bound) {
                assert!((*g as f64 - w).abs() <= *e, "{routine:?}: {g} vs {w}");
            }
        }
        set(GpuMatmul::Simple);
        let name = |r: GpuMatmul| &names.iter().find(|(n, _)| *n == r).unwrap().1;
        assert!(name(GpuMatmul::Simple).contains("SimpleMatmulFamily"));
        assert!(name(GpuMatmul::Double).contains("DoubleBufferingMatmulFamily"));
        assert!(!name(GpuMatmul::Gemm).contains("SimpleMatmulFamily"));
        // Chosen for one thread, `tiled` or `auto` reads as the current routine there only.
        tiled_here(Some(TiledUse::Always));
        assert_eq!(current(), GpuMatmul::Tiled);
        tiled_here(Some(TiledUse::WhenFaster));
        assert_eq!(current(), GpuMatmul::Auto);
        tiled_here(None);
        assert_eq!(current(), GpuMatmul::Simple);
    }
}
