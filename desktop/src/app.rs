//! The inspector window: [`InspectorApp`] implements [`eframe::App`]. Widgets only record
//! [`Command`]s; they are applied at the end of the frame.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use eframe::egui::{self, Color32, RichText, Vec2};
use hvq::ClassChoice;
use hvq::device::DeviceChoice;

use crate::overlay::{self, OverlayCallback, OverlayImage, Params};
use crate::settings::Settings;
use crate::state::{
    self, CalibrationRule, CalibrationRun, ExportSummary, ImageList, SortKey, SortOrder, Status,
    Verdict,
};
use crate::worker::{ModelInfo, ModelSource, Purpose, Reply, Worker};

/// How to start the app (the binary uses the defaults; tests pass their own model and images).
pub struct Options {
    /// Model to load; `None`: the settings' model directory, else the shipped default.
    pub model: Option<ModelSource>,
    /// Images or folders to open at start.
    pub open: Vec<PathBuf>,
    /// Compute device for inference.
    pub device: DeviceChoice,
    /// Start from these settings instead of the stored ones.
    pub settings: Option<Settings>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model: None,
            open: Vec::new(),
            device: DeviceChoice::Wgpu,
            settings: None,
        }
    }
}

/// A user action, applied at the end of the frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Open files and folders (folders expand to their images).
    Open(Vec<PathBuf>),
    /// File dialog: images.
    PickFiles,
    /// File dialog: a folder.
    PickFolder,
    /// File dialog: a folder of known-good images to calibrate from.
    PickCalibrationFolder,
    /// Calibrate the threshold from the images in this folder.
    Calibrate(PathBuf),
    /// File dialog: a model directory.
    PickModelDir,
    /// Load a model directory.
    LoadModel(PathBuf),
    /// Go back to the shipped model.
    LoadDefaultModel,
    /// File dialog: where to export.
    PickExportDir,
    /// Export results and overlays into this folder.
    Export(PathBuf),
    /// Select an image.
    Select(u64),
    /// Move the selection by rows.
    MoveSelection(isize),
    /// First (`false`) or last (`true`) row.
    SelectEnd(bool),
    /// Sort the list (again: flip the order).
    SortBy(SortKey),
    /// `"auto"` or a class name.
    SetClass(String),
    /// User threshold; `None` returns to the model's.
    SetThreshold(Option<f32>),
    /// Remove all images.
    ClearList,
    /// Fit the image to the view again.
    ResetView,
}

/// Model status.
#[derive(Clone, Debug)]
pub enum ModelState {
    /// Being loaded.
    Loading(String),
    /// Ready.
    Ready(ModelInfo),
    /// Could not be loaded: the message says why.
    Failed(String),
}

/// The selected photo, decoded once.
struct Photo {
    id: u64,
    texture: egui::TextureHandle,
    rgba: Arc<Vec<u8>>,
    size: [u32; 2],
}

/// Zoom and pan of the image view.
#[derive(Clone, Copy, Debug, PartialEq)]
struct View {
    zoom: f32,
    pan: Vec2,
}

impl Default for View {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: Vec2::ZERO,
        }
    }
}

/// The inspector.
pub struct InspectorApp {
    /// Persisted settings.
    pub settings: Settings,
    /// Images and their results.
    pub list: ImageList,
    /// Model status.
    pub model: ModelState,
    /// Compute device in words.
    pub device: String,
    /// Status-bar message (last action or error).
    pub message: String,
    /// Calibration in progress or last finished.
    pub calibration: Option<CalibrationRun>,
    worker: Worker,
    commands: Vec<Command>,
    view: View,
    photo: Option<Photo>,
    photo_error: Option<(u64, String)>,
    gpu_overlay: bool,
    /// Largest texture side the renderer accepts.
    max_texture: u32,
    path_input: String,
    export: Option<Receiver<Result<(PathBuf, ExportSummary), String>>>,
    next_calibration_id: u64,
    scroll_to_selected: bool,
    /// Where the user's threshold came from (slider, calibration).
    threshold_origin: String,
}

