//! The artificial-life dataset (spec §8): "creatures" (icons) pasted at random centres and rotations on a
//! white periodic canvas, never overlapping.
//!
//! An [`Icon`] is straight (non-premultiplied) RGBA in `[0, 1]`, channel-major `[4, H, W]`. Icons come from
//! a user's PNG (read by `io::icon`) or are drawn here procedurally ([`BuiltinIcon`]): every built-in shape
//! is a function of continuous coordinates inside the icon's inscribed circle, sampled with 4x4
//! supersampling at the requested size and angle, so rotated built-ins stay crisp and never crop. Image
//! icons are resampled ([`resize`], [`rotate`]) with bilinear or nearest sampling of premultiplied RGBA.
//!
//! Canvases ([`generate_canvas`]) are white `[3, H, W]` fields in `[-1, 1]` on a torus: an icon that crosses
//! an edge reappears on the other side. Non-overlap is pixel-exact: an occupancy mask records every pixel an
//! icon touches (alpha ≥ [`FOOTPRINT_ALPHA`]; fainter pixels are dropped from the sprite so the footprint is
//! exactly what is painted), and a placement that would touch an occupied pixel is retried at another
//! centre, up to `max_tries` times; the canvas reports how many icons were placed. Batches
//! ([`generate_canvases`]) run in parallel with one RNG substream per canvas index, so a canvas depends
//! only on (seed, index), never on the thread count or the batch it was generated in.
//!
//! Coordinates: x = column, y = row (y points down), pixel (i, j) has its centre at (j + 0.5, i + 0.5). An
//! angle θ turns the icon's "forward" (+x, where `firefly` has its head) to (cos θ, sin θ) in these
//! coordinates, i.e. clockwise on screen.

use rand::Rng as _;
use rayon::prelude::*;

use crate::science::rng::{substream, Rng};

/// Pixels of a sprite with alpha below this are not painted and do not count as occupied.
pub const FOOTPRINT_ALPHA: f32 = 1.0 / 255.0;

/// Straight RGBA in `[0, 1]`, channel-major `[4, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Icon {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `4 * height * width` values: the R, G, B and A planes.
    pub data: Vec<f32>,
}

impl Icon {
    /// A fully transparent icon.
    pub fn transparent(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![0.0; 4 * height * width],
        }
    }

    /// Channel `c` (0 R, 1 G, 2 B, 3 A) at row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The alpha plane `[height, width]`.
    pub fn alpha(&self) -> &[f32] {
        let n = self.height * self.width;
        &self.data[3 * n..4 * n]
    }

    /// Premultiplied RGBA at (y, x); transparent outside.
    fn premul(&self, y: i64, x: i64) -> [f32; 4] {
        if y < 0 || x < 0 || y >= self.height as i64 || x >= self.width as i64 {
            return [0.0; 4];
        }
        let (y, x) = (y as usize, x as usize);
        let a = self.at(3, y, x);
        [
            self.at(0, y, x) * a,
            self.at(1, y, x) * a,
            self.at(2, y, x) * a,
            a,
        ]
    }

    /// The icon composited over white, as `[3, height, width]` in `[-1, 1]` (for insets and previews).
    pub fn over_white(&self) -> Vec<f32> {
        let n = self.height * self.width;
        let mut out = vec![0.0; 3 * n];
        for c in 0..3 {
            for i in 0..n {
                let a = self.data[3 * n + i];
                out[c * n + i] = 2.0 * (a * self.data[c * n + i] + 1.0 - a) - 1.0;
            }
        }
        out
    }
}

/// The procedurally drawn creatures of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinIcon {
    /// A disc shading from white (left, its back) to cyan (right, its front), with a thin teal rim.
    Dot,
    /// A cyan disc above a red disc.
    Dots,
    /// A soft capsule lying along +x: cyan head at the front (right), red tail behind.
    Firefly,
    /// A yin-yang (taiji) with a dark outline.
    Taiji,
}

