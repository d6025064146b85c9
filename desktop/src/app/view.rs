//! The central pane: the photo with its anomaly map (the shared WGSL overlay), zoom and pan, and
//! the colour scale.

use std::sync::Arc;

use eframe::egui::{self, Color32, RichText};

use super::{Command, InspectorApp, ModelState, RED, verdict_color};
use crate::overlay::{self, OverlayCallback, OverlayImage, Params};
use crate::state::{self, Status};
use hvq::overlay::Weighting;

impl InspectorApp {
    pub(super) fn inspection_view(&mut self, ui: &mut egui::Ui) {
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
                    ui.colored_label(RED, RichText::new(format!("Error: {e}")).strong());
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
                ui.colored_label(RED, e);
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
                    let mut colors = state::display_scale(o, t);
                    // "Hide below the scale" applies to an image's own scale; an anchored one
                    // already leaves normal pixels alone.
                    if self.settings.hide_below_lo && colors.weighting == Weighting::Uniform {
                        colors.weighting = Weighting::HideBelowLo;
                    }
                    let (offset, scale) = overlay::placement(*pane, image_rect);
                    let image = OverlayImage {
                        key: entry.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            ^ (Arc::as_ptr(&o.model_map) as usize as u64),
                        rgba: photo.rgba.clone(),
                        map: o.model_map.clone(),
                        map_size: (o.model_width as u32, o.model_height as u32),
                        width: photo.size[0],
                        height: photo.size[1],
                    };
                    let params = Params {
                        offset,
                        scale,
                        ..Params::full(&colors, self.settings.opacity)
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
                            RED,
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
            let colors = state::display_scale(o, t);
            legend(ui, legend_rect, colors.lo, colors.hi, t, o.score);
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
    let (threshold_y, score_y) =
        label_rows((bar.min.y, bar.max.y), threshold.map(&y_of), y_of(score));
    if let (Some(t), Some(ty)) = (threshold, threshold_y) {
        mark(
            t,
            format!("thr {t:.2}"),
            Color32::from_rgb(255, 255, 255),
            ty,
        );
    }
    mark(score, format!("score {score:.2}"), text, score_y);
}

/// Height of a legend label row, in points (11-point monospace plus a gap).
const LABEL_ROW: f32 = 14.0;

/// Where the legend's threshold and score labels go (their y), given the colour bar's top and
/// bottom and the y of each value on it: beside their marks, clear of the end values printed
/// above and below the bar, and one row apart when the two values are close (the score's label
/// moves away from the threshold's, downwards when there is no room above: a score above the
/// scale's top sits at the top with the threshold, as anomalous images' scores do).
fn label_rows(
    (top, bottom): (f32, f32),
    threshold_y: Option<f32>,
    score_y: f32,
) -> (Option<f32>, f32) {
    let first = top + LABEL_ROW * 0.7;
    let last = bottom - LABEL_ROW * 0.7;
    let clamp = |y: f32| y.clamp(first, last);
    let score = clamp(score_y);
    let Some(threshold) = threshold_y.map(clamp) else {
        return (None, score);
    };
    if (score - threshold).abs() >= LABEL_ROW {
        return (Some(threshold), score);
    }
    let above = threshold - LABEL_ROW;
    let below = threshold + LABEL_ROW;
    let score = if (score > threshold || above < first) && below <= last {
        below
    } else {
        above
    };
    (Some(threshold), score)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold and score labels never overlap each other or the end values printed just
    /// above the bar's top and below its bottom, wherever the two values fall.
    #[test]
    fn legend_labels_stay_apart_and_inside_the_bar() {
        let (top, bottom) = (30.0, 630.0);
        let ys = [
            -100.0, 0.0, 30.0, 35.0, 40.0, 300.0, 310.0, 620.0, 630.0, 700.0,
        ];
        for &t in &ys {
            for &s in &ys {
                let (ty, sy) = label_rows((top, bottom), Some(t), s);
                let ty = ty.expect("a threshold gets a label");
                for y in [ty, sy] {
                    // Half a row of text each side of its centre stays inside the bar's span,
                    // so neither touches the end values' labels outside it.
                    assert!(
                        y - LABEL_ROW / 2.0 >= top && y + LABEL_ROW / 2.0 <= bottom,
                        "threshold at {t}, score at {s}: a label at {y}"
                    );
                }
                assert!(
                    (ty - sy).abs() >= LABEL_ROW - 1e-3,
                    "threshold at {t}, score at {s}: labels at {ty} and {sy}"
                );
            }
            let (none, sy) = label_rows((top, bottom), None, t);
            assert!(
                none.is_none() && sy - LABEL_ROW / 2.0 >= top && sy + LABEL_ROW / 2.0 <= bottom
            );
        }
        // Values far apart keep their labels beside their marks.
        assert_eq!(
            label_rows((top, bottom), Some(100.0), 400.0),
            (Some(100.0), 400.0)
        );
    }
}