impl InspectorApp {
    /// Restore settings, start the worker and load the model.
    pub fn new(cc: &eframe::CreationContext<'_>, options: Options) -> Self {
        let settings = options
            .settings
            .unwrap_or_else(|| Settings::load(cc.storage));
        let (gpu_overlay, max_texture) = match &cc.wgpu_render_state {
            Some(rs) => {
                overlay::install(rs);
                (true, rs.device.limits().max_texture_dimension_2d)
            }
            None => (false, 2048),
        };
        let ctx = cc.egui_ctx.clone();
        let worker = Worker::spawn(options.device, move || ctx.request_repaint());
        let source = options.model.unwrap_or_else(|| match &settings.model_dir {
            Some(dir) => ModelSource::Dir(dir.clone()),
            None => ModelSource::Default,
        });
        let mut app = Self {
            list: ImageList::new(settings.sort, settings.order),
            settings,
            model: ModelState::Loading(source.describe()),
            device: "starting…".into(),
            message: String::new(),
            calibration: None,
            worker,
            commands: Vec::new(),
            view: View::default(),
            photo: None,
            photo_error: None,
            gpu_overlay,
            max_texture,
            path_input: String::new(),
            export: None,
            next_calibration_id: 0,
            scroll_to_selected: false,
            threshold_origin: "user".into(),
        };
        app.worker.send(crate::worker::Request::LoadModel(source));
        if !options.open.is_empty() {
            app.apply(&cc.egui_ctx, Command::Open(options.open));
        }
        app
    }

    /// The threshold in force: the user's, else the model's.
    pub fn threshold(&self) -> Option<f32> {
        self.settings.threshold.or(match &self.model {
            ModelState::Ready(info) => info.threshold,
            _ => None,
        })
    }

    /// Where the threshold comes from, in words.
    fn threshold_source(&self) -> String {
        match (self.settings.threshold, &self.model) {
            (Some(_), _) => self.threshold_origin.clone(),
            (None, ModelState::Ready(info)) if info.threshold.is_some() => info
                .threshold_source
                .clone()
                .map(|s| format!("model: {s}"))
                .unwrap_or_else(|| "model".into()),
            _ => "none: set one or calibrate".into(),
        }
    }

    fn class_choice(&self) -> ClassChoice {
        if self.settings.class == "auto" {
            ClassChoice::Auto
        } else {
            ClassChoice::Name(self.settings.class.clone())
        }
    }

    /// Queue a command (tests drive the app this way, as widgets do).
    pub fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Whether the worker is still busy with the list or a calibration.
    pub fn busy(&self) -> bool {
        matches!(self.model, ModelState::Loading(_))
            || self.list.counts(None).queued > 0
            || self.calibration.as_ref().is_some_and(|c| !c.finished())
            || self.export.is_some()
    }

    fn send_all(&self, work: Vec<(u64, PathBuf)>) {
        let class = self.class_choice();
        for (id, path) in work {
            self.worker.inspect(id, path, class.clone(), Purpose::List);
        }
    }

    fn requeue(&mut self) {
        self.worker.cancel_pending();
        if self.calibration.as_ref().is_some_and(|c| !c.finished()) {
            self.calibration = None;
            self.message = "calibration cancelled".into();
        }
        let work = self.list.requeue_all();
        self.send_all(work);
    }

    fn start_dir(&self) -> Option<PathBuf> {
        self.settings.last_folder.clone().filter(|p| p.is_dir())
    }

