//! Minimal inference with the application layer: the shipped model, images from the command
//! line (or the four embedded sample cells), one result row each, printed as CSV.
//!
//! ```sh
//! cargo run --release -p core --example inspect -- samples/
//! ```

use std::path::{Path, PathBuf};

use hvq::app::results::{ResultRow, to_csv};
use hvq::app::{ClassChoice, Inspector, ModelSource, list_images};

fn main() -> hvq::Result<()> {
    let device = burn::tensor::Device::flex();
    let inspector = Inspector::new(ModelSource::Shipped.load(&device)?, device);
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let mut rows = Vec::new();
    if paths.is_empty() {
        for (name, png) in hvq::pretrained::SAMPLES {
            let result = inspector.inspect_bytes(png, name, &ClassChoice::Auto)?;
            rows.push(ResultRow::inspected(
                Path::new(name),
                &result,
                result.threshold,
            ));
        }
    } else {
        let listing = list_images(&paths);
        for (path, problem) in &listing.problems {
            rows.push(ResultRow::failed(path, problem));
        }
        for path in &listing.files {
            let row = hvq::preprocess::load(path)
                .and_then(|img| inspector.inspect(&img, &ClassChoice::Auto))
                .map_or_else(
                    |e| ResultRow::failed(path, e),
                    |r| ResultRow::inspected(path, &r, r.threshold),
                );
            rows.push(row);
        }
    }
    print!("{}", to_csv(&rows));
    Ok(())
}
