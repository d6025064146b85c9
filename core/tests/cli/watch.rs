//! `hvq watch`: images are inspected as they appear, only once completely written; a bad file is
//! an error row and the watch goes on; a killed watch restarted carries on without inspecting
//! anything twice or losing anything (a record cut short is redone, an interrupted move is
//! finished, the CSV agrees with the JSON lines).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::tree::{hvq, output, temp};

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(crate::common::repo_root().join("samples").join(name)).unwrap()
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until the watch has recorded `n` images.
fn wait_for(out: &Path, n: usize, child: &mut Child) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let r = records(out);
        if r.len() >= n {
            return r;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the watch ended ({status}) with {} of {n} records", r.len());
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{} of {n} records",
            r.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn watch(input: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = hvq();
    cmd.args([
        "watch",
        "--device",
        "cpu",
        "--settle",
        "0.6",
        "--interval",
        "0.1",
    ])
    .args(["--sort", "move", "--out"])
    .arg(out)
    .arg(input)
    .args(extra);
    cmd
}

fn image_of(record: &serde_json::Value) -> PathBuf {
    PathBuf::from(record["image"].as_str().unwrap())
}

/// Wait until the watch has moved each recorded image into its verdict folder. It writes the
/// record first and moves the image after (so a kill in between is finished on restart), so a
/// record can be read before its move is done.
fn wait_sorted(out: &Path, seen: &[serde_json::Value]) {
    let start = Instant::now();
    for r in seen {
        let sorted = out.join(r["sorted"].as_str().unwrap());
        while !sorted.exists() || image_of(r).exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "not moved: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn watch_inspects_complete_files_once_and_survives_a_kill() {
    let input = temp("watch-in");
    let out = temp("watch-out");
    let mut child = watch(&input, &out, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // A photo copied in one go.
    std::fs::write(input.join("a.png"), sample("mono-defect-cell0001.png")).unwrap();
    let first = wait_for(&out, 1, &mut child);
    assert_eq!(first[0]["verdict"], "anomalous", "{}", first[0]);

    // A photo written slowly, in pieces closer together than the settle time: inspected once,
    // whole (a cut PNG would be an error row).
    let b = sample("poly-normal-cell0065.png");
    let mut file = std::fs::File::create(input.join("b.png")).unwrap();
    for piece in b.chunks(b.len() / 6 + 1) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(file);
    // A file that is not an image: an error row, and the watch goes on.
    std::fs::write(input.join("c.png"), b"this is not a png").unwrap();
    std::fs::write(input.join("d.png"), sample("mono-normal-cell0369.png")).unwrap();
    let seen = wait_for(&out, 4, &mut child);
    let by_name = |name: &str| {
        seen.iter()
            .find(|r| image_of(r).file_name().unwrap() == name)
            .unwrap_or_else(|| panic!("no record for {name}: {seen:?}"))
            .clone()
    };
    assert_eq!(
        by_name("b.png")["verdict"],
        "normal",
        "{}",
        by_name("b.png")
    );
    assert_eq!(by_name("b.png")["width"], 300);
    let c = by_name("c.png");
    assert_eq!(c["verdict"], "error");
    assert!(c["error"].as_str().unwrap().contains("c.png"), "{c}");
    assert_eq!(by_name("d.png")["verdict"], "normal");
    // Sorted into verdict folders, gone from the watched one; overlays written.
    wait_sorted(&out, &seen);
    for r in &seen {
        let sorted = out.join(r["sorted"].as_str().unwrap());
        assert!(sorted.exists(), "{r}");
        assert!(
            sorted.starts_with(out.join(r["verdict"].as_str().unwrap())),
            "{r}"
        );
        assert!(!image_of(r).exists(), "{r}");
        if r["verdict"] != "error" {
            assert!(out.join(r["overlay"].as_str().unwrap()).exists(), "{r}");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // What a kill can leave: a record cut short, and an image recorded but not yet moved.
    let d = by_name("d.png");
    std::fs::rename(out.join(d["sorted"].as_str().unwrap()), image_of(&d)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("results.jsonl"))
        .unwrap()
        .write_all(br#"{"image":"half a rec"#)
        .unwrap();
    // And a new photo arrives while the watch is down.
    std::fs::write(input.join("e.png"), sample("poly-defect-cell0068.png")).unwrap();

    let (code, text) = output(&mut watch(&input, &out, &["--once"]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("4 images recorded before"), "{text}");
    let after = records(&out);
    let names: Vec<String> = after
        .iter()
        .map(|r| {
            image_of(r)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["a.png", "b.png", "c.png", "d.png", "e.png"],
        "nothing twice"
    );
    let jsonl = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert!(!jsonl.contains("half a rec") && jsonl.ends_with('\n'));
    assert!(
        out.join(d["sorted"].as_str().unwrap()).exists(),
        "the move was finished"
    );
    assert!(!image_of(&d).exists());
    assert!(
        std::fs::read_dir(&input).unwrap().next().is_none(),
        "all sorted"
    );
    // The CSV has the same rows, in the same order.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], hvq::app::results::CSV_HEADER);
    assert_eq!(lines.len(), 6, "{csv}");
    for (line, r) in lines[1..].iter().zip(&after) {
        assert!(
            line.starts_with(r["image"].as_str().unwrap()),
            "{line} vs {r}"
        );
        assert!(line.contains(r["verdict"].as_str().unwrap()), "{line}");
    }
    std::fs::remove_dir_all(input).ok();
    std::fs::remove_dir_all(out).ok();
}
