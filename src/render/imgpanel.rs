//! Image panels: one raster (a Turing field, an RGB canvas, a scalar map) fitted into a panel with a
//! title, an optional colour bar, optional creature tracks and a corner inset; and labelled image grids
//! (Figure 3: rows initial / evolved by flow / evolved by Gray-Scott, columns presets; Figure 8: kernel
//! slices K[o,i]).
//!
//! Images are enlarged by integer nearest-neighbour factors whenever they fit, so single cells of small
//! fields stay visible and sharp; overlays are drawn after enlarging, at display resolution.

use plotters::element::BitMapElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::color::Colormap;
use super::figure::{font, tick, titled, Area, Figure, Panel};
use super::image::{draw_tracks, paste_inset, Corner, RgbImage, Track};
use super::{RenderError, Result};

/// A vertical colour bar beside an image panel.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorBar {
    /// The colormap the image was coloured with.
    pub cmap: Colormap,
    /// The value range it spans (as returned by [`super::scalar_map`]).
    pub range: (f64, f64),
    /// Label drawn under the bar (e.g. "Δx/Δt").
    pub label: String,
}

/// One image in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePanel {
    /// Panel title.
    pub title: String,
    /// The image (enlarged to fit).
    pub image: RgbImage,
    /// Optional colour bar.
    pub colorbar: Option<ColorBar>,
    /// Tracks in the image's own pixel coordinates (periodic; broken at wraps).
    pub tracks: Vec<Track>,
    /// Track line width in display pixels (default 2).
    pub track_width: f64,
    /// Optional inset image (e.g. the icon), enlarged to about 1/5 of the displayed image.
    pub inset: Option<(RgbImage, Corner)>,
}

impl ImagePanel {
    /// An image with a title.
    pub fn new(title: impl Into<String>, image: RgbImage) -> Self {
        ImagePanel {
            title: title.into(),
            image,
            colorbar: None,
            tracks: Vec::new(),
            track_width: 2.0,
            inset: None,
        }
    }

    /// Adds a colour bar.
    pub fn colorbar(mut self, cmap: Colormap, range: (f64, f64), label: impl Into<String>) -> Self {
        self.colorbar = Some(ColorBar {
            cmap,
            range,
            label: label.into(),
        });
        self
    }

    /// Adds tracks.
    pub fn tracks(mut self, tracks: Vec<Track>) -> Self {
        self.tracks = tracks;
        self
    }

    /// Adds an inset in a corner.
    pub fn inset(mut self, img: RgbImage, corner: Corner) -> Self {
        self.inset = Some((img, corner));
        self
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Image(self)
    }

    /// The displayed raster: fitted into `max_w x max_h`, with tracks and inset drawn on it.
    pub fn compose(&self, max_w: u32, max_h: u32) -> RgbImage {
        let mut img = self.image.fit(max_w, max_h);
        let scale = img.width as f64 / self.image.width.max(1) as f64;
        draw_tracks(&mut img, &self.tracks, scale, self.track_width);
        if let Some((inset, corner)) = &self.inset {
            let target = (img.width.min(img.height) / 5).max(8);
            let small = inset.fit(target, target);
            paste_inset(&mut img, &small, *corner, 6);
        }
        img
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        let area = titled(area, &self.title)?;
        let (aw, ah) = area.dim_in_pixel();
        let bar_w = if self.colorbar.is_some() { 110 } else { 0 };
        let pad = 10;
        let img = self.compose(
            aw.saturating_sub(bar_w + 2 * pad).max(1),
            ah.saturating_sub(2 * pad).max(1),
        );
        let x = ((aw - bar_w).saturating_sub(img.width) / 2) as i32;
        let y = (ah.saturating_sub(img.height) / 2) as i32;
        blit(&area, &img, x, y)?;
        if let Some(cb) = &self.colorbar {
            draw_colorbar(&area, cb, x + img.width as i32 + 16, y, img.height)?;
        }
        Ok(())
    }
}

/// Copies a raster into a drawing area at pixel (`x`, `y`).
pub(crate) fn blit(area: &Area, img: &RgbImage, x: i32, y: i32) -> Result<()> {
    let el = BitMapElement::with_ref((x, y), (img.width, img.height), &img.data)
        .expect("RgbImage holds width*height*3 bytes by construction");
    area.draw(&el).map_err(RenderError::draw)?;
    // A thin grey frame, so white images (e.g. a flat Turing field) stay visible on the white page.
    area.draw(&Rectangle::new(
        [
            (x - 1, y - 1),
            (x + img.width as i32, y + img.height as i32),
        ],
        RGBColor(150, 150, 150).stroke_width(1),
    ))
    .map_err(RenderError::draw)
}

fn draw_colorbar(area: &Area, cb: &ColorBar, x: i32, y: i32, h: u32) -> Result<()> {
    let bw = 20;
    let h = h.max(20) as i32;
    let label_h = if cb.label.is_empty() { 0 } else { 26 };
    let bar_h = h - label_h;
    for r in 0..bar_h {
        let t = 1.0 - r as f64 / (bar_h - 1).max(1) as f64;
        area.draw(&Rectangle::new(
            [(x, y + r), (x + bw, y + r + 1)],
            cb.cmap.at(t).filled(),
        ))
        .map_err(RenderError::draw)?;
    }
    area.draw(&Rectangle::new(
        [(x, y), (x + bw, y + bar_h)],
        BLACK.stroke_width(1),
    ))
    .map_err(RenderError::draw)?;
    let style = font(13.0)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..5 {
        let t = k as f64 / 4.0;
        let v = cb.range.0 + (cb.range.1 - cb.range.0) * t;
        let py = y + ((1.0 - t) * (bar_h - 1) as f64).round() as i32;
        area.draw(&PathElement::new(
            vec![(x + bw, py), (x + bw + 4, py)],
            BLACK,
        ))
        .map_err(RenderError::draw)?;
        area.draw_text(&tick(v), &style, (x + bw + 7, py))
            .map_err(RenderError::draw)?;
    }
    if !cb.label.is_empty() {
        let ls = font(15.0)
            .into_text_style(area)
            .pos(Pos::new(HPos::Left, VPos::Top));
        area.draw_text(&cb.label, &ls, (x - 4, y + bar_h + 8))
            .map_err(RenderError::draw)?;
    }
    Ok(())
}

