//! How a model cuts high-resolution images into tiles (stored in `config.json`; the stitching
//! is `crate::tiling`).

use serde::{Deserialize, Serialize};

use crate::error::{HvqError, Result};

/// How a model cuts images into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tiling {
    /// Side of a square tile, in image pixels (an image axis shorter than this is one tile).
    pub tile: u32,
    /// Fraction of a tile shared with its neighbour, in `[0, 0.9]`.
    pub overlap: f32,
}

/// One tile: a rectangle of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Left edge, pixels.
    pub x: u32,
    /// Top edge, pixels.
    pub y: u32,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// Smallest tile side accepted (below the backbone's receptive field a tile holds no context).
pub const MIN_TILE: u32 = 32;
/// Largest tile side accepted.
pub const MAX_TILE: u32 = 16_384;
/// Largest overlap accepted (0.9 already inspects each pixel ~100 times).
pub const MAX_OVERLAP: f32 = 0.9;

impl Tiling {
    /// Check the numbers (they come from the command line or a `config.json`).
    pub fn validate(&self) -> Result<()> {
        if !(MIN_TILE..=MAX_TILE).contains(&self.tile) {
            return Err(HvqError::Config(format!(
                "tile {} is outside {MIN_TILE}..={MAX_TILE} pixels",
                self.tile
            )));
        }
        if !(self.overlap.is_finite() && (0.0..=MAX_OVERLAP).contains(&self.overlap)) {
            return Err(HvqError::Config(format!(
                "tile overlap {} is outside 0..={MAX_OVERLAP}",
                self.overlap
            )));
        }
        Ok(())
    }

    /// Distance between neighbouring tiles, pixels (at least 1).
    fn stride(&self) -> u32 {
        ((self.tile as f64 * (1.0 - self.overlap as f64)).round() as u32).max(1)
    }

    /// Tile starts along an axis of `len` pixels: evenly `stride` apart, the last one flush with
    /// the end, so every pixel is covered and no tile leaves the image.
    fn starts(&self, len: u32) -> Vec<u32> {
        if len <= self.tile {
            return vec![0];
        }
        let last = len - self.tile;
        let mut starts: Vec<u32> = (0..)
            .map(|i| i * self.stride())
            .take_while(|&s| s < last)
            .collect();
        starts.push(last);
        starts
    }

    /// The tiles of a `width`×`height` image, row by row.
    pub fn grid(&self, width: u32, height: u32) -> Vec<Tile> {
        let (tw, th) = (self.tile.min(width), self.tile.min(height));
        let xs = self.starts(width);
        self.starts(height)
            .into_iter()
            .flat_map(|y| {
                xs.iter().map(move |&x| Tile {
                    x,
                    y,
                    width: tw,
                    height: th,
                })
            })
            .collect()
    }

    /// Whether an image of this size is cut at all (otherwise it is inspected whole).
    pub fn applies_to(&self, width: u32, height: u32) -> bool {
        width > self.tile || height > self.tile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_covers_the_image_with_even_overlap() {
        let t = Tiling {
            tile: 256,
            overlap: 0.25,
        };
        // Stride 192: starts 0, 192, 384, 576 and the last flush at 1024 − 256 = 768.
        assert_eq!(t.starts(1024), [0, 192, 384, 576, 768]);
        assert_eq!(t.grid(1024, 1024).len(), 25);
        assert_eq!(t.starts(256), [0]);
        assert_eq!(t.starts(100), [0]);
        // A strip narrower than a tile: one row of tiles as tall as the image.
        let strip = t.grid(1000, 100);
        assert!(strip.iter().all(|tile| tile.height == 100 && tile.y == 0));
        for (w, h) in [(1024, 1024), (1000, 700), (257, 3000)] {
            let grid = t.grid(w, h);
            let mut covered = vec![false; (w * h) as usize];
            for tile in &grid {
                assert!(
                    tile.x + tile.width <= w && tile.y + tile.height <= h,
                    "{tile:?}"
                );
                for y in tile.y..tile.y + tile.height {
                    for x in tile.x..tile.x + tile.width {
                        covered[(y * w + x) as usize] = true;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c), "{w}×{h} not covered");
        }
        assert!(!t.applies_to(256, 200) && t.applies_to(257, 10));
    }

    #[test]
    fn bad_numbers_are_refused() {
        for (tile, overlap) in [
            (16, 0.2),
            (64, 0.95),
            (64, -0.1),
            (64, f32::NAN),
            (1 << 20, 0.0),
        ] {
            assert!(
                Tiling { tile, overlap }.validate().is_err(),
                "{tile} {overlap}"
            );
        }
        assert!(
            Tiling {
                tile: 64,
                overlap: 0.5
            }
            .validate()
            .is_ok()
        );
    }
}
