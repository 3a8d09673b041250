//! Streamlines of 2-D vector fields: the picture of a learned flow, a score, or a drift, drawn over the
//! data it keeps stationary, optionally with SDE sample paths on top.
//!
//! The field is a regular grid of velocities ([`FieldGrid`], sampled from a closure or given directly)
//! interpolated bilinearly. Streamlines are traced like matplotlib's `streamplot`: seeds are tried in a
//! fixed order, each line is integrated forward and backward with RK4 along the unit direction of the
//! field, and a coarse occupancy mask stops a line when it enters a cell another line already owns, so
//! lines are evenly spaced. Lines stop at the border, at near-zero speed, and after a maximum length;
//! segments are coloured by speed and each line gets an arrowhead at its middle. Everything is
//! deterministic (no random seeding).

use plotters::prelude::*;

use super::color::Colormap;
use super::figure::{titled, xy_chart, Area, Panel};
use super::image::Corner;
use super::plots::{draw_legend, draw_sets_and_lines, PointSet, Polyline};
use super::{RenderError, Result};

/// Velocities on a regular grid: `values[j * nx + i]` is the velocity at
/// `(x0 + i (x1 - x0) / (nx - 1), y0 + j (y1 - y0) / (ny - 1))`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldGrid {
    /// `(x0, x1)`.
    pub x_range: (f64, f64),
    /// `(y0, y1)`.
    pub y_range: (f64, f64),
    /// Grid points along x (at least 2).
    pub nx: usize,
    /// Grid points along y (at least 2).
    pub ny: usize,
    /// Row-major velocities, `nx * ny` of them.
    pub values: Vec<[f64; 2]>,
}

impl FieldGrid {
    /// Wraps precomputed velocities, checking the shape.
    pub fn new(
        x_range: (f64, f64),
        y_range: (f64, f64),
        nx: usize,
        ny: usize,
        values: Vec<[f64; 2]>,
    ) -> Result<Self> {
        if nx < 2 || ny < 2 || values.len() != nx * ny {
            return Err(RenderError::input(
                "FieldGrid",
                format!(
                    "{} velocities for a {nx}x{ny} grid (need at least 2x2)",
                    values.len()
                ),
            ));
        }
        if x_range.1 <= x_range.0 || y_range.1 <= y_range.0 {
            return Err(RenderError::input("FieldGrid", "empty x or y range"));
        }
        Ok(FieldGrid {
            x_range,
            y_range,
            nx,
            ny,
            values,
        })
    }

    /// Samples `f` on an `nx x ny` grid over the ranges.
    pub fn from_fn(
        x_range: (f64, f64),
        y_range: (f64, f64),
        nx: usize,
        ny: usize,
        f: impl Fn([f64; 2]) -> [f64; 2],
    ) -> Result<Self> {
        let (nx, ny) = (nx.max(2), ny.max(2));
        let mut values = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                values.push(f(grid_point(x_range, y_range, nx, ny, i, j)));
            }
        }
        FieldGrid::new(x_range, y_range, nx, ny, values)
    }

    /// The grid points, row-major, matching `values` (handy for evaluating a model in one batch).
    pub fn points(x_range: (f64, f64), y_range: (f64, f64), nx: usize, ny: usize) -> Vec<[f64; 2]> {
        (0..ny)
            .flat_map(|j| (0..nx).map(move |i| grid_point(x_range, y_range, nx, ny, i, j)))
            .collect()
    }

    /// Bilinear interpolation; `None` outside the grid or for non-finite values.
    pub fn sample(&self, p: [f64; 2]) -> Option<[f64; 2]> {
        let fx = (p[0] - self.x_range.0) / (self.x_range.1 - self.x_range.0) * (self.nx - 1) as f64;
        let fy = (p[1] - self.y_range.0) / (self.y_range.1 - self.y_range.0) * (self.ny - 1) as f64;
        if !(0.0..=(self.nx - 1) as f64).contains(&fx)
            || !(0.0..=(self.ny - 1) as f64).contains(&fy)
        {
            return None;
        }
        let i = (fx.floor() as usize).min(self.nx - 2);
        let j = (fy.floor() as usize).min(self.ny - 2);
        let (tx, ty) = (fx - i as f64, fy - j as f64);
        let v = |i: usize, j: usize| self.values[j * self.nx + i];
        let mut out = [0.0; 2];
        for (c, o) in out.iter_mut().enumerate() {
            *o = (1.0 - ty) * ((1.0 - tx) * v(i, j)[c] + tx * v(i + 1, j)[c])
                + ty * ((1.0 - tx) * v(i, j + 1)[c] + tx * v(i + 1, j + 1)[c]);
        }
        out.iter().all(|x| x.is_finite()).then_some(out)
    }

    /// Largest speed on the grid.
    pub fn max_speed(&self) -> f64 {
        self.values
            .iter()
            .map(|v| v[0].hypot(v[1]))
            .filter(|s| s.is_finite())
            .fold(0.0, f64::max)
    }
}

