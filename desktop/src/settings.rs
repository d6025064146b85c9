//! What the inspector remembers between runs. Kept apart from the runtime state: this struct is
//! all that is written to eframe's storage, and a missing or older field falls back to its default.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{SortKey, SortOrder};

/// Key of the settings in eframe's storage.
pub const STORAGE_KEY: &str = "hvq-desktop-settings";

/// Persisted settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Folder of the last images opened (the file dialogs start there).
    pub last_folder: Option<PathBuf>,
    /// The user's decision threshold; `None` uses the model's calibrated one.
    pub threshold: Option<f32>,
    /// Weight of the colormap over the photo, 0..=1.
    pub opacity: f32,
    /// Leave pixels below the bottom of the scale as the photo.
    pub hide_below_lo: bool,
    /// Show the original photo next to the overlay.
    pub side_by_side: bool,
    /// Class: `"auto"` or a class name.
    pub class: String,
    /// Model directory to load at start; `None` for the shipped default model.
    pub model_dir: Option<PathBuf>,
    /// List order.
    pub sort: SortKey,
    /// Ascending or descending.
    pub order: SortOrder,
    /// Calibration: quantile of the known-good scores (1.0 = their maximum).
    pub calibration_quantile: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            last_folder: None,
            threshold: None,
            opacity: 0.5,
            hide_below_lo: false,
            side_by_side: false,
            class: "auto".into(),
            model_dir: None,
            sort: SortKey::Name,
            order: SortOrder::Ascending,
            calibration_quantile: 0.99,
        }
    }
}

impl Settings {
    /// Restore from eframe storage (defaults when absent or unreadable).
    pub fn load(storage: Option<&dyn eframe::Storage>) -> Self {
        storage
            .and_then(|s| eframe::get_value(s, STORAGE_KEY))
            .unwrap_or_default()
    }

    /// Write to eframe storage.
    pub fn store(&self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct MemStorage(std::collections::HashMap<String, String>);
    impl eframe::Storage for MemStorage {
        fn get_string(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn set_string(&mut self, key: &str, value: String) {
            self.0.insert(key.into(), value);
        }
        fn remove_string(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn flush(&mut self) {}
    }

    #[test]
    fn round_trip_through_storage() {
        let mut storage = MemStorage::default();
        assert_eq!(Settings::load(Some(&storage)), Settings::default());
        let s = Settings {
            last_folder: Some("/data/cells".into()),
            threshold: Some(42.5),
            opacity: 0.7,
            sort: SortKey::Score,
            order: SortOrder::Descending,
            ..Default::default()
        };
        s.store(&mut storage);
        assert_eq!(Settings::load(Some(&storage)), s);
    }

    #[test]
    fn missing_fields_take_defaults() {
        use eframe::Storage as _;
        let mut storage = MemStorage::default();
        storage.set_string(STORAGE_KEY, "(opacity: 0.25)".into());
        let s = Settings::load(Some(&storage));
        assert_eq!(s.opacity, 0.25);
        assert_eq!(s.class, "auto");
        assert_eq!(s.threshold, None);
    }
}
