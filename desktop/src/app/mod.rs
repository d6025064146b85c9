//! The inspector window: [`InspectorApp`] implements [`eframe::App`]. Widgets only record
//! [`Command`]s; they are applied at the end of the frame. The frame's panels (menu, toolbar,
//! status bar, image list) are drawn in `panels`, the photo with its map and colour scale in `view`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use eframe::egui::{self, Color32, Vec2};
use hvq::ClassChoice;
use hvq::device::DeviceChoice;

use crate::overlay;
use crate::settings::Settings;
use crate::state::{
    self, CalibrationRule, CalibrationRun, ExportSummary, ImageList, SortKey, Verdict,
};
use crate::worker::{ModelInfo, ModelLoad, Purpose, Reply, Worker};
use hvq::app::ModelSource;

mod panels;
mod view;

/// How to start the app (the binary uses the defaults; tests pass their own model and images).
pub struct Options {
    /// Model to load; `None`: the settings' model directory, else the shipped default.
    pub model: Option<ModelLoad>,
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
        let source = options
            .model
            .unwrap_or_else(|| ModelSource::from_option(settings.model_dir.as_deref()).into());
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
        app.worker.load(source);
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
        match self.settings.class.parse() {
            Ok(choice) => choice,
            Err(never) => match never {},
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
                let listing = state::list_images(&paths);
                if let Some(first) = paths.first() {
                    let folder = if first.is_dir() {
                        Some(first.as_path())
                    } else {
                        first.parent()
                    };
                    self.settings.last_folder = folder.map(Path::to_path_buf);
                }
                for (p, e) in listing.problems {
                    self.list.add_failed(p, e);
                }
                let work = self.list.add(listing.files);
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
                self.load_model(ModelSource::Dir(dir).into());
            }
            Command::LoadDefaultModel => {
                self.settings.model_dir = None;
                self.load_model(ModelSource::Shipped.into());
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

    fn load_model(&mut self, source: ModelLoad) {
        self.model = ModelState::Loading(source.describe());
        self.worker.cancel_pending();
        self.worker.load(source);
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
                    tag: Purpose::List,
                    result,
                } => {
                    let t = self.threshold();
                    self.list
                        .set_result(id, result.map(state::Outcome::from_inspection), t);
                }
                Reply::Inspected {
                    tag: Purpose::Calibration,
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
}

pub(super) const GREEN: Color32 = Color32::from_rgb(40, 160, 70);
pub(super) const RED: Color32 = Color32::from_rgb(210, 50, 50);

pub(super) fn verdict_color(v: Verdict) -> Color32 {
    match v {
        Verdict::Normal => GREEN,
        Verdict::Anomalous => RED,
        Verdict::Error => Color32::from_rgb(230, 160, 40),
        Verdict::Uncalibrated | Verdict::Pending => Color32::GRAY,
    }
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