fn grid_point(
    xr: (f64, f64),
    yr: (f64, f64),
    nx: usize,
    ny: usize,
    i: usize,
    j: usize,
) -> [f64; 2] {
    [
        xr.0 + (xr.1 - xr.0) * i as f64 / (nx - 1) as f64,
        yr.0 + (yr.1 - yr.0) * j as f64 / (ny - 1) as f64,
    ]
}

/// How streamlines look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamStyle {
    /// Spacing control: the occupancy mask is `30 * density` cells per side (default 1).
    pub density: f64,
    /// Colour segments by speed (viridis) instead of `color` (default true).
    pub color_by_speed: bool,
    /// Line colour when not coloured by speed.
    pub color: RGBColor,
    /// Line width in pixels (default 2).
    pub width: u32,
    /// Draw an arrowhead at the middle of each line (default true).
    pub arrows: bool,
    /// Stop where speed falls below this fraction of the grid's maximum speed (default 0.002).
    pub min_speed_frac: f64,
}

impl Default for StreamStyle {
    fn default() -> Self {
        StreamStyle {
            density: 1.0,
            color_by_speed: true,
            color: RGBColor(40, 70, 140),
            width: 2,
            arrows: true,
            min_speed_frac: 0.002,
        }
    }
}

/// A traced streamline: vertices in field coordinates and the speed at each.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamline {
    /// Vertices.
    pub points: Vec<[f64; 2]>,
    /// Speed at each vertex.
    pub speeds: Vec<f64>,
}