    /// Apply one command.
    pub fn apply(&mut self, ctx: &egui::Context, command: Command) {
        match command {
            Command::Open(paths) => {
                let (files, errors) = state::expand_paths(&paths);
                if let Some(first) = paths.first() {
                    let folder = if first.is_dir() {
                        Some(first.as_path())
                    } else {
                        first.parent()
                    };
                    self.settings.last_folder = folder.map(Path::to_path_buf);
                }
                for (p, e) in errors {
                    self.list.add_failed(p, e);
                }
                let work = self.list.add(files);
                self.message = format!("opened {} image(s)", work.len());
                self.send_all(work);
            }
            Command::PickFiles => {
                let mut d = rfd::FileDialog::new().add_filter("images", state::IMAGE_EXTENSIONS);
                if let Some(dir) = self.start_dir() {
                    d = d.set_directory(dir);
                }
                if let Some(files) = d.pick_files() {
                    self.commands.push(Command::Open(files));
                }
            }
            Command::PickFolder => {
                if let Some(dir) = self.folder_dialog() {
                    self.commands.push(Command::Open(vec![dir]));
                }
            }
            Command::PickCalibrationFolder => {
                if let Some(dir) = self.folder_dialog() {
                    self.commands.push(Command::Calibrate(dir));
                }
            }
            Command::Calibrate(folder) => match state::images_in_folder(&folder) {
                Ok(files) if files.is_empty() => {
                    self.message = format!("no images in {}", folder.display());
                }
                Ok(files) => {
                    let class = self.class_choice();
                    for f in &files {
                        self.next_calibration_id += 1;
                        self.worker.inspect(
                            self.next_calibration_id,
                            f.clone(),
                            class.clone(),
                            Purpose::Calibration,
                        );
                    }
                    let q = self.settings.calibration_quantile;
                    self.calibration = Some(CalibrationRun {
                        folder: folder.clone(),
                        total: files.len(),
                        scores: Vec::new(),
                        errors: Vec::new(),
                        rule: if q >= 1.0 {
                            CalibrationRule::Max
                        } else {
                            CalibrationRule::Quantile(q)
                        },
                    });
                    self.message = format!("calibrating on {} known-good image(s)…", files.len());
                }
                Err(e) => self.message = format!("{e:#}"),
            },
            Command::PickModelDir => {
                if let Some(dir) = self.folder_dialog() {
                    self.commands.push(Command::LoadModel(dir));
                }
            }
            Command::LoadModel(dir) => {
                self.settings.model_dir = Some(dir.clone());
                self.load_model(ModelSource::Dir(dir));
            }
            Command::LoadDefaultModel => {
                self.settings.model_dir = None;
                self.load_model(ModelSource::Default);
            }
            Command::PickExportDir => {
                if let Some(dir) = self.folder_dialog() {
                    self.commands.push(Command::Export(dir));
                }
            }
            Command::Export(dir) => {
                let (tx, rx) = channel();
                let list = self.list.clone();
                let (threshold, opacity) = (self.threshold(), self.settings.opacity);
                let ctx = ctx.clone();
                self.message = format!("exporting to {}…", dir.display());
                std::thread::spawn(move || {
                    let r = state::export(&dir, &list, threshold, opacity)
                        .map(|s| (dir.clone(), s))
                        .map_err(|e| format!("export to {}: {e:#}", dir.display()));
                    let _ = tx.send(r);
                    ctx.request_repaint();
                });
                self.export = Some(rx);
            }
            Command::Select(id) => {
                self.list.selected = Some(id);
            }
            Command::MoveSelection(d) => {
                self.list.move_selection(d);
                self.scroll_to_selected = true;
            }
            Command::SelectEnd(last) => {
                self.list.select_end(last);
                self.scroll_to_selected = true;
            }
            Command::SortBy(key) => {
                let t = self.threshold();
                self.list.sort_by(key, t);
                self.settings.sort = self.list.sort;
                self.settings.order = self.list.sort_order;
            }
            Command::SetClass(class) => {
                if class != self.settings.class {
                    self.settings.class = class;
                    self.requeue();
                }
            }
            Command::SetThreshold(t) => {
                self.settings.threshold = t;
                self.threshold_origin = "user".into();
                let t = self.threshold();
                self.list.resort(t);
            }
            Command::ClearList => {
                self.worker.cancel_pending();
                self.list.clear();
                self.photo = None;
            }
            Command::ResetView => self.view = View::default(),
        }
    }

    fn folder_dialog(&self) -> Option<PathBuf> {
        let mut d = rfd::FileDialog::new();
        if let Some(dir) = self.start_dir() {
            d = d.set_directory(dir);
        }
        d.pick_folder()
    }

    fn load_model(&mut self, source: ModelSource) {
        self.model = ModelState::Loading(source.describe());
        self.worker.cancel_pending();
        self.worker.send(crate::worker::Request::LoadModel(source));
        self.requeue();
    }

