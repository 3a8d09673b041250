//! Line plots (with mean ± std bands and optional log-y), scatter plots (points and polylines with equal
//! aspect) and overlaid histograms with reference lines: the chart kinds behind loss curves, MMD over
//! steps, separation growth, data-vs-sample comparisons, 3-D trajectory projections and |cos| spreads.
//!
//! Each plot is a plain struct with public fields and a few builder methods, drawn by `draw(&Area)`;
//! colours default to the shared palette by series index so the same method keeps its colour across
//! panels when callers keep the order.

use plotters::prelude::*;

use super::color::palette;
use super::figure::{
    font, legend_pos, log_tick, padded_range, tick, titled, xy_chart, Area, Panel, MARGIN,
    X_LABEL_AREA, Y_LABEL_AREA,
};
use super::image::Corner;
use super::{RenderError, Result};

/// One line of a [`LinePlot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// X values.
    pub x: Vec<f64>,
    /// Y values (means, when `std` is given).
    pub y: Vec<f64>,
    /// Optional standard deviations: a `y ± std` band is shaded.
    pub std: Option<Vec<f64>>,
    /// Colour; `None` uses the palette colour of the series index.
    pub color: Option<RGBColor>,
    /// Draw a marker at each point (for sparse sweeps).
    pub markers: bool,
}

impl Series {
    /// A labelled line.
    pub fn new(label: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        Series {
            label: label.into(),
            x,
            y,
            std: None,
            color: None,
            markers: false,
        }
    }

    /// Adds a `± std` band.
    pub fn with_std(mut self, std: Vec<f64>) -> Self {
        self.std = Some(std);
        self
    }

    /// Sets the colour.
    pub fn color(mut self, c: RGBColor) -> Self {
        self.color = Some(c);
        self
    }

    /// Draws point markers.
    pub fn markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// Several series against a common x axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePlot {
    /// Panel title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Logarithmic y axis (non-positive values are clipped to the smallest positive one).
    pub log_y: bool,
    /// Fixed x range (default: data range).
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range (default: data range with bands, padded).
    pub y_range: Option<(f64, f64)>,
    /// Legend corner (default top right).
    pub legend: Corner,
}

