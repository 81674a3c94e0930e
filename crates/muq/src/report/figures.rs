//! The figures of a report, drawn with plotters as PNG and SVG.
//!
//! - one reliability diagram per group, modality and state: accuracy per
//!   confidence bin (bins pooled over seeds) against the diagonal, before
//!   and after temperature scaling side by side;
//! - with `eval.recalibrators`, one more per group, modality and state: a
//!   grid of the same diagrams, one panel per recalibrator (the first
//!   uncalibrated);
//! - one chart per group: ECE and Brier score after temperature scaling per
//!   modality and state, with ± std error bars.
//!
//! Text uses DejaVu Sans, embedded in the binary (`assets/`, with its
//! license), so no system font or fontconfig is needed. Each file is written
//! under a temporary name and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, anyhow};
use muq_calibrate::ReliabilityDiagram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use muq_unlearn::Method;

use super::ORIGINAL_STATE;
use super::format::f4;
use super::model::{Group, ModalityReport, Report, Stat, StateReport, modality_title, state_rank};
use crate::result::write_atomic;

/// DejaVu Sans (Bitstream Vera license, `assets/DejaVuSans-LICENSE.txt`).
const FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters, once.
fn ensure_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font does not parse"))
    }
}

const ACCURACY: RGBColor = RGBColor(49, 110, 180);
const GAP: RGBColor = RGBColor(214, 39, 40);
const DIAGONAL: RGBColor = RGBColor(90, 90, 90);

/// A fixed colour per known state, so every figure agrees.
fn state_color(name: &str, index: usize) -> RGBColor {
    const EXTRA: [RGBColor; 4] = [
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    /// The colours of the first five methods of [`Method::SHORT_NAMES`]
    /// (the study's four and `retrain`).
    const METHODS: [RGBColor; 5] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    if name == ORIGINAL_STATE {
        return RGBColor(127, 127, 127);
    }
    match Method::SHORT_NAMES[..METHODS.len()]
        .iter()
        .position(|m| *m == name)
    {
        Some(i) => METHODS[i],
        None => EXTRA[index % EXTRA.len()],
    }
}

/// An x axis of categories at 0, 1, …, n − 1 (bars sit between), whose
/// ticks are exactly the categories.
struct CategoryAxis(usize);

impl Ranged for CategoryAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let t = (value - range.start) / (range.end - range.start);
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

/// One figure to draw on any backend.
enum Figure<'a> {
    Chart(&'a Group),
    Reliability {
        modality: &'a ModalityReport,
        state: &'a StateReport,
    },
    Recalibrated {
        modality: &'a ModalityReport,
        state: &'a StateReport,
    },
}

/// Columns of the grid of [`Figure::Recalibrated`].
const GRID_COLUMNS: usize = 3;

impl Figure<'_> {
    fn size(&self) -> (u32, u32) {
        match self {
            Figure::Chart(_) => (1200, 520),
            Figure::Reliability { .. } => (1100, 560),
            Figure::Recalibrated { state, .. } => {
                let (cols, rows) = grid(state.recalibrated.len());
                (420 * cols as u32, 40 + 400 * rows as u32)
            }
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        match self {
            Figure::Chart(group) => draw_chart(root, group),
            Figure::Reliability { modality, state } => draw_reliability(root, modality, state),
            Figure::Recalibrated { modality, state } => draw_recalibrated(root, modality, state),
        }
    }
}

/// Columns and rows of a grid of `panels` panels.
fn grid(panels: usize) -> (usize, usize) {
    let cols = panels.clamp(1, GRID_COLUMNS);
    (cols, panels.div_ceil(cols).max(1))
}

/// Writes every figure of `report` under `out_dir` (the paths in the report
/// are relative to it) and returns the files written, PNG and SVG.
pub fn write_figures(report: &Report, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    ensure_font()?;
    let mut written = Vec::new();
    for g in &report.groups {
        written.extend(render(&Figure::Chart(g), &out_dir.join(&g.chart))?);
        for m in &g.modalities {
            for s in &m.states {
                let fig = Figure::Reliability {
                    modality: m,
                    state: s,
                };
                written.extend(render(&fig, &out_dir.join(&s.figure))?);
                if let Some(stem) = &s.recalibrated_figure {
                    let fig = Figure::Recalibrated {
                        modality: m,
                        state: s,
                    };
                    written.extend(render(&fig, &out_dir.join(stem))?);
                }
            }
        }
    }
    Ok(written)
}

/// Draws `fig` into `<stem>.svg` and `<stem>.png`.
fn render(fig: &Figure<'_>, stem: &Path) -> anyhow::Result<[PathBuf; 2]> {
    let size = fig.size();
    let dir = stem.parent().unwrap_or(Path::new("."));
    let name = stem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let svg_path = dir.join(format!("{name}.svg"));
    let png_path = dir.join(format!("{name}.png"));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        fig.draw(&root)
            .with_context(|| format!("drawing {}", svg_path.display()))?;
        root.present()
            .with_context(|| format!("drawing {}", svg_path.display()))?;
    }
    write_atomic(&svg_path, svg.as_bytes())?;

    // The bitmap backend encodes by the file's extension, so the temporary
    // name ends in .png too.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp{}.png", std::process::id()));
    let drawn = (|| -> anyhow::Result<()> {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        fig.draw(&root)?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("drawing {}", png_path.display())));
    }
    std::fs::rename(&tmp, &png_path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), png_path.display()))?;
    Ok([png_path, svg_path])
}

