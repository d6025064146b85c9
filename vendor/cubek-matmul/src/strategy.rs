use std::fmt::Display;

use cubecl::{client::Client, prelude::TensorBinding};
use cubek_std::InputBinding;

use crate::definition::{MatmulElems, MatmulSetupError};
#[cfg(feature = "multi-level")]
use crate::multi_level;
#[cfg(feature = "tiled")]
use crate::tiled;

/// How to solve a matmul. The two arms are the two kernel architectures: routines written
/// on the tile DSL, and routines written on the batch/global/stage/tile levels.
#[derive(Clone, Default)]
pub enum Strategy {
    #[cfg(feature = "tiled")]
    Tiled(tiled::Strategy),
    #[cfg(feature = "multi-level")]
    MultiLevel(multi_level::Strategy),
    #[default]
    Auto,
}

#[cfg(feature = "tiled")]
impl From<tiled::Strategy> for Strategy {
    fn from(s: tiled::Strategy) -> Self {
        Strategy::Tiled(s)
    }
}

#[cfg(feature = "multi-level")]
impl From<multi_level::Strategy> for Strategy {
    fn from(s: multi_level::Strategy) -> Self {
        Strategy::MultiLevel(s)
    }
}

impl Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "tiled")]
            Strategy::Tiled(s) => write!(f, "{}", s),
            #[cfg(feature = "multi-level")]
            Strategy::MultiLevel(s) => write!(f, "{}", s),
            Strategy::Auto => f.write_str("matmul_auto"),
        }
    }
}

#[allow(clippy::result_large_err)]
impl Strategy {
    pub(crate) fn launch_ref(
        &self,
        client: &Client,
        lhs: InputBinding,
        rhs: InputBinding,
        out: TensorBinding,
        dtypes: &mut MatmulElems,
    ) -> Result<(), MatmulSetupError> {
        match self {
            #[cfg(feature = "tiled")]
            Strategy::Tiled(s) => s.launch_ref(client, lhs, rhs, out, dtypes),
            #[cfg(feature = "multi-level")]
            Strategy::MultiLevel(s) => s.launch_ref(client, lhs, rhs, out, dtypes),
            Strategy::Auto => auto(client, lhs, rhs, out, dtypes),
        }
    }
}

/// Accelerated first, falling back to the routine that needs no accelerator. A storage-tiled
/// operand is a fact of the data, not a knob: it was stored in tiles for the tiled cmma routine, which
/// stages to its tiles, so it goes there (the multi-level routines refuse it).
#[cfg(feature = "multi-level")]
fn auto(
    client: &Client,
    lhs: InputBinding,
    rhs: InputBinding,
    out: TensorBinding,
    dtypes: &mut MatmulElems,
) -> Result<(), MatmulSetupError> {
    #[cfg(feature = "tiled")]
    if lhs.data().tiling.is_tiled() || rhs.data().tiling.is_tiled() {
        return tiled::Strategy::Cmma(Default::default()).launch_ref(client, lhs, rhs, out, dtypes);
    }
    if let Err(err) = multi_level::Strategy::SimpleCyclicCmma(Default::default()).launch_ref(
        client,
        lhs.clone(),
        rhs.clone(),
        out.clone(),
        dtypes,
    ) {
        match err {
            MatmulSetupError::Unavailable(_) => {
                // hvq patch: the routine for products no tensor core takes is chosen by
                // `set_unit_routine` (upstream: always `SimpleUnit` at its largest tile).
                unit_strategy().launch_ref(client, lhs, rhs, out, dtypes)?;
            }
            _ => panic!("{err:?}"),
        }
    }

    Ok(())
}