/// Traces evenly spaced streamlines of `field` (see the module documentation).
pub fn streamlines(field: &FieldGrid, style: &StreamStyle) -> Vec<Streamline> {
    let n = ((30.0 * style.density).round() as usize).clamp(4, 200);
    let (xr, yr) = (field.x_range, field.y_range);
    let (sx, sy) = ((xr.1 - xr.0) / n as f64, (yr.1 - yr.0) / n as f64);
    let min_speed = field.max_speed() * style.min_speed_frac;
    let mut owner: Vec<Option<usize>> = vec![None; n * n];
    let cell = |p: [f64; 2]| {
        let i = (((p[0] - xr.0) / sx) as usize).min(n - 1);
        let j = (((p[1] - yr.0) / sy) as usize).min(n - 1);
        j * n + i
    };
    // Direction field in mask units (one unit = one mask cell), normalised to unit speed.
    let dir = |p: [f64; 2]| -> Option<[f64; 2]> {
        let v = field.sample(p)?;
        let (a, b) = (v[0] / sx, v[1] / sy);
        let m = a.hypot(b);
        (v[0].hypot(v[1]) > min_speed && m > 0.0).then(|| [a / m * sx, b / m * sy])
    };
    let h = 0.2; // step in mask cells
    let max_steps = (4 * n) as f64 / h;
    let mut lines = Vec::new();
    for seed in spiral_order(n) {
        if owner[seed].is_some() {
            continue;
        }
        let id = lines.len();
        let start = [
            xr.0 + (seed % n) as f64 * sx + 0.5 * sx,
            yr.0 + (seed / n) as f64 * sy + 0.5 * sy,
        ];
        let mut claimed = vec![seed];
        owner[seed] = Some(id);
        let mut halves: [Vec<[f64; 2]>; 2] = [Vec::new(), Vec::new()];
        for (half, sign) in [(0usize, 1.0f64), (1, -1.0)] {
            let mut p = start;
            let mut cur = seed;
            let step = |p: [f64; 2]| dir(p).map(|d| [sign * d[0], sign * d[1]]);
            for _ in 0..max_steps as usize {
                let Some(k1) = step(p) else { break };
                let q = |k: [f64; 2], s: f64| [p[0] + s * h * k[0], p[1] + s * h * k[1]];
                let Some(k2) = step(q(k1, 0.5)) else { break };
                let Some(k3) = step(q(k2, 0.5)) else { break };
                let Some(k4) = step(q(k3, 1.0)) else { break };
                let next = [
                    p[0] + h / 6.0 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0]),
                    p[1] + h / 6.0 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1]),
                ];
                if field.sample(next).is_none() {
                    break;
                }
                let c = cell(next);
                if c != cur {
                    if owner[c].is_some() {
                        break;
                    }
                    owner[c] = Some(id);
                    claimed.push(c);
                    cur = c;
                }
                halves[half].push(next);
                p = next;
            }
        }
        let [fwd, bwd] = halves;
        let mut pts: Vec<[f64; 2]> = bwd.into_iter().rev().collect();
        pts.push(start);
        pts.extend(fwd);
        // Drop very short lines (less than 1/12 of the domain width, in mask cells) and free their cells.
        if (pts.len() as f64) * h < n as f64 / 12.0 {
            for c in claimed {
                owner[c] = None;
            }
            // Keep the seed blocked so we do not retry it forever; it is never a start again anyway.
            continue;
        }
        let speeds = pts
            .iter()
            .map(|&p| field.sample(p).map_or(0.0, |v| v[0].hypot(v[1])))
            .collect();
        lines.push(Streamline {
            points: pts,
            speeds,
        });
    }
    lines
}

/// Cell indices of an `n x n` grid from the border inwards (matplotlib's seed order).
fn spiral_order(n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n * n);
    let (mut x0, mut y0, mut x1, mut y1) = (0i64, 0i64, n as i64 - 1, n as i64 - 1);
    while x0 <= x1 && y0 <= y1 {
        for x in x0..=x1 {
            out.push((y0 * n as i64 + x) as usize);
        }
        for y in y0 + 1..=y1 {
            out.push((y * n as i64 + x1) as usize);
        }
        if y1 > y0 {
            for x in (x0..x1).rev() {
                out.push((y1 * n as i64 + x) as usize);
            }
        }
        if x1 > x0 {
            for y in (y0 + 1..y1).rev() {
                out.push((y * n as i64 + x0) as usize);
            }
        }
        x0 += 1;
        y0 += 1;
        x1 -= 1;
        y1 -= 1;
    }
    out
}

/// Streamlines of a field over data points, with optional sample paths.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlot {
    /// Panel title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The field (its ranges are the plot ranges).
    pub field: FieldGrid,
    /// Line style.
    pub style: StreamStyle,
    /// Data points drawn underneath (grey).
    pub data: Vec<[f64; 2]>,
    /// Sample paths drawn on top (e.g. Euler-Maruyama trajectories), with start markers.
    pub paths: Vec<Polyline>,
}