    /// Take in the worker's replies and the export's result.
    pub fn poll(&mut self) {
        for reply in self.worker.poll() {
            match reply {
                Reply::Device(d) => self.device = d,
                Reply::Model(Ok(info)) => {
                    if self.settings.class != "auto" && !info.classes.contains(&self.settings.class)
                    {
                        self.settings.class = "auto".into();
                    }
                    self.message = format!("model {} ready", info.source);
                    self.model = ModelState::Ready(info);
                }
                Reply::Model(Err(e)) => {
                    self.message = e.clone();
                    self.model = ModelState::Failed(e);
                }
                Reply::Inspected {
                    id,
                    purpose: Purpose::List,
                    result,
                } => {
                    let t = self.threshold();
                    self.list.set_result(id, result, t);
                }
                Reply::Inspected {
                    purpose: Purpose::Calibration,
                    result,
                    id,
                } => {
                    if let Some(run) = &mut self.calibration {
                        match result {
                            Ok(o) => run.scores.push(o.score),
                            Err(e) => run.errors.push((PathBuf::from(format!("#{id}")), e)),
                        }
                        if run.finished() {
                            match run.threshold() {
                                Some(t) => {
                                    self.message = format!(
                                        "threshold {t:.4} from {} known-good image(s) in {}",
                                        run.scores.len(),
                                        run.folder.display()
                                    );
                                    self.settings.threshold = Some(t);
                                    self.threshold_origin = format!(
                                        "calibrated on {} known-good image(s)",
                                        run.scores.len()
                                    );
                                    self.list.resort(Some(t));
                                }
                                None => {
                                    self.message = format!(
                                        "calibration failed: none of the {} images could be inspected",
                                        run.total
                                    )
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(rx) = &self.export
            && let Ok(r) = rx.try_recv()
        {
            self.message = match r {
                Ok((dir, s)) => {
                    let mut m = format!(
                        "exported {} rows and {} overlays to {}",
                        s.rows,
                        s.overlays,
                        dir.display()
                    );
                    if let Some(first) = s.failures.first() {
                        m.push_str(&format!(
                            "; {} overlay(s) failed: {first}",
                            s.failures.len()
                        ));
                    }
                    m
                }
                Err(e) => e,
            };
            self.export = None;
        }
    }

    /// Make sure the selected photo is decoded and uploaded.
    fn ensure_photo(&mut self, ctx: &egui::Context) {
        let Some(entry) = self.list.selected_entry() else {
            self.photo = None;
            return;
        };
        if self.photo.as_ref().is_some_and(|p| p.id == entry.id)
            || self.photo_error.as_ref().is_some_and(|e| e.0 == entry.id)
        {
            return;
        }
        let id = entry.id;
        match hvq::preprocess::load(&entry.path) {
            Ok(img) if img.width().max(img.height()) > self.max_texture => {
                self.photo = None;
                self.photo_error = Some((
                    id,
                    format!(
                        "{}×{} is larger than this GPU can display ({} pixels per side); the score and export still work",
                        img.width(),
                        img.height(),
                        self.max_texture
                    ),
                ));
            }
            Ok(img) => {
                let rgba = img.to_rgba8();
                let size = [rgba.width(), rgba.height()];
                let color = egui::ColorImage::from_rgba_unmultiplied(
                    [size[0] as usize, size[1] as usize],
                    &rgba,
                );
                let texture =
                    ctx.load_texture(format!("photo-{id}"), color, egui::TextureOptions::LINEAR);
                self.photo = Some(Photo {
                    id,
                    texture,
                    rgba: Arc::new(rgba.into_raw()),
                    size,
                });
                self.photo_error = None;
                self.view = View::default();
            }
            Err(e) => {
                self.photo = None;
                self.photo_error = Some((id, e.to_string()));
            }
        }
    }

    fn keyboard(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        ctx.input(|i| {
            use egui::Key;
            let mut c = |k: Key, cmd: Command| {
                if i.key_pressed(k) {
                    self.commands.push(cmd);
                }
            };
            c(Key::ArrowDown, Command::MoveSelection(1));
            c(Key::J, Command::MoveSelection(1));
            c(Key::ArrowUp, Command::MoveSelection(-1));
            c(Key::K, Command::MoveSelection(-1));
            c(Key::PageDown, Command::MoveSelection(10));
            c(Key::PageUp, Command::MoveSelection(-10));
            c(Key::Home, Command::SelectEnd(false));
            c(Key::End, Command::SelectEnd(true));
            c(Key::Num0, Command::ResetView);
        });
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if !dropped.is_empty() {
            self.commands.push(Command::Open(dropped));
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open images…").clicked() {
                    self.commands.push(Command::PickFiles);
                }
                if ui.button("Open folder…").clicked() {
                    self.commands.push(Command::PickFolder);
                }
                ui.separator();
                if ui.button("Export results…").clicked() {
                    self.commands.push(Command::PickExportDir);
                }
                ui.separator();
                if ui.button("Clear list").clicked() {
                    self.commands.push(Command::ClearList);
                }
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Model", |ui| {
                if ui.button("Load model directory…").clicked() {
                    self.commands.push(Command::PickModelDir);
                }
                if ui.button("Use the shipped default model").clicked() {
                    self.commands.push(Command::LoadDefaultModel);
                }
                ui.separator();
                if ui.button("Calibrate from known-good images…").clicked() {
                    self.commands.push(Command::PickCalibrationFolder);
                }
                ui.horizontal(|ui| {
                    ui.label("Calibration quantile");
                    ui.add(
                        egui::DragValue::new(&mut self.settings.calibration_quantile)
                            .range(0.5..=1.0)
                            .speed(0.001),
                    )
                    .on_hover_text("1.0: the largest known-good score; 0.99: its 99th percentile");
                });
            });
            ui.menu_button("View", |ui| {
                ui.checkbox(
                    &mut self.settings.side_by_side,
                    "Original and map side by side",
                );
                ui.checkbox(
                    &mut self.settings.hide_below_lo,
                    "Hide the map below its scale",
                );
                if ui.button("Fit image (0)").clicked() {
                    self.commands.push(Command::ResetView);
                }
            });
        });
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.label("Class");
            let classes = match &self.model {
                ModelState::Ready(info) => info.classes.clone(),
                _ => Vec::new(),
            };
            let mut class = self.settings.class.clone();
            egui::ComboBox::from_id_salt("class")
                .selected_text(class.clone())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut class, "auto".to_string(), "auto");
                    for c in &classes {
                        ui.selectable_value(&mut class, c.clone(), c);
                    }
                });
            if class != self.settings.class {
                self.commands.push(Command::SetClass(class));
            }
            ui.separator();
            ui.label("Threshold");
            let scores = self.list.scores();
            let model_t = match &self.model {
                ModelState::Ready(i) => i.threshold,
                _ => None,
            };
            let mut t = self
                .threshold()
                .or(scores.iter().cloned().reduce(f32::max))
                .unwrap_or(1.0);
            let top = scores
                .iter()
                .cloned()
                .chain(model_t)
                .chain(Some(t))
                .fold(f32::MIN, f32::max);
            let bottom = scores
                .iter()
                .cloned()
                .chain(model_t)
                .chain(Some(t))
                .fold(f32::MAX, f32::min);
            let span = (top - bottom).abs().max(top.abs() * 0.1).max(1e-3);
            let range = (bottom - 0.1 * span).max(0.0)..=top + 0.1 * span;
            let r = ui.add(
                egui::Slider::new(&mut t, range)
                    .max_decimals(4)
                    .clamping(egui::SliderClamping::Never),
            );
            if r.changed() {
                self.commands.push(Command::SetThreshold(Some(t)));
            }
            if self.settings.threshold.is_some()
                && ui
                    .add_enabled(model_t.is_some(), egui::Button::new("Model's"))
                    .on_hover_text("use the threshold stored with the model")
                    .clicked()
            {
                self.commands.push(Command::SetThreshold(None));
            }
            if ui
                .button("Calibrate…")
                .on_hover_text("from a folder of known-good images")
                .clicked()
            {
                self.commands.push(Command::PickCalibrationFolder);
            }
            ui.separator();
            ui.label("Opacity");
            ui.add(egui::Slider::new(&mut self.settings.opacity, 0.0..=1.0).fixed_decimals(2));
            ui.checkbox(&mut self.settings.side_by_side, "Side by side");
            ui.separator();
            let edit = ui.add(
                egui::TextEdit::singleline(&mut self.path_input)
                    .hint_text("image or folder path")
                    .desired_width(220.0),
            );
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Open").clicked() || enter) && !self.path_input.trim().is_empty() {
                self.commands
                    .push(Command::Open(vec![PathBuf::from(self.path_input.trim())]));
                self.path_input.clear();
            }
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        let t = self.threshold();
        let c = self.list.counts(t);
        ui.horizontal(|ui| {
            if c.queued > 0 {
                let done = c.total - c.queued;
                ui.add(
                    egui::ProgressBar::new(done as f32 / c.total.max(1) as f32)
                        .desired_width(220.0)
                        .text(format!("inspecting {done} / {}", c.total)),
                );
            }
            if let Some(run) = &self.calibration
                && !run.finished()
            {
                ui.add(
                    egui::ProgressBar::new(run.received() as f32 / run.total.max(1) as f32)
                        .desired_width(180.0)
                        .text(format!("calibrating {} / {}", run.received(), run.total)),
                );
            }
            ui.label(format!("{} images", c.total));
            ui.colored_label(PASS, format!("{} pass", c.pass));
            ui.colored_label(FAIL, format!("{} fail", c.fail));
            if c.errors > 0 {
                ui.colored_label(
                    Color32::from_rgb(230, 160, 40),
                    format!("{} unreadable", c.errors),
                );
            }
            ui.separator();
            match &self.model {
                ModelState::Loading(s) => ui.label(format!("loading {s}…")),
                ModelState::Ready(i) => ui.label(format!("model: {}", i.source)),
                ModelState::Failed(_) => ui.colored_label(FAIL, "no model"),
            };
            ui.label(format!("device: {}", describe_device(&self.device)))
                .on_hover_text(&self.device);
            ui.separator();
            ui.label(&self.message);
        });
    }

    fn image_list(&mut self, ui: &mut egui::Ui) {
        let t = self.threshold();
        ui.horizontal(|ui| {
            let arrow = |key: SortKey| {
                if self.list.sort != key {
                    ""
                } else if self.list.sort_order == SortOrder::Ascending {
                    " ▲"
                } else {
                    " ▼"
                }
            };
            for (key, label) in [
                (SortKey::Name, "Name"),
                (SortKey::Score, "Score"),
                (SortKey::Verdict, "Verdict"),
            ] {
                if ui
                    // Monospace: the arrows are in the bundled monospace font.
                    .selectable_label(
                        self.list.sort == key,
                        RichText::new(format!("{label}{}", arrow(key))).monospace(),
                    )
                    .on_hover_text("sort (again: reverse)")
                    .clicked()
                {
                    self.commands.push(Command::SortBy(key));
                }
            }
        });
        ui.separator();
        if self.list.is_empty() {
            ui.weak("Drop images or a folder here,\nor use File > Open.");
            return;
        }
        let font = egui::FontId::monospace(12.0);
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for e in self.list.iter() {
                    let mut job = egui::text::LayoutJob::default();
                    let mut name = e.name();
                    if name.chars().count() > 26 {
                        name = format!("{}…", name.chars().take(25).collect::<String>());
                    }
                    let fmt = |color| egui::TextFormat::simple(font.clone(), color);
                    job.append(&format!("{name:<27}"), 0.0, fmt(ui.visuals().text_color()));
                    let score = e
                        .score()
                        .map(|s| format!("{s:>10.4}"))
                        .unwrap_or_else(|| format!("{:>10}", ""));
                    job.append(&score, 0.0, fmt(ui.visuals().text_color()));
                    let v = e.verdict(t);
                    job.append(&format!("  {:<12}", v.label()), 0.0, fmt(verdict_color(v)));
                    let selected = self.list.selected == Some(e.id);
                    let mut r = ui.selectable_label(selected, job);
                    if let Status::Failed(msg) = &e.status {
                        r = r.on_hover_text(msg);
                    } else {
                        r = r.on_hover_text(e.path.display().to_string());
                    }
                    if r.clicked() {
                        self.commands.push(Command::Select(e.id));
                    }
                    if selected && self.scroll_to_selected {
                        r.scroll_to_me(None);
                    }
                }
            });
        self.scroll_to_selected = false;
    }

    fn inspection_view(&mut self, ui: &mut egui::Ui) {
        let t = self.threshold();
        let Some(entry) = self.list.selected_entry().cloned() else {
            ui.centered_and_justified(|ui| {
                let msg = match &self.model {
                    ModelState::Failed(e) => format!(
                        "The model could not be loaded:\n{e}\n\nUse Model > Load model directory…"
                    ),
                    _ => "Open images or a folder (File > Open, drag and drop, or the path field)."
                        .into(),
                };
                ui.heading(msg);
            });
            return;
        };
        // Header: name, score, verdict.
        ui.horizontal_wrapped(|ui| {
            ui.heading(entry.name());
            match &entry.status {
                Status::Queued => {
                    ui.spinner();
                    ui.label("inspecting…");
                }
                Status::Failed(e) => {
                    ui.colored_label(FAIL, RichText::new(format!("Error: {e}")).strong());
                }
                Status::Done(o) => {
                    ui.separator();
                    ui.label(
                        RichText::new(format!("Score {:.4}", o.score))
                            .size(20.0)
                            .strong(),
                    );
                    let v = state::verdict(o.score, t);
                    ui.label(
                        RichText::new(v.label())
                            .size(20.0)
                            .strong()
                            .color(Color32::WHITE)
                            .background_color(verdict_color(v)),
                    );
                    ui.separator();
                    match t {
                        Some(t) => {
                            ui.label(format!("threshold {t:.4} ({})", self.threshold_source()))
                        }
                        None => ui.label("no threshold"),
                    };
                    ui.separator();
                    ui.label(format!("class {}", o.class_name));
                    ui.label(format!("{}×{} · {:.0} ms", o.width, o.height, o.millis));
                }
            }
        });
        ui.separator();
        if let Some((id, e)) = &self.photo_error
            && *id == entry.id
        {
            if !matches!(entry.status, Status::Failed(_)) {
                ui.colored_label(FAIL, e);
            }
            return;
        }
        if self.photo.is_none() {
            return;
        }
        let legend_w = 120.0;
        let avail = ui.available_rect_before_wrap();
        let area =
            egui::Rect::from_min_max(avail.min, egui::pos2(avail.max.x - legend_w, avail.max.y));
        let legend_rect = egui::Rect::from_min_max(egui::pos2(area.max.x, avail.min.y), avail.max);
        let response = ui.allocate_rect(area, egui::Sense::click_and_drag());
        self.zoom_and_pan(ui, &response, area);
        let Some(photo) = &self.photo else { return };
        let outcome = match &entry.status {
            Status::Done(o) => Some(o),
            _ => None,
        };
        let panes: Vec<egui::Rect> = if self.settings.side_by_side && outcome.is_some() {
            let mid = area.center().x;
            vec![
                egui::Rect::from_min_max(area.min, egui::pos2(mid - 2.0, area.max.y)),
                egui::Rect::from_min_max(egui::pos2(mid + 2.0, area.min.y), area.max),
            ]
        } else {
            vec![area]
        };
        let aspect = photo.size[0] as f32 / photo.size[1] as f32;
        for (k, pane) in panes.iter().enumerate() {
            let painter = ui.painter_at(*pane);
            painter.rect_filled(*pane, 0.0, Color32::from_gray(20));
            let fit = fit_rect(*pane, aspect);
            let image_rect = egui::Rect::from_center_size(
                fit.center() + self.view.pan,
                fit.size() * self.view.zoom,
            );
            let show_overlay = outcome.is_some() && (panes.len() == 1 || k == 1);
            match (show_overlay, outcome) {
                (true, Some(o)) if self.gpu_overlay => {
                    let (lo, hi) = state::display_range(o, t);
                    let (offset, scale) = overlay::placement(*pane, image_rect);
                    let image = OverlayImage {
                        key: entry.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            ^ (Arc::as_ptr(&o.map) as usize as u64),
                        rgba: photo.rgba.clone(),
                        map: o.map.clone(),
                        width: photo.size[0],
                        height: photo.size[1],
                    };
                    let params = Params {
                        lo,
                        hi,
                        opacity: self.settings.opacity,
                        hide_below_lo: self.settings.hide_below_lo,
                        offset,
                        scale,
                    };
                    if (o.width, o.height) == (photo.size[0], photo.size[1]) {
                        painter.add(OverlayCallback::shape(image, params, *pane));
                    }
                }
                _ => {
                    painter.image(
                        photo.texture.id(),
                        image_rect,
                        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                        Color32::WHITE,
                    );
                    if show_overlay && !self.gpu_overlay {
                        painter.text(
                            pane.center_top() + egui::vec2(0.0, 12.0),
                            egui::Align2::CENTER_TOP,
                            "the overlay needs the wgpu renderer",
                            egui::FontId::proportional(14.0),
                            FAIL,
                        );
                    }
                }
            }
            let caption = if panes.len() == 2 {
                ["original", "anomaly map"][k]
            } else if outcome.is_some() {
                "anomaly map"
            } else {
                "original"
            };
            painter.text(
                pane.left_top() + egui::vec2(6.0, 4.0),
                egui::Align2::LEFT_TOP,
                caption,
                egui::FontId::proportional(13.0),
                Color32::from_gray(220),
            );
        }
        if let Some(o) = outcome {
            let (lo, hi) = state::display_range(o, t);
            legend(ui, legend_rect, lo, hi, t, o.score);
        }
    }

    fn zoom_and_pan(&mut self, ui: &egui::Ui, response: &egui::Response, area: egui::Rect) {
        if response.double_clicked() {
            self.commands.push(Command::ResetView);
        }
        if response.dragged() {
            self.view.pan += response.drag_delta();
        }
        if response.hovered() {
            let (scroll, pinch, pointer) = ui.input(|i| {
                (
                    i.smooth_scroll_delta().y,
                    i.zoom_delta(),
                    i.pointer.hover_pos(),
                )
            });
            let factor = pinch * (scroll * 0.002).exp();
            if (factor - 1.0).abs() > 1e-4 {
                let new_zoom = (self.view.zoom * factor).clamp(0.2, 40.0);
                let f = new_zoom / self.view.zoom;
                // Keep the point under the cursor fixed.
                let anchor = pointer.unwrap_or(area.center()) - area.center();
                self.view.pan = anchor + (self.view.pan - anchor) * f;
                self.view.zoom = new_zoom;
            }
        }
    }
}

