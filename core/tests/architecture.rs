//! The library's modules form layers and imports only point down: every `crate::x` path in a
//! module's code names a module of a lower layer. That rules out import cycles (a cycle needs an
//! edge that points up or sideways) and keeps the application layer (`app`) above the pipeline.
//! A new module must be placed in `LAYERS`, or this test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. Within a layer, modules do not import each other.
const LAYERS: &[&[&str]] = &[
    &["error", "allocator", "test_rng", "prefetch"],
    // Start-up settings from environment variables, which the device and kernel layers read.
    &["env_setting"],
    &["fs", "device", "config", "eval"],
    // Kernels compute at the run's precision, which the device layer holds.
    &["kernels"],
    &["weights", "preprocess", "map"],
    &["overlay", "data", "backbone", "model"],
    &["overlay_gpu", "pretrained", "tiling", "class_choice"],
    &["detector"],
    &["features", "replay"],
    &["train", "threshold"],
    &["app"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::…` paths in `code` (comments removed): `crate::a::b`
/// gives `a`, `crate::{a, b::{c, d}}` gives `a` and `b`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group at depth 0 and take each part's first segment.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found
}

/// Which top-level module each library file belongs to (None: the crate root, the binary).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main" | "cli")).then_some(name)
}

#[test]
fn imports_only_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, mods)| mods.iter().map(move |m| (*m, i)))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else {
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        let refs = crate_references(&code);
        edges.entry(module.clone()).or_default().extend(
            refs.into_iter()
                .filter(|r| r != &module)
                .filter(|r| r.chars().next().is_some_and(|c| c.is_lowercase())),
        );
    }
    let mut wrong = Vec::new();
    for (module, targets) in &edges {
        let Some(&from) = layer.get(module.as_str()) else {
            wrong.push(format!("{module}: not placed in LAYERS"));
            continue;
        };
        for target in targets {
            match layer.get(target.as_str()) {
                Some(&to) if to < from => {}
                Some(&to) => wrong.push(format!(
                    "{module} (layer {from}) imports {target} (layer {to})"
                )),
                None => wrong.push(format!("{module} imports {target}, which is not in LAYERS")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down:\n{}",
        wrong.join("\n")
    );
    // Every layer's modules exist (the table is not stale).
    for m in layer.keys() {
        assert!(
            src.join(format!("{m}.rs")).exists() || src.join(m).join("mod.rs").exists(),
            "LAYERS names {m}, which is not a module"
        );
    }
}

#[test]
fn the_reference_scanner_sees_grouped_and_nested_paths() {
    let code = "use crate::{a, b::{c, d}, e::f};\nlet x = crate::g::h(); // crate::comment\n";
    let got: Vec<String> = crate_references(code).into_iter().collect();
    assert_eq!(got, ["a", "b", "e", "g"]);
}

/// hvq's GPU kernels index their outputs as row-major without padding (`out[i]`), so they
/// allocate them with cubecl's contiguous layout (`empty_device_contiguous_dtype`). burn's
/// `empty_device_dtype` takes the runtime's policy, which on CUDA pads a row to an aligned pitch
/// (a `[.., 14]` f32 tensor's rows 16 values apart): a kernel writing in order there would leave
/// its values where the tensor's strides do not look. wgpu never pads, so lavapipe sees the
/// difference only with `HVQ_WGPU_LAYOUT=pitched` and on the paths a test runs; this one refuses
/// the call, and burn's `empty` of two or more axes, anywhere in the kernels' sources.
#[test]
fn gpu_kernels_allocate_their_outputs_unpadded() {
    // burn's `Tensor::empty([a, b, ..])` takes the runtime's layout too (the nearest-code
    // kernel's indices did, found by `HVQ_WGPU_LAYOUT=pitched`); of rank one it has no rows.
    assert!(empty_of_rank_two_or_more(
        "let i = BurnTensor::<2, Int>::empty([b, l], &d)"
    ));
    assert!(!empty_of_rank_two_or_more(
        "BurnTensor::<1, Int>::empty([2], &plain)"
    ));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernels");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let padded: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .any(|code| code.contains("empty_device_dtype") || empty_of_rank_two_or_more(code))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        padded.is_empty(),
        "kernels allocating with the runtime's layout: {padded:?}"
    );
}

/// Whether `code` calls burn's `empty` with a shape of two or more axes (`::empty([a, b`).
fn empty_of_rank_two_or_more(code: &str) -> bool {
    code.match_indices("::empty([").any(|(at, call)| {
        let shape = &code[at + call.len()..];
        shape
            .split(']')
            .next()
            .is_some_and(|dims| dims.contains(','))
    })
}

/// burn-flex and cubek each keep one random generator for the process, and the unit tests run on
/// parallel threads: a test that re-seeds and expects the same draw fails when another draws in
/// between (twice in CI). So a unit test that draws holds `test_rng::lock` (see `test_rng`);
/// this scan finds the test functions whose own body draws (`::random(`, `Distribution::`)
/// without taking it.
#[test]
fn unit_tests_that_draw_hold_the_generator_lock() {
    let drawing = "#[test]\n    fn a() {\n        let x = Tensor::random([2], Distribution::Default, &d);\n    }\n";
    assert_eq!(unlocked_drawing_tests(drawing), ["a"]);
    let locked = "#[test]\nfn b() {\n    let _g = crate::test_rng::lock();\n    let s = format!(\"{x}\");\n    Tensor::random([2], D, &d);\n}\n#[test]\nfn c() {}\n";
    assert!(unlocked_drawing_tests(locked).is_empty());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let unlocked: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let code = std::fs::read_to_string(f).unwrap();
            unlocked_drawing_tests(&code)
                .into_iter()
                .map(move |name| format!("{}: {name}", f.display()))
        })
        .collect();
    assert!(
        unlocked.is_empty(),
        "tests drawing without test_rng::lock: {unlocked:?}"
    );
}

/// The names of the `#[test]` functions in `code` whose body (up to its matching brace) draws
/// from a generator and does not take `test_rng::lock`.
fn unlocked_drawing_tests(code: &str) -> Vec<String> {
    code.split("#[test]")
        .skip(1)
        .filter_map(|after| {
            let name_at = after.find("fn ")? + 3;
            let name: String = after[name_at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = after.find('{')?;
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &after[open..end];
            let draws = body.contains("::random(") || body.contains("Distribution::");
            (draws && !body.contains("test_rng::lock")).then_some(name)
        })
        .collect()
}
