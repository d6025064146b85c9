//! # hvq in the browser
//!
//! The web page's only Rust: it loads the model from the bytes the page downloaded, picks the
//! device (WebGPU through burn's wgpu backend, or burn's CPU backend compiled to wasm when the
//! browser has no WebGPU or it fails), and calls the same [`hvq::Inspector`] as the CLI and the
//! desktop app. Preprocessing, scoring, the colour scale and the CPU overlay all come from `core`.
//!
//! JavaScript sees [`WebModel`] (see `web/static/app.js`).

mod backend;
mod render;
mod result;
mod self_check;

use std::cell::RefCell;
use std::rc::Rc;

use hvq::overlay::{ColorScale, Weighting};
use hvq::preprocess::DecodeLimits;
use hvq::{ClassChoice, Detector, Inspector, MapResolution};
use wasm_bindgen::prelude::*;

pub use backend::{Backend, BackendChoice, Opened};
pub use result::WebInspection;

/// Turn a core error into a JavaScript `Error` with the same message.
fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Report Rust panics, and warnings and errors of the libraries (a lost WebGPU device, say), on
/// the browser console instead of a bare "unreachable" trap or nothing.
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(target_arch = "wasm32")]
    {
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&format!("hvq panicked: {info}").into());
        }));
        if log::set_logger(&ConsoleLog).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    }
}

/// `log` records on the browser console.
#[cfg(target_arch = "wasm32")]
struct ConsoleLog;

#[cfg(target_arch = "wasm32")]
impl log::Log for ConsoleLog {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let text = format!("{} {}: {}", record.level(), record.target(), record.args());
            match record.level() {
                log::Level::Error => web_sys::console::error_1(&text.into()),
                _ => web_sys::console::warn_1(&text.into()),
            }
        }
    }
    fn flush(&self) {}
}

/// A model loaded on a device, ready for photos.
#[wasm_bindgen]
pub struct WebModel {
    inspector: Rc<Inspector>,
    load_ms: f64,
    /// Where the model runs (and, on WebGPU, the handles that must stay alive).
    opened: backend::Opened,
    /// The downloaded files, kept for the self-check's CPU copy.
    files: Rc<(String, Vec<u8>, Vec<u8>)>,
    /// The overlay shader on the model's WebGPU device, once enabled.
    renderer: RefCell<Option<Rc<render::Renderer>>>,
}

#[wasm_bindgen]
impl WebModel {
    /// Load a model from downloaded bytes: `config.json` text, the reconstruction network's
    /// safetensors and the backbone's. `prefer` is `"auto"` (WebGPU, else the CPU), `"webgpu"` or
    /// `"cpu"`.
    pub async fn load(
        config_json: String,
        model: Vec<u8>,
        backbone: Vec<u8>,
        prefer: String,
    ) -> Result<WebModel, JsError> {
        let choice: BackendChoice = prefer.parse().map_err(js_error)?;
        let opened = backend::open(choice).await.map_err(js_error)?;
        let device = opened.device.clone();
        let t0 = web_time::Instant::now();
        let detector = Detector::from_parts(
            &config_json,
            &model,
            "model.safetensors",
            &backbone,
            "efficientnet-lite0.safetensors",
            &device,
        )
        .map_err(js_error)?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(WebModel {
            inspector: Rc::new(Inspector::new(detector, device)),
            load_ms,
            opened,
            files: Rc::new((config_json, model, backbone)),
            renderer: RefCell::new(None),
        })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.opened.backend.as_str().to_string()
    }

    /// Why the CPU is used when WebGPU was wanted (shown on the page), if so.
    #[wasm_bindgen(getter)]
    pub fn notice(&self) -> Option<String> {
        self.opened.notice.clone()
    }

    /// Milliseconds spent building the model on the device.
    #[wasm_bindgen(getter, js_name = loadMs)]
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Class names, in the model's order.
    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> Vec<String> {
        self.inspector.detector.config.hvq.class_names.clone()
    }

    /// The threshold stored with the model, if it was calibrated.
    #[wasm_bindgen(getter)]
    pub fn threshold(&self) -> Option<f32> {
        self.inspector
            .detector
            .calibration
            .as_ref()
            .map(|c| c.threshold)
    }

    /// Whether the model has the paper's classifier (then "auto" uses it).
    #[wasm_bindgen(getter, js_name = hasClassifier)]
    pub fn has_classifier(&self) -> bool {
        self.inspector.detector.config.hvq.classifier.is_some()
    }