impl BuiltinIcon {
    /// All built-in icons, in the order figures show them.
    pub const ALL: [BuiltinIcon; 4] = [Self::Dot, Self::Dots, Self::Firefly, Self::Taiji];

    /// The name used in configs (`dot`, `dots`, `firefly`, `taiji`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dot => "dot",
            Self::Dots => "dots",
            Self::Firefly => "firefly",
            Self::Taiji => "taiji",
        }
    }

    /// Parses a config name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Straight RGB and coverage at a point (u, v) of the unit disc (u right, v down; the icon fills
    /// radius 1). Coverage is 0 or 1 except where an edge is meant to be soft.
    fn shade(self, u: f32, v: f32) -> ([f32; 3], f32) {
        const CYAN: [f32; 3] = [0.0, 0.74, 0.86];
        const RED: [f32; 3] = [0.90, 0.20, 0.20];
        const TEAL: [f32; 3] = [0.0, 0.42, 0.52];
        const INK: [f32; 3] = [0.10, 0.10, 0.13];
        const WHITE: [f32; 3] = [1.0, 1.0, 1.0];
        let r = (u * u + v * v).sqrt();
        match self {
            Self::Dot => {
                let (radius, rim) = (0.92, 0.10);
                if r > radius {
                    return (WHITE, 0.0);
                }
                if r > radius - rim {
                    return (TEAL, 1.0);
                }
                let t = ((u + radius) / (2.0 * radius)).clamp(0.0, 1.0);
                (mix(WHITE, CYAN, t.powf(0.8)), 1.0)
            }
            Self::Dots => {
                let (radius, off, rim) = (0.47, 0.45, 0.08);
                for (cy, col) in [(-off, CYAN), (off, RED)] {
                    let d = (u * u + (v - cy) * (v - cy)).sqrt();
                    if d <= radius {
                        let col = if d > radius - rim {
                            mix(col, INK, 0.45)
                        } else {
                            // A soft highlight towards the upper left gives the discs some volume.
                            let h = ((u + 0.15).powi(2) + (v - cy + 0.15).powi(2)).sqrt() / radius;
                            mix(WHITE, col, (0.55 + h).min(1.0))
                        };
                        return (col, 1.0);
                    }
                }
                (WHITE, 0.0)
            }
            Self::Firefly => {
                // Distance to the segment [-0.5, 0.5] x {0}; body radius 0.36, soft glow out to 0.48.
                let (half, body, glow) = (0.52, 0.34, 0.46);
                let cu = u.clamp(-half, half);
                let d = ((u - cu).powi(2) + v * v).sqrt();
                if d > glow {
                    return (WHITE, 0.0);
                }
                let t = ((u + half) / (2.0 * half)).clamp(0.0, 1.0);
                let s = smoothstep(0.35, 0.65, t);
                let col = mix(RED, CYAN, s);
                if d <= body {
                    // Slightly lighter along the spine.
                    let spine = 1.0 - d / body;
                    (mix(col, WHITE, 0.25 * spine * spine), 1.0)
                } else {
                    let a = 1.0 - smoothstep(body, glow, d);
                    (col, a * 0.85)
                }
            }
            Self::Taiji => {
                let (radius, ring) = (0.94, 0.08);
                if r > radius {
                    return (WHITE, 0.0);
                }
                if r > radius - ring {
                    return (INK, 1.0);
                }
                let big = radius - ring;
                let half = big / 2.0;
                let eye = big / 6.0;
                let d_top = (u * u + (v + half).powi(2)).sqrt();
                let d_bot = (u * u + (v - half).powi(2)).sqrt();
                // The upper lobe is dark with a light eye, the lower light with a dark eye.
                let dark = if d_top <= eye {
                    false
                } else if d_bot <= eye || d_top <= half {
                    true
                } else if d_bot <= half {
                    false
                } else {
                    u < 0.0
                };
                (if dark { INK } else { WHITE }, 1.0)
            }
        }
    }
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Supersampling per axis for procedural icons.
const SUPERSAMPLE: usize = 4;

