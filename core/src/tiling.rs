//! Tiling of high-resolution images: a photo of several megapixels is cut into overlapping
//! square tiles, each inspected at the model's input size, and their maps stitched back with a
//! smooth blend. A defect of a few dozen pixels, which resizing the whole photo to 224×224 would
//! erase, stays a few dozen pixels of a tile.
//!
//! The stitched map lives on a canvas at the tiles' map scale (`model_size / tile` map pixels
//! per image pixel), so a tile's map is placed without resampling and the image score is the
//! same statistic as untiled (the maximum of the map averaged over 16×16 windows), now over the
//! whole photo. Stored with the model (`config.json`), so every front end tiles the same way.

pub use crate::config::{Tile, Tiling};

/// Accumulates tile maps on the canvas with blend weights.
#[derive(Debug)]
pub struct Stitcher {
    /// Map pixels per image pixel.
    scale: f64,
    width: usize,
    height: usize,
    overlap: f32,
    /// Image size (a tile flush with its end also takes the canvas pixels past it).
    image: (u32, u32),
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Stitcher {
    /// A canvas for a `width`×`height` image whose tiles give `model_size`² maps.
    pub fn new(tiling: &Tiling, width: u32, height: u32, model_size: usize) -> Self {
        let scale = model_size as f64 / tiling.tile as f64;
        let side = |len: u32| ((len as f64 * scale).round() as usize).max(1);
        let (w, h) = (side(width), side(height));
        Self {
            scale,
            width: w,
            height: h,
            overlap: tiling.overlap,
            image: (width, height),
            sum: vec![0.0; w * h],
            weight: vec![0.0; w * h],
        }
    }

    /// Canvas size `(width, height)`.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Add one tile's map (`map_size`² values, row-major). Each canvas pixel whose centre lies
    /// in the tile takes the map's bilinear value at that exact image position (a tile flush
    /// with the image's end sits at a fraction of a canvas pixel), weighted 1 in the tile's
    /// middle and falling off linearly across the overlap towards its edges, so neighbouring
    /// maps blend without a seam.
    pub fn add(&mut self, tile: &Tile, map: &[f32], map_size: usize) {
        // Canvas pixels whose centres (c + 0.5) / scale fall inside [start, start + len); a
        // tile flush with the image's end also takes those past it (the canvas is rounded up).
        let span = |start: u32, len: u32, image: u32, canvas: usize| {
            let first = ((start as f64 * self.scale - 0.5).ceil().max(0.0)) as usize;
            let end = if start + len >= image {
                canvas
            } else {
                (((start + len) as f64 * self.scale - 0.5).ceil().max(0.0) as usize).min(canvas)
            };
            first.min(canvas)..end.max(first.min(canvas))
        };
        let (xs, ys) = (
            span(tile.x, tile.width, self.image.0, self.width),
            span(tile.y, tile.height, self.image.1, self.height),
        );
        // Weight by distance to the tile's nearest edge, in units of half the overlap.
        let ramp_x = (self.overlap as f64 * tile.width as f64 / 2.0).max(1.0);
        let ramp_y = (self.overlap as f64 * tile.height as f64 / 2.0).max(1.0);
        let local = |c: usize, start: u32, len: u32| {
            let p = (c as f64 + 0.5) / self.scale - start as f64;
            (p / len as f64, (p.min(len as f64 - p)).max(0.0))
        };
        for cy in ys {
            let (v, dy) = local(cy, tile.y, tile.height);
            let wy = (dy / ramp_y).clamp(1e-3, 1.0);
            for cx in xs.clone() {
                let (u, dx) = local(cx, tile.x, tile.width);
                let weight = ((dx / ramp_x).clamp(1e-3, 1.0) * wy) as f32;
                let value =
                    crate::overlay::sample_bilinear(map, map_size, map_size, u as f32, v as f32);
                let i = cy * self.width + cx;
                self.sum[i] += weight * value;
                self.weight[i] += weight;
            }
        }
    }

    /// The stitched map, row-major, with its `(width, height)`.
    pub fn finish(self) -> (Vec<f32>, usize, usize) {
        let map = self
            .sum
            .iter()
            .zip(&self.weight)
            .map(|(&s, &w)| if w > 0.0 { s / w } else { 0.0 })
            .collect();
        (map, self.width, self.height)
    }
}

/// The maximum over every `k`×`k` window (stride 1) of the window's mean: the image score of a
/// map of any size (windows clipped to the map when it is smaller). Summed-area table in f64.
pub fn pooled_max(map: &[f32], width: usize, height: usize, k: usize) -> f32 {
    let (kw, kh) = (k.min(width).max(1), k.min(height).max(1));
    let stride = width + 1;
    let mut table = vec![0f64; (width + 1) * (height + 1)];
    for y in 0..height {
        let mut row = 0f64;
        for x in 0..width {
            row += map[y * width + x] as f64;
            table[(y + 1) * stride + x + 1] = table[y * stride + x + 1] + row;
        }
    }
    let mut best = f64::NEG_INFINITY;
    for y in 0..=height - kh {
        for x in 0..=width - kw {
            let s = table[(y + kh) * stride + x + kw]
                - table[y * stride + x + kw]
                - table[(y + kh) * stride + x]
                + table[y * stride + x];
            best = best.max(s);
        }
    }
    (best / (kw * kh) as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiles that all see the same field (a smooth function of the image position) stitch back
    /// to that field: the blend is a weighted mean, so agreeing tiles leave no seam.
    #[test]
    fn agreeing_tiles_stitch_to_the_same_field() {
        let tiling = Tiling {
            tile: 64,
            overlap: 0.5,
        };
        let (w, h, model) = (200u32, 150u32, 16usize);
        let field = |x: f64, y: f64| (x * 0.03).sin() + (y * 0.02).cos() + 0.001 * x * y;
        let mut stitcher = Stitcher::new(&tiling, w, h, model);
        let scale = model as f64 / 64.0;
        for tile in tiling.grid(w, h) {
            // The tile's map: the field sampled at its map pixels' image positions.
            let map: Vec<f32> = (0..model * model)
                .map(|i| {
                    let (mx, my) = ((i % model) as f64, (i / model) as f64);
                    field(
                        tile.x as f64 + (mx + 0.5) / scale,
                        tile.y as f64 + (my + 0.5) / scale,
                    ) as f32
                })
                .collect();
            stitcher.add(&tile, &map, model);
        }
        let (map, cw, ch) = stitcher.finish();
        assert_eq!((cw, ch), (50, 38));
        // Canvas pixels whose centre lies in the image (the canvas is rounded up: 37.5 → 38).
        let worst = (0..cw * ch)
            .map(|i| {
                (
                    (
                        ((i % cw) as f64 + 0.5) / scale,
                        ((i / cw) as f64 + 0.5) / scale,
                    ),
                    i,
                )
            })
            .filter(|&((x, y), _)| x < w as f64 && y < h as f64)
            .map(|((x, y), i)| (map[i] as f64 - field(x, y)).abs())
            .fold(0f64, f64::max);
        // Each tile's map samples the field at its own pixel centres; bilinear interpolation
        // between them is exact for the linear part and off by the curvature (≈ 4 image pixels
        // apart: ~1e-3 here) otherwise.
        assert!(worst < 5e-3, "stitched field off by {worst}");
    }

    #[test]
    fn pooled_max_is_the_best_window_mean() {
        // A 5×4 map with one hot 2×2 block.
        let mut map = vec![1.0f32; 20];
        for (x, y) in [(3, 1), (4, 1), (3, 2), (4, 2)] {
            map[y * 5 + x] = 9.0;
        }
        assert_eq!(pooled_max(&map, 5, 4, 2), 9.0);
        assert_eq!(pooled_max(&map, 5, 4, 3), (4.0 * 9.0 + 5.0) / 9.0);
        // Windows larger than the map: the whole map's mean.
        assert_eq!(pooled_max(&map, 5, 4, 16), (4.0 * 9.0 + 16.0) / 20.0);
    }
}
