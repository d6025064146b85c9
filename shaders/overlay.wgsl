// Anomaly-map overlay shared by the web page and the desktop inspector.
//
// Draws a textured quad: the photo, blended with the "jet" colormap of the anomaly map. The map is
// an R32Float texture at any resolution, interpolated bilinearly here with `textureLoad` (32-bit
// float textures are not filterable on every WebGPU device), pixel centres aligned as in
// `align_corners=False` resizing, like the CPU path; values are scaled
// linearly from `lo` (blue) to `hi` (red). `opacity` is the weight of the colormap, varied along
// the scale by `weighting` (core's `overlay::Weighting`): 0 the same everywhere, 1 none below `lo`,
// 2 rising from none at `lo` to `opacity` at `hi`. The colormap is the same piecewise-linear
// "jet" as `core/src/overlay.rs` (`jet`), so CLI overlays and on-screen overlays agree.

struct Params {
    lo: f32,
    hi: f32,
    opacity: f32,
    weighting: u32,
    // Viewport transform of the quad: pixel offset and scale in normalised device coordinates.
    offset: vec2<f32>,
    scale: vec2<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var photo: texture_2d<f32>;
@group(0) @binding(2) var anomaly: texture_2d<f32>;
@group(0) @binding(3) var linear_sampler: sampler;

// Bilinear value of the map at `uv` (texel centres at (i + 0.5) / size, edges clamped).
fn anomaly_at(uv: vec2<f32>) -> f32 {
    let size = vec2<f32>(textureDimensions(anomaly));
    let p = clamp(uv * size - 0.5, vec2<f32>(0.0), size - 1.0);
    let p0 = vec2<i32>(floor(p));
    let p1 = min(p0 + vec2<i32>(1), vec2<i32>(size) - 1);
    let f = p - floor(p);
    let a = textureLoad(anomaly, p0, 0).r;
    let b = textureLoad(anomaly, vec2<i32>(p1.x, p0.y), 0).r;
    let c = textureLoad(anomaly, vec2<i32>(p0.x, p1.y), 0).r;
    let d = textureLoad(anomaly, p1, 0).r;
    return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // Two triangles covering the unit square.
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let uv = corners[index];
    var out: VertexOut;
    let ndc = vec2<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0);
    out.position = vec4<f32>(ndc * params.scale + params.offset, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn jet(t_in: f32) -> vec3<f32> {
    let t = clamp(t_in, 0.0, 1.0);
    let r = clamp(1.5 - abs(4.0 * t - 3.0), 0.0, 1.0);
    let g = clamp(1.5 - abs(4.0 * t - 2.0), 0.0, 1.0);
    let b = clamp(1.5 - abs(4.0 * t - 1.0), 0.0, 1.0);
    return vec3<f32>(r, g, b);
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let base = textureSample(photo, linear_sampler, in.uv).rgb;
    let value = anomaly_at(in.uv);
    let span = max(params.hi - params.lo, 1e-6);
    let t = (value - params.lo) / span;
    var weight = params.opacity;
    if (params.weighting == 1u && t < 0.0) {
        weight = 0.0;
    } else if (params.weighting == 2u) {
        weight = params.opacity * clamp(t, 0.0, 1.0);
    }
    let color = mix(base, jet(t), weight);
    return vec4<f32>(color, 1.0);
}
