//! Colours: the categorical palette for series and the continuous colormaps for images and speeds.
//!
//! Kept in one place so every figure uses the same colour for "learned", "random", ... when callers pass
//! series in the same order, and so colormaps are defined once by control points (no external tables).

use plotters::style::RGBColor;

/// Categorical palette (Tableau 10), used for series in order.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The `i`-th palette colour (wrapping around).
pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Builds a colour from a `0xRRGGBB` literal (e.g. `hex(0x9BE1E1)`).
pub const fn hex(v: u32) -> RGBColor {
    RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

/// Continuous colormaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// Perceptually uniform dark-blue -> green -> yellow (matplotlib's viridis), for magnitudes.
    Viridis,
    /// Diverging blue -> white -> red (matplotlib's RdBu reversed), for signed maps centred on 0.
    Diverging,
    /// Greyscale black -> white.
    Gray,
}

const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

const DIVERGING: [(u8, u8, u8); 9] = [
    (5, 48, 97),
    (33, 102, 172),
    (67, 147, 195),
    (146, 197, 222),
    (247, 247, 247),
    (244, 165, 130),
    (214, 96, 77),
    (178, 24, 43),
    (103, 0, 31),
];

impl Colormap {
    /// The colour at `t` in [0, 1] (clamped; NaN maps to the low end).
    pub fn at(self, t: f64) -> RGBColor {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let table: &[(u8, u8, u8)] = match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::Diverging => &DIVERGING,
            Colormap::Gray => &[(0, 0, 0), (255, 255, 255)],
        };
        let x = t * (table.len() - 1) as f64;
        let i = (x.floor() as usize).min(table.len() - 2);
        let f = x - i as f64;
        let (a, b) = (table[i], table[i + 1]);
        let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
        RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

/// Linear blend of two colours: `t = 0` gives `a`, `t = 1` gives `b`.
pub fn mix(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let m = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * t).round() as u8;
    RGBColor(m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends() {
        assert_eq!(Colormap::Viridis.at(0.0), RGBColor(68, 1, 84));
        assert_eq!(Colormap::Viridis.at(1.0), RGBColor(253, 231, 37));
        assert_eq!(Colormap::Diverging.at(0.5), RGBColor(247, 247, 247));
        assert_eq!(Colormap::Gray.at(f64::NAN), RGBColor(0, 0, 0));
    }
}
