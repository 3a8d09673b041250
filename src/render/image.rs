//! Raster images: the RGB buffer type every image figure passes around, and the pixel-level helpers
//! that turn model tensors into pictures (Turing colouring, RGB canvases, scalar maps with a colormap),
//! enlarge them (nearest neighbour, so single cells stay crisp), tile them (contact sheets) and mark them
//! up (wrap-aware tracks, corner insets).
//!
//! These work on plain `&[f32]` in channel-major `[C, H, W]` layout, the layout the models produce, and
//! never allocate plotters state, so they are cheap to use per GIF frame.

use plotters::style::RGBColor;

use super::color::{hex, Colormap};
use super::{RenderError, Result};

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A `width x height` image filled with `fill`.
    pub fn new(width: u32, height: u32, fill: RGBColor) -> Self {
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for _ in 0..width as usize * height as usize {
            data.extend_from_slice(&[fill.0, fill.1, fill.2]);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Wraps an existing buffer, checking its length.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        if data.len() != width as usize * height as usize * 3 {
            return Err(RenderError::input(
                "RgbImage::from_raw",
                format!("{} bytes for {}x{} RGB", data.len(), width, height),
            ));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The pixel at column `x`, row `y`.
    pub fn get(&self, x: u32, y: u32) -> RGBColor {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        RGBColor(self.data[i], self.data[i + 1], self.data[i + 2])
    }

    /// Sets the pixel at column `x`, row `y`; coordinates outside the image are ignored.
    pub fn put(&mut self, x: i64, y: i64, c: RGBColor) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.data[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
    }

    /// Enlarges by an integer factor with nearest-neighbour sampling (crisp cells).
    pub fn upscale(&self, k: u32) -> RgbImage {
        let k = k.max(1);
        if k == 1 {
            return self.clone();
        }
        let (w, h) = (self.width * k, self.height * k);
        let mut data = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h {
            let row = (y / k) as usize * self.width as usize * 3;
            for x in 0..w {
                let i = row + (x / k) as usize * 3;
                data.extend_from_slice(&self.data[i..i + 3]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// Resizes to `w x h` with nearest-neighbour sampling (any factor, up or down).
    pub fn resize_nearest(&self, w: u32, h: u32) -> RgbImage {
        let (w, h) = (w.max(1), h.max(1));
        if (w, h) == (self.width, self.height) {
            return self.clone();
        }
        let mut data = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h {
            let sy = (y as u64 * self.height as u64 / h as u64) as usize;
            for x in 0..w {
                let sx = (x as u64 * self.width as u64 / w as u64) as usize;
                let i = (sy * self.width as usize + sx) * 3;
                data.extend_from_slice(&self.data[i..i + 3]);
            }
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// Scales to the largest size that fits in `max_w x max_h` keeping the aspect ratio: an integer
    /// nearest-neighbour enlargement when one fits (crisp cells), otherwise a nearest-neighbour resize.
    pub fn fit(&self, max_w: u32, max_h: u32) -> RgbImage {
        let k = (max_w / self.width.max(1)).min(max_h / self.height.max(1));
        if k >= 1 {
            return self.upscale(k);
        }
        let s = (max_w as f64 / self.width as f64).min(max_h as f64 / self.height as f64);
        self.resize_nearest(
            (self.width as f64 * s).floor() as u32,
            (self.height as f64 * s).floor() as u32,
        )
    }

    /// Copies `src` with its top-left corner at (`x`, `y`), clipping at the borders.
    pub fn blit(&mut self, src: &RgbImage, x: i64, y: i64) {
        for sy in 0..src.height {
            for sx in 0..src.width {
                self.put(x + sx as i64, y + sy as i64, src.get(sx, sy));
            }
        }
    }

    /// Writes the image as a deterministic PNG.
    pub fn save_png(&self, path: &std::path::Path) -> Result<()> {
        super::write_png_rgb(path, self.width, self.height, &self.data)
    }
}

/// The value range of a field tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldRange {
    /// Values in [-1, 1] (model space); mapped to [0, 1] by `(x + 1) / 2`.
    #[default]
    MinusOneOne,
    /// Values already in [0, 1] (simulation space).
    ZeroOne,
}

impl FieldRange {
    fn unit(self, x: f32) -> f64 {
        let x = x as f64;
        let t = match self {
            FieldRange::MinusOneOne => (x + 1.0) * 0.5,
            FieldRange::ZeroOne => x,
        };
        if t.is_nan() {
            0.0
        } else {
            t.clamp(0.0, 1.0)
        }
    }
}

fn check_len(what: &'static str, data: &[f32], c: usize, h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 || data.len() != c * h * w {
        return Err(RenderError::input(
            what,
            format!("{} values do not form a [{c}, {h}, {w}] tensor", data.len()),
        ));
    }
    Ok(())
}

/// Colours of a Gray-Scott field, after the paper: background `#9BE1E1`, u -> white, v -> `#628FCE`.
///
/// With `u`, `v` in [0, 1] and `b = clamp(v * v_gain, 0, 1)`, the pixel is the convex blend
/// `u (1 - b) * u_color + b * v_color + (1 - u)(1 - b) * background`: the weights are non-negative and sum
/// to one, so v (the pattern) wins wherever it is present, u paints the rest white, and regions where both
/// are depleted show the background. The flat state (u = 1, v = 0) is white; spots and stripes (v ~ 0.2-0.4,
/// u ~ 0.3-0.5) are blue with a teal rim. `v_gain` (default 2) stretches v, which rarely exceeds 0.5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuringColors {
    /// Colour where both u and v are 0.
    pub background: RGBColor,
    /// Colour of u.
    pub u_color: RGBColor,
    /// Colour of v.
    pub v_color: RGBColor,
    /// Contrast multiplier for v before blending.
    pub v_gain: f64,
}

impl Default for TuringColors {
    fn default() -> Self {
        TuringColors {
            background: hex(0x9BE1E1),
            u_color: hex(0xFFFFFF),
            v_color: hex(0x628FCE),
            v_gain: 2.0,
        }
    }
}

/// Colours a Gray-Scott field `[2, H, W]` (channel 0 = u, 1 = v), see [`TuringColors`].
pub fn turing_image(
    field: &[f32],
    h: usize,
    w: usize,
    range: FieldRange,
    colors: &TuringColors,
) -> Result<RgbImage> {
    check_len("turing_image", field, 2, h, w)?;
    let mut img = RgbImage::new(w as u32, h as u32, colors.background);
    for y in 0..h {
        for x in 0..w {
            let u = range.unit(field[y * w + x]);
            let v = range.unit(field[h * w + y * w + x]);
            let b = (v * colors.v_gain).clamp(0.0, 1.0);
            let (wu, wv, wb) = (u * (1.0 - b), b, (1.0 - u) * (1.0 - b));
            let ch = |pu: u8, pv: u8, pb: u8| {
                (wu * pu as f64 + wv * pv as f64 + wb * pb as f64)
                    .round()
                    .clamp(0.0, 255.0) as u8
            };
            let (cu, cv, cb) = (colors.u_color, colors.v_color, colors.background);
            img.put(
                x as i64,
                y as i64,
                RGBColor(
                    ch(cu.0, cv.0, cb.0),
                    ch(cu.1, cv.1, cb.1),
                    ch(cu.2, cv.2, cb.2),
                ),
            );
        }
    }
    Ok(img)
}

/// Converts an RGB canvas `[3, H, W]` to an image.
pub fn rgb_canvas(canvas: &[f32], h: usize, w: usize, range: FieldRange) -> Result<RgbImage> {
    check_len("rgb_canvas", canvas, 3, h, w)?;
    let mut img = RgbImage::new(w as u32, h as u32, RGBColor(0, 0, 0));
    let q = |t: f64| (t * 255.0).round() as u8;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let c = RGBColor(
                q(range.unit(canvas[i])),
                q(range.unit(canvas[h * w + i])),
                q(range.unit(canvas[2 * h * w + i])),
            );
            img.put(x as i64, y as i64, c);
        }
    }
    Ok(img)
}

/// Colours a scalar map `[H, W]` with `cmap` over `range` (values outside are clamped).
///
/// When `range` is `None` it is chosen from the data: symmetric `[-m, m]` with `m = max |x|` for
/// [`Colormap::Diverging`] (so 0 is white), `[min, max]` otherwise; NaNs are ignored. Returns the image
/// and the range used, for a colour bar.
pub fn scalar_map(
    values: &[f32],
    h: usize,
    w: usize,
    cmap: Colormap,
    range: Option<(f64, f64)>,
) -> Result<(RgbImage, (f64, f64))> {
    check_len("scalar_map", values, 1, h, w)?;
    let (lo, hi) = range.unwrap_or_else(|| auto_range(values, cmap));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut img = RgbImage::new(w as u32, h as u32, RGBColor(0, 0, 0));
    for y in 0..h {
        for x in 0..w {
            let t = (values[y * w + x] as f64 - lo) / span;
            img.put(x as i64, y as i64, cmap.at(t));
        }
    }
    Ok((img, (lo, hi)))
}

fn auto_range(values: &[f32], cmap: Colormap) -> (f64, f64) {
    let finite = values.iter().filter(|v| v.is_finite()).map(|&v| v as f64);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in finite {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (-1.0, 1.0);
    }
    match cmap {
        Colormap::Diverging => {
            let m = lo.abs().max(hi.abs()).max(1e-12);
            (-m, m)
        }
        _ if hi > lo => (lo, hi),
        _ => (lo - 0.5, hi + 0.5),
    }
}

/// Tiles images into a grid of `cols` columns with `pad` pixels between cells and around the edge.
///
/// Cells are as large as the largest image; smaller images are centred. An empty input gives an error.
pub fn contact_sheet(images: &[RgbImage], cols: usize, pad: u32, bg: RGBColor) -> Result<RgbImage> {
    if images.is_empty() || cols == 0 {
        return Err(RenderError::input(
            "contact_sheet",
            "no images or zero columns",
        ));
    }
    let cw = images.iter().map(|i| i.width).max().expect("non-empty");
    let ch = images.iter().map(|i| i.height).max().expect("non-empty");
    let cols = cols.min(images.len());
    let rows = images.len().div_ceil(cols);
    let w = cols as u32 * (cw + pad) + pad;
    let h = rows as u32 * (ch + pad) + pad;
    let mut out = RgbImage::new(w, h, bg);
    for (k, img) in images.iter().enumerate() {
        let (r, c) = ((k / cols) as u32, (k % cols) as u32);
        let x = pad + c * (cw + pad) + (cw - img.width) / 2;
        let y = pad + r * (ch + pad) + (ch - img.height) / 2;
        out.blit(img, x as i64, y as i64);
    }
    Ok(out)
}

/// A track of a moving object, in the pixel coordinates (x = column, y = row) of the un-scaled field.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Positions over time.
    pub points: Vec<[f64; 2]>,
    /// Line colour; `None` picks palette colour by track index.
    pub color: Option<RGBColor>,
}

/// Draws tracks onto `img`, whose pixels are `scale` times the field's cells.
///
/// Fields are periodic: wherever consecutive points jump by more than half the field size in x or y (a
/// wrap through the border), the line is broken instead of crossing the image. Lines are `width` display
/// pixels thick with a dark outline for contrast; the last position gets a dot.
pub fn draw_tracks(img: &mut RgbImage, tracks: &[Track], scale: f64, width: f64) {
    let (fw, fh) = (img.width as f64 / scale, img.height as f64 / scale);
    let r = (width * 0.5).max(0.5);
    for pass in 0..2 {
        for (k, t) in tracks.iter().enumerate() {
            let color = t.color.unwrap_or_else(|| super::color::palette(k));
            let (c, rr) = if pass == 0 {
                (RGBColor(20, 20, 20), r + 1.0)
            } else {
                (color, r)
            };
            for seg in t.points.windows(2) {
                let (a, b) = (seg[0], seg[1]);
                if (a[0] - b[0]).abs() > fw * 0.5 || (a[1] - b[1]).abs() > fh * 0.5 {
                    continue;
                }
                disc_line(
                    img,
                    [a[0] * scale, a[1] * scale],
                    [b[0] * scale, b[1] * scale],
                    rr,
                    c,
                );
            }
            if let Some(p) = t.points.last() {
                disc_line(
                    img,
                    [p[0] * scale, p[1] * scale],
                    [p[0] * scale, p[1] * scale],
                    rr * 2.2,
                    c,
                );
            }
        }
    }
}

/// A thick segment drawn as the set of pixels within `r` of it (deterministic, no antialiasing).
fn disc_line(img: &mut RgbImage, a: [f64; 2], b: [f64; 2], r: f64, c: RGBColor) {
    let (x0, x1) = (a[0].min(b[0]) - r, a[0].max(b[0]) + r);
    let (y0, y1) = (a[1].min(b[1]) - r, a[1].max(b[1]) + r);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    for y in y0.floor() as i64..=y1.ceil() as i64 {
        for x in x0.floor() as i64..=x1.ceil() as i64 {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let t = if len2 > 0.0 {
                (((px - a[0]) * dx + (py - a[1]) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (qx, qy) = (a[0] + t * dx - px, a[1] + t * dy - py);
            if qx * qx + qy * qy <= r * r {
                img.put(x, y, c);
            }
        }
    }
}

/// A corner of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    /// Top left.
    TopLeft,
    /// Top right.
    #[default]
    TopRight,
    /// Bottom left.
    BottomLeft,
    /// Bottom right.
    BottomRight,
}

/// Pastes `inset` into a corner of `img` with a `margin` and a 2-pixel dark frame.
pub fn paste_inset(img: &mut RgbImage, inset: &RgbImage, corner: Corner, margin: u32) {
    let (iw, ih) = (inset.width as i64, inset.height as i64);
    let m = margin as i64 + 2;
    let x = match corner {
        Corner::TopLeft | Corner::BottomLeft => m,
        Corner::TopRight | Corner::BottomRight => img.width as i64 - iw - m,
    };
    let y = match corner {
        Corner::TopLeft | Corner::TopRight => m,
        Corner::BottomLeft | Corner::BottomRight => img.height as i64 - ih - m,
    };
    let frame = RGBColor(30, 30, 30);
    for yy in y - 2..y + ih + 2 {
        for xx in x - 2..x + iw + 2 {
            img.put(xx, yy, frame);
        }
    }
    img.blit(inset, x, y);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turing_flat_state_is_white_and_empty_is_background() {
        let flat = [1.0f32, -1.0];
        let img = turing_image(
            &flat,
            1,
            1,
            FieldRange::MinusOneOne,
            &TuringColors::default(),
        )
        .expect("1x1");
        assert_eq!(img.get(0, 0), RGBColor(255, 255, 255));
        let empty = [0.0f32, 0.0];
        let img =
            turing_image(&empty, 1, 1, FieldRange::ZeroOne, &TuringColors::default()).expect("1x1");
        assert_eq!(img.get(0, 0), hex(0x9BE1E1));
        assert!(turing_image(&empty, 2, 2, FieldRange::ZeroOne, &TuringColors::default()).is_err());
    }

    #[test]
    fn upscale_and_sheet_sizes() {
        let img = RgbImage::new(3, 2, RGBColor(1, 2, 3)).upscale(4);
        assert_eq!((img.width, img.height), (12, 8));
        let sheet = contact_sheet(
            &[img.clone(), img.clone(), img],
            2,
            2,
            RGBColor(255, 255, 255),
        )
        .expect("sheet");
        assert_eq!((sheet.width, sheet.height), (2 * 14 + 2, 2 * 10 + 2));
    }

    #[test]
    fn tracks_break_at_wraps() {
        let mut img = RgbImage::new(20, 20, RGBColor(255, 255, 255));
        let t = Track {
            points: vec![[1.0, 10.0], [19.0, 10.0]],
            color: Some(RGBColor(255, 0, 0)),
        };
        draw_tracks(&mut img, &[t], 1.0, 1.0);
        // The wrap jump must not paint the middle of the image.
        assert_eq!(img.get(10, 10), RGBColor(255, 255, 255));
    }
}