impl LinePlot {
    /// An empty plot with a title and axis labels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Default::default()
        }
    }

    /// Adds a series.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    /// Uses a log y axis.
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Line(self)
    }

    fn check(&self) -> Result<()> {
        for s in &self.series {
            let bad_std = s.std.as_ref().is_some_and(|d| d.len() != s.y.len());
            if s.x.len() != s.y.len() || bad_std {
                return Err(RenderError::input(
                    "LinePlot",
                    format!("series '{}' has mismatched x/y/std lengths", s.label),
                ));
            }
        }
        Ok(())
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        self.check()?;
        let area = titled(area, &self.title)?;
        let band =
            |s: &Series, i: usize, sign: f64| s.y[i] + sign * s.std.as_ref().map_or(0.0, |d| d[i]);
        let xr = self.x_range.unwrap_or_else(|| {
            padded_range(self.series.iter().flat_map(|s| s.x.iter().copied()), 0.0)
        });
        let ys = || {
            self.series.iter().flat_map(move |s| {
                (0..s.y.len()).flat_map(move |i| [band(s, i, -1.0), band(s, i, 1.0)])
            })
        };
        if self.log_y {
            let floor = ys()
                .filter(|v| *v > 0.0 && v.is_finite())
                .fold(f64::INFINITY, f64::min);
            let floor = if floor.is_finite() { floor } else { 1e-6 };
            let (lo, hi) = self.y_range.unwrap_or_else(|| {
                let (a, b) = padded_range(ys().map(|v| v.max(floor).ln()), 0.05);
                (a.exp(), b.exp())
            });
            let mut chart = ChartBuilder::on(&area)
                .margin(MARGIN)
                .x_label_area_size(X_LABEL_AREA)
                .y_label_area_size(Y_LABEL_AREA)
                .build_cartesian_2d(xr.0..xr.1, (lo..hi).log_scale())
                .map_err(RenderError::draw)?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(225, 225, 225))
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .axis_desc_style(font(16.0))
                .label_style(font(13.0))
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| log_tick(*v, lo, hi))
                .y_labels(if hi / lo < 100.0 { 60 } else { 12 })
                .draw()
                .map_err(RenderError::draw)?;
            self.draw_series(&mut chart, |v| v.max(floor))
        } else {
            let yr = self.y_range.unwrap_or_else(|| padded_range(ys(), 0.05));
            let mut chart = xy_chart(&area, &self.x_label, &self.y_label, xr, yr, false)?;
            self.draw_series(&mut chart, |v| v)
        }
    }

    fn draw_series<'a, 'b, Y>(
        &self,
        chart: &mut ChartContext<
            'a,
            BitMapBackend<'b>,
            Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
        >,
        clip: impl Fn(f64) -> f64,
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64>,
        'b: 'a,
    {
        let mut labelled = false;
        for (k, s) in self.series.iter().enumerate() {
            let c = s.color.unwrap_or_else(|| palette(k));
            if let Some(std) = &s.std {
                // One band per run of defined values (a statistic is undefined, NaN, where there is
                // nothing to measure, e.g. speeds before any creature exists).
                for run in finite_runs(&s.x, &s.y, Some(std)) {
                    let mut poly: Vec<(f64, f64)> = run
                        .clone()
                        .map(|i| (s.x[i], clip(s.y[i] + std[i])))
                        .collect();
                    poly.extend(run.rev().map(|i| (s.x[i], clip(s.y[i] - std[i]))));
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.18).filled())))
                        .map_err(RenderError::draw)?;
                }
            }
        }
        for (k, s) in self.series.iter().enumerate() {
            let c = s.color.unwrap_or_else(|| palette(k));
            let pts: Vec<(f64, f64)> = s.x.iter().zip(&s.y).map(|(&x, &y)| (x, clip(y))).collect();
            let runs = finite_runs(&s.x, &s.y, None);
            for run in runs.iter().skip(1) {
                chart
                    .draw_series(LineSeries::new(
                        pts[run.clone()].to_vec(),
                        c.stroke_width(2),
                    ))
                    .map_err(RenderError::draw)?;
            }
            let first = runs.first().cloned().unwrap_or(0..0);
            let ann = chart
                .draw_series(LineSeries::new(pts[first].to_vec(), c.stroke_width(2)))
                .map_err(RenderError::draw)?;
            if !s.label.is_empty() {
                labelled = true;
                ann.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                });
            }
            if s.markers {
                chart
                    .draw_series(
                        pts.iter()
                            .filter(|p| p.0.is_finite() && p.1.is_finite())
                            .map(|&p| Circle::new(p, 4, c.filled())),
                    )
                    .map_err(RenderError::draw)?;
            }
        }
        if labelled {
            chart
                .configure_series_labels()
                .position(legend_pos(self.legend))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font(font(14.0))
                .draw()
                .map_err(RenderError::draw)?;
        }
        Ok(())
    }
}

/// A set of points in a [`ScatterPlot`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointSet {
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// The points.
    pub points: Vec<[f64; 2]>,
    /// Colour; `None` uses the palette colour of the set index.
    pub color: Option<RGBColor>,
    /// Marker radius in pixels.
    pub size: u32,
    /// Opacity in [0, 1].
    pub alpha: f64,
}

impl PointSet {
    /// Points with radius 3 and opacity 0.7.
    pub fn new(label: impl Into<String>, points: Vec<[f64; 2]>) -> Self {
        PointSet {
            label: label.into(),
            points,
            color: None,
            size: 3,
            alpha: 0.7,
        }
    }

    /// Light grey background points (data under streamlines or trajectories).
    pub fn background(label: impl Into<String>, points: Vec<[f64; 2]>) -> Self {
        PointSet {
            color: Some(RGBColor(120, 120, 120)),
            size: 2,
            alpha: 0.55,
            ..PointSet::new(label, points)
        }
    }

    /// Sets the colour.
    pub fn color(mut self, c: RGBColor) -> Self {
        self.color = Some(c);
        self
    }
}

/// A polyline in a [`ScatterPlot`] or [`super::StreamPlot`] (a trajectory or an SDE path).
#[derive(Debug, Clone, PartialEq)]
pub struct Polyline {
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// Vertices.
    pub points: Vec<[f64; 2]>,
    /// Colour; `None` uses a palette colour.
    pub color: Option<RGBColor>,
    /// Line width in pixels.
    pub width: u32,
    /// Mark the first vertex with a ringed dot.
    pub start_marker: bool,
}

