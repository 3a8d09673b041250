//! Figures: deterministic PNG and GIF output for every pipeline stage that draws.
//!
//! This module takes plain data (slices, small structs) and knows nothing about pipelines or models, so
//! stages stay thin and figures can be tested in isolation. Everything is drawn by `plotters` into an
//! in-memory RGB buffer and encoded by us (`png`, `gif`) with fixed settings and no metadata, and all text
//! uses the DejaVu Sans font embedded from `assets/`, so the same input gives the same bytes on any machine.
//!
//! Layout: [`image`] holds the raster type and raster helpers (upscaling, contact sheets, Turing and
//! scalar colouring, track overlays); [`color`] the palettes and colormaps; [`figure`] the multi-panel
//! grid; [`plots`] line plots, scatter plots and histograms; [`stream`] streamlines of 2-D vector fields;
//! [`imgpanel`] image panels and labelled image grids; [`anim`] animated GIFs; [`table`] markdown/CSV
//! tables.

pub mod anim;
pub mod color;
pub mod figure;
pub mod image;
pub mod imgpanel;
pub mod plots;
pub mod stream;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Once;

pub use anim::{side_by_side, write_gif, GifOptions};
pub use color::{Colormap, PALETTE};
pub use figure::{Area, Figure, Panel};
pub use image::{
    contact_sheet, draw_tracks, paste_inset, rgb_canvas, scalar_map, turing_image, Corner,
    FieldRange, RgbImage, Track, TuringColors,
};
pub use imgpanel::{ColorBar, ImageGrid, ImagePanel};
pub use plots::{
    projections_3d, Histogram, LinePlot, PointSet, Polyline, RefLine, ScatterPlot, Series,
};
pub use stream::{FieldGrid, StreamPlot, StreamStyle};
pub use table::{Cell, Table};

/// Everything that can go wrong while drawing or writing a figure.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Plotters failed while drawing (the message comes from plotters).
    #[error("drawing failed: {0}")]
    Draw(String),
    /// The input data does not have the shape the figure needs.
    #[error("bad input for {what}: {why}")]
    Input {
        /// Which figure or argument was wrong.
        what: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// Writing the output file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PNG encoding failed.
    #[error("PNG encoding of {path} failed: {source}")]
    Png {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: png::EncodingError,
    },
    /// GIF encoding failed.
    #[error("GIF encoding of {path} failed: {source}")]
    Gif {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: gif::EncodingError,
    },
}

impl RenderError {
    /// Wraps any plotters error (they are generic over the backend) as a [`RenderError::Draw`].
    pub(crate) fn draw(e: impl std::fmt::Display) -> Self {
        RenderError::Draw(e.to_string())
    }

    /// Builds a [`RenderError::Input`].
    pub(crate) fn input(what: &'static str, why: impl Into<String>) -> Self {
        RenderError::Input {
            what,
            why: why.into(),
        }
    }
}

/// Result type of this module.
pub type Result<T, E = RenderError> = std::result::Result<T, E>;

/// The font family name every figure uses; registered from the embedded DejaVu Sans.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded DejaVu Sans with plotters (idempotent; every drawing entry point calls it).
pub fn ensure_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            plotters::style::FontStyle::Normal,
            plotters::style::FontStyle::Bold,
            plotters::style::FontStyle::Italic,
            plotters::style::FontStyle::Oblique,
        ] {
            // The font file is part of the repository and parsed at test time, so this cannot fail
            // unless the asset is corrupted, in which case text would be missing rather than wrong.
            if plotters::style::register_font(FONT, style, FONT_BYTES).is_err() {
                tracing::error!("embedded font assets/DejaVuSans.ttf could not be parsed");
            }
        }
    });
}

/// Writes an 8-bit RGB buffer (`width * height * 3` bytes, row-major) as a PNG with fixed settings and
/// no metadata, so equal pixels give equal bytes.
pub fn write_png_rgb(path: &Path, width: u32, height: u32, rgb: &[u8]) -> Result<()> {
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(RenderError::input(
            "write_png_rgb",
            format!(
                "buffer has {} bytes, expected {}x{}x3",
                rgb.len(),
                width,
                height
            ),
        ));
    }
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
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Default);
    enc.set_filter(png::FilterType::Paeth);
    enc.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
    let png_err = |source| RenderError::Png {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the render tests: decode a PNG and check that it is not blank.

    use std::path::{Path, PathBuf};

    /// A fresh temporary directory that lives as long as the returned guard.
    pub fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    /// Where sample figures are also copied for people to look at (best effort).
    pub fn sample_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("render-samples");
        let _ = std::fs::create_dir_all(&dir);
        dir.join(name)
    }

    /// Decodes the PNG at `path`, asserts its size, and asserts that its pixels vary.
    pub fn check_png(path: &Path, w: u32, h: u32) -> Vec<u8> {
        let dec = png::Decoder::new(std::fs::File::open(path).expect("open png"));
        let mut reader = dec.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png frame");
        assert_eq!(
            (info.width, info.height),
            (w, h),
            "size of {}",
            path.display()
        );
        let n = buf.len() as f64;
        let mean = buf.iter().map(|&b| b as f64).sum::<f64>() / n;
        let var = buf.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            var > 10.0,
            "{} looks blank (variance {var})",
            path.display()
        );
        // Keep a copy for humans.
        let _ = std::fs::copy(
            path,
            sample_path(&path.file_name().expect("name").to_string_lossy()),
        );
        buf
    }
}

#[cfg(test)]
mod tests;