const PASS: Color32 = Color32::from_rgb(40, 160, 70);
const FAIL: Color32 = Color32::from_rgb(210, 50, 50);

fn verdict_color(v: Verdict) -> Color32 {
    match v {
        Verdict::Pass => PASS,
        Verdict::Fail => FAIL,
        Verdict::Error => Color32::from_rgb(230, 160, 40),
        Verdict::Uncalibrated | Verdict::Pending => Color32::GRAY,
    }
}

/// The largest rect of `aspect` (w/h) centred in `area`.
fn fit_rect(area: egui::Rect, aspect: f32) -> egui::Rect {
    let (w, h) = (area.width(), area.height());
    let size = if w / h > aspect {
        egui::vec2(h * aspect, h)
    } else {
        egui::vec2(w, w / aspect)
    };
    egui::Rect::from_center_size(area.center(), size)
}

/// The colour scale: jet from `lo` (bottom) to `hi` (top), with the threshold and score marked.
fn legend(ui: &egui::Ui, rect: egui::Rect, lo: f32, hi: f32, threshold: Option<f32>, score: f32) {
    let painter = ui.painter_at(rect);
    let bar = egui::Rect::from_min_max(
        egui::pos2(rect.min.x + 10.0, rect.min.y + 24.0),
        egui::pos2(rect.min.x + 28.0, rect.max.y - 24.0),
    );
    let steps = 64;
    let mut mesh = egui::Mesh::default();
    for i in 0..=steps {
        let f = i as f32 / steps as f32;
        let c = hvq::overlay::jet(f);
        let color = Color32::from_rgb(
            (c[0] * 255.0).round() as u8,
            (c[1] * 255.0).round() as u8,
            (c[2] * 255.0).round() as u8,
        );
        let y = bar.max.y - f * bar.height();
        mesh.colored_vertex(egui::pos2(bar.min.x, y), color);
        mesh.colored_vertex(egui::pos2(bar.max.x, y), color);
        if i > 0 {
            let b = 2 * i as u32;
            mesh.add_triangle(b - 2, b - 1, b);
            mesh.add_triangle(b - 1, b + 1, b);
        }
    }
    painter.add(egui::Shape::mesh(mesh));
    let text = ui.visuals().text_color();
    let font = egui::FontId::monospace(11.0);
    let y_of = |v: f32| bar.max.y - ((v - lo) / (hi - lo).max(1e-6)).clamp(0.0, 1.0) * bar.height();
    painter.text(
        egui::pos2(bar.center().x, bar.min.y - 4.0),
        egui::Align2::CENTER_BOTTOM,
        format!("{hi:.2}"),
        font.clone(),
        text,
    );
    painter.text(
        egui::pos2(bar.center().x, bar.max.y + 4.0),
        egui::Align2::CENTER_TOP,
        format!("{lo:.2}"),
        font.clone(),
        text,
    );
    let mark = |v: f32, label: String, color: Color32, label_y: f32| {
        let y = y_of(v);
        painter.line_segment(
            [
                egui::pos2(bar.min.x - 4.0, y),
                egui::pos2(bar.max.x + 4.0, y),
            ],
            egui::Stroke::new(2.0, color),
        );
        painter.text(
            egui::pos2(bar.max.x + 6.0, label_y),
            egui::Align2::LEFT_CENTER,
            label,
            font.clone(),
            color,
        );
    };
    // Labels stay clear of the scale's end values.
    let clamp_y = |y: f32| y.clamp(bar.min.y + 10.0, bar.max.y - 10.0);
    let score_y = clamp_y(y_of(score));
    let mut label_y = score_y;
    if let Some(t) = threshold {
        let ty = clamp_y(y_of(t));
        mark(
            t,
            format!("thr {t:.2}"),
            Color32::from_rgb(255, 255, 255),
            ty,
        );
        // Keep the two labels apart when the values are close.
        if (label_y - ty).abs() < 14.0 {
            label_y = if score_y > ty { ty + 14.0 } else { ty - 14.0 };
        }
    }
    mark(score, format!("score {score:.2}"), text, label_y);
}