impl Polyline {
    /// A 2-pixel line with a start marker.
    pub fn new(label: impl Into<String>, points: Vec<[f64; 2]>) -> Self {
        Polyline {
            label: label.into(),
            points,
            color: None,
            width: 2,
            start_marker: true,
        }
    }

    /// Sets the colour.
    pub fn color(mut self, c: RGBColor) -> Self {
        self.color = Some(c);
        self
    }
}

/// Points and polylines in the plane.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScatterPlot {
    /// Panel title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Point sets, drawn first.
    pub sets: Vec<PointSet>,
    /// Polylines, drawn over the points.
    pub lines: Vec<Polyline>,
    /// Fixed x range (default: data range, padded).
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range (default: data range, padded).
    pub y_range: Option<(f64, f64)>,
    /// One unit has the same length on both axes (default true).
    pub equal_aspect: bool,
    /// Legend corner (default top right).
    pub legend: Corner,
}

impl ScatterPlot {
    /// An empty plot with equal aspect.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        ScatterPlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            equal_aspect: true,
            ..Default::default()
        }
    }

    /// Adds a point set.
    pub fn points(mut self, s: PointSet) -> Self {
        self.sets.push(s);
        self
    }

    /// Adds a polyline.
    pub fn line(mut self, l: Polyline) -> Self {
        self.lines.push(l);
        self
    }

    /// Fixes both ranges.
    pub fn ranges(mut self, x: (f64, f64), y: (f64, f64)) -> Self {
        self.x_range = Some(x);
        self.y_range = Some(y);
        self
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Scatter(self)
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        let area = titled(area, &self.title)?;
        let all = || {
            self.sets
                .iter()
                .flat_map(|s| s.points.iter())
                .chain(self.lines.iter().flat_map(|l| l.points.iter()))
        };
        let xr = self
            .x_range
            .unwrap_or_else(|| padded_range(all().map(|p| p[0]), 0.05));
        let yr = self
            .y_range
            .unwrap_or_else(|| padded_range(all().map(|p| p[1]), 0.05));
        let mut chart = xy_chart(
            &area,
            &self.x_label,
            &self.y_label,
            xr,
            yr,
            self.equal_aspect,
        )?;
        let labelled = draw_sets_and_lines(&mut chart, &self.sets, &self.lines, 0)?;
        if labelled {
            draw_legend(&mut chart, self.legend)?;
        }
        Ok(())
    }
}

/// Draws point sets then polylines; returns whether anything has a legend label.
pub(crate) fn draw_sets_and_lines<'a, 'b: 'a>(
    chart: &mut super::figure::XyChart<'a, 'b>,
    sets: &[PointSet],
    lines: &[Polyline],
    line_color_offset: usize,
) -> Result<bool> {
    let mut labelled = false;
    let (xr, yr) = (chart.x_range(), chart.y_range());
    let inside = |p: &[f64; 2]| xr.contains(&p[0]) && yr.contains(&p[1]);
    for (k, s) in sets.iter().enumerate() {
        let c = s.color.unwrap_or_else(|| palette(k));
        let style = c.mix(s.alpha).filled();
        let r = s.size;
        let ann = chart
            .draw_series(
                s.points
                    .iter()
                    .filter(|p| inside(p))
                    .map(|p| Circle::new((p[0], p[1]), r, style)),
            )
            .map_err(RenderError::draw)?;
        if !s.label.is_empty() {
            labelled = true;
            ann.label(s.label.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        }
    }
    for (k, l) in lines.iter().enumerate() {
        let c = l.color.unwrap_or_else(|| palette(k + line_color_offset));
        let w = l.width;
        let runs = clip_polyline(&l.points, (xr.start, xr.end), (yr.start, yr.end));
        if runs.is_empty() {
            continue;
        }
        let ann = chart
            .draw_series(
                runs.into_iter()
                    .map(|r| PathElement::new(r, c.stroke_width(w))),
            )
            .map_err(RenderError::draw)?;
        if !l.label.is_empty() {
            labelled = true;
            ann.label(l.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(w + 1))
            });
        }
        if l.start_marker {
            if let Some(&p) = l.points.first().filter(|p| inside(p)) {
                let p = (p[0], p[1]);
                chart
                    .draw_series([
                        Circle::new(p, 7, WHITE.filled()),
                        Circle::new(p, 7, BLACK.stroke_width(2)),
                        Circle::new(p, 4, c.filled()),
                    ])
                    .map_err(RenderError::draw)?;
            }
        }
    }
    Ok(labelled)
}

