//! The overlay drawn on the model's own WebGPU device: the shared pipeline (`hvq::overlay_gpu`,
//! i.e. `shaders/overlay.wgsl`) renders into a texture, whose pixels are read back for the page's
//! 2D canvas. Why not a WebGPU canvas: with a second WebGPU device in the page Chromium stopped
//! creating the model's pipelines ("A valid external Instance reference no longer exists"), and
//! with the model's device configured on the worker's OffscreenCanvas it destroyed that device
//! after the first frame. A texture and a read-back involve neither.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use burn::tensor::wgpu::{WgpuSetup, wgpu};
use hvq::overlay::ColorScale;
use hvq::overlay_gpu::{OverlayImage, OverlayParams, OverlayPipeline};

/// Rendering target format: plain bytes, like the CPU blend writes them.
const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// The photo being shown and where it is drawn.
struct Frame {
    image: OverlayImage,
    target: wgpu::Texture,
    readback: wgpu::Buffer,
    size: (u32, u32),
    padded_row: u32,
}

/// The overlay pipeline on the model's device, and the current photo.
pub struct Renderer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: OverlayPipeline,
    frame: RefCell<Option<Rc<Frame>>>,
}

impl Renderer {
    /// The pipeline on the model's WebGPU device.
    pub fn new(setup: &WgpuSetup) -> Self {
        Self {
            pipeline: OverlayPipeline::new(&setup.device, FORMAT),
            device: setup.device.clone(),
            queue: setup.queue.clone(),
            frame: RefCell::new(None),
        }
    }

    /// Show a photo (RGBA8 at the display size) with its map (`map_size` = width, height).
    pub fn set_image(&self, rgba: &[u8], size: (u32, u32), map: &[f32], map_size: (u32, u32)) {
        let (w, h) = (size.0.max(1), size.1.max(1));
        let image = self
            .pipeline
            .image(&self.device, &self.queue, rgba, (w, h), map, map_size);
        let target = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("hvq overlay target"),
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: FORMAT,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let align = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let padded_row = (w * 4).div_ceil(align) * align;
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hvq overlay read-back"),
            size: (padded_row * h) as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        *self.frame.borrow_mut() = Some(Rc::new(Frame {
            image,
            target,
            readback,
            size: (w, h),
            padded_row,
        }));
    }

    /// Draw the shown photo with the scale `[lo, hi]` and `opacity`; its RGBA8 pixels.
    pub async fn draw(&self, scale: &ColorScale, opacity: f32) -> Result<Vec<u8>, String> {
        // The frame drawn, even if another photo is shown meanwhile.
        let frame = self.frame.borrow().clone().ok_or("no photo shown")?;
        let view = frame.target.create_view(&Default::default());
        self.pipeline
            .set_params(&self.queue, &OverlayParams::full(scale, opacity));
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("hvq overlay"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                ..Default::default()
            });
            self.pipeline.draw(&mut pass, &frame.image);
        }
        let (w, h) = frame.size;
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &frame.target,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &frame.readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(frame.padded_row),
                    rows_per_image: Some(h),
                },
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        self.queue.submit([encoder.finish()]);
        map_read(&frame.readback).await?;
        let pixels = {
            let mapped = frame
                .readback
                .get_mapped_range(..)
                .map_err(|e| format!("reading the overlay back: {e:?}"))?;
            mapped
                .chunks(frame.padded_row as usize)
                .flat_map(|row| &row[..(w * 4) as usize])
                .copied()
                .collect()
        };
        frame.readback.unmap();
        Ok(pixels)
    }
}

/// Await `buffer.map_async(Read)` (the browser resolves it; nothing here blocks).
async fn map_read(buffer: &wgpu::Buffer) -> Result<(), String> {
    type Slot = (Option<Result<(), wgpu::BufferAsyncError>>, Option<Waker>);
    let slot: Arc<Mutex<Slot>> = Arc::new(Mutex::new((None, None)));
    let writer = Arc::clone(&slot);
    buffer.map_async(wgpu::MapMode::Read, .., move |result| {
        let mut s = writer.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = Some(result);
        if let Some(w) = s.1.take() {
            w.wake();
        }
    });
    std::future::poll_fn(|cx| {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        match s.0.take() {
            Some(r) => Poll::Ready(r.map_err(|e| format!("mapping the overlay: {e}"))),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}
