//! Training recipes: named settings for a compute budget, each one measured (docs/quality.md).
//! A recipe fills in what the command leaves open (preset, epochs, learning rate, width,
//! dropout, input size); anything given explicitly wins. `official` is the released code's
//! configuration, the faithful default; `cpu` is the best schedule the study has measured on a
//! 2-core CPU (ELPV's 1207 cells: mean image AUROC 0.906 in 53 minutes of epochs: the shipped
//! default model).

use super::training::{Overrides, Preset};
use crate::error::{HvqError, Result};

/// A named set of training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it is for and what it was measured to give, in one line.
    pub summary: &'static str,
    /// Objective preset.
    pub preset: Preset,
    /// Epochs (the lr step at 80 % of them).
    pub epochs: usize,
    /// Learning rate before the step.
    pub lr: f64,
    /// Width, dropout and input size (`None`: the preset's).
    pub overrides: Overrides,
}

impl Recipe {
    /// The released code's configuration: official objective and width, 1000 epochs at lr 1e-4.
    /// What the paper's numbers need; days on a CPU, for a GPU.
    pub fn official() -> Self {
        Self {
            name: "official",
            summary: "the released code's configuration (C 256, K 512, 1000 epochs, lr 1e-4): for a GPU",
            preset: Preset::Official,
            epochs: 1000,
            lr: 1e-4,
            overrides: Overrides::default(),
        }
    }

    /// The shipped default model's recipe: the paper's objective at a quarter of the width (C 64,
    /// FFN 256, K 64), 50 epochs at lr 5e-4 without transformer dropout, and dead codebook
    /// entries restarted (`codebook_restart` 0.05, not in the paper: without it these small
    /// codebooks collapse to a few codes). ELPV (1207 training cells): 53 minutes of epochs on a
    /// 2-core x86-64 VM, mean image AUROC 0.906 (without the restart 0.891; docs/quality.md).
    pub fn cpu() -> Self {
        Self {
            name: "cpu",
            summary: "paper preset, C 64, K 64, 50 epochs at lr 5e-4, no dropout, dead codes \
                      restarted: about an hour for 1200 images on 2 CPU cores",
            preset: Preset::Paper,
            epochs: 50,
            lr: 5e-4,
            overrides: Overrides {
                embed_dim: Some(64),
                ffn_dim: Some(256),
                codes: Some(64),
                dropout: Some(0.0),
                codebook_restart: Some(0.05),
                ..Overrides::default()
            },
        }
    }

    /// Every recipe, the default first.
    pub fn all() -> Vec<Self> {
        vec![Self::official(), Self::cpu()]
    }

    /// The recipe called `name`, or an error listing the ones there are.
    pub fn named(name: &str) -> Result<Self> {
        Self::all()
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::all().iter().map(|r| r.name).collect();
                HvqError::Config(format!(
                    "no training recipe called {name:?}; there are: {}",
                    names.join(", ")
                ))
            })
    }

    /// `explicit` settings over this recipe's: each field the command gave wins.
    pub fn overridden_by(&self, explicit: &Overrides) -> Overrides {
        let r = &self.overrides;
        Overrides {
            embed_dim: explicit.embed_dim.or(r.embed_dim),
            codes: explicit.codes.or(r.codes),
            ffn_dim: explicit.ffn_dim.or(r.ffn_dim),
            input_size: explicit.input_size.or(r.input_size),
            pot_weight: explicit.pot_weight.or(r.pot_weight),
            dropout: explicit.dropout.or(r.dropout),
            codebook_restart: explicit.codebook_restart.or(r.codebook_restart),
            single_vq: explicit.single_vq || r.single_vq,
            no_codebook_switching: explicit.no_codebook_switching || r.no_codebook_switching,
            no_expert_switching: explicit.no_expert_switching || r.no_expert_switching,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_settings_win_over_the_recipe() {
        let cpu = Recipe::cpu();
        let explicit = Overrides {
            embed_dim: Some(32),
            input_size: Some(288),
            ..Overrides::default()
        };
        let merged = cpu.overridden_by(&explicit);
        assert_eq!(merged.embed_dim, Some(32));
        assert_eq!(merged.input_size, Some(288));
        assert_eq!(merged.codes, Some(64));
        assert_eq!(merged.dropout, Some(0.0));
        assert_eq!(merged.codebook_restart, Some(0.05));
        // The official recipe adds nothing: the preset's own architecture.
        assert_eq!(
            Recipe::official().overridden_by(&Overrides::default()),
            Overrides::default()
        );
    }

    #[test]
    fn recipes_are_found_by_name_and_unknown_names_listed() {
        for r in Recipe::all() {
            assert_eq!(Recipe::named(r.name).unwrap(), r);
        }
        let e = Recipe::named("gpu-fast").unwrap_err().to_string();
        assert!(e.contains("gpu-fast") && e.contains("official, cpu"), "{e}");
    }
}
