//! Multi-panel figures: a `rows x cols` grid of equally sized panels under an optional figure title,
//! rendered into memory and written as a deterministic PNG.
//!
//! A panel is a [`Panel`] value (line plot, scatter, streamlines, histogram, image, image grid) or a
//! custom closure that draws into a plotters [`Area`]. Panels are plain data so stages can build them
//! from results without touching plotters; the shared chart styling (fonts, margins, grid lines, equal
//! aspect) lives here so every panel looks the same.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::image::RgbImage;
use super::imgpanel::{ImageGrid, ImagePanel};
use super::plots::{Histogram, LinePlot, ScatterPlot};
use super::stream::StreamPlot;
use super::{ensure_fonts, RenderError, Result, FONT};

/// The drawing area a panel draws into (an in-memory bitmap).
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A custom panel: a closure that draws into its area.
pub type CustomPanel = Box<dyn Fn(&Area) -> Result<()> + Send + Sync>;

/// One panel of a [`Figure`].
pub enum Panel {
    /// Lines with optional std bands.
    Line(LinePlot),
    /// Points and polylines.
    Scatter(ScatterPlot),
    /// Streamlines of a vector field over points.
    Stream(StreamPlot),
    /// Overlaid histograms with reference lines.
    Hist(Histogram),
    /// One image, optionally with a colour bar, tracks and an inset.
    Image(ImagePanel),
    /// A labelled grid of images.
    Grid(ImageGrid),
    /// Anything else, drawn by a closure.
    Custom(CustomPanel),
    /// Leaves the cell blank.
    Empty,
}

impl std::fmt::Debug for Panel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Panel::Line(_) => "Line",
            Panel::Scatter(_) => "Scatter",
            Panel::Stream(_) => "Stream",
            Panel::Hist(_) => "Hist",
            Panel::Image(_) => "Image",
            Panel::Grid(_) => "Grid",
            Panel::Custom(_) => "Custom",
            Panel::Empty => "Empty",
        };
        write!(f, "Panel::{name}")
    }
}

impl Panel {
    /// Draws the panel into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        match self {
            Panel::Line(p) => p.draw(area),
            Panel::Scatter(p) => p.draw(area),
            Panel::Stream(p) => p.draw(area),
            Panel::Hist(p) => p.draw(area),
            Panel::Image(p) => p.draw(area),
            Panel::Grid(p) => p.draw(area),
            Panel::Custom(f) => f(area),
            Panel::Empty => Ok(()),
        }
    }
}

/// A grid of panels with an optional title; panels fill the grid row by row.
#[derive(Debug)]
pub struct Figure {
    /// Figure title drawn above all panels.
    pub title: Option<String>,
    /// Number of panel rows.
    pub rows: usize,
    /// Number of panel columns.
    pub cols: usize,
    /// Size of one panel in pixels (default 800 x 600).
    pub panel_size: (u32, u32),
    /// The panels, row-major; missing ones are blank.
    pub panels: Vec<Panel>,
}

/// Height of the figure title band in pixels.
const TITLE_H: u32 = 56;

impl Figure {
    /// An empty `rows x cols` figure with 800 x 600 panels.
    pub fn new(rows: usize, cols: usize) -> Self {
        Figure {
            title: None,
            rows: rows.max(1),
            cols: cols.max(1),
            panel_size: (800, 600),
            panels: Vec::new(),
        }
    }

    /// A one-row figure holding `panels`.
    pub fn row(panels: Vec<Panel>) -> Self {
        let mut f = Figure::new(1, panels.len().max(1));
        f.panels = panels;
        f
    }

    /// Sets the figure title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the size of each panel in pixels.
    pub fn panel_size(mut self, w: u32, h: u32) -> Self {
        self.panel_size = (w.max(50), h.max(50));
        self
    }

    /// Appends a panel.
    pub fn push(mut self, panel: Panel) -> Self {
        self.panels.push(panel);
        self
    }

    /// Total size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let t = if self.title.is_some() { TITLE_H } else { 0 };
        (
            self.panel_size.0 * self.cols as u32,
            self.panel_size.1 * self.rows as u32 + t,
        )
    }

    /// Renders into an in-memory image.
    pub fn render(&self) -> Result<RgbImage> {
        ensure_fonts();
        if self.panels.len() > self.rows * self.cols {
            return Err(RenderError::input(
                "Figure",
                format!(
                    "{} panels do not fit a {}x{} grid",
                    self.panels.len(),
                    self.rows,
                    self.cols
                ),
            ));
        }
        let (w, h) = self.size();
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(RenderError::draw)?;
            let body = match &self.title {
                Some(t) => {
                    let (top, rest) = root.split_vertically(TITLE_H);
                    top.draw_text(
                        t,
                        &font(26.0).into_text_style(&top).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Center,
                            ),
                        ),
                        ((w / 2) as i32, (TITLE_H / 2) as i32),
                    )
                    .map_err(RenderError::draw)?;
                    rest
                }
                None => root.clone(),
            };
            let cells = body.split_evenly((self.rows, self.cols));
            for (panel, cell) in self.panels.iter().zip(cells.iter()) {
                panel.draw(cell)?;
            }
            root.present().map_err(RenderError::draw)?;
        }
        RgbImage::from_raw(w, h, buf)
    }

    /// Renders and writes a deterministic PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.render()?.save_png(path)
    }
}