/// hvq patch: the routines that run a matrix product without tensor cores (f32 without TF32 on
/// NVIDIA, every product on a device without them): the candidates burn's autotuner weighs for
/// them, here chosen once per process so that they can be measured against each other on a
/// device without building with autotune.
#[cfg(feature = "multi-level")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitRoutine {
    /// `SimpleUnit` at its largest tile (upstream's choice; the default).
    SimpleMaxTile,
    /// `SimpleUnit` at its smallest tile.
    SimpleMinTile,
    /// `DoubleUnit` (double-buffered stages) at its largest tile.
    DoubleMaxTile,
    /// `DoubleUnit` at its smallest tile.
    DoubleMinTile,
    /// The plane-level `Gemm` routine.
    Gemm,
}

#[cfg(feature = "multi-level")]
static UNIT_ROUTINE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

#[cfg(feature = "multi-level")]
const UNIT_ROUTINES: [UnitRoutine; 5] = [
    UnitRoutine::SimpleMaxTile,
    UnitRoutine::SimpleMinTile,
    UnitRoutine::DoubleMaxTile,
    UnitRoutine::DoubleMinTile,
    UnitRoutine::Gemm,
];

/// hvq patch: the routine for products no tensor core takes, process-wide, for the products
/// launched after the call.
#[cfg(feature = "multi-level")]
pub fn set_unit_routine(routine: UnitRoutine) {
    let index = UNIT_ROUTINES.iter().position(|r| *r == routine).unwrap_or(0);
    UNIT_ROUTINE.store(index as u8, core::sync::atomic::Ordering::Relaxed);
}

/// hvq patch: the routine [`set_unit_routine`] chose.
#[cfg(feature = "multi-level")]
pub fn unit_routine() -> UnitRoutine {
    UNIT_ROUTINES[UNIT_ROUTINE.load(core::sync::atomic::Ordering::Relaxed) as usize]
}

#[cfg(feature = "multi-level")]
fn unit_strategy() -> multi_level::Strategy {
    use crate::routine::BlueprintStrategy;
    use multi_level::routines::{
        TileSizeSelection,
        batch::{double_unit::DoubleUnitSelectionArgs, simple_unit::SimpleUnitSelectionArgs},
        gemm::GemmStrategy,
    };
    let simple = |tile_size| {
        multi_level::Strategy::SimpleUnit(BlueprintStrategy::Inferred(SimpleUnitSelectionArgs {
            tile_size,
        }))
    };
    let double = |tile_size| {
        multi_level::Strategy::DoubleUnit(BlueprintStrategy::Inferred(DoubleUnitSelectionArgs {
            tile_size,
        }))
    };
    match unit_routine() {
        UnitRoutine::SimpleMaxTile => multi_level::Strategy::SimpleUnit(Default::default()),
        UnitRoutine::SimpleMinTile => simple(TileSizeSelection::MinTileSize),
        UnitRoutine::DoubleMaxTile => double(TileSizeSelection::MaxTileSize),
        UnitRoutine::DoubleMinTile => double(TileSizeSelection::MinTileSize),
        UnitRoutine::Gemm => {
            multi_level::Strategy::Gemm(BlueprintStrategy::Inferred(GemmStrategy::default()))
        }
    }
}

/// The tiled-only pair. `CpuGemm` takes the fallback slot as the one tiled routine with no
/// hardware requirement; it was tuned for CPU and has never been measured as a GPU fallback.
#[cfg(all(feature = "tiled", not(feature = "multi-level")))]
fn auto(
    client: &Client,
    lhs: InputBinding,
    rhs: InputBinding,
    out: TensorBinding,
    dtypes: &mut MatmulElems,
) -> Result<(), MatmulSetupError> {
    if let Err(err) = tiled::Strategy::Cmma(Default::default()).launch_ref(
        client,
        lhs.clone(),
        rhs.clone(),
        out.clone(),
        dtypes,
    ) {
        match err {
            MatmulSetupError::Unavailable(_) => {
                tiled::Strategy::CpuGemm(Default::default())
                    .launch_ref(client, lhs, rhs, out, dtypes)?;
            }
            _ => panic!("{err:?}"),
        }
    }

    Ok(())
}
