//! Animated GIFs: rollouts of the learned dynamics (alone or beside Gray-Scott, with captions).
//!
//! GIF allows 256 colours. We build one global palette for the whole animation with NeuQuant (from a
//! fixed, strided sample of all frames), so colours do not flicker between frames, and map pixels to it
//! with an exact nearest-colour cache; with [`GifPalette::Fixed`] a uniform 6x7x6 colour cube is used
//! instead (fast, no training). Both are deterministic: same frames, same bytes.

use std::collections::HashMap;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::font;
use super::image::RgbImage;
use super::{ensure_fonts, RenderError, Result};

/// How the GIF palette is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GifPalette {
    /// NeuQuant trained on a sample of all frames (best colours).
    #[default]
    NeuQuant,
    /// A fixed 6x7x6 RGB cube (fast; coarse on smooth gradients).
    Fixed,
}

/// GIF settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GifOptions {
    /// Delay between frames in hundredths of a second (default 5 = 20 fps).
    pub delay_cs: u16,
    /// Loop forever (default true).
    pub repeat: bool,
    /// Palette choice.
    pub palette: GifPalette,
}

impl Default for GifOptions {
    fn default() -> Self {
        GifOptions {
            delay_cs: 5,
            repeat: true,
            palette: GifPalette::NeuQuant,
        }
    }
}

/// Writes `frames` (all the same size, at most 65535 px a side) as an animated GIF.
pub fn write_gif(path: &Path, frames: &[RgbImage], opts: &GifOptions) -> Result<()> {
    let first = frames
        .first()
        .ok_or_else(|| RenderError::input("write_gif", "no frames"))?;
    let (w, h) = (first.width, first.height);
    if frames.iter().any(|f| (f.width, f.height) != (w, h)) || w > 65535 || h > 65535 {
        return Err(RenderError::input(
            "write_gif",
            "frames differ in size or exceed 65535 pixels",
        ));
    }
    let palette = match opts.palette {
        GifPalette::NeuQuant => neuquant_palette(frames),
        GifPalette::Fixed => cube_palette(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RenderError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let file = std::fs::File::create(path).map_err(|source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let gif_err = |source| RenderError::Gif {
        path: path.to_path_buf(),
        source,
    };
    let mut enc = gif::Encoder::new(std::io::BufWriter::new(file), w as u16, h as u16, &palette)
        .map_err(gif_err)?;
    if opts.repeat {
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
    }
    let mut cache: HashMap<[u8; 3], u8> = HashMap::new();
    for f in frames {
        let idx: Vec<u8> = f
            .data
            .chunks_exact(3)
            .map(|p| {
                let key = [p[0], p[1], p[2]];
                *cache.entry(key).or_insert_with(|| nearest(&palette, key))
            })
            .collect();
        let mut frame = gif::Frame::from_indexed_pixels(w as u16, h as u16, idx, None);
        frame.delay = opts.delay_cs;
        enc.write_frame(&frame).map_err(gif_err)?;
    }
    Ok(())
}

fn nearest(palette: &[u8], c: [u8; 3]) -> u8 {
    let mut best = (u32::MAX, 0usize);
    for (i, p) in palette.chunks_exact(3).enumerate() {
        let d = |a: u8, b: u8| (a as i32 - b as i32).pow(2) as u32;
        let dist = d(p[0], c[0]) + d(p[1], c[1]) + d(p[2], c[2]);
        if dist < best.0 {
            best = (dist, i);
        }
    }
    best.1 as u8
}

fn neuquant_palette(frames: &[RgbImage]) -> Vec<u8> {
    // A strided sample of at most ~500k pixels across all frames.
    let total: usize = frames.iter().map(|f| f.data.len() / 3).sum();
    let stride = (total / 500_000).max(1);
    let mut rgba = Vec::new();
    let mut k = 0usize;
    for f in frames {
        for p in f.data.chunks_exact(3) {
            if k.is_multiple_of(stride) {
                rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
            }
            k += 1;
        }
    }
    let nq = color_quant::NeuQuant::new(10, 256, &rgba);
    nq.color_map_rgb()
}

fn cube_palette() -> Vec<u8> {
    let mut pal = Vec::with_capacity(256 * 3);
    for r in 0..6u32 {
        for g in 0..7u32 {
            for b in 0..6u32 {
                pal.extend_from_slice(&[
                    (r * 255 / 5) as u8,
                    (g * 255 / 6) as u8,
                    (b * 255 / 5) as u8,
                ]);
            }
        }
    }
    pal.resize(256 * 3, 0);
    pal
}

/// Composes several frame sequences side by side, each fitted to `height` pixels, with a caption above
/// each column. The result has as many frames as the longest sequence (shorter ones hold their last
/// frame). Useful for "learned flow | Gray-Scott" rollouts.
pub fn side_by_side(
    sequences: &[Vec<RgbImage>],
    captions: &[&str],
    height: u32,
) -> Result<Vec<RgbImage>> {
    ensure_fonts();
    if sequences.is_empty() || sequences.iter().any(|s| s.is_empty()) {
        return Err(RenderError::input("side_by_side", "empty frame sequence"));
    }
    let n = sequences.iter().map(|s| s.len()).max().expect("non-empty");
    let pad = 8u32;
    let cap_h = if captions.iter().any(|c| !c.is_empty()) {
        30
    } else {
        0
    };
    let widths: Vec<u32> = sequences
        .iter()
        .map(|s| s[0].fit(u32::MAX / 4, height).width)
        .collect();
    let total_w = widths.iter().sum::<u32>() + pad * (sequences.len() as u32 + 1);
    let total_h = height + cap_h + 2 * pad;
    let mut out = Vec::with_capacity(n);
    for t in 0..n {
        let mut canvas = RgbImage::new(total_w, total_h, WHITE);
        let mut x = pad;
        for (s, w) in sequences.iter().zip(&widths) {
            let f = &s[t.min(s.len() - 1)];
            let fitted = f.resize_nearest(*w, height);
            canvas.blit(&fitted, x as i64, (cap_h + pad) as i64);
            x += w + pad;
        }
        if cap_h > 0 {
            let (cw, ch) = (canvas.width, canvas.height);
            let backend = BitMapBackend::with_buffer(&mut canvas.data, (cw, ch));
            let area = backend.into_drawing_area();
            let style = font(17.0)
                .into_text_style(&area)
                .pos(Pos::new(HPos::Center, VPos::Center));
            let mut x = pad;
            for (c, w) in captions.iter().zip(&widths) {
                area.draw_text(c, &style, ((x + w / 2) as i32, (pad + cap_h / 2) as i32))
                    .map_err(RenderError::draw)?;
                x += w + pad;
            }
            area.present().map_err(RenderError::draw)?;
        }
        out.push(canvas);
    }
    Ok(out)
}