    /// Inspect an encoded photo (PNG or JPEG bytes; `name` appears in errors) as class `class`
    /// (a class name, or `"auto"`). Resolves to a [`WebInspection`]; rejects with a message for
    /// unreadable, oversized or unknown input.
    pub fn inspect(&self, bytes: Vec<u8>, name: String, class: String) -> js_sys::Promise {
        let inspector = Rc::clone(&self.inspector);
        wasm_bindgen_futures::future_to_promise(async move {
            let t0 = web_time::Instant::now();
            let img = hvq::preprocess::decode_with(&bytes, &name, DecodeLimits::BROWSER)
                .map_err(|e| JsValue::from(js_error(e)))?;
            inspect_image(&inspector, &img, &class, t0).await
        })
    }

    /// Inspect raw RGBA8 pixels (`width × height`, a camera frame from the live mode) as class
    /// `class`: the same as [`WebModel::inspect`] on those pixels saved as a PNG, without the
    /// encoding and decoding. `name` appears in errors; the decode time is the pixels' check.
    #[wasm_bindgen(js_name = inspectPixels)]
    pub fn inspect_pixels(
        &self,
        rgba: Vec<u8>,
        width: u32,
        height: u32,
        name: String,
        class: String,
    ) -> js_sys::Promise {
        let inspector = Rc::clone(&self.inspector);
        wasm_bindgen_futures::future_to_promise(async move {
            let t0 = web_time::Instant::now();
            let img = hvq::preprocess::from_rgba(rgba, width, height, &name, DecodeLimits::BROWSER)
                .map_err(|e| JsValue::from(js_error(e)))?;
            inspect_image(&inspector, &img, &class, t0).await
        })
    }
}

/// The common end of [`WebModel::inspect`] and [`WebModel::inspect_pixels`]: the decoded image
/// through the model as `class`; the time since `t0` so far counts as decoding.
async fn inspect_image(
    inspector: &Inspector,
    img: &image::DynamicImage,
    class: &str,
    t0: web_time::Instant,
) -> Result<JsValue, JsValue> {
    let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
    let choice: ClassChoice = class.parse().map_err(|e| JsValue::from(js_error(e)))?;
    let r = inspector
        .inspect_with(img, &choice, MapResolution::Model)
        .await
        .map_err(|e| JsValue::from(js_error(e)))?;
    Ok(WebInspection::new(r, decode_ms, t0.elapsed().as_secs_f64() * 1e3).into())
}

#[wasm_bindgen]
impl WebModel {
    /// Check the page's device against the CPU: the photo through this model and through a CPU
    /// copy of the same weights, stage by stage. Resolves to a JSON array of
    /// `{stage, max_abs_diff, max_abs}`.
    #[wasm_bindgen(js_name = selfCheck)]
    pub fn self_check(&self, bytes: Vec<u8>, name: String, class: String) -> js_sys::Promise {
        let inspector = Rc::clone(&self.inspector);
        let files = Rc::clone(&self.files);
        wasm_bindgen_futures::future_to_promise(async move {
            let run = async {
                let gpu = &inspector.detector;
                let cpu = Detector::from_parts(
                    &files.0,
                    &files.1,
                    "model.safetensors",
                    &files.2,
                    "efficientnet-lite0.safetensors",
                    &burn::tensor::Device::flex(),
                )?;
                let img = hvq::preprocess::decode_with(&bytes, &name, DecodeLimits::BROWSER)?;
                let cfg = &gpu.config;
                let size = cfg.backbone.input_size;
                let input = hvq::preprocess::input_values(&img, size, &cfg.backbone.input_norm);
                // The comparison needs one class: the first stands for "auto".
                let class = match class.parse::<ClassChoice>() {
                    Ok(ClassChoice::Name(name)) => cfg.hvq.class_index(&name)?,
                    _ => 0,
                };
                let stages = self_check::compare(gpu, &cpu, &input, size, class).await?;
                Ok::<_, hvq::HvqError>(serde_json::to_string(&stages).unwrap_or_default())
            };
            run.await
                .map(JsValue::from)
                .map_err(|e| JsValue::from(js_error(e)))
        })
    }
}

#[wasm_bindgen]
impl WebModel {
    /// Draw overlays with the shared WGSL shader on the model's own WebGPU device. Returns false
    /// when the model runs on the CPU (the page then blends with [`blend_overlay`]).
    #[wasm_bindgen(js_name = enableGpuOverlay)]
    pub fn enable_gpu_overlay(&self) -> bool {
        let Some(setup) = &self.opened.setup else {
            return false;
        };
        *self.renderer.borrow_mut() = Some(Rc::new(render::Renderer::new(setup)));
        true
    }

