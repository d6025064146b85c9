//! The anomaly overlay on screen: an `egui_wgpu` paint callback drawing the photo and its map with
//! the WGSL shader shared with the web page (`shaders/overlay.wgsl`).

use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, RenderState, ScreenDescriptor};
use eframe::wgpu;

/// The shared overlay shader.
pub const SHADER: &str = include_str!("../../shaders/overlay.wgsl");

/// `Params` of the shader (std140-compatible: 4 scalars, then two vec2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Bottom of the colour scale.
    pub lo: f32,
    /// Top of the colour scale.
    pub hi: f32,
    /// Weight of the colormap.
    pub opacity: f32,
    /// Show the photo where the map is below `lo`.
    pub hide_below_lo: bool,
    /// Quad offset in NDC of the callback's viewport.
    pub offset: [f32; 2],
    /// Quad scale in NDC.
    pub scale: [f32; 2],
}

impl Params {
    fn bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        let words = [
            self.lo.to_le_bytes(),
            self.hi.to_le_bytes(),
            self.opacity.to_le_bytes(),
            (self.hide_below_lo as u32).to_le_bytes(),
            self.offset[0].to_le_bytes(),
            self.offset[1].to_le_bytes(),
            self.scale[0].to_le_bytes(),
            self.scale[1].to_le_bytes(),
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(w);
        }
        b
    }
}

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
    /// Anomaly map, `width × height`, row-major.
    pub map: Arc<Vec<f32>>,
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

/// Pipeline and per-image GPU objects, kept in egui_wgpu's callback resources.
pub struct OverlayResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniforms: wgpu::Buffer,
    current: Option<(u64, wgpu::BindGroup)>,
}

/// Create the pipeline; call once from `App::new` when the wgpu renderer is in use.
pub fn install(render_state: &RenderState) {
    let device = &render_state.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("hvq overlay shader"),
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let texture_entry = |binding, filterable| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("hvq overlay bind group layout"),
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            texture_entry(1, true),
            texture_entry(2, false),
            wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                count: None,
            },
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("hvq overlay pipeline layout"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("hvq overlay pipeline"),
        layout: Some(&pipeline_layout),
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs_main"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs_main"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::ColorTargetState {
                format: render_state.target_format,
                blend: None,
                write_mask: wgpu::ColorWrites::ALL,
            })],
        }),
        multiview_mask: None,
        cache: None,
    });
    let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
        label: Some("hvq overlay photo sampler"),
        mag_filter: wgpu::FilterMode::Linear,
        min_filter: wgpu::FilterMode::Linear,
        ..Default::default()
    });
    let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("hvq overlay params"),
        size: 32,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(OverlayResources {
            pipeline,
            layout,
            sampler,
            uniforms,
            current: None,
        });
}

fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    format: wgpu::TextureFormat,
    (width, height): (u32, u32),
    bytes: &[u8],
    bytes_per_pixel: u32,
) -> wgpu::TextureView {
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * bytes_per_pixel),
            rows_per_image: Some(height),
        },
        size,
    );
    texture.create_view(&wgpu::TextureViewDescriptor {
        label: Some(label),
        ..Default::default()
    })
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
            let dims = (img.width, img.height);
            // Raw bytes / 255, as the CPU blend reads them: a non-sRGB format.
            let photo = upload(
                device,
                queue,
                "hvq overlay photo",
                wgpu::TextureFormat::Rgba8Unorm,
                dims,
                &img.rgba,
                4,
            );
            let map_bytes: Vec<u8> = img.map.iter().flat_map(|v| v.to_le_bytes()).collect();
            let map = upload(
                device,
                queue,
                "hvq overlay anomaly map",
                wgpu::TextureFormat::R32Float,
                dims,
                &map_bytes,
                4,
            );
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("hvq overlay bind group"),
                layout: &res.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: res.uniforms.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&photo),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&map),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::Sampler(&res.sampler),
                    },
                ],
            });
            res.current = Some((img.key, bind_group));
        }
        queue.write_buffer(&res.uniforms, 0, &self.params.bytes());
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
        let Some((_, bind_group)) = &res.current else {
            return;
        };
        render_pass.set_pipeline(&res.pipeline);
        render_pass.set_bind_group(0, bind_group, &[]);
        render_pass.draw(0..6, 0..1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout_matches_the_shader() {
        let p = Params {
            lo: 1.0,
            hi: 2.0,
            opacity: 0.5,
            hide_below_lo: true,
            offset: [0.25, -0.5],
            scale: [1.0, 2.0],
        };
        let b = p.bytes();
        let f = |i: usize| f32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!((f(0), f(1), f(2)), (1.0, 2.0, 0.5));
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 1);
        assert_eq!((f(4), f(5), f(6), f(7)), (0.25, -0.5, 1.0, 2.0));
        // The shader's struct: naga agrees on its size.
        let module = naga::front::wgsl::parse_str(SHADER).unwrap();
        let (handle, _) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        assert_eq!(layouter[handle].size as usize, b.len());
    }

    #[test]
    fn placement_of_a_centred_half_size_image() {
        let vp = egui::Rect::from_min_size(egui::pos2(0.0, 0.0), egui::vec2(200.0, 100.0));
        let img = egui::Rect::from_center_size(vp.center(), egui::vec2(100.0, 50.0));
        assert_eq!(placement(vp, img), ([0.0, 0.0], [0.5, 0.5]));
        let right = img.translate(egui::vec2(50.0, 25.0));
        assert_eq!(placement(vp, right), ([0.5, -0.5], [0.5, 0.5]));
    }
}
