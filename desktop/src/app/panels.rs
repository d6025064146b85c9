//! The window's frame: menu bar, toolbar, status bar and the image list.

use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText};

use super::{Command, GREEN, InspectorApp, ModelState, RED, describe_device, verdict_color};
use crate::state::{SortKey, SortOrder, Status};

impl InspectorApp {
    pub(super) fn menu_bar(&mut self, ui: &mut egui::Ui) {
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
                    "Hide the map below its scale (models without a normal level)",
                );
                if ui.button("Fit image (0)").clicked() {
                    self.commands.push(Command::ResetView);
                }
            });
        });
    }

    pub(super) fn toolbar(&mut self, ui: &mut egui::Ui) {
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

    pub(super) fn status_bar(&mut self, ui: &mut egui::Ui) {
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
            ui.colored_label(GREEN, format!("{} normal", c.normal));
            ui.colored_label(RED, format!("{} anomalous", c.anomalous));
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
                ModelState::Failed(_) => ui.colored_label(RED, "no model"),
            };
            ui.label(format!("device: {}", describe_device(&self.device)))
                .on_hover_text(&self.device);
            ui.separator();
            ui.label(&self.message);
        });
    }

    pub(super) fn image_list(&mut self, ui: &mut egui::Ui) {
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
}
