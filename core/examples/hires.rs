//! A high-resolution inspection set with small defects, rebuilt offline from a seed: 1024×1024
//! textures (two kinds of surface) with spots and scratches of 10–40 pixels and their exact
//! masks, in MVTec-AD layout (`<class>/train/good`, `<class>/test/{good,spot,scratch}`,
//! `<class>/ground_truth/<defect>/<name>_mask.png`). Resized whole to 224×224, a 10-pixel
//! defect becomes 2 pixels; a 256-pixel tile keeps it 9 pixels wide.
//!
//! `cargo run --release -p core --example hires -- OUT [SIZE] [TRAIN] [TEST]`
//! (defaults 1024, 8 training images, 6 normal and 6 defective test images per class).

use std::path::Path;

use image::{GrayImage, Luma};

/// SplitMix64: a small, seedable generator (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// Value noise on a `cell`-pixel lattice, smoothly interpolated.
fn value_noise(rng: &mut Rng, size: u32, cell: u32) -> Vec<f64> {
    let n = size / cell + 2;
    let lattice: Vec<f64> = (0..n * n).map(|_| rng.unit()).collect();
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    (0..size * size)
        .map(|i| {
            let (x, y) = (
                (i % size) as f64 / cell as f64,
                (i / size) as f64 / cell as f64,
            );
            let (x0, y0) = (x.floor() as u32, y.floor() as u32);
            let (fx, fy) = (smooth(x - x0 as f64), smooth(y - y0 as f64));
            let at = |dx: u32, dy: u32| lattice[((y0 + dy) * n + x0 + dx) as usize];
            let top = at(0, 0) + (at(1, 0) - at(0, 0)) * fx;
            let bottom = at(0, 1) + (at(1, 1) - at(0, 1)) * fx;
            top + (bottom - top) * fy
        })
        .collect()
}

/// A surface of kind `class`: 0 brushed metal (fine oriented grooves), 1 fabric-like weave.
fn texture(rng: &mut Rng, class: usize, size: u32) -> Vec<f64> {
    let coarse = value_noise(rng, size, 128);
    let fine = value_noise(rng, size, 4);
    let phase = rng.range(0.0, std::f64::consts::TAU);
    (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64, (i / size) as f64);
            let pattern = match class {
                0 => 0.5 + 0.25 * ((y * 0.9 + 3.0 * (x * 0.004).sin()) + phase).sin(),
                _ => 0.5 + 0.2 * ((x * 0.35 + phase).sin() * (y * 0.35).sin()),
            };
            let v = 0.55 * pattern + 0.3 * coarse[i as usize] + 0.15 * fine[i as usize];
            v.clamp(0.0, 1.0)
        })
        .collect()
}

/// Paint one defect; its pixels are set in `mask`.
fn defect(rng: &mut Rng, kind: &str, img: &mut [f64], mask: &mut GrayImage, size: u32) {
    let margin = 48.0;
    let (cx, cy) = (
        rng.range(margin, size as f64 - margin),
        rng.range(margin, size as f64 - margin),
    );
    let shade = if rng.unit() < 0.5 { -0.45 } else { 0.45 };
    let mut paint = |x: i64, y: i64, strength: f64| {
        if x < 0 || y < 0 || x >= size as i64 || y >= size as i64 || strength <= 0.0 {
            return;
        }
        let i = (y as u32 * size + x as u32) as usize;
        img[i] = (img[i] + shade * strength.min(1.0)).clamp(0.0, 1.0);
        if strength >= 0.5 {
            mask.put_pixel(x as u32, y as u32, Luma([255]));
        }
    };
    match kind {
        // A spot 10–40 pixels across with a soft rim.
        "spot" => {
            let r = rng.range(5.0, 20.0);
            for y in (cy - r - 2.0) as i64..=(cy + r + 2.0) as i64 {
                for x in (cx - r - 2.0) as i64..=(cx + r + 2.0) as i64 {
                    let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                    paint(x, y, (r + 1.0 - d).min(1.0));
                }
            }
        }
        // A scratch 15–40 pixels long, 2–3 wide.
        _ => {
            let (len, width) = (rng.range(15.0, 40.0), rng.range(2.0, 3.0));
            let angle = rng.range(0.0, std::f64::consts::PI);
            let (dx, dy) = (angle.cos(), angle.sin());
            let reach = len / 2.0 + width;
            for y in (cy - reach) as i64..=(cy + reach) as i64 {
                for x in (cx - reach) as i64..=(cx + reach) as i64 {
                    let (px, py) = (x as f64 - cx, y as f64 - cy);
                    let along = px * dx + py * dy;
                    let across = (px * -dy + py * dx).abs();
                    if along.abs() <= len / 2.0 {
                        paint(x, y, (width / 2.0 + 0.5 - across).min(1.0));
                    }
                }
            }
        }
    }
}

fn save(img: &[f64], size: u32, path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    GrayImage::from_fn(size, size, |x, y| {
        Luma([(img[(y * size + x) as usize] * 255.0).round() as u8])
    })
    .save(path)
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: hires OUT [SIZE] [TRAIN] [TEST]");
        std::process::exit(2);
    };
    let number = |i: usize, default: u32| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (size, train, test) = (number(1, 1024), number(2, 8), number(3, 6));
    let out = Path::new(out);
    let mut rng = Rng(20_261_201);
    for (class, name) in ["brushed", "weave"].iter().enumerate() {
        let dir = out.join(name);
        for i in 0..train {
            save(
                &texture(&mut rng, class, size),
                size,
                &dir.join(format!("train/good/{i:03}.png")),
            );
        }
        for i in 0..test {
            save(
                &texture(&mut rng, class, size),
                size,
                &dir.join(format!("test/good/{i:03}.png")),
            );
        }
        for (k, kind) in ["spot", "scratch"].iter().enumerate() {
            for i in 0..test.div_ceil(2) {
                let mut img = texture(&mut rng, class, size);
                let mut mask = GrayImage::new(size, size);
                // One or two defects per image.
                for _ in 0..1 + (i + k as u32) % 2 {
                    defect(&mut rng, kind, &mut img, &mut mask, size);
                }
                save(&img, size, &dir.join(format!("test/{kind}/{i:03}.png")));
                let m = dir.join(format!("ground_truth/{kind}/{i:03}_mask.png"));
                std::fs::create_dir_all(m.parent().expect("a parent")).expect("mkdir");
                mask.save(&m)
                    .unwrap_or_else(|e| panic!("{}: {e}", m.display()));
            }
        }
    }
    println!("wrote {} (seed 20261201, {size}×{size})", out.display());
}
