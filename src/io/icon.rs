//! A user's creature: a PNG icon with transparency, read into the straight RGBA `[4, H, W]` in `[0, 1]`
//! that `science::icons` places on canvases.
//!
//! The icon's shape is its alpha channel, so an icon without one is refused rather than pasted as an opaque
//! square. Every PNG flavour is accepted through the `png` crate's transformations: palette images (with a
//! `tRNS` transparency chunk), grey + alpha, 16-bit (stripped to 8) and low-bit-depth grey all come out as
//! 8-bit grey/RGB with alpha. Errors name the file and say how to fix it.

use std::path::Path;

use anyhow::{bail, Context};

use crate::science::icons::Icon;

/// Reads a PNG icon with transparency as straight RGBA in `[0, 1]`.
///
/// Errors (each naming the file): missing, unreadable or not a PNG, no alpha channel ("save the icon with
/// transparency"), fully transparent, or empty.
pub fn read_icon(path: &Path) -> anyhow::Result<Icon> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "icon {}: no such file (give a PNG with transparency, or a built-in icon: dot, dots, firefly, taiji)",
            path.display()
        ),
        Err(e) => bail!("icon {}: cannot open: {e}", path.display()),
    };
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("icon {}: not a readable PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("icon {}: not a readable PNG", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        bail!("icon {}: the image is empty ({w}x{h})", path.display());
    }
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::GrayscaleAlpha => 2,
        other => bail!(
            "icon {}: no alpha channel ({other:?} PNG); the creature's shape is its transparency, so save \
             the icon with transparency (RGBA, e.g. \"export as PNG with alpha\" and a transparent background)",
            path.display()
        ),
    };
    let mut icon = Icon::transparent(h, w);
    let n = h * w;
    for i in 0..n {
        let px = &buf[i * channels..(i + 1) * channels];
        let rgba = if channels == 4 {
            [px[0], px[1], px[2], px[3]]
        } else {
            [px[0], px[0], px[0], px[1]]
        };
        for (c, v) in rgba.iter().enumerate() {
            icon.data[c * n + i] = *v as f32 / 255.0;
        }
    }
    if icon.alpha().iter().all(|&a| a == 0.0) {
        bail!(
            "icon {}: every pixel is fully transparent, so there is no creature to draw",
            path.display()
        );
    }
    Ok(icon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(
        path: &Path,
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) {
        let file = std::fs::File::create(path).expect("create png");
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
            enc.set_trns(vec![255, 0]);
        }
        let mut writer = enc.write_header().expect("png header");
        writer.write_image_data(data).expect("png data");
    }

    #[test]
    fn rgba_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.png");
        // 3x2: red opaque, half-transparent green, transparent; blue, white, black at alpha 128.
        let data = [
            255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 0, 0, //
            0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0, 128,
        ];
        write_png(
            &path,
            3,
            2,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &data,
        );
        let icon = read_icon(&path).expect("read");
        assert_eq!((icon.height, icon.width), (2, 3));
        for y in 0..2 {
            for x in 0..3 {
                for c in 0..4 {
                    let want = data[(y * 3 + x) * 4 + c] as f32 / 255.0;
                    assert_eq!(icon.at(c, y, x), want, "({x},{y}) c{c}");
                }
            }
        }
    }

    #[test]
    fn palette_with_transparency_and_16_bit_grey_alpha() {
        let dir = tempfile::tempdir().expect("tmp");
        let pal = dir.path().join("p.png");
        write_png(
            &pal,
            2,
            1,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &[0, 1],
        );
        let icon = read_icon(&pal).expect("palette");
        assert_eq!([icon.at(0, 0, 0), icon.at(3, 0, 0)], [1.0, 1.0]);
        assert_eq!(icon.at(3, 0, 1), 0.0);
        let grey = dir.path().join("g.png");
        // One pixel: grey 0x8000, alpha 0xFFFF.
        write_png(
            &grey,
            1,
            1,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Sixteen,
            &[0x80, 0, 0xFF, 0xFF],
        );
        let icon = read_icon(&grey).expect("grey16");
        assert_eq!(icon.at(1, 0, 0), 128.0 / 255.0);
        assert_eq!(icon.at(3, 0, 0), 1.0);
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("nope.png");
        let e = format!("{:#}", read_icon(&missing).expect_err("missing"));
        assert!(e.contains("nope.png") && e.contains("no such file"), "{e}");

        let rgb = dir.path().join("opaque.png");
        write_png(
            &rgb,
            1,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &[1, 2, 3],
        );
        let e = format!("{:#}", read_icon(&rgb).expect_err("no alpha"));
        assert!(
            e.contains("opaque.png") && e.contains("no alpha channel"),
            "{e}"
        );
        assert!(e.contains("save the icon with transparency"), "{e}");

        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"GIF89a not a png").expect("write");
        let e = format!("{:#}", read_icon(&junk).expect_err("junk"));
        assert!(
            e.contains("junk.png") && e.contains("not a readable PNG"),
            "{e}"
        );

        let clear = dir.path().join("clear.png");
        write_png(
            &clear,
            1,
            1,
            png::ColorType::Rgba,
            png::BitDepth::Eight,
            &[9, 9, 9, 0],
        );
        let e = format!("{:#}", read_icon(&clear).expect_err("clear"));
        assert!(e.contains("fully transparent"), "{e}");
    }
}
