//! `hvq-desktop`: the inspection app. Images or folders given on the command line are opened.

fn main() -> eframe::Result<()> {
    hvq::allocator::keep_freed_memory();
    // The same start-up variables as the CLI (`HVQ_GPU_MATMUL`, ...), typos refused the same way.
    if let Err(e) = hvq::app::environment::apply_variables() {
        eprintln!("Error: {e:#}");
        std::process::exit(2);
    }
    let open: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    let native = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("hvq inspector")
            .with_inner_size([1280.0, 820.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "hvq inspector",
        native,
        Box::new(|cc| {
            Ok(Box::new(hvq_desktop::InspectorApp::new(
                cc,
                hvq_desktop::Options {
                    open,
                    ..Default::default()
                },
            )))
        }),
    )
}