/// The compute device in words.
pub fn describe_device(debug: &str) -> String {
    let kind = if debug.contains("Wgpu") {
        "wgpu (GPU)"
    } else if debug.contains("Cuda") {
        "CUDA"
    } else if debug.contains("Flex") {
        "CPU"
    } else {
        debug
    };
    match debug.find(" (wgpu unavailable") {
        Some(i) => format!("{kind}{}", &debug[i..]),
        None => kind.to_string(),
    }
}

impl eframe::App for InspectorApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.poll();
        self.dropped_files(&ctx);
        self.keyboard(&ctx);
        self.ensure_photo(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("images")
            .resizable(true)
            .default_size(380.0)
            .show(ui, |ui| self.image_list(ui));
        egui::CentralPanel::default().show(ui, |ui| self.inspection_view(ui));
        if ctx.input(|i| !i.raw.hovered_files.is_empty()) {
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("hvq-drop-overlay"),
            ));
            let rect = ctx.content_rect();
            painter.rect_filled(rect, 0.0, Color32::from_black_alpha(160));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop images or folders to inspect",
                egui::FontId::proportional(24.0),
                Color32::WHITE,
            );
        }
        for c in std::mem::take(&mut self.commands) {
            self.apply(&ctx, c);
        }
        if self.busy() {
            // Replies also wake the UI; this keeps progress moving if one is missed.
            ctx.request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        self.settings.sort = self.list.sort;
        self.settings.order = self.list.sort_order;
        self.settings.store(storage);
    }
}