    /// Show a photo: RGBA8 pixels at the display size, with the model-scale map
    /// (`map_width × map_height`).
    #[wasm_bindgen(js_name = showImage)]
    pub fn show_image(
        &self,
        rgba: &[u8],
        width: u32,
        height: u32,
        map: &[f32],
        map_width: u32,
        map_height: u32,
    ) -> Result<(), JsError> {
        if rgba.len() != (width * height * 4) as usize
            || map.len() != (map_width * map_height) as usize
        {
            return Err(JsError::new("showImage: sizes do not match the data"));
        }
        match self.renderer.borrow().as_ref() {
            Some(r) => {
                r.set_image(rgba, (width, height), map, (map_width, map_height));
                Ok(())
            }
            None => Err(JsError::new("the GPU overlay is not enabled")),
        }
    }

    /// Draw the shown photo with the scale `[lo, hi]`, its `weighting` (see [`color_scale`])
    /// and the colormap's `opacity`; resolves to its RGBA8 pixels (a `Uint8Array`) for the
    /// page's canvas.
    pub fn draw(&self, lo: f32, hi: f32, weighting: u32, opacity: f32) -> js_sys::Promise {
        let renderer = self.renderer.borrow().clone();
        let scale = scale_of(lo, hi, weighting);
        wasm_bindgen_futures::future_to_promise(async move {
            let renderer =
                renderer.ok_or_else(|| JsValue::from_str("the GPU overlay is not enabled"))?;
            let scale = scale.map_err(JsValue::from)?;
            let pixels = renderer
                .draw(&scale, opacity)
                .await
                .map_err(|e| JsValue::from(JsError::new(&e)))?;
            Ok(js_sys::Uint8Array::from(pixels.as_slice()).into())
        })
    }
}

/// The overlay on the CPU, for browsers without WebGPU: the shader's formulas from
/// `hvq::overlay`, applied in place to the canvas's RGBA pixels (`width × height`), with the
/// model-scale `map` (`map_width × map_height`) resampled as the shader does.
#[wasm_bindgen(js_name = blendOverlay)]
#[allow(clippy::too_many_arguments)]
pub fn blend_overlay(
    rgba: &mut [u8],
    width: usize,
    height: usize,
    map: &[f32],
    map_width: usize,
    map_height: usize,
    lo: f32,
    hi: f32,
    weighting: u32,
    opacity: f32,
) -> Result<(), JsError> {
    let scale = scale_of(lo, hi, weighting)?;
    if rgba.len() != width * height * 4 || map.len() != map_width * map_height || map.is_empty() {
        return Err(JsError::new(&format!(
            "overlay: {} RGBA bytes for {width}×{height}, {} map values for {map_width}×{map_height}",
            rgba.len(),
            map.len()
        )));
    }
    hvq::overlay::blend_rgba_resampled(
        rgba,
        width,
        height,
        map,
        (map_width, map_height),
        &scale,
        opacity,
    );
    Ok(())
}

/// The verdict word (`normal`, `anomalous`) for a score under a threshold: core's rule and
/// vocabulary, as in every result file.
#[wasm_bindgen]
pub fn verdict(score: f32, threshold: f32) -> String {
    hvq::app::Verdict::of(score, Some(threshold))
        .as_str()
        .to_string()
}

/// The colour scale shared with the CLI and the desktop app (`hvq::overlay::color_scale`) under
/// the page's threshold and the model's normal level: `[lo, hi, weighting]` (the weighting's code,
/// for [`WebModel::draw`] and [`blend_overlay`]).
#[wasm_bindgen(js_name = colorScale)]
pub fn color_scale(
    model_map: &[f32],
    score: f32,
    threshold: Option<f32>,
    normal_score: Option<f32>,
) -> Vec<f32> {
    let s = hvq::overlay::color_scale(model_map, score, threshold, normal_score);
    vec![s.lo, s.hi, s.weighting.code() as f32]
}

/// A colour scale from the page's numbers.
fn scale_of(lo: f32, hi: f32, weighting: u32) -> Result<ColorScale, JsError> {
    let weighting = Weighting::from_code(weighting)
        .ok_or_else(|| JsError::new(&format!("overlay: unknown weighting {weighting}")))?;
    Ok(ColorScale { lo, hi, weighting })
}
