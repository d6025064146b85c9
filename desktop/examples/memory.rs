//! Peak memory of the inspector's list over many large photos: the desktop's own path (the
//! inference worker, `Outcome`s in an `ImageList`) on `N` copies (hard links) of one generated
//! photo. Prints the resident set every 100 images and the peak (README "Desktop inspector").
//!
//! ```sh
//! cargo run --release -p desktop --example memory -- 2000 2500x2000 [cpu|wgpu]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hvq::app::{ClassChoice, ModelSource};
use hvq::device::DeviceChoice;
use hvq_desktop::state::{ImageList, Outcome, SortKey, SortOrder};
use hvq_desktop::worker::{Purpose, Reply, Worker};

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(2000), |a| a.parse())?;
    let (w, h) = match args.get(1).and_then(|s| s.split_once('x')) {
        Some((w, h)) => (w.parse::<u32>()?, h.parse::<u32>()?),
        None => (2500, 2000),
    };
    let device = match args.get(2).map(String::as_str) {
        Some("wgpu") => DeviceChoice::Wgpu,
        _ => DeviceChoice::Cpu,
    };

    // One photo at the size asked (a sample cell enlarged), linked N times.
    let dir = std::env::temp_dir().join(format!("hvq-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (name, png) = hvq::pretrained::SAMPLES[0];
    let cell = image::load_from_memory(png)?;
    let big = cell.resize_exact(w, h, image::imageops::FilterType::Triangle);
    let original = dir.join("photo.png");
    big.to_rgb8().save(&original)?;
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.join(format!("img_{i:05}.png"));
            std::fs::hard_link(&original, &p).map(|()| p)
        })
        .collect::<Result<_, _>>()?;
    println!(
        "{n} photos of {w}×{h} ({name} enlarged, {:.1} MB PNG), device {device:?}",
        std::fs::metadata(&original)?.len() as f64 / 1e6
    );

    let worker = Worker::spawn(device, || {});
    worker.load(ModelSource::Shipped);
    let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
    for (id, path) in list.add(files) {
        worker.inspect(id, path, ClassChoice::Auto, Purpose::List);
    }
    let start = Instant::now();
    let before = status_mib("VmRSS:");
    let (mut done, mut failed) = (0usize, 0usize);
    println!(
        "{:>8} {:>10} {:>10} {:>8}",
        "images", "RSS MiB", "peak MiB", "s"
    );
    while done < n {
        match worker.recv_timeout(Duration::from_secs(600)) {
            Some(Reply::Inspected { id, result, .. }) => {
                failed += result.is_err() as usize;
                list.set_result(id, result.map(Outcome::from_inspection), None);
                done += 1;
                if done % 100 == 0 || done == n {
                    println!(
                        "{done:>8} {:>10.0} {:>10.0} {:>8.0}",
                        status_mib("VmRSS:"),
                        status_mib("VmHWM:"),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            Some(Reply::Model(Err(e))) => return Err(e.into()),
            Some(_) => {}
            None => return Err("the worker stopped answering".into()),
        }
    }
    let kept: usize = list
        .iter()
        .filter_map(|e| match &e.status {
            hvq_desktop::state::Status::Done(o) => Some(o.model_map.len() * 4),
            _ => None,
        })
        .sum();
    println!(
        "peak RSS {:.0} MiB (before inspecting {before:.0} MiB); maps kept by the list {:.0} MiB; \
         {failed} failed; {:.2} s per image",
        status_mib("VmHWM:"),
        kept as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64() / n as f64
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