/// A built-in icon drawn at `size x size` pixels, turned by `angle` radians (see the module docs).
pub fn builtin_icon(kind: BuiltinIcon, size: usize, angle: f64) -> Icon {
    let mut icon = Icon::transparent(size, size);
    let n = size * size;
    let half = size as f32 / 2.0;
    let (sin, cos) = (angle as f32).sin_cos();
    let ss = SUPERSAMPLE;
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0.0f32; 4];
            for sy in 0..ss {
                for sx in 0..ss {
                    let px = x as f32 + (sx as f32 + 0.5) / ss as f32 - half;
                    let py = y as f32 + (sy as f32 + 0.5) / ss as f32 - half;
                    // Inverse rotation: the local frame sees the point turned back by -angle.
                    let u = (cos * px + sin * py) / half;
                    let v = (-sin * px + cos * py) / half;
                    let (rgb, a) = kind.shade(u, v);
                    for c in 0..3 {
                        acc[c] += rgb[c] * a;
                    }
                    acc[3] += a;
                }
            }
            let k = (ss * ss) as f32;
            store_premul(&mut icon.data, n, y * size + x, acc.map(|v| v / k));
        }
    }
    icon
}

/// Writes premultiplied RGBA as straight RGBA, dropping pixels fainter than [`FOOTPRINT_ALPHA`].
fn store_premul(data: &mut [f32], n: usize, i: usize, p: [f32; 4]) {
    let a = p[3].clamp(0.0, 1.0);
    if a < FOOTPRINT_ALPHA {
        for c in 0..4 {
            data[c * n + i] = 0.0;
        }
        return;
    }
    for c in 0..3 {
        data[c * n + i] = (p[c] / a).clamp(0.0, 1.0);
    }
    data[3 * n + i] = a;
}

/// How an image icon is sampled when resized or rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Bilinear interpolation of premultiplied RGBA (smooth edges).
    #[default]
    Bilinear,
    /// Nearest pixel (hard edges, colours exactly those of the source).
    Nearest,
}

