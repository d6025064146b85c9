//! The semantic anomaly protocol shared by cifar10 and fashion-mnist (UniAD's CIFAR-10 5-vs-5,
//! see `docs/data-and-weights.md`): a split of normal classes; train on all their training images
//! (class index = position of the label in the split); test on all their test images plus an equal
//! number of test images of the other classes, drawn with a fixed seed.

use std::path::Path;
use std::sync::Arc;

use super::{Dataset, DatasetOptions, ImageSource, Sample, ScoreKind};
use crate::error::{HvqError, Result};

/// The default normal classes.
pub(super) const DEFAULT_SPLIT: [usize; 5] = [0, 1, 2, 3, 4];

/// SplitMix64 (Steele, Lea & Flood 2014; the seeder of the xoshiro family): a tiny, well-mixed
/// 64-bit generator. Written out here so the anomaly draw is reproducible forever, whatever
/// version of a random-number crate is around.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0) by multiply-shift; the bias is below n / 2^64, far too small
    /// to matter for drawing among a few thousand images.
    pub(super) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// One split (train or test) of a labelled image array, as the formats hand it over.
pub(super) struct Part<'a> {
    /// Label (0..9) of each image.
    pub labels: &'a [u8],
    /// Sample id of image `i`.
    pub id: &'a dyn Fn(usize) -> String,
    /// Pixels of image `i` (row-major, channel-interleaved).
    pub pixels: &'a dyn Fn(usize) -> Arc<[u8]>,
}

/// Image geometry and naming of a semantic dataset.
pub(super) struct Meta<'a> {
    pub format: &'a str,
    pub root: &'a Path,
    pub names: &'a [&'a str; 10],
    pub width: u32,
    pub height: u32,
    pub channels: u8,
}

/// Check a split: 1..9 distinct label indices below 10.
pub(super) fn check_split(opts: &DatasetOptions, format: &str, root: &Path) -> Result<Vec<usize>> {
    let split = opts.split.clone().unwrap_or_else(|| DEFAULT_SPLIT.to_vec());
    let bad = |why: &str| {
        HvqError::Dataset(format!(
            "{format} dataset {}: split {split:?} {why}",
            root.display()
        ))
    };
    if split.is_empty() {
        return Err(bad("names no normal class"));
    }
    if split.iter().any(|&c| c >= 10) {
        return Err(bad("has a class index above 9"));
    }
    if (1..split.len()).any(|i| split[..i].contains(&split[i])) {
        return Err(bad("repeats a class"));
    }
    if split.len() == 10 {
        return Err(bad("leaves no class to serve as anomalies"));
    }
    Ok(split)
}

/// Apply the protocol.
pub(super) fn build(
    meta: &Meta,
    split: &[usize],
    seed: u64,
    train: Part,
    test: Part,
) -> Result<Dataset> {
    let pos = |label: u8| split.iter().position(|&c| c == label as usize);
    let source = |pixels: Arc<[u8]>| ImageSource::Pixels {
        width: meta.width,
        height: meta.height,
        channels: meta.channels,
        data: pixels,
    };
    let name_of = |label: u8| {
        meta.names
            .get(label as usize)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("label {label}"))
    };

    let train_samples: Vec<Sample> = (0..train.labels.len())
        .filter_map(|i| {
            pos(train.labels[i]).map(|class| Sample {
                id: (train.id)(i),
                source: source((train.pixels)(i)),
                class,
                anomalous: false,
                defect: "good".into(),
                mask: None,
            })
        })
        .collect();

    let normal: Vec<usize> = (0..test.labels.len())
        .filter(|&i| pos(test.labels[i]).is_some())
        .collect();
    let mut pool: Vec<usize> = (0..test.labels.len())
        .filter(|&i| pos(test.labels[i]).is_none())
        .collect();
    // Partial Fisher-Yates: the first k entries become a uniform draw without replacement.
    let k = normal.len().min(pool.len());
    let mut rng = SplitMix64::new(seed);
    for i in 0..k {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    let mut chosen: Vec<usize> = normal
        .into_iter()
        .chain(pool[..k].iter().copied())
        .collect();
    chosen.sort_unstable();
    let test_samples: Vec<Sample> = chosen
        .into_iter()
        .map(|i| {
            let label = test.labels[i];
            let class = pos(label);
            Sample {
                id: (test.id)(i),
                source: source((test.pixels)(i)),
                // Anomalous images belong to no normal class; see `Sample::class`.
                class: class.unwrap_or(0),
                anomalous: class.is_none(),
                defect: if class.is_some() {
                    "good".into()
                } else {
                    name_of(label)
                },
                mask: None,
            }
        })
        .collect();

    let class_names: Vec<String> = split.iter().map(|&c| meta.names[c].to_string()).collect();
    for (i, c) in class_names.iter().enumerate() {
        if !train_samples.iter().any(|s| s.class == i) {
            return Err(HvqError::Dataset(format!(
                "{} dataset {}: no training images of class {c:?}",
                meta.format,
                meta.root.display()
            )));
        }
    }
    let split_text: Vec<String> = split.iter().map(|c| c.to_string()).collect();
    let mut name = format!("{} split {}", meta.format, split_text.join(","));
    if seed != 0 {
        name.push_str(&format!(" seed {seed}"));
    }
    Ok(Dataset {
        name,
        class_names,
        train: train_samples,
        test: test_samples,
        score_kind: ScoreKind::Mean,
        has_masks: false,
    })
}
