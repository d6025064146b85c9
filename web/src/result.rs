//! One photo's result as JavaScript sees it.

use hvq::Inspection;
use wasm_bindgen::prelude::*;

/// Score, verdict, class, the 224×224 map and stage times of one photo.
#[wasm_bindgen]
pub struct WebInspection {
    inner: Inspection,
    decode_ms: f64,
    total_ms: f64,
}

impl WebInspection {
    /// Wrap a core result with the page's own timings.
    pub fn new(inner: Inspection, decode_ms: f64, total_ms: f64) -> Self {
        Self {
            inner,
            decode_ms,
            total_ms,
        }
    }
}

#[wasm_bindgen]
impl WebInspection {
    /// Image score (max of the 16×16-averaged map).
    #[wasm_bindgen(getter)]
    pub fn score(&self) -> f32 {
        self.inner.score
    }

    /// The model's stored threshold, if calibrated.
    #[wasm_bindgen(getter)]
    pub fn threshold(&self) -> Option<f32> {
        self.inner.threshold
    }

    /// The model's normal level (bottom of its anchored colour scale), if calibrated with one.
    #[wasm_bindgen(getter, js_name = normalScore)]
    pub fn normal_score(&self) -> Option<f32> {
        self.inner.normal_score
    }

    /// `normal`, `anomalous` or `uncalibrated`: the verdict's word in every result file (the
    /// page shows it in capitals).
    #[wasm_bindgen(getter)]
    pub fn verdict(&self) -> String {
        self.inner.verdict().as_str().to_string()
    }

    /// Class whose codebooks and expert were used.
    #[wasm_bindgen(getter, js_name = className)]
    pub fn class_name(&self) -> String {
        self.inner.class_name.clone()
    }

    /// Its index.
    #[wasm_bindgen(getter, js_name = classIndex)]
    pub fn class_index(&self) -> usize {
        self.inner.class_index
    }

    /// Photo width in pixels.
    #[wasm_bindgen(getter)]
    pub fn width(&self) -> u32 {
        self.inner.width
    }

    /// Photo height in pixels.
    #[wasm_bindgen(getter)]
    pub fn height(&self) -> u32 {
        self.inner.height
    }

    /// Width of the model-scale map (224, or a tiled photo's stitched map).
    #[wasm_bindgen(getter, js_name = mapWidth)]
    pub fn map_width(&self) -> usize {
        self.inner.model_width
    }

    /// Height of the model-scale map.
    #[wasm_bindgen(getter, js_name = mapHeight)]
    pub fn map_height(&self) -> usize {
        self.inner.model_height
    }

    /// The anomaly map at the model's resolution, row-major (a `Float32Array` copy).
    #[wasm_bindgen(getter)]
    pub fn map(&self) -> Vec<f32> {
        self.inner.model_map.clone()
    }

    /// Stage times in milliseconds as `[decode, preprocess, backbone, model, total]`. On WebGPU
    /// the work is queued and runs asynchronously: the backbone's time is its submission, and the
    /// wait for the GPU lands in `model` (which ends with the read-back).
    #[wasm_bindgen(getter)]
    pub fn times(&self) -> Vec<f64> {
        let t = &self.inner.times;
        vec![
            self.decode_ms,
            t.preprocess_ms,
            t.backbone_ms,
            t.model_ms + t.upsample_ms,
            self.total_ms,
        ]
    }
}