/// Samples premultiplied RGBA at continuous source coordinates (x, y) (pixel centres at +0.5).
fn sample(icon: &Icon, x: f32, y: f32, sampling: Sampling) -> [f32; 4] {
    match sampling {
        Sampling::Nearest => icon.premul(y.floor() as i64, x.floor() as i64),
        Sampling::Bilinear => {
            let (fx, fy) = (x - 0.5, y - 0.5);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (tx, ty) = (fx - x0, fy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut out = [0.0; 4];
            for (dy, wy) in [(0, 1.0 - ty), (1, ty)] {
                for (dx, wx) in [(0, 1.0 - tx), (1, tx)] {
                    let p = icon.premul(y0 + dy, x0 + dx);
                    for c in 0..4 {
                        out[c] += wx * wy * p[c];
                    }
                }
            }
            out
        }
    }
}

/// Resamples `icon` through an affine map: output pixel centre p goes to source `centre_src + m (p -
/// centre_out)`; `ss` samples per axis per output pixel.
fn transform(
    icon: &Icon,
    out_h: usize,
    out_w: usize,
    m: [[f32; 2]; 2],
    ss: usize,
    sampling: Sampling,
) -> Icon {
    let mut out = Icon::transparent(out_h, out_w);
    let n = out_h * out_w;
    let (cox, coy) = (out_w as f32 / 2.0, out_h as f32 / 2.0);
    let (csx, csy) = (icon.width as f32 / 2.0, icon.height as f32 / 2.0);
    for y in 0..out_h {
        for x in 0..out_w {
            let mut acc = [0.0f32; 4];
            for sy in 0..ss {
                for sx in 0..ss {
                    let px = x as f32 + (sx as f32 + 0.5) / ss as f32 - cox;
                    let py = y as f32 + (sy as f32 + 0.5) / ss as f32 - coy;
                    let qx = csx + m[0][0] * px + m[0][1] * py;
                    let qy = csy + m[1][0] * px + m[1][1] * py;
                    let p = sample(icon, qx, qy, sampling);
                    for c in 0..4 {
                        acc[c] += p[c];
                    }
                }
            }
            let k = (ss * ss) as f32;
            store_premul(&mut out.data, n, y * out_w + x, acc.map(|v| v / k));
        }
    }
    out
}

/// Rotates `icon` by `angle` radians (module convention) into a square just large enough to hold it
/// whole, sampling with `sampling` (one sample per output pixel).
pub fn rotate(icon: &Icon, angle: f64, sampling: Sampling) -> Icon {
    let (sin, cos) = angle.sin_cos();
    let (h, w) = (icon.height as f64, icon.width as f64);
    let bw = (w * cos.abs() + h * sin.abs() - 1e-9).ceil().max(1.0) as usize;
    let bh = (w * sin.abs() + h * cos.abs() - 1e-9).ceil().max(1.0) as usize;
    let (s, c) = (sin as f32, cos as f32);
    transform(icon, bh, bw, [[c, s], [-s, c]], 1, sampling)
}

/// Scales `icon` so that its longer side is `size` pixels (aspect kept), box-filtering when shrinking.
pub fn resize(icon: &Icon, size: usize, sampling: Sampling) -> Icon {
    let long = icon.height.max(icon.width).max(1);
    let k = long as f32 / size.max(1) as f32;
    let oh = ((icon.height as f32 / k).round() as usize).max(1);
    let ow = ((icon.width as f32 / k).round() as usize).max(1);
    let ss = (k.ceil() as usize).clamp(1, 8);
    transform(icon, oh, ow, [[k, 0.0], [0.0, k]], ss, sampling)
}

/// Where a creature comes from: a built-in drawing or an image (any size; resized per placement).
#[derive(Debug, Clone, PartialEq)]
pub enum IconSource {
    /// Drawn procedurally at every size and angle.
    Builtin(BuiltinIcon),
    /// A user's icon; resized so that its longer side is the icon size, then rotated.
    Image(Icon),
}

impl IconSource {
    /// The sprite for one placement: `size` pixels across (before rotation), turned by `angle`.
    pub fn render(&self, size: usize, angle: f64, sampling: Sampling) -> Icon {
        match self {
            Self::Builtin(kind) => builtin_icon(*kind, size, angle),
            Self::Image(icon) => {
                let scaled = resize(icon, size, sampling);
                if angle == 0.0 {
                    scaled
                } else {
                    rotate(&scaled, angle, sampling)
                }
            }
        }
    }
}

/// How canvases are drawn.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CanvasConfig {
    /// Canvas rows (128).
    pub height: usize,
    /// Canvas columns (128).
    pub width: usize,
    /// Icons per canvas, drawn uniformly from `[min, max]` (7-11).
    pub icons: (usize, usize),
    /// Icon size in pixels (longer side before rotation), uniform per icon in `[min, max]` (12-22).
    pub icon_size: (usize, usize),
    /// Turn every icon by a uniform random angle.
    pub rotate: bool,
    /// Sampling of image icons (built-ins are always drawn supersampled).
    pub sampling: Sampling,
    /// Centres tried per icon before giving up on it (200).
    pub max_tries: usize,
}

impl Default for CanvasConfig {
    fn default() -> Self {
        Self {
            height: 128,
            width: 128,
            icons: (7, 11),
            icon_size: (12, 22),
            rotate: true,
            sampling: Sampling::Bilinear,
            max_tries: 200,
        }
    }
}

/// One placed icon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Centre (x, y) in canvas pixel coordinates, wrapped into the canvas.
    pub centre: [f64; 2],
    /// Rotation in radians.
    pub angle: f64,
    /// Icon size in pixels.
    pub size: usize,
}

/// A generated canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    /// `[3, height, width]` RGB in `[-1, 1]` (white = 1).
    pub data: Vec<f32>,
    /// The icons placed, in drawing order.
    pub placed: Vec<Placement>,
    /// How many icons were asked for (placed may be fewer when the canvas filled up).
    pub requested: usize,
    /// Per pixel, the index of the icon covering it (`u16::MAX` for background): the occupancy mask.
    pub owner: Vec<u16>,
}