/// A grid of images with optional row and column labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageGrid {
    /// Panel title (empty: none).
    pub title: String,
    /// Labels left of each row (empty: no label column).
    pub row_labels: Vec<String>,
    /// Labels above each column (empty: no header).
    pub col_labels: Vec<String>,
    /// Number of columns.
    pub cols: usize,
    /// Images, row-major.
    pub cells: Vec<RgbImage>,
    /// Gap between cells in pixels (default 6).
    pub pad: u32,
    /// Optional colour bar right of the grid (when all cells share one colormap and range).
    pub colorbar: Option<ColorBar>,
}

const ROW_LABEL_W: u32 = 180;
const COL_LABEL_H: u32 = 32;

impl ImageGrid {
    /// A grid with `cols` columns.
    pub fn new(title: impl Into<String>, cols: usize, cells: Vec<RgbImage>) -> Self {
        ImageGrid {
            title: title.into(),
            cols: cols.max(1),
            cells,
            pad: 6,
            ..Default::default()
        }
    }

    /// Sets row and column labels.
    pub fn labels(mut self, rows: Vec<String>, cols: Vec<String>) -> Self {
        self.row_labels = rows;
        self.col_labels = cols;
        self
    }

    /// Adds a colour bar shared by all cells.
    pub fn colorbar(mut self, cmap: Colormap, range: (f64, f64), label: impl Into<String>) -> Self {
        self.colorbar = Some(ColorBar {
            cmap,
            range,
            label: label.into(),
        });
        self
    }

    fn bar_w(&self) -> u32 {
        if self.colorbar.is_some() {
            110
        } else {
            0
        }
    }

    fn rows(&self) -> usize {
        self.cells.len().div_ceil(self.cols.max(1)).max(1)
    }

    /// A one-panel [`Figure`] sized so each cell is about `cell_px` pixels (figure title = grid title).
    pub fn into_figure(mut self, cell_px: u32) -> Figure {
        let lw = if self.row_labels.is_empty() {
            0
        } else {
            ROW_LABEL_W
        };
        let hh = if self.col_labels.is_empty() {
            0
        } else {
            COL_LABEL_H
        };
        let (rows, cols) = (self.rows() as u32, self.cols as u32);
        let w = lw + cols * (cell_px + self.pad) + self.pad + self.bar_w();
        let h = hh + rows * (cell_px + self.pad) + self.pad + 8;
        let title = std::mem::take(&mut self.title);
        let fig = Figure::new(1, 1).panel_size(w, h).push(Panel::Grid(self));
        if title.is_empty() {
            fig
        } else {
            fig.title(title)
        }
    }

    /// Wraps into a [`Panel`].
    pub fn panel(self) -> Panel {
        Panel::Grid(self)
    }

    /// Draws into `area`.
    pub fn draw(&self, area: &Area) -> Result<()> {
        if self.cells.is_empty() {
            return Err(RenderError::input("ImageGrid", "no images"));
        }
        let area = titled(area, &self.title)?;
        let (aw, ah) = area.dim_in_pixel();
        let lw = if self.row_labels.is_empty() {
            0
        } else {
            ROW_LABEL_W
        };
        let hh = if self.col_labels.is_empty() {
            0
        } else {
            COL_LABEL_H
        };
        let (rows, cols) = (self.rows() as u32, self.cols as u32);
        let cw = (aw.saturating_sub(lw + self.pad + self.bar_w()) / cols)
            .saturating_sub(self.pad)
            .max(1);
        let ch = (ah.saturating_sub(hh + self.pad) / rows)
            .saturating_sub(self.pad)
            .max(1);
        let label = font(17.0).into_text_style(&area);
        for (c, text) in self.col_labels.iter().enumerate().take(self.cols) {
            let x = lw + self.pad + c as u32 * (cw + self.pad) + cw / 2;
            area.draw_text(
                text,
                &label.pos(Pos::new(HPos::Center, VPos::Center)),
                (x as i32, (hh / 2) as i32),
            )
            .map_err(RenderError::draw)?;
        }
        for (r, text) in self.row_labels.iter().enumerate().take(rows as usize) {
            let y = hh + self.pad + r as u32 * (ch + self.pad) + ch / 2;
            area.draw_text(
                text,
                &label.pos(Pos::new(HPos::Right, VPos::Center)),
                ((lw - 10) as i32, y as i32),
            )
            .map_err(RenderError::draw)?;
        }
        for (k, img) in self.cells.iter().enumerate() {
            let (r, c) = ((k / self.cols) as u32, (k % self.cols) as u32);
            let fitted = img.fit(cw, ch);
            let x = lw + self.pad + c * (cw + self.pad) + (cw - fitted.width) / 2;
            let y = hh + self.pad + r * (ch + self.pad) + (ch - fitted.height) / 2;
            blit(&area, &fitted, x as i32, y as i32)?;
        }
        if let Some(cb) = &self.colorbar {
            let x = lw + self.pad + cols * (cw + self.pad) + 10;
            let y = hh + self.pad;
            let h = (rows * (ch + self.pad)).saturating_sub(self.pad).min(400);
            draw_colorbar(&area, cb, x as i32, y as i32, h)?;
        }
        Ok(())
    }
}
