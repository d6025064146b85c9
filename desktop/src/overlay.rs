//! The anomaly overlay on screen: an `egui_wgpu` paint callback drawing the photo and its map with
//! the WGSL shader shared with the web page (`shaders/overlay.wgsl`).

use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, RenderState, ScreenDescriptor};
use eframe::wgpu;

/// `Params` of the shader.
pub use hvq::overlay_gpu::OverlayParams as Params;
use hvq::overlay_gpu::OverlayPipeline;
/// The shared overlay shader.
pub use hvq::overlay_gpu::SHADER;

/// Place the image rect inside the viewport rect: the shader's offset and scale.
pub fn placement(viewport: egui::Rect, image: egui::Rect) -> ([f32; 2], [f32; 2]) {
    let scale = [
        image.width() / viewport.width(),
        image.height() / viewport.height(),
    ];
    let offset = [
        2.0 * (image.center().x - viewport.center().x) / viewport.width(),
        -2.0 * (image.center().y - viewport.center().y) / viewport.height(),
    ];
    (offset, scale)
}

/// An image and its map, uploaded once per selection.
#[derive(Clone)]
pub struct OverlayImage {
    /// Changes whenever the pixels or the map change (textures are re-uploaded).
    pub key: u64,
    /// Photo, RGBA8, `width × height`.
    pub rgba: Arc<Vec<u8>>,
    /// Anomaly map at the model's scale, `map_size` = (width, height), row-major (the shader
    /// resamples it).
    pub map: Arc<Vec<f32>>,
    /// Side of `map`.
    pub map_size: (u32, u32),
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// The paint callback for one frame.
pub struct OverlayCallback {
    /// What to draw.
    pub image: OverlayImage,
    /// Shader parameters.
    pub params: Params,
}

impl OverlayCallback {
    /// An egui shape drawing the overlay in `viewport` with the image placed at `image_rect`.
    pub fn shape(image: OverlayImage, params: Params, viewport: egui::Rect) -> egui::Shape {
        egui::Shape::Callback(egui_wgpu::Callback::new_paint_callback(
            viewport,
            OverlayCallback { image, params },
        ))
    }
}

/// Pipeline and the current image's GPU objects, kept in egui_wgpu's callback resources.
pub struct OverlayResources {
    pipeline: OverlayPipeline,
    current: Option<(u64, hvq::overlay_gpu::OverlayImage)>,
}

/// Create the pipeline; call once from `App::new` when the wgpu renderer is in use.
pub fn install(render_state: &RenderState) {
    let pipeline = OverlayPipeline::new(&render_state.device, render_state.target_format);
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(OverlayResources {
            pipeline,
            current: None,
        });
}

impl CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<OverlayResources>() else {
            return Vec::new();
        };
        let img = &self.image;
        if res.current.as_ref().map(|c| c.0) != Some(img.key) {
            // The model's map; the shader samples it at each photo pixel as
            // `overlay::resize_map` does.
            let dims = (img.width, img.height);
            let map_dims = img.map_size;
            let uploaded = res
                .pipeline
                .image(device, queue, &img.rgba, dims, &img.map, map_dims);
            res.current = Some((img.key, uploaded));
        }
        res.pipeline.set_params(queue, &self.params);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(res) = resources.get::<OverlayResources>() else {
            return;
        };
        let Some((_, image)) = &res.current else {
            return;
        };
        res.pipeline.draw(render_pass, image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_of_a_centred_half_size_image() {
        let vp = egui::Rect::from_min_size(egui::pos2(0.0, 0.0), egui::vec2(200.0, 100.0));
        let img = egui::Rect::from_center_size(vp.center(), egui::vec2(100.0, 50.0));
        assert_eq!(placement(vp, img), ([0.0, 0.0], [0.5, 0.5]));
        let right = img.translate(egui::vec2(50.0, 25.0));
        assert_eq!(placement(vp, right), ([0.5, -0.5], [0.5, 0.5]));
    }
}
