//! A pixel-annotated evaluation set that can be rebuilt offline: normal crops of texture
//! photographs and the same surfaces with synthetic defects of several kinds and sizes, with
//! exact masks, written in MVTec-AD's layout (`hvq synth-defects`; the textures the project uses
//! are the CC0 brick, grass and gravel photographs scikit-image's wheel ships).
//!
//! Each texture becomes one class. Its right-most `crop` columns are held out: test images
//! (normal and defective) are cut from there, training images from the rest, so a test surface
//! was never seen in training, as with a new part on the line. Crops are mirrored at random
//! (never turned: a surface's grain keeps its direction). Everything follows from the seed: each
//! image draws from its own generator seeded by (seed, class, part, index), so asking for more
//! images adds images without changing the others.

mod canvas;
mod defects;
mod shapes;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use defects::{DefectKind, DefectSize};

use super::semantic::SplitMix64;
use crate::error::{HvqError, Result};
use canvas::{Canvas, encode_png};

/// How many images of what size to generate.
#[derive(Clone, Debug)]
pub struct DefectSetSpec {
    /// Side of the square crops in pixels (the model resizes them to its input size).
    pub crop: usize,
    /// Normal training images per class.
    pub train: usize,
    /// Normal test images per class.
    pub test_good: usize,
    /// Defective test images per class and kind (sizes cycle small, medium, large).
    pub per_kind: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for DefectSetSpec {
    fn default() -> Self {
        DefectSetSpec {
            crop: 192,
            train: 80,
            test_good: 30,
            per_kind: 10,
            seed: 21,
        }
    }
}

/// One defective test image, as listed in `<class>/synthetic.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DefectRecord {
    /// Path of the image relative to the class folder.
    pub image: String,
    /// Path of its mask relative to the class folder.
    pub mask: String,
    /// What was painted.
    pub kind: DefectKind,
    /// Its size class.
    pub size: DefectSize,
    /// Pixels covered.
    pub area: usize,
    /// Pixels covered, as a fraction of the image.
    pub area_fraction: f64,
    /// [x0, y0, x1, y1], inclusive.
    pub bbox: [usize; 4],
}

/// What was written for one class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassManifest {
    /// Class name (the texture's file stem).
    pub class: String,
    /// The texture photograph it was cut from.
    pub texture: PathBuf,
    /// Seed of the set.
    pub seed: u64,
    /// Crop side in pixels.
    pub crop: usize,
    /// Normal training images written.
    pub train: usize,
    /// Normal test images written.
    pub test_good: usize,
    /// Every defective test image.
    pub defects: Vec<DefectRecord>,
}

/// The generator every choice draws from.
pub(super) struct Draw(SplitMix64);

impl Draw {
    pub(super) fn new(seed: u64) -> Draw {
        Draw(SplitMix64::new(seed))
    }

    /// Uniform in [lo, hi).
    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform in 0..n (n > 0).
    pub(super) fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    fn coin(&mut self) -> bool {
        self.0.next_u64() >> 63 == 1
    }
}

/// The generator of one image: a mix of the set's seed, the class, the part (0 train, 1 test
/// normals, 2 + k defects of kind k) and the image's index.
fn image_draw(seed: u64, class: usize, part: usize, index: usize) -> Draw {
    let mut mix = SplitMix64::new(seed);
    let mut key = mix.next_u64();
    for v in [class, part, index] {
        key = SplitMix64::new(key ^ v as u64).next_u64();
    }
    Draw::new(key)
}

/// Where the crops of a texture come from.
struct Regions {
    /// Side of a crop.
    crop: usize,
    /// Largest left edge of a training crop (the training region ends where the held-out band
    /// starts).
    train_x_max: usize,
    /// Left edge of every test crop.
    test_x: usize,
    /// Largest top edge of any crop.
    y_max: usize,
}

impl Regions {
    fn of(texture: &Canvas, crop: usize, path: &Path) -> Result<Regions> {
        if texture.width < 2 * crop || texture.height < crop {
            return Err(HvqError::Image {
                path: path.display().to_string(),
                reason: format!(
                    "{}×{} pixels is too small for {crop}-pixel crops: a texture must be at least \
                     {} wide (training region + held-out test band) and {crop} high; give a larger \
                     photograph or a smaller --crop",
                    texture.width,
                    texture.height,
                    2 * crop
                ),
            });
        }
        Ok(Regions {
            crop,
            train_x_max: texture.width - 2 * crop,
            test_x: texture.width - crop,
            y_max: texture.height - crop,
        })
    }