/// The index ranges over which `x`, `y` (and `std`, if given) are all finite, in order.
fn finite_runs(x: &[f64], y: &[f64], std: Option<&[f64]>) -> Vec<std::ops::Range<usize>> {
    let ok =
        |i: usize| x[i].is_finite() && y[i].is_finite() && std.is_none_or(|d| d[i].is_finite());
    let mut runs = Vec::new();
    let mut start = None;
    for i in 0..=y.len() {
        match (i < y.len() && ok(i), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// Clips a polyline to a rectangle (Liang-Barsky per segment) and returns the visible runs, so lines
/// that leave the plot are cut at the border instead of being squashed onto it.
pub(crate) fn clip_polyline(
    pts: &[[f64; 2]],
    xr: (f64, f64),
    yr: (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = a.iter().chain(&b).all(|v| v.is_finite());
        for (p, q) in [
            (-dx, a[0] - xr.0),
            (dx, xr.1 - a[0]),
            (-dy, a[1] - yr.0),
            (dy, yr.1 - a[1]),
        ] {
            if !visible {
                break;
            }
            if p == 0.0 {
                visible = q >= 0.0;
            } else {
                let r = q / p;
                if p < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
                visible = t0 <= t1;
            }
        }
        if !visible {
            open = false;
            continue;
        }
        let p0 = (a[0] + t0 * dx, a[1] + t0 * dy);
        let p1 = (a[0] + t1 * dx, a[1] + t1 * dy);
        if !(open && t0 == 0.0) {
            runs.push(vec![p0]);
        }
        runs.last_mut().expect("a run was just opened").push(p1);
        open = t1 == 1.0;
    }
    runs
}

/// Draws the legend box.
pub(crate) fn draw_legend<'a, 'b: 'a>(
    chart: &mut super::figure::XyChart<'a, 'b>,
    corner: Corner,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(legend_pos(corner))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(font(14.0))
        .draw()
        .map_err(RenderError::draw)
}

/// The three coordinate-plane projections (x1-x2, x1-x3, x2-x3) of a 3-D trajectory over data points,
/// as scatter panels for a 1 x 3 figure. `names` are the axis names (e.g. `["x1", "x2", "x3"]`).
pub fn projections_3d(data: &[[f64; 3]], trajectory: &[[f64; 3]], names: [&str; 3]) -> [Panel; 3] {
    let proj = |a: usize, b: usize| {
        let title = format!("{}-{} projection", names[a], names[b]);
        ScatterPlot {
            equal_aspect: false,
            ..ScatterPlot::new(title, names[a], names[b])
        }
        .points(PointSet::background(
            "data",
            data.iter().map(|p| [p[a], p[b]]).collect(),
        ))
        .line(Polyline {
            width: 1,
            ..Polyline::new(
                "learned trajectory",
                trajectory.iter().map(|p| [p[a], p[b]]).collect(),
            )
            .color(palette(3))
        })
        .panel()
    };
    [proj(0, 1), proj(0, 2), proj(1, 2)]
}

/// A vertical reference line in a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    /// Position on the x axis.
    pub x: f64,
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// Colour; `None` is black.
    pub color: Option<RGBColor>,
}

/// Overlaid histograms (translucent bars) of one or more samples, with optional reference lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Panel title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Samples: (legend label, values). Non-finite values are skipped.
    pub series: Vec<(String, Vec<f64>)>,
    /// Number of bins (default 30).
    pub bins: usize,
    /// Bin range (default: range of all values and reference lines).
    pub range: Option<(f64, f64)>,
    /// Normalise to densities (default false: counts).
    pub density: bool,
    /// Vertical reference lines.
    pub ref_lines: Vec<RefLine>,
    /// Legend corner (default top right).
    pub legend: Corner,
}