fn draw_reliability<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    modality: &ModalityReport,
    state: &StateReport,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let title = format!(
        "Reliability: {}, state {} — evaluation half, {} predictions pooled over {} seed(s)",
        modality_title(&modality.modality),
        state.state,
        state.reliability_before_ts.n,
        state.seeds.len()
    );
    let body = root.titled(&title, (FONT, 20))?;
    let panels = body.split_evenly((1, 2));
    let sides: [(&str, &ReliabilityDiagram, &str); 2] = [
        (
            "before temperature scaling",
            &state.reliability_before_ts,
            "ece_before_ts",
        ),
        (
            "after temperature scaling",
            &state.reliability_after_ts,
            "ece_after_ts",
        ),
    ];
    for (area, (name, diagram, key)) in panels.iter().zip(sides) {
        let caption = match state.metrics.get(key) {
            Some(s) => format!("{name}: ECE {} ± {}", f4(s.mean), f4(s.std)),
            None => name.to_string(),
        };
        draw_reliability_panel(area, &caption, diagram, &PanelStyle::WIDE)?;
    }
    Ok(())
}

/// Sizes of one reliability panel's text and margins.
struct PanelStyle {
    caption: u32,
    labels: u32,
    counts: u32,
    x_desc: &'static str,
    legend: bool,
}

impl PanelStyle {
    /// The two panels of a reliability figure.
    const WIDE: PanelStyle = PanelStyle {
        caption: 17,
        labels: 14,
        counts: 13,
        x_desc: "confidence (top-label probability); above the bars: predictions per bin",
        legend: true,
    };
    /// The panels of the per-recalibrator grid.
    const GRID: PanelStyle = PanelStyle {
        caption: 15,
        labels: 12,
        counts: 11,
        x_desc: "confidence; above the bars: predictions per bin",
        legend: false,
    };
}

/// One reliability diagram: accuracy bars per bin, the gap to the bin's
/// mean confidence, the counts and the diagonal.
fn draw_reliability_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    diagram: &ReliabilityDiagram,
    style: &PanelStyle,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, style.caption))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc(style.x_desc)
        .y_desc("accuracy")
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FONT, style.labels))
        .axis_desc_style((FONT, style.labels + 1))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;
    let bars: Vec<(f64, f64, f64, f64)> = diagram
        .bins
        .iter()
        .filter(|b| b.count > 0)
        .filter_map(|b| Some((b.lower, b.upper, b.accuracy?, b.mean_confidence?)))
        .collect();
    chart
        .draw_series(
            bars.iter()
                .map(|&(lo, hi, acc, _)| Rectangle::new([(lo, 0.0), (hi, acc)], ACCURACY.filled())),
        )?
        .label("accuracy of the bin")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], ACCURACY.filled()));
    chart
        .draw_series(bars.iter().map(|&(lo, hi, acc, _)| {
            Rectangle::new([(lo, 0.0), (hi, acc)], WHITE.stroke_width(1))
        }))?;
    chart
        .draw_series(bars.iter().map(|&(lo, hi, acc, conf)| {
            Rectangle::new([(lo, acc), (hi, conf)], GAP.mix(0.35).filled())
        }))?
        .label("gap to the bin's mean confidence")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], GAP.mix(0.35).filled()));
    let count_style = TextStyle::from((FONT, style.counts).into_font())
        .color(&DIAGONAL)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(diagram.bins.iter().filter(|b| b.count > 0).map(|b| {
        let top = b
            .accuracy
            .unwrap_or(0.0)
            .max(b.mean_confidence.unwrap_or(0.0));
        Text::new(
            b.count.to_string(),
            ((b.lower + b.upper) / 2.0, (top + 0.01).min(1.0)),
            count_style.clone(),
        )
    }))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            DIAGONAL.stroke_width(2),
        )))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], DIAGONAL.stroke_width(2)));
    if style.legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
    }
    Ok(())
}

