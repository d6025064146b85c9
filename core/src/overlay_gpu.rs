//! The overlay shader (`shaders/overlay.wgsl`) as a wgpu render pipeline: the photo blended with
//! the jet colormap of the anomaly map, drawn as one quad. The web page draws with it on the
//! model's own WebGPU device; the formulas are the CPU path's in [`crate::overlay`].

use burn::tensor::wgpu::wgpu;

use crate::overlay::{ColorScale, Weighting};

/// The shared WGSL source.
pub const SHADER: &str = include_str!("../../shaders/overlay.wgsl");

/// The shader's `Params` uniform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverlayParams {
    /// Map value drawn blue (the bottom of the scale).
    pub lo: f32,
    /// Map value drawn red.
    pub hi: f32,
    /// Weight of the colormap over the photo.
    pub opacity: f32,
    /// How the colormap's weight varies along the scale.
    pub weighting: Weighting,
    /// Quad placement in normalised device coordinates.
    pub offset: [f32; 2],
    /// Quad size in normalised device coordinates (1 = the whole target).
    pub scale: [f32; 2],
}

impl OverlayParams {
    /// The whole target with `scale`.
    pub fn full(scale: &ColorScale, opacity: f32) -> Self {
        Self {
            lo: scale.lo,
            hi: scale.hi,
            opacity,
            weighting: scale.weighting,
            offset: [0.0, 0.0],
            scale: [1.0, 1.0],
        }
    }

    /// The uniform's 32 bytes, laid out as the WGSL struct.
    pub fn bytes(&self) -> [u8; 32] {
        let words = [
            self.lo.to_bits(),
            self.hi.to_bits(),
            self.opacity.to_bits(),
            self.weighting.code(),
            self.offset[0].to_bits(),
            self.offset[1].to_bits(),
            self.scale[0].to_bits(),
            self.scale[1].to_bits(),
        ];
        let mut b = [0u8; 32];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// The compiled pipeline and what every draw shares.
#[derive(Debug)]
pub struct OverlayPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniforms: wgpu::Buffer,
}

/// One photo and its map on the device.
#[derive(Debug)]
pub struct OverlayImage {
    bind_group: wgpu::BindGroup,
}

impl OverlayPipeline {
    /// Compile the shader for render targets of `format`.
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("hvq overlay shader"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let texture = |binding, filterable| wgpu::BindGroupLayoutEntry {
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
                texture(1, true),
                // R32Float is not filterable on every WebGPU device: the shader interpolates.
                texture(2, false),
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
                    format,
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
        Self {
            pipeline,
            layout,
            sampler,
            uniforms,
        }
    }

    /// Upload a photo (RGBA8, `photo_size`) and its map (`map_size`, row-major f32).
    pub fn image(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        photo: &[u8],
        photo_size: (u32, u32),
        map: &[f32],
        map_size: (u32, u32),
    ) -> OverlayImage {
        // Raw bytes / 255, as the CPU blend reads them: a non-sRGB format.
        let photo = upload(
            device,
            queue,
            "hvq overlay photo",
            wgpu::TextureFormat::Rgba8Unorm,
            photo_size,
            photo,
        );
        let map_bytes: Vec<u8> = map.iter().flat_map(|v| v.to_le_bytes()).collect();
        let map = upload(
            device,
            queue,
            "hvq overlay anomaly map",
            wgpu::TextureFormat::R32Float,
            map_size,
            &map_bytes,
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("hvq overlay bind group"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.uniforms.as_entire_binding(),
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
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        });
        OverlayImage { bind_group }
    }

    /// Write the parameters; call before the render pass that draws.
    pub fn set_params(&self, queue: &wgpu::Queue, params: &OverlayParams) {
        queue.write_buffer(&self.uniforms, 0, &params.bytes());
    }

    /// Record the quad into a render pass.
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, image: &OverlayImage) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &image.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}

fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    format: wgpu::TextureFormat,
    (width, height): (u32, u32),
    bytes: &[u8],
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
            // Both formats are 4 bytes per texel.
            bytes_per_row: Some(width * 4),
            rows_per_image: Some(height),
        },
        size,
    );
    texture.create_view(&wgpu::TextureViewDescriptor {
        label: Some(label),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_bytes_follow_the_wgsl_struct() {
        let b = OverlayParams {
            lo: 1.0,
            hi: 2.0,
            opacity: 0.5,
            weighting: Weighting::Fade,
            offset: [0.25, -0.5],
            scale: [1.0, 2.0],
        }
        .bytes();
        let f = |i: usize| f32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!((f(0), f(1), f(2)), (1.0, 2.0, 0.5));
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 2);
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
}
