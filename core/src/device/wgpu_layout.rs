//! `HVQ_WGPU_LAYOUT`: wgpu allocating tensors as CUDA does, a stand-in for the tests.
//!
//! CUDA's runtime pads a tensor's rows to an aligned pitch (cubecl's `PitchedMemoryLayoutPolicy`),
//! while wgpu stores every tensor without padding, so a kernel that mishandles padded rows passes
//! every wgpu test and is wrong on an NVIDIA GPU (docs/gpu.md, "Unpadded outputs"). With
//! `pitched`, the patched cubecl-wgpu (`vendor/`) allocates with CUDA's policy and reads and
//! writes such tensors (it reads the variable itself, once, when the first wgpu device starts);
//! `scripts/test.sh` runs the golden tests so. A testing aid, not a speed choice: a padded read or
//! write copies around the padding on the host. Checked at start-up ([`check_variable`], the
//! CLI's first step) so that a typo is an error rather than a silent contiguous run.

use crate::error::Result;

/// The environment variable.
pub const VARIABLE: &str = "HVQ_WGPU_LAYOUT";

/// How wgpu lays tensors out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgpuLayout {
    /// Every row right after the one before (wgpu's own; the default).
    Contiguous,
    /// Rows padded as CUDA pads them.
    Pitched,
}

impl WgpuLayout {
    /// Every choice, the default first.
    pub const ALL: [WgpuLayout; 2] = [WgpuLayout::Contiguous, WgpuLayout::Pitched];

    /// The name the variable takes.
    pub fn name(self) -> &'static str {
        match self {
            WgpuLayout::Contiguous => "contiguous",
            WgpuLayout::Pitched => "pitched",
        }
    }

    /// The choice named `name`; otherwise an error naming the variable and the choices.
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// The layout the variable asks for (unset: contiguous), or an error naming it.
pub fn check_variable() -> Result<WgpuLayout> {
    crate::env_setting::read(VARIABLE, WgpuLayout::ALL[0], WgpuLayout::parse)
}

/// The layout wgpu devices of this process allocate with: what the patched cubecl-wgpu read
/// (contiguous in a build without wgpu, and in a browser, which has no environment).
pub fn current() -> WgpuLayout {
    #[cfg(all(feature = "wgpu", not(target_family = "wasm")))]
    if cubecl::wgpu::pitched_layout() {
        return WgpuLayout::Pitched;
    }
    WgpuLayout::Contiguous
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both names parse (case and space as the other switches take them); a typo is an error
    /// naming the variable, the value and the choices; the tests' process runs contiguous
    /// unless `scripts/test.sh` asked for the stand-in.
    #[test]
    fn the_layout_switch_parses_and_a_typo_is_refused() {
        assert_eq!(WgpuLayout::parse("pitched").unwrap(), WgpuLayout::Pitched);
        assert_eq!(
            WgpuLayout::parse(" Contiguous ").unwrap(),
            WgpuLayout::Contiguous
        );
        let err = WgpuLayout::parse("padded").unwrap_err().to_string();
        assert!(
            err.contains(VARIABLE) && err.contains("padded") && err.contains("pitched"),
            "{err}"
        );
        let asked = check_variable().unwrap();
        assert_eq!(current(), asked);
    }
}