    /// A normal crop from the training region or the held-out band: random position, random
    /// mirroring.
    fn normal_crop(&self, texture: &Canvas, held_out: bool, draw: &mut Draw) -> Canvas {
        let (x_lo, x_hi) = if held_out {
            (self.test_x, self.test_x)
        } else {
            (0, self.train_x_max)
        };
        let x0 = x_lo + draw.below(x_hi - x_lo + 1);
        let y0 = draw.below(self.y_max + 1);
        let (fx, fy) = (draw.coin(), draw.coin());
        texture.crop(x0, y0, self.crop, fx, fy)
    }
}

/// A class name from a texture's file name: its stem, or an error naming the file.
fn class_name(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
        .ok_or_else(|| {
            HvqError::Dataset(format!(
                "{}: no file name to name a class by",
                path.display()
            ))
        })
}

/// Generate the set: one class per texture under `out` (`<class>/train/good`, `test/good`,
/// `test/<kind>`, `ground_truth/<kind>/<stem>_mask.png`, and `synthetic.json`). A class folder is
/// written next to its final place and renamed when complete, so an interrupted run leaves no
/// half class; a folder of the same name that this generator did not write is an error, one it
/// wrote is replaced. `progress(done, total)` after each image.
pub fn generate(
    textures: &[PathBuf],
    out: &Path,
    spec: &DefectSetSpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ClassManifest>> {
    if textures.is_empty() {
        return Err(HvqError::Dataset(
            "no texture given (one class per texture)".into(),
        ));
    }
    if spec.crop < 32 {
        return Err(HvqError::Config(format!(
            "crop {} is below 32 pixels",
            spec.crop
        )));
    }
    if spec.train == 0 || spec.test_good == 0 || spec.per_kind == 0 {
        return Err(HvqError::Config(
            "train, test-good and per-kind counts must each be at least 1".into(),
        ));
    }
    let names = textures
        .iter()
        .map(|p| class_name(p))
        .collect::<Result<Vec<_>>>()?;
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            return Err(HvqError::Dataset(format!(
                "{} and {} would both be class `{name}`: rename one",
                textures[j].display(),
                textures[i].display()
            )));
        }
    }
    let loaded = textures
        .iter()
        .map(|p| Canvas::open(p))
        .collect::<Result<Vec<_>>>()?;
    let regions = loaded
        .iter()
        .zip(textures)
        .map(|(t, p)| Regions::of(t, spec.crop, p))
        .collect::<Result<Vec<_>>>()?;
    for name in &names {
        let dir = out.join(name);
        if dir.exists() && !dir.join("synthetic.json").is_file() {
            return Err(HvqError::Dataset(format!(
                "{}: exists and was not written by this generator; remove it or choose another output folder",
                dir.display()
            )));
        }
    }
    let per_class = spec.train + spec.test_good + spec.per_kind * DefectKind::ALL.len();
    let total = per_class * textures.len();
    let mut done = 0;
    let mut manifests = Vec::new();
    for (class, ((texture, region), path)) in loaded.iter().zip(&regions).zip(textures).enumerate()
    {
        let name = &names[class];
        let partial = out.join(format!(".{name}.partial"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| HvqError::io(&partial, e))?;
        }
        let write = |rel: &str, bytes: &[u8]| -> Result<()> {
            let file = partial.join(rel);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| HvqError::io(parent, e))?;
            }
            std::fs::write(&file, bytes).map_err(|e| HvqError::io(&file, e))
        };
        let normal_parts = [
            (0, spec.train, "train/good", false),
            (1, spec.test_good, "test/good", true),
        ];
        for (part, count, folder, held_out) in normal_parts {
            for i in 0..count {
                let mut draw = image_draw(spec.seed, class, part, i);
                let crop = region.normal_crop(texture, held_out, &mut draw);
                write(&format!("{folder}/{i:03}.png"), &crop.png()?)?;
                done += 1;
                progress(done, total);
            }
        }
        // Foreign material: the next texture (or this one when alone), turned a quarter turn.
        let donor = loaded[(class + 1) % loaded.len()]
            .with_channels(texture.channels)
            .rotated();
        let mut records = Vec::new();
        for (k, kind) in DefectKind::ALL.into_iter().enumerate() {
            for i in 0..spec.per_kind {
                let mut draw = image_draw(spec.seed, class, 2 + k, i);
                let size = DefectSize::CYCLE[i % DefectSize::CYCLE.len()];
                let mut crop = region.normal_crop(texture, true, &mut draw);
                let mask = defects::paint(kind, size, &mut crop, &donor, &mut draw);
                let image = format!("test/{}/{i:03}.png", kind.name());
                let mask_file = format!("ground_truth/{}/{i:03}_mask.png", kind.name());
                write(&image, &crop.png()?)?;
                write(
                    &mask_file,
                    &encode_png(
                        &mask.pixels(),
                        mask.width,
                        mask.height,
                        image::ExtendedColorType::L8,
                    )?,
                )?;
                let area = mask.area();
                records.push(DefectRecord {
                    image,
                    mask: mask_file,
                    kind,
                    size,
                    area,
                    area_fraction: area as f64 / (mask.width * mask.height) as f64,
                    bbox: mask.bounding_box().unwrap_or([0; 4]),
                });
                done += 1;
                progress(done, total);
            }
        }
        let manifest = ClassManifest {
            class: name.clone(),
            texture: path.clone(),
            seed: spec.seed,
            crop: spec.crop,
            train: spec.train,
            test_good: spec.test_good,
            defects: records,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| HvqError::Dataset(format!("{name}: manifest: {e}")))?;
        write("synthetic.json", &json)?;
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| HvqError::io(&dir, e))?;
        }
        std::fs::rename(&partial, &dir).map_err(|e| HvqError::io(&dir, e))?;
        manifests.push(manifest);
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A surface with grain and noise: stripes in both directions plus ±30 of noise.
    fn texture(width: usize, height: usize, seed: u64) -> Canvas {
        let mut draw = Draw::new(seed);
        let data = (0..width * height)
            .map(|i| {
                let (x, y) = ((i % width) as f32, (i / width) as f32);
                let v =
                    128.0 + 60.0 * (x / 5.0).sin() * (y / 7.0).cos() + draw.uniform(-30.0, 30.0);
                v.round().clamp(0.0, 255.0)
            })
            .collect();
        Canvas {
            width,
            height,
            channels: 1,
            data,
        }
    }

    /// Each painter changes only the pixels of its mask, changes them clearly (mean change per
    /// kind), and its size class gives areas in the documented ranges (blobs: π·r² within the
    /// harmonics' ±20 %; scratches: length × width, the bend lengthening by < 20 %).
    #[test]
    fn each_defect_changes_exactly_its_mask() {
        let side = 192usize;
        let surface = texture(side, side, 1);
        let donor = texture(2 * side, 2 * side, 2).rotated();
        for kind in DefectKind::ALL {
            for (s, size) in DefectSize::CYCLE.into_iter().enumerate() {
                for trial in 0..4u64 {
                    let mut draw = Draw::new(100 * s as u64 + trial);
                    let mut canvas = surface.clone();
                    let mask = defects::paint(kind, size, &mut canvas, &donor, &mut draw);
                    let mut change = 0.0f64;
                    for (i, &inside) in mask.inside.iter().enumerate() {
                        let d = (canvas.data[i] - surface.data[i]).abs();
                        if inside {
                            change += d as f64;
                        } else {
                            assert_eq!(
                                d, 0.0,
                                "{kind:?} {size:?}: pixel {i} outside the mask changed"
                            );
                        }
                    }
                    let area = mask.area();
                    let mean_change = change / area as f64;
                    let least = match kind {
                        DefectKind::Scratch | DefectKind::Hole => 50.0,
                        DefectKind::Stain => 25.0,
                        DefectKind::Blur | DefectKind::Foreign => 10.0,
                    };
                    assert!(
                        mean_change >= least,
                        "{kind:?} {size:?}: mean change {mean_change:.1} < {least}"
                    );
                    let f = side as f32;
                    let (lo, hi) = if kind == DefectKind::Scratch {
                        let ((l0, l1), (w0, w1)) = (size.length(), size.stroke_width());
                        (l0 * f * w0 * 0.9, l1 * f * 1.2 * w1 + w1 * w1)
                    } else {
                        let (r0, r1) = size.radius();
                        let disc = |r: f32| std::f32::consts::PI * (r * f).powi(2);
                        (disc(r0) * 0.8, disc(r1) * 1.2)
                    };
                    assert!(
                        (lo..=hi).contains(&(area as f32)),
                        "{kind:?} {size:?}: area {area} not in [{lo:.0}, {hi:.0}]"
                    );
                }
            }
        }
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hvq-synthetic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_texture(dir: &Path, name: &str, width: usize, height: usize, seed: u64) -> PathBuf {
        let t = texture(width, height, seed);
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, t.png().unwrap()).unwrap();
        path
    }

    /// Two runs with one seed write the same bytes; the tree opens as an MVTec dataset with the
    /// counts asked for and masks for every defect; each mask file is the manifest's area;
    /// another seed gives other images.
    #[test]
    fn set_is_reproducible_and_opens_as_mvtec() {
        let dir = scratch_dir("set");
        let textures = vec![
            write_texture(&dir, "ridges", 128, 64, 3),
            write_texture(&dir, "speckle", 100, 60, 4),
        ];
        let spec = DefectSetSpec {
            crop: 48,
            train: 4,
            test_good: 2,
            per_kind: 3,
            seed: 9,
        };
        let mut calls = 0;
        let first = generate(&textures, &dir.join("a"), &spec, &mut |_, _| calls += 1).unwrap();
        assert_eq!(calls, 2 * (4 + 2 + 3 * 5));
        generate(&textures, &dir.join("b"), &spec, &mut |_, _| {}).unwrap();
        let other = DefectSetSpec {
            seed: 10,
            ..spec.clone()
        };
        generate(&textures, &dir.join("c"), &other, &mut |_, _| {}).unwrap();
        let bytes = |root: &str, rel: &str| std::fs::read(dir.join(root).join(rel)).unwrap();
        for m in &first {
            for rel in ["train/good/003.png", "test/good/001.png"]
                .into_iter()
                .map(String::from)
                .chain(
                    m.defects
                        .iter()
                        .flat_map(|d| [d.image.clone(), d.mask.clone()]),
                )
            {
                let rel = format!("{}/{rel}", m.class);
                assert_eq!(
                    bytes("a", &rel),
                    bytes("b", &rel),
                    "{rel} differs between runs"
                );
            }
            let rel = format!("{}/{}", m.class, m.defects[0].image);
            assert_ne!(
                bytes("a", &rel),
                bytes("c", &rel),
                "{rel}: the seed changed nothing"
            );
            for d in &m.defects {
                let mask = image::open(dir.join("a").join(&m.class).join(&d.mask))
                    .unwrap()
                    .to_luma8();
                assert_eq!(mask.dimensions(), (48, 48));
                let n = mask.pixels().filter(|p| p.0[0] == 255).count();
                assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
                assert_eq!(n, d.area, "{}", d.mask);
                assert!(n > 0);
            }
        }
        let ds = crate::data::open_with("mvtec", &dir.join("a"), &Default::default()).unwrap();
        assert_eq!(ds.class_names, ["ridges", "speckle"]);
        assert_eq!(ds.train.len(), 8);
        assert_eq!(ds.test.len(), 2 * (2 + 15));
        assert_eq!(ds.test.iter().filter(|s| s.anomalous).count(), 30);
        assert!(ds.has_masks);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bad input is refused with the file named: a texture too small for the crop, two textures
    /// with one name, and an output folder the generator did not write (left untouched).
    #[test]
    fn bad_input_is_named() {
        let dir = scratch_dir("bad");
        let small = write_texture(&dir, "tiny", 90, 64, 1);
        let spec = DefectSetSpec {
            crop: 48,
            train: 1,
            test_good: 1,
            per_kind: 1,
            seed: 0,
        };
        let err = generate(
            std::slice::from_ref(&small),
            &dir.join("o"),
            &spec,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("tiny.png") && err.to_string().contains("96 wide"),
            "{err}"
        );

        let sub = dir.join("other");
        std::fs::create_dir_all(&sub).unwrap();
        let twin = write_texture(&sub, "tiny", 128, 64, 2);
        let ok = write_texture(&dir, "fine", 128, 64, 2);
        let err = generate(
            &[ok.clone(), small, twin],
            &dir.join("o"),
            &spec,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("both be class `tiny`"), "{err}");

        let mine = dir.join("o").join("fine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("keep.txt"), "user data").unwrap();
        let err = generate(
            std::slice::from_ref(&ok),
            &dir.join("o"),
            &spec,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("was not written by this generator"),
            "{err}"
        );
        assert!(mine.join("keep.txt").is_file());

        // A folder it wrote itself is replaced.
        std::fs::remove_dir_all(&mine).unwrap();
        generate(
            std::slice::from_ref(&ok),
            &dir.join("o"),
            &spec,
            &mut |_, _| {},
        )
        .unwrap();
        generate(&[ok], &dir.join("o"), &spec, &mut |_, _| {}).unwrap();
        assert!(mine.join("synthetic.json").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