/// The embedded font at `size` pixels.
pub(crate) fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
}

/// Font for panel titles.
pub(crate) fn title_font() -> FontDesc<'static> {
    font(20.0)
}

/// Draws a panel title band and returns the area below it (or the whole area when `title` is empty).
pub(crate) fn titled<'a>(area: &Area<'a>, title: &str) -> Result<Area<'a>> {
    if title.is_empty() {
        return Ok(area.margin(8, 0, 0, 0));
    }
    area.margin(8, 0, 0, 0)
        .titled(title, title_font())
        .map_err(RenderError::draw)
}

/// Margins and label areas shared by charts, in pixels.
pub(crate) const MARGIN: u32 = 14;
/// Height of the x label area.
pub(crate) const X_LABEL_AREA: u32 = 50;
/// Width of the y label area.
pub(crate) const Y_LABEL_AREA: u32 = 72;

/// The cartesian chart type used by the 2-D plots.
pub(crate) type XyChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Builds a linear x-y chart with the house mesh. With `equal_aspect`, the shorter range is widened
/// (about its centre) so one unit has the same length in x and y.
pub(crate) fn xy_chart<'a, 'b>(
    area: &'a Area<'b>,
    x_label: &str,
    y_label: &str,
    mut xr: (f64, f64),
    mut yr: (f64, f64),
    equal_aspect: bool,
) -> Result<XyChart<'a, 'b>> {
    if equal_aspect {
        let (aw, ah) = area.dim_in_pixel();
        let pw = aw.saturating_sub(2 * MARGIN + Y_LABEL_AREA).max(1) as f64;
        let ph = ah.saturating_sub(2 * MARGIN + X_LABEL_AREA).max(1) as f64;
        let (ux, uy) = ((xr.1 - xr.0) / pw, (yr.1 - yr.0) / ph);
        if ux > uy {
            let c = 0.5 * (yr.0 + yr.1);
            let half = 0.5 * ux * ph;
            yr = (c - half, c + half);
        } else {
            let c = 0.5 * (xr.0 + xr.1);
            let half = 0.5 * uy * pw;
            xr = (c - half, c + half);
        }
    }
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(RenderError::draw)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style(font(16.0))
        .label_style(font(13.0))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(RenderError::draw)?;
    Ok(chart)
}

/// Formats a tick value compactly (no "0.30000000004").
pub(crate) fn tick(v: f64) -> String {
    let a = v.abs();
    if a < 1e-10 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// Formats a tick of a log axis spanning `[lo, hi]`: decades always, and 2 and 5 times a decade when the
/// axis spans less than two decades; other ticks get no label (plotters draws every mantissa).
pub(crate) fn log_tick(v: f64, lo: f64, hi: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let e = v.log10().floor();
    let m = (v / 10f64.powf(e)).round();
    let close = (v / (m * 10f64.powf(e)) - 1.0).abs() < 1e-6;
    let few_decades = (hi / lo.max(1e-300)).log10() < 2.0;
    let show = close && (m == 1.0 || (few_decades && (m == 2.0 || m == 5.0)));
    if !show {
        String::new()
    } else if (1e-2..1e4).contains(&v) {
        tick(v)
    } else {
        format!("{v:.0e}")
    }
}

/// Range of finite values with a relative padding; a degenerate range is widened by 1.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-12 * (1.0 + lo.abs()) {
        return (lo - 0.5, hi + 0.5);
    }
    let p = (hi - lo) * pad;
    (lo - p, hi + p)
}

/// Legend placement for plotters.
pub(crate) fn legend_pos(c: super::image::Corner) -> SeriesLabelPosition {
    use super::image::Corner;
    match c {
        Corner::TopLeft => SeriesLabelPosition::UpperLeft,
        Corner::TopRight => SeriesLabelPosition::UpperRight,
        Corner::BottomLeft => SeriesLabelPosition::LowerLeft,
        Corner::BottomRight => SeriesLabelPosition::LowerRight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{check_png, tmp};

    #[test]
    fn custom_panels_and_title() {
        let dir = tmp();
        let p = dir.path().join("figure_custom.png");
        let fig = Figure::new(1, 2)
            .title("Two custom panels")
            .panel_size(300, 200)
            .push(Panel::Custom(Box::new(|a: &Area| {
                a.fill(&RGBColor(200, 30, 30)).map_err(RenderError::draw)
            })))
            .push(Panel::Empty);
        fig.save_png(&p).expect("render");
        check_png(&p, 600, 200 + TITLE_H);
        let too_many = Figure::new(1, 1).push(Panel::Empty).push(Panel::Empty);
        assert!(too_many.render().is_err());
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.30000000004), "0.3");
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(1e-6), "1e-6");
        assert_eq!(tick(-3e-18), "0");
        assert_eq!(log_tick(1e-3, 1e-6, 1.0), "1e-3");
        assert_eq!(log_tick(3e-3, 1e-6, 1.0), "");
        assert_eq!(log_tick(0.2, 0.05, 1.0), "0.2");
    }
}