impl StreamPlot {
    /// Streamlines of `field` with default style, no data, no paths.
    pub fn new(title: impl Into<String>, field: FieldGrid) -> Self {
        StreamPlot {
            title: title.into(),
            x_label: "x1".into(),
            y_label: "x2".into(),
            field,
            style: StreamStyle::default(),
            data: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// Sets the data points.
    pub fn data(mut self, points: Vec<[f64; 2]>) -> Self {
        self.data = points;
        self
    }

    /// Adds a sample path.
    pub fn path(mut self, p: Polyline) -> Self {
        self.paths.push(p);
        self
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Stream(self)
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        let area = titled(area, &self.title)?;
        let (xr, yr) = (self.field.x_range, self.field.y_range);
        let mut chart = xy_chart(&area, &self.x_label, &self.y_label, xr, yr, true)?;
        let sets = [PointSet::background(
            if self.data.is_empty() { "" } else { "data" },
            self.data.clone(),
        )];
        draw_sets_and_lines(&mut chart, &sets, &[], 0)?;
        let lines = streamlines(&self.field, &self.style);
        let vmax = lines
            .iter()
            .flat_map(|l| l.speeds.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-12);
        // Viridis without its palest yellow end, which vanishes on white.
        let color_of = |s: f64| {
            if self.style.color_by_speed {
                Colormap::Viridis.at(0.85 * (s / vmax).sqrt())
            } else {
                self.style.color
            }
        };
        let w = self.style.width;
        for l in &lines {
            chart
                .draw_series(l.points.windows(2).zip(&l.speeds).map(|(seg, &s)| {
                    PathElement::new(
                        vec![(seg[0][0], seg[0][1]), (seg[1][0], seg[1][1])],
                        color_of(s).stroke_width(w),
                    )
                }))
                .map_err(RenderError::draw)?;
        }
        if self.style.arrows {
            let (pw, ph) = chart.plotting_area().dim_in_pixel();
            let (ux, uy) = ((xr.1 - xr.0) / pw as f64, (yr.1 - yr.0) / ph as f64);
            let size = 5.0 + 2.0 * w as f64;
            for l in &lines {
                let m = l.points.len() / 2;
                if m + 1 >= l.points.len() {
                    continue;
                }
                let (a, b) = (l.points[m], l.points[m + 1]);
                // Direction in pixel space (y grows upward here; units per pixel equal by aspect).
                let (dx, dy) = ((b[0] - a[0]) / ux, (b[1] - a[1]) / uy);
                let len = dx.hypot(dy);
                if len == 0.0 {
                    continue;
                }
                let (tx, ty) = (dx / len, dy / len);
                let (nx, ny) = (-ty, tx);
                let tip = (a[0] + tx * size * 0.6 * ux, a[1] + ty * size * 0.6 * uy);
                let base = |s: f64| {
                    (
                        a[0] + (-tx * size * 0.5 + nx * size * 0.45 * s) * ux,
                        a[1] + (-ty * size * 0.5 + ny * size * 0.45 * s) * uy,
                    )
                };
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        vec![tip, base(1.0), base(-1.0)],
                        color_of(l.speeds[m]).filled(),
                    )))
                    .map_err(RenderError::draw)?;
            }
        }
        let labelled = draw_sets_and_lines(&mut chart, &[], &self.paths, 3)?;
        if labelled || !self.data.is_empty() {
            draw_legend(&mut chart, Corner::TopRight)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_is_exact_on_linear_fields() {
        let f = FieldGrid::from_fn((-3.0, 3.0), (-3.0, 3.0), 20, 20, |p| {
            [p[1], -2.0 * p[0] + 1.0]
        })
        .expect("grid");
        let v = f.sample([0.37, -1.2]).expect("inside");
        assert!((v[0] + 1.2).abs() < 1e-9 && (v[1] - (1.0 - 0.74)).abs() < 1e-9);
        assert!(f.sample([3.5, 0.0]).is_none());
    }

    #[test]
    fn rotation_gives_closed_evenly_spaced_lines() {
        let f =
            FieldGrid::from_fn((-3.0, 3.0), (-3.0, 3.0), 20, 20, |p| [-p[1], p[0]]).expect("grid");
        let lines = streamlines(&f, &StreamStyle::default());
        assert!(lines.len() > 5, "{} lines", lines.len());
        // Every vertex stays on (nearly) a circle: radius varies little along a line.
        for l in &lines {
            let r: Vec<f64> = l.points.iter().map(|p| p[0].hypot(p[1])).collect();
            let (lo, hi) = r
                .iter()
                .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            assert!(hi - lo < 0.05 * hi.max(0.5), "radius drifts {lo}..{hi}");
        }
        assert_eq!(spiral_order(5).len(), 25);
    }
}