/// Draws one canvas with `rng` (see the module docs for the placement rules).
pub fn generate_canvas(source: &IconSource, cfg: &CanvasConfig, rng: &mut Rng) -> Canvas {
    let (h, w) = (cfg.height, cfg.width);
    let n = h * w;
    let mut rgb = vec![1.0f32; 3 * n];
    let mut owner = vec![u16::MAX; n];
    let requested = rng.gen_range(cfg.icons.0..=cfg.icons.1.max(cfg.icons.0));
    let mut placed = Vec::with_capacity(requested);
    for _ in 0..requested {
        let size = rng.gen_range(cfg.icon_size.0..=cfg.icon_size.1.max(cfg.icon_size.0));
        let angle = if cfg.rotate {
            rng.gen_range(0.0..std::f64::consts::TAU)
        } else {
            0.0
        };
        let sprite = source.render(size, angle, cfg.sampling);
        let foot: Vec<(usize, usize)> = (0..sprite.height)
            .flat_map(|y| (0..sprite.width).map(move |x| (y, x)))
            .filter(|&(y, x)| sprite.at(3, y, x) >= FOOTPRINT_ALPHA)
            .collect();
        for _ in 0..cfg.max_tries {
            let (oy, ox) = (rng.gen_range(0..h), rng.gen_range(0..w));
            let cell = |y: usize, x: usize| ((oy + y) % h) * w + (ox + x) % w;
            if foot.iter().any(|&(y, x)| owner[cell(y, x)] != u16::MAX) {
                continue;
            }
            let id = placed.len() as u16;
            for &(y, x) in &foot {
                let i = cell(y, x);
                owner[i] = id;
                let a = sprite.at(3, y, x);
                for c in 0..3 {
                    rgb[c * n + i] = a * sprite.at(c, y, x) + (1.0 - a) * rgb[c * n + i];
                }
            }
            let cx = (ox as f64 + sprite.width as f64 / 2.0).rem_euclid(w as f64);
            let cy = (oy as f64 + sprite.height as f64 / 2.0).rem_euclid(h as f64);
            placed.push(Placement {
                centre: [cx, cy],
                angle,
                size,
            });
            break;
        }
    }
    for v in &mut rgb {
        *v = 2.0 * *v - 1.0;
    }
    Canvas {
        data: rgb,
        placed,
        requested,
        owner,
    }
}