impl Histogram {
    /// An empty histogram with 30 bins.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>) -> Self {
        Histogram {
            title: title.into(),
            x_label: x_label.into(),
            bins: 30,
            ..Default::default()
        }
    }

    /// Adds a sample.
    pub fn series(mut self, label: impl Into<String>, values: Vec<f64>) -> Self {
        self.series.push((label.into(), values));
        self
    }

    /// Adds a reference line.
    pub fn ref_line(mut self, x: f64, label: impl Into<String>) -> Self {
        self.ref_lines.push(RefLine {
            x,
            label: label.into(),
            color: None,
        });
        self
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Hist(self)
    }

    /// Bin counts (or densities) per series over `range`.
    fn binned(&self, lo: f64, hi: f64) -> Vec<Vec<f64>> {
        let nb = self.bins.max(1);
        let width = (hi - lo) / nb as f64;
        self.series
            .iter()
            .map(|(_, vals)| {
                let mut counts = vec![0.0; nb];
                let mut n = 0.0;
                for &v in vals.iter().filter(|v| v.is_finite()) {
                    if v < lo || v > hi {
                        continue;
                    }
                    let b = (((v - lo) / width) as usize).min(nb - 1);
                    counts[b] += 1.0;
                    n += 1.0;
                }
                if self.density && n > 0.0 {
                    counts.iter_mut().for_each(|c| *c /= n * width);
                }
                counts
            })
            .collect()
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        let area = titled(area, &self.title)?;
        let (lo, hi) = self.range.unwrap_or_else(|| {
            padded_range(
                self.series
                    .iter()
                    .flat_map(|(_, v)| v.iter().copied())
                    .chain(self.ref_lines.iter().map(|r| r.x)),
                0.02,
            )
        });
        let counts = self.binned(lo, hi);
        let top = counts.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
        let top = if top > 0.0 { top * 1.12 } else { 1.0 };
        let y_label = if self.density { "density" } else { "count" };
        let mut chart = xy_chart(&area, &self.x_label, y_label, (lo, hi), (0.0, top), false)?;
        let nb = self.bins.max(1);
        let width = (hi - lo) / nb as f64;
        let alpha = if self.series.len() > 1 { 0.45 } else { 0.75 };
        for (k, ((label, _), c)) in self.series.iter().zip(&counts).enumerate() {
            let col = palette(k);
            let ann = chart
                .draw_series(
                    c.iter()
                        .enumerate()
                        .filter(|(_, &n)| n > 0.0)
                        .map(|(b, &n)| {
                            let x0 = lo + b as f64 * width;
                            Rectangle::new([(x0, 0.0), (x0 + width, n)], col.mix(alpha).filled())
                        }),
                )
                .map_err(RenderError::draw)?;
            if !label.is_empty() {
                ann.label(label.as_str()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.mix(alpha).filled())
                });
            }
            // Outline the histogram as a step line so overlaps stay readable.
            let mut step = vec![(lo, 0.0)];
            for (b, &n) in c.iter().enumerate() {
                let x0 = lo + b as f64 * width;
                step.push((x0, n));
                step.push((x0 + width, n));
            }
            step.push((hi, 0.0));
            chart
                .draw_series(LineSeries::new(step, col.stroke_width(1)))
                .map_err(RenderError::draw)?;
        }
        for (k, r) in self.ref_lines.iter().enumerate() {
            let col = r.color.unwrap_or(BLACK);
            let dash = if k % 2 == 0 { 2 } else { 3 };
            let ann = chart
                .draw_series(DashedLineSeries::new(
                    vec![(r.x, 0.0), (r.x, top)],
                    8,
                    4,
                    col.stroke_width(dash),
                ))
                .map_err(RenderError::draw)?;
            if !r.label.is_empty() {
                ann.label(r.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], col.stroke_width(dash))
                });
            }
        }
        if self.series.iter().any(|(l, _)| !l.is_empty())
            || self.ref_lines.iter().any(|r| !r.label.is_empty())
        {
            draw_legend(&mut chart, self.legend)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_cuts_lines_at_the_border() {
        let pts = [[0.0, 0.0], [0.5, 0.5], [2.0, 0.5], [2.0, 0.2], [0.5, 0.2]];
        let runs = clip_polyline(&pts, (0.0, 1.0), (0.0, 1.0));
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0], vec![(0.0, 0.0), (0.5, 0.5), (1.0, 0.5)]);
        assert_eq!(runs[1], vec![(1.0, 0.2), (0.5, 0.2)]);
    }
}