/// The reliability diagrams of one state after each recalibrator, in a
/// grid: `uncalibrated` first, then each method, each captioned with its
/// ECE and smooth ECE (mean ± std over seeds).
fn draw_recalibrated<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    modality: &ModalityReport,
    state: &StateReport,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (n, seeds) = state
        .recalibrated
        .first()
        .map_or((0, 0), |r| (r.reliability.n, r.seeds.len()));
    let title = format!(
        "After each recalibrator: {}, state {} — evaluation half, {n} predictions pooled over \
         {seeds} seed(s)",
        modality_title(&modality.modality),
        state.state,
    );
    let body = root.titled(&title, (FONT, 18))?;
    let (cols, rows) = grid(state.recalibrated.len());
    let panels = body.split_evenly((rows, cols));
    for (area, r) in panels.iter().zip(&state.recalibrated) {
        let stat = |key: &str| {
            r.metrics.get(key).map_or_else(
                || "–".to_string(),
                |s| format!("{} ± {}", f4(s.mean), f4(s.std)),
            )
        };
        let caption = format!(
            "{}: ECE {}, smECE {}",
            r.method,
            stat("ece"),
            stat("smooth_ece")
        );
        draw_reliability_panel(area, &caption, &r.reliability, &PanelStyle::GRID)?;
    }
    Ok(())
}

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    group: &Group,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let title = "ECE and Brier score after temperature scaling (mean ± std over seeds)";
    let body = root.titled(title, (FONT, 20))?;
    let width = body.dim_in_pixel().0 as i32;
    let (plots, legend) = body.split_horizontally(width - 200);

    // States in report order, over every modality.
    let mut states: Vec<&str> = Vec::new();
    for m in &group.modalities {
        for s in &m.states {
            if !states.contains(&s.state.as_str()) {
                states.push(&s.state);
            }
        }
    }
    states.sort_by_key(|s| state_rank(s));
    let modalities: Vec<&str> = group
        .modalities
        .iter()
        .map(|m| m.modality.as_str())
        .collect();

    let panels = plots.split_evenly((1, 2));
    for (area, (metric, key)) in panels
        .iter()
        .zip([("ECE", "ece_after_ts"), ("Brier score", "brier_after_ts")])
    {
        let stat = |mi: usize, state: &str| -> Option<Stat> {
            let s = group.modalities[mi]
                .states
                .iter()
                .find(|s| s.state == state)?;
            s.metrics.get(key).copied()
        };
        let mut top = 0f64;
        for mi in 0..modalities.len() {
            for s in &states {
                if let Some(st) = stat(mi, s) {
                    top = top.max(st.mean + st.std);
                }
            }
        }
        let top = if top.is_finite() && top > 0.0 {
            top * 1.15
        } else {
            1.0
        };
        let x_range = CategoryAxis(modalities.len().max(1));
        let name_of = |x: &f64| -> String {
            let i = x.round();
            if i >= 0.0 && (i as usize) < modalities.len() {
                modality_title(modalities[i as usize]).to_string()
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(area)
            .caption(metric, (FONT, 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&name_of)
            .y_desc(metric)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        let slot = 0.8 / states.len().max(1) as f64;
        for (j, state) in states.iter().enumerate() {
            let color = state_color(state, j);
            let mut bars = Vec::new();
            let mut whiskers = Vec::new();
            for mi in 0..modalities.len() {
                let Some(st) = stat(mi, state) else { continue };
                let x0 = mi as f64 - 0.4 + j as f64 * slot;
                let centre = x0 + slot / 2.0;
                bars.push(Rectangle::new(
                    [(x0 + 0.1 * slot, 0.0), (x0 + 0.9 * slot, st.mean)],
                    color.filled(),
                ));
                let (lo, hi) = ((st.mean - st.std).max(0.0), st.mean + st.std);
                let cap = 0.2 * slot;
                whiskers.push(PathElement::new(
                    vec![(centre, lo), (centre, hi)],
                    BLACK.stroke_width(1),
                ));
                whiskers.push(PathElement::new(
                    vec![(centre - cap, lo), (centre + cap, lo)],
                    BLACK.stroke_width(1),
                ));
                whiskers.push(PathElement::new(
                    vec![(centre - cap, hi), (centre + cap, hi)],
                    BLACK.stroke_width(1),
                ));
            }
            chart.draw_series(bars)?;
            chart.draw_series(whiskers)?;
        }
    }

    // Legend: one swatch per state.
    legend.draw(&Text::new("state", (10, 40), (FONT, 16)))?;
    for (j, state) in states.iter().enumerate() {
        let y = 70 + 28 * j as i32;
        legend.draw(&Rectangle::new(
            [(10, y), (28, y + 16)],
            state_color(state, j).filled(),
        ))?;
        legend.draw(&Text::new(state.to_string(), (36, y), (FONT, 15)))?;
    }
    Ok(())
}