/// Canvases `first .. first + count` of the dataset for `seed`, in parallel; canvas i uses the RNG substream
/// `substream(seed, "icons", i)`, so the result does not depend on threads or batching.
pub fn generate_canvases(
    source: &IconSource,
    cfg: &CanvasConfig,
    seed: u64,
    first: u64,
    count: usize,
) -> Vec<Canvas> {
    (0..count as u64)
        .into_par_iter()
        .map(|k| {
            let mut rng = substream(seed, "icons", first + k);
            generate_canvas(source, cfg, &mut rng)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_at(icon: &Icon, u: f32, v: f32) -> [f32; 4] {
        // (u, v) in [-1, 1] relative to the centre.
        let s = icon.width as f32;
        let x = ((u + 1.0) * 0.5 * s).floor().clamp(0.0, s - 1.0) as usize;
        let y = ((v + 1.0) * 0.5 * s).floor().clamp(0.0, s - 1.0) as usize;
        [
            icon.at(0, y, x),
            icon.at(1, y, x),
            icon.at(2, y, x),
            icon.at(3, y, x),
        ]
    }

    fn is_cyan(p: [f32; 4]) -> bool {
        p[3] > 0.9 && p[0] < 0.4 && p[1] > 0.5 && p[2] > 0.6
    }

    fn is_red(p: [f32; 4]) -> bool {
        p[3] > 0.9 && p[0] > 0.6 && p[1] < 0.4 && p[2] < 0.4
    }

    #[test]
    fn names_round_trip() {
        for b in BuiltinIcon::ALL {
            assert_eq!(BuiltinIcon::from_name(b.name()), Some(b));
        }
        assert_eq!(BuiltinIcon::from_name("cat"), None);
    }

    #[test]
    fn dot_shades_white_to_cyan_left_to_right() {
        let icon = builtin_icon(BuiltinIcon::Dot, 64, 0.0);
        let left = rgb_at(&icon, -0.6, 0.0);
        let right = rgb_at(&icon, 0.6, 0.0);
        assert!(left[3] > 0.99 && right[3] > 0.99);
        // White has R = 1, cyan R = 0: the red channel falls from left to right.
        assert!(left[0] > 0.6, "left {left:?}");
        assert!(is_cyan(right), "right {right:?}");
        assert!(left[0] - right[0] > 0.4);
        // Corners are transparent, the centre opaque.
        assert_eq!(rgb_at(&icon, -0.99, -0.99)[3], 0.0);
        assert_eq!(rgb_at(&icon, 0.0, 0.0)[3], 1.0);
    }

    #[test]
    fn dots_is_cyan_above_red() {
        let icon = builtin_icon(BuiltinIcon::Dots, 48, 0.0);
        assert!(is_cyan(rgb_at(&icon, 0.0, -0.5)), "upper disc");
        assert!(is_red(rgb_at(&icon, 0.0, 0.5)), "lower disc");
        assert_eq!(rgb_at(&icon, 0.8, 0.0)[3], 0.0, "transparent beside");
    }

    #[test]
    fn firefly_has_cyan_head_and_red_tail_and_turns() {
        let icon = builtin_icon(BuiltinIcon::Firefly, 48, 0.0);
        assert!(is_cyan(rgb_at(&icon, 0.6, 0.0)), "head");
        assert!(is_red(rgb_at(&icon, -0.6, 0.0)), "tail");
        assert_eq!(rgb_at(&icon, 0.0, 0.8)[3], 0.0, "thin across");
        // Turned by 90 degrees the head points down (+y).
        let down = builtin_icon(BuiltinIcon::Firefly, 48, std::f64::consts::FRAC_PI_2);
        assert!(is_cyan(rgb_at(&down, 0.0, 0.6)), "head after turn");
        assert!(is_red(rgb_at(&down, 0.0, -0.6)), "tail after turn");
    }

    #[test]
    fn taiji_is_point_antisymmetric() {
        let s = 64;
        let icon = builtin_icon(BuiltinIcon::Taiji, s, 0.0);
        let (mut dark, mut light, mut checked) = (0, 0, 0);
        for y in 0..s {
            for x in 0..s {
                let (u, v) = (
                    (x as f32 + 0.5) / s as f32 * 2.0 - 1.0,
                    (y as f32 + 0.5) / s as f32 * 2.0 - 1.0,
                );
                // Inside the ring only, away from anti-aliased edges.
                let lum = |yy: usize, xx: usize| icon.at(0, yy, xx);
                if (u * u + v * v).sqrt() > 0.8 {
                    continue;
                }
                let (a, b) = (lum(y, x), lum(s - 1 - y, s - 1 - x));
                let clear = |t: f32| !(0.2..=0.9).contains(&t);
                if a < 0.2 {
                    dark += 1;
                } else if a > 0.9 {
                    light += 1;
                }
                if clear(a) && clear(b) {
                    checked += 1;
                    assert!((a < 0.5) != (b < 0.5), "pixel ({x},{y}) and its mirror");
                }
            }
        }
        assert!(checked > 1800, "{checked}");
        let ratio = dark as f64 / light as f64;
        assert!((ratio - 1.0).abs() < 0.05, "dark {dark} light {light}");
    }

    #[test]
    fn rotate_keeps_the_whole_icon_and_nearest_keeps_colours() {
        let icon = builtin_icon(BuiltinIcon::Dots, 20, 0.0);
        let mass: f32 = icon.alpha().iter().sum();
        let r = rotate(&icon, 0.7, Sampling::Bilinear);
        assert!(r.width >= 20 && r.width <= 29, "{}", r.width);
        let rmass: f32 = r.alpha().iter().sum();
        assert!((rmass - mass).abs() / mass < 0.03, "{mass} vs {rmass}");
        // A quarter turn with nearest sampling is an exact pixel permutation.
        let q = rotate(&icon, std::f64::consts::FRAC_PI_2, Sampling::Nearest);
        assert_eq!((q.height, q.width), (20, 20));
        for y in 0..20 {
            for x in 0..20 {
                for c in 0..4 {
                    // Output (x, y) samples source (y, 19 - x) under the clockwise turn.
                    let a = icon.at(c, 19 - x, y) * icon.at(3, 19 - x, y);
                    let b = q.at(c, y, x) * q.at(3, y, x);
                    assert!((a - b).abs() < 1e-5, "({x},{y}) c{c}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn resize_shrinks_by_area() {
        let big = builtin_icon(BuiltinIcon::Dot, 80, 0.0);
        let small = resize(&big, 20, Sampling::Bilinear);
        assert_eq!((small.height, small.width), (20, 20));
        let frac_big: f32 = big.alpha().iter().sum::<f32>() / 6400.0;
        let frac_small: f32 = small.alpha().iter().sum::<f32>() / 400.0;
        assert!(
            (frac_big - frac_small).abs() < 0.02,
            "{frac_big} {frac_small}"
        );
        assert!(is_cyan(rgb_at(&small, 0.6, 0.0)));
    }

    #[test]
    fn canvases_do_not_overlap_and_are_in_range() {
        let cfg = CanvasConfig::default();
        for kind in BuiltinIcon::ALL {
            let canvases = generate_canvases(&IconSource::Builtin(kind), &cfg, 3, 0, 6);
            for cv in &canvases {
                assert_eq!(cv.data.len(), 3 * 128 * 128);
                assert!(cv.data.iter().all(|v| (-1.0..=1.0).contains(v)));
                assert!((7..=11).contains(&cv.requested));
                assert_eq!(cv.placed.len(), cv.requested, "{} fits easily", kind.name());
                // Re-render every sprite at its offset and sum alpha masks on the torus: at most 1.
                let mut sum = vec![0.0f32; 128 * 128];
                for p in &cv.placed {
                    let sprite = builtin_icon(kind, p.size, p.angle);
                    let ox = (p.centre[0] - sprite.width as f64 / 2.0).round() as i64;
                    let oy = (p.centre[1] - sprite.height as f64 / 2.0).round() as i64;
                    for y in 0..sprite.height {
                        for x in 0..sprite.width {
                            let cy = (oy + y as i64).rem_euclid(128) as usize;
                            let cx = (ox + x as i64).rem_euclid(128) as usize;
                            sum[cy * 128 + cx] += sprite.at(3, y, x);
                        }
                    }
                }
                let max = sum.iter().cloned().fold(0.0, f32::max);
                assert!(max <= 1.0 + 1e-6, "alpha sum {max}");
                assert!(max > 0.99);
                let mut owned = vec![0usize; cv.placed.len()];
                for o in &cv.owner {
                    if *o != u16::MAX {
                        owned[*o as usize] += 1;
                    }
                }
                for (p, &count) in cv.placed.iter().zip(&owned) {
                    let sprite = builtin_icon(kind, p.size, p.angle);
                    let foot = sprite.alpha().iter().filter(|&&a| a > 0.0).count();
                    assert_eq!(count, foot, "every footprint pixel owned by its icon alone");
                }
                // Background stays exactly white.
                let n = 128 * 128;
                for i in 0..n {
                    if cv.owner[i] == u16::MAX {
                        assert_eq!([cv.data[i], cv.data[n + i], cv.data[2 * n + i]], [1.0; 3]);
                    }
                }
            }
        }
    }

    #[test]
    fn crowded_canvas_reports_fewer_placed() {
        let cfg = CanvasConfig {
            height: 32,
            width: 32,
            icons: (30, 30),
            icon_size: (12, 12),
            max_tries: 50,
            ..CanvasConfig::default()
        };
        let cv = generate_canvas(
            &IconSource::Builtin(BuiltinIcon::Dot),
            &cfg,
            &mut crate::science::rng::stream(1, "t"),
        );
        assert_eq!(cv.requested, 30);
        assert!(
            cv.placed.len() < 30 && !cv.placed.is_empty(),
            "{}",
            cv.placed.len()
        );
    }

    #[test]
    fn canvases_are_identical_whatever_the_thread_count() {
        let src = IconSource::Builtin(BuiltinIcon::Firefly);
        let cfg = CanvasConfig::default();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool")
            .install(|| generate_canvases(&src, &cfg, 11, 0, 5));
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool")
            .install(|| generate_canvases(&src, &cfg, 11, 0, 5));
        assert_eq!(one, many);
        // Batching does not matter either: canvas 3 alone equals canvas 3 of the batch.
        let alone = generate_canvases(&src, &cfg, 11, 3, 1);
        assert_eq!(alone[0], one[3]);
        assert_ne!(one[0].data, one[1].data);
    }

    #[test]
    fn image_icons_are_placed_with_alpha() {
        // A 10x6 opaque red rectangle with a transparent border.
        let mut icon = Icon::transparent(8, 12);
        for y in 1..7 {
            for x in 1..11 {
                for (c, v) in [(0, 0.9), (1, 0.1), (2, 0.1), (3, 1.0)] {
                    icon.data[(c * 8 + y) * 12 + x] = v;
                }
            }
        }
        let cfg = CanvasConfig {
            icons: (5, 5),
            ..CanvasConfig::default()
        };
        let cv = generate_canvas(
            &IconSource::Image(icon),
            &cfg,
            &mut crate::science::rng::stream(2, "t"),
        );
        assert_eq!(cv.placed.len(), 5);
        let n = 128 * 128;
        let reddish = (0..n)
            .filter(|&i| cv.data[i] > 0.5 && cv.data[n + i] < -0.5)
            .count();
        assert!(reddish > 5 * 40, "{reddish}");
    }

    /// Writes a contact sheet of the icons (large and at dataset size) and a canvas per icon to
    /// `/tmp/alife-samples/` for people to look at (best effort; the assertions are elsewhere).
    #[test]
    fn render_samples() {
        use crate::render::{contact_sheet, rgb_canvas, FieldRange};
        use plotters::style::RGBColor;
        let dir = std::env::temp_dir().join("alife-samples");
        let _ = std::fs::create_dir_all(&dir);
        let grey = RGBColor(200, 200, 200);
        let mut cells = Vec::new();
        for size in [96, 18] {
            for kind in BuiltinIcon::ALL {
                let icon = builtin_icon(kind, size, 0.0);
                let img = rgb_canvas(&icon.over_white(), size, size, FieldRange::MinusOneOne)
                    .expect("icon image");
                cells.push(img.upscale(if size < 96 { 5 } else { 1 }));
            }
        }
        let sheet = contact_sheet(&cells, 4, 8, grey).expect("sheet");
        sheet
            .save_png(&dir.join("icons.png"))
            .expect("write icons.png");
        let mut canvases = Vec::new();
        for kind in BuiltinIcon::ALL {
            let cv = &generate_canvases(
                &IconSource::Builtin(kind),
                &CanvasConfig::default(),
                0,
                0,
                1,
            )[0];
            let img = rgb_canvas(&cv.data, 128, 128, FieldRange::MinusOneOne).expect("canvas");
            canvases.push(img.upscale(3));
        }
        let sheet = contact_sheet(&canvases, 2, 8, grey).expect("sheet");
        sheet
            .save_png(&dir.join("canvases.png"))
            .expect("write canvases.png");
    }
}
