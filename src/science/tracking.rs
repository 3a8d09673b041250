//! Finding creatures in frames and following them over time (spec §8), on a periodic canvas.
//!
//! Detection works on one RGB frame `[3, H, W]` in `[-1, 1]` (in practice a denoised, EMA-smoothed SDE
//! frame). The background is white, so a pixel's "creature-ness" is its distance from white: `1 - min_c
//! (x_c + 1) / 2`, which is 0 on white and close to 1 on any saturated colour (cyan, red) or on black,
//! whatever the hue, so one threshold serves every icon. Pixels above `threshold` are grouped into
//! 8-connected components on the torus (a blob crossing an edge is one blob, found with union-find over
//! wrapped neighbours); components whose area lies outside `[min_area, max_area]` are dropped (noise specks
//! below, merged clumps or a filled canvas above). Holes are filled first: white patches enclosed by a
//! creature (the light half of the taiji, the white back of the dot) belong to it, so a creature is one
//! blob centred where it is drawn. A blob's centroid is the mean of
//! its pixel centres weighted by creature-ness (at least the threshold, so filled holes count), after unwrapping them around a reference (the circular mean of the blob), so blobs
//! split by an edge get their true centre, wrapped back into the canvas.
//!
//! Linking connects detections frame to frame: every (track, detection) pair within `max_disp` pixels per
//! elapsed frame (periodic minimum-image distance to the track's last position) is a candidate; candidates
//! are taken greedily, nearest first, each track and detection at most once. This is the optimal
//! assignment whenever creatures are farther apart than they move per frame, the regime the tracker is for.
//! Unmatched detections start tracks; a track survives `max_gap` frames without a detection and is closed
//! after that. Positions are stored unwrapped (each step adds the minimum-image displacement), so a creature
//! crossing an edge keeps moving continuously and velocities need no special case.
//!
//! Coordinates: x = column, y = row, pixel (i, j) has its centre at (j + 0.5, i + 0.5); velocities are in
//! pixels per frame.

/// Detection settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectConfig {
    /// Creature-ness above which a pixel belongs to a creature (0.25: clearly not white).
    pub threshold: f32,
    /// Smallest blob kept, in pixels (8).
    pub min_area: usize,
    /// Largest blob kept, in pixels (1,000; an icon of 22 px covers at most ~400).
    pub max_area: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            threshold: 0.25,
            min_area: 8,
            max_area: 1000,
        }
    }
}

/// One detected creature in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blob {
    /// Centroid (x, y), wrapped into the canvas.
    pub centroid: [f64; 2],
    /// Pixels in the component.
    pub area: usize,
    /// Mean creature-ness over the component.
    pub strength: f64,
    /// Mean RGB colour in `[-1, 1]` over the component's pixels (filled holes included); zero when detected
    /// in a bare creature-ness map ([`detect_in_map`]), which has no colours.
    pub colour: [f64; 3],
}

/// Creature-ness `[H, W]` of an RGB frame `[3, H, W]` in `[-1, 1]`: `1 - min_c (x_c + 1) / 2`, clamped to
/// `[0, 1]` (0 = white background).
pub fn creatureness(frame: &[f32], h: usize, w: usize) -> Vec<f32> {
    let n = h * w;
    assert_eq!(frame.len(), 3 * n, "frame must be [3, {h}, {w}]");
    (0..n)
        .map(|i| {
            let m = frame[i].min(frame[n + i]).min(frame[2 * n + i]);
            (1.0 - (m + 1.0) * 0.5).clamp(0.0, 1.0)
        })
        .collect()
}

/// 8-connected components of `mask [H, W]` on the torus. Returns a label per pixel (`u32::MAX` where the
/// mask is false; labels `0..count` in order of first pixel, row-major) and the count.
pub fn label_components(mask: &[bool], h: usize, w: usize) -> (Vec<u32>, usize) {
    label(mask, h, w, true)
}

/// Connected components on the torus, 8-connected when `diagonal`, else 4-connected.
fn label(mask: &[bool], h: usize, w: usize, diagonal: bool) -> (Vec<u32>, usize) {
    let n = h * w;
    assert_eq!(mask.len(), n, "mask must be [{h}, {w}]");
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !mask[i] {
                continue;
            }
            // Forward half of the 8-neighbourhood, wrapped; the other half is visited from the neighbour.
            let steps: &[(usize, usize)] = if diagonal {
                &[(0, 1), (1, w - 1), (1, 0), (1, 1)]
            } else {
                &[(0, 1), (1, 0)]
            };
            for &(dy, dx) in steps {
                let j = ((y + dy) % h) * w + (x + dx) % w;
                if mask[j] {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        parent[a.max(b)] = a.min(b);
                    }
                }
            }
        }
    }
    let mut labels = vec![u32::MAX; n];
    let mut root_label = vec![u32::MAX; n];
    let mut count = 0;
    for i in 0..n {
        if mask[i] {
            let r = find(&mut parent, i);
            if root_label[r] == u32::MAX {
                root_label[r] = count as u32;
                count += 1;
            }
            labels[i] = root_label[r];
        }
    }
    (labels, count)
}

/// The minimum-image difference `a - b` on a circle of length `period`, in `[-period/2, period/2)`.
pub fn wrap_delta(a: f64, b: f64, period: f64) -> f64 {
    (a - b + 0.5 * period).rem_euclid(period) - 0.5 * period
}

/// The minimum-image distance between two points on an `h x w` torus (points are (x, y)).
pub fn periodic_distance(a: [f64; 2], b: [f64; 2], h: usize, w: usize) -> f64 {
    let dx = wrap_delta(a[0], b[0], w as f64);
    let dy = wrap_delta(a[1], b[1], h as f64);
    (dx * dx + dy * dy).sqrt()
}

/// The circular mean of coordinates on a circle of length `period` (weights `wts`), in `[0, period)`.
pub fn circular_mean(values: &[f64], wts: &[f64], period: f64) -> f64 {
    let (mut c, mut s) = (0.0, 0.0);
    for (&v, &k) in values.iter().zip(wts) {
        let a = std::f64::consts::TAU * v / period;
        c += k * a.cos();
        s += k * a.sin();
    }
    (s.atan2(c) / std::f64::consts::TAU * period).rem_euclid(period)
}

/// Detects creatures in an RGB frame `[3, H, W]` in `[-1, 1]` (see the module docs), with their colours.
pub fn detect(frame: &[f32], h: usize, w: usize, cfg: &DetectConfig) -> Vec<Blob> {
    let map = creatureness(frame, h, w);
    let n = h * w;
    components(&map, h, w, cfg)
        .into_iter()
        .map(|p| {
            let mut blob = blob_of(&map, &p, h, w, cfg);
            for (c, colour) in blob.colour.iter_mut().enumerate() {
                *colour = p.iter().map(|&i| frame[c * n + i] as f64).sum::<f64>() / p.len() as f64;
            }
            blob
        })
        .collect()
}

/// Fills holes of a creature mask: 4-connected background components other than the largest one and no
/// larger than `max_area` become foreground (a white patch enclosed by a creature, like the light half of
/// the taiji or the white back of the dot, is part of it).
pub fn fill_holes(mask: &mut [bool], h: usize, w: usize, max_area: usize) {
    let background: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let (labels, count) = label(&background, h, w, false);
    if count < 2 {
        return;
    }
    let mut sizes = vec![0usize; count];
    for &l in &labels {
        if l != u32::MAX {
            sizes[l as usize] += 1;
        }
    }
    let largest = (0..count)
        .max_by_key(|&k| (sizes[k], usize::MAX - k))
        .expect("count >= 2");
    for (i, &l) in labels.iter().enumerate() {
        if l != u32::MAX && l as usize != largest && sizes[l as usize] <= max_area {
            mask[i] = true;
        }
    }
}

/// Detects creatures in a creature-ness map `[H, W]` (values in `[0, 1]`, background 0).
pub fn detect_in_map(map: &[f32], h: usize, w: usize, cfg: &DetectConfig) -> Vec<Blob> {
    components(map, h, w, cfg)
        .iter()
        .map(|p| blob_of(map, p, h, w, cfg))
        .collect()
}

/// The pixel indices of every kept component of a creature-ness map (thresholded, holes filled, area
/// window applied).
fn components(map: &[f32], h: usize, w: usize, cfg: &DetectConfig) -> Vec<Vec<usize>> {
    let mut mask: Vec<bool> = map.iter().map(|&v| v > cfg.threshold).collect();
    fill_holes(&mut mask, h, w, cfg.max_area);
    let (labels, count) = label_components(&mask, h, w);
    let mut pixels: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, &l) in labels.iter().enumerate() {
        if l != u32::MAX {
            pixels[l as usize].push(i);
        }
    }
    pixels
        .into_iter()
        .filter(|p| (cfg.min_area..=cfg.max_area).contains(&p.len()))
        .collect()
}

/// The blob of one component's pixels `p` (centroid, area, strength; colour left at zero).
fn blob_of(map: &[f32], p: &[usize], h: usize, w: usize, cfg: &DetectConfig) -> Blob {
    let (hf, wf) = (h as f64, w as f64);
    let xs: Vec<f64> = p.iter().map(|&i| (i % w) as f64 + 0.5).collect();
    let ys: Vec<f64> = p.iter().map(|&i| (i / w) as f64 + 0.5).collect();
    // Filled holes weigh like the threshold, so a light half counts without dominating.
    let wts: Vec<f64> = p
        .iter()
        .map(|&i| (map[i].max(cfg.threshold)) as f64)
        .collect();
    let (rx, ry) = (circular_mean(&xs, &wts, wf), circular_mean(&ys, &wts, hf));
    let total: f64 = wts.iter().sum();
    let mut cx = 0.0;
    let mut cy = 0.0;
    for k in 0..p.len() {
        cx += wts[k] * wrap_delta(xs[k], rx, wf);
        cy += wts[k] * wrap_delta(ys[k], ry, hf);
    }
    Blob {
        centroid: [
            (rx + cx / total).rem_euclid(wf),
            (ry + cy / total).rem_euclid(hf),
        ],
        area: p.len(),
        strength: total / p.len() as f64,
        colour: [0.0; 3],
    }
}

/// What the training creatures look like to the detector: the mean colour and the median area of the
/// blobs found on training canvases with the same settings. A simulated blob "looks like" the creature when
/// its mean colour is within [`CreatureLook::COLOUR_TOLERANCE`] of that colour and its area within a factor
/// [`CreatureLook::AREA_FACTOR`] of that area — a shape check that needs no template matching, and that
/// catches what goes wrong with an imperfect score: a firefly's red tail or cyan head alone (the colour of
/// half the creature, half its area), clumps (twice the area), or texture.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CreatureLook {
    /// Mean over training blobs of their mean RGB colour, in `[-1, 1]`.
    pub colour: [f64; 3],
    /// Median blob area on the training canvases, in pixels.
    pub area: f64,
    /// Training blobs measured.
    pub blobs: usize,
}

impl CreatureLook {
    /// Largest Euclidean RGB distance (in `[-1, 1]` units) to the training colour. A firefly's tail alone is
    /// ~1.3 away, one that is 70 % tail ~0.5; training blobs of every built-in icon lie within 0.12.
    pub const COLOUR_TOLERANCE: f64 = 0.45;
    /// Largest ratio of areas, either way (training icons span 12-16 px: areas within ~1.8x).
    pub const AREA_FACTOR: f64 = 2.0;

    /// The look of the creatures in `blobs` (detected on training canvases); `None` without blobs.
    pub fn from_blobs(blobs: &[Blob]) -> Option<Self> {
        if blobs.is_empty() {
            return None;
        }
        let n = blobs.len() as f64;
        let mut colour = [0.0; 3];
        for b in blobs {
            for (c, v) in colour.iter_mut().zip(b.colour) {
                *c += v / n;
            }
        }
        let mut areas: Vec<f64> = blobs.iter().map(|b| b.area as f64).collect();
        areas.sort_by(f64::total_cmp);
        let m = areas.len() / 2;
        let area = if areas.len() % 2 == 1 {
            areas[m]
        } else {
            0.5 * (areas[m - 1] + areas[m])
        };
        Some(Self {
            colour,
            area,
            blobs: blobs.len(),
        })
    }

    /// Euclidean distance of a blob's mean colour to the training colour.
    pub fn colour_distance(&self, b: &Blob) -> f64 {
        self.colour
            .iter()
            .zip(b.colour)
            .map(|(a, c)| (a - c).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Whether a blob has the training creatures' colour and size (see the type's docs).
    pub fn matches(&self, b: &Blob) -> bool {
        let ratio = b.area as f64 / self.area;
        self.colour_distance(b) <= Self::COLOUR_TOLERANCE
            && (1.0 / Self::AREA_FACTOR..=Self::AREA_FACTOR).contains(&ratio)
    }
}

/// Linking settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkConfig {
    /// Largest displacement per frame, in pixels (6).
    pub max_disp: f64,
    /// Frames a track may go undetected before it is closed (2).
    pub max_gap: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_disp: 6.0,
            max_gap: 2,
        }
    }
}

/// One creature followed over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Frames where the creature was detected, increasing.
    pub frames: Vec<usize>,
    /// Unwrapped positions (x, y) at those frames (continuous across edges; may leave the canvas).
    pub positions: Vec<[f64; 2]>,
    /// Blob areas at those frames.
    pub areas: Vec<usize>,
}

impl Track {
    /// Number of detections.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the track has no detections (never true for tracks returned by [`link`]).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// First and last frame.
    pub fn span(&self) -> (usize, usize) {
        (
            *self.frames.first().expect("tracks are never empty"),
            *self.frames.last().expect("tracks are never empty"),
        )
    }

    /// Velocity (pixels per frame) at each detection: the central difference over the neighbouring
    /// detections (one-sided at the ends; gaps are divided by the frames elapsed). `None` for a track of
    /// one detection.
    pub fn velocities(&self) -> Option<Vec<[f64; 2]>> {
        let n = self.len();
        if n < 2 {
            return None;
        }
        Some(
            (0..n)
                .map(|k| {
                    let (a, b) = (k.saturating_sub(1), (k + 1).min(n - 1));
                    let dt = (self.frames[b] - self.frames[a]) as f64;
                    [
                        (self.positions[b][0] - self.positions[a][0]) / dt,
                        (self.positions[b][1] - self.positions[a][1]) / dt,
                    ]
                })
                .collect(),
        )
    }

    /// Position at `frame`, linearly interpolated inside gaps; `None` outside the track's span.
    pub fn position_at(&self, frame: usize) -> Option<[f64; 2]> {
        let k = self.frames.partition_point(|&f| f < frame);
        if k == self.len() {
            return None;
        }
        if self.frames[k] == frame {
            return Some(self.positions[k]);
        }
        if k == 0 {
            return None;
        }
        let (f0, f1) = (self.frames[k - 1] as f64, self.frames[k] as f64);
        let t = (frame as f64 - f0) / (f1 - f0);
        let (p0, p1) = (self.positions[k - 1], self.positions[k]);
        Some([p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])])
    }

    /// Positions wrapped back into an `h x w` canvas (for drawing over frames).
    pub fn wrapped(&self, h: usize, w: usize) -> Vec<[f64; 2]> {
        self.positions
            .iter()
            .map(|p| [p[0].rem_euclid(w as f64), p[1].rem_euclid(h as f64)])
            .collect()
    }
}

/// Links per-frame detections (`detections[t]` for frame t) on an `h x w` torus into tracks, ordered by
/// first frame then by first detection index (see the module docs).
pub fn link(detections: &[Vec<Blob>], h: usize, w: usize, cfg: &LinkConfig) -> Vec<Track> {
    struct Open {
        track: Track,
        /// Last wrapped position.
        last: [f64; 2],
    }
    let mut open: Vec<Open> = Vec::new();
    let mut closed: Vec<Track> = Vec::new();
    for (t, blobs) in detections.iter().enumerate() {
        // Close tracks that have been missing for more than max_gap frames.
        let (keep, done): (Vec<Open>, Vec<Open>) = open.into_iter().partition(|o| {
            let last = *o.track.frames.last().expect("open tracks are non-empty");
            t - last <= cfg.max_gap + 1
        });
        closed.extend(done.into_iter().map(|o| o.track));
        open = keep;
        // Candidate pairs within reach, nearest first (ties broken by indices for determinism).
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (ti, o) in open.iter().enumerate() {
            let dt = (t - o.track.frames.last().expect("non-empty")) as f64;
            for (bi, b) in blobs.iter().enumerate() {
                let d = periodic_distance(o.last, b.centroid, h, w);
                if d <= cfg.max_disp * dt {
                    pairs.push((d, ti, bi));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_used = vec![false; open.len()];
        let mut blob_used = vec![false; blobs.len()];
        for (_, ti, bi) in pairs {
            if track_used[ti] || blob_used[bi] {
                continue;
            }
            track_used[ti] = true;
            blob_used[bi] = true;
            let o = &mut open[ti];
            let b = &blobs[bi];
            let prev = *o.track.positions.last().expect("non-empty");
            let step = [
                wrap_delta(b.centroid[0], o.last[0], w as f64),
                wrap_delta(b.centroid[1], o.last[1], h as f64),
            ];
            o.track.frames.push(t);
            o.track
                .positions
                .push([prev[0] + step[0], prev[1] + step[1]]);
            o.track.areas.push(b.area);
            o.last = b.centroid;
        }
        for (bi, b) in blobs.iter().enumerate() {
            if !blob_used[bi] {
                open.push(Open {
                    track: Track {
                        frames: vec![t],
                        positions: vec![b.centroid],
                        areas: vec![b.area],
                    },
                    last: b.centroid,
                });
            }
        }
    }
    closed.extend(open.into_iter().map(|o| o.track));
    closed.sort_by_key(|t| t.frames[0]);
    closed
}

/// Detects and links in one go: `frames` are `[3, H, W]` RGB frames in `[-1, 1]`.
pub fn track_frames(
    frames: &[Vec<f32>],
    h: usize,
    w: usize,
    detect_cfg: &DetectConfig,
    link_cfg: &LinkConfig,
) -> (Vec<Vec<Blob>>, Vec<Track>) {
    let detections: Vec<Vec<Blob>> = frames.iter().map(|f| detect(f, h, w, detect_cfg)).collect();
    let tracks = link(&detections, h, w, link_cfg);
    (detections, tracks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: usize = 64;
    const W: usize = 80;

    /// A white frame with discs (centre x, centre y, radius, colour) painted on the torus.
    fn frame(discs: &[([f64; 2], f64, [f32; 3])]) -> Vec<f32> {
        let n = H * W;
        let mut f = vec![1.0f32; 3 * n];
        for &(c, r, col) in discs {
            for y in 0..H {
                for x in 0..W {
                    let p = [x as f64 + 0.5, y as f64 + 0.5];
                    if periodic_distance(p, c, H, W) <= r {
                        for k in 0..3 {
                            f[k * n + y * W + x] = col[k];
                        }
                    }
                }
            }
        }
        f
    }

    const CYAN: [f32; 3] = [-1.0, 0.5, 0.7];
    const RED: [f32; 3] = [0.8, -0.6, -0.6];

    #[test]
    fn creatureness_is_zero_on_white_and_high_on_colour() {
        let f = frame(&[([10.0, 10.0], 3.0, CYAN), ([40.0, 30.0], 3.0, RED)]);
        let m = creatureness(&f, H, W);
        assert_eq!(m[0], 0.0);
        assert!((m[10 * W + 10] - 1.0).abs() < 1e-6);
        assert!((m[30 * W + 40] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn components_wrap_around_both_edges() {
        // A disc centred on the corner is split into four pieces on the grid but is one blob.
        let f = frame(&[([0.0, 0.0], 4.0, CYAN), ([40.0, 30.0], 4.0, RED)]);
        let blobs = detect(&f, H, W, &DetectConfig::default());
        assert_eq!(blobs.len(), 2, "{blobs:?}");
        let corner = blobs
            .iter()
            .find(|b| periodic_distance(b.centroid, [0.0, 0.0], H, W) < 1.0)
            .expect("corner blob");
        assert!(
            periodic_distance(corner.centroid, [0.0, 0.0], H, W) < 0.05,
            "{corner:?}"
        );
        let mid = blobs
            .iter()
            .find(|b| b.centroid[0] > 20.0 && b.centroid[0] < 60.0)
            .expect("mid");
        assert!(
            periodic_distance(mid.centroid, [40.0, 30.0], H, W) < 0.05,
            "{mid:?}"
        );
        // Diagonal-only contact still connects (8-connectivity).
        let mut mask = vec![false; H * W];
        mask[0] = true;
        mask[(H - 1) * W + W - 1] = true;
        mask[5 * W + 5] = true;
        mask[6 * W + 6] = true;
        assert_eq!(label_components(&mask, H, W).1, 2);
    }

    #[test]
    fn enclosed_white_is_part_of_the_creature() {
        // A red ring (radius 3-5) around white, with a red dot in the middle: one blob, centred.
        let n = H * W;
        let mut f = vec![1.0f32; 3 * n];
        for y in 0..H {
            for x in 0..W {
                let d = periodic_distance([x as f64 + 0.5, y as f64 + 0.5], [30.0, 30.0], H, W);
                if d <= 1.0 || (3.0..=5.0).contains(&d) {
                    for k in 0..3 {
                        f[k * n + y * W + x] = RED[k];
                    }
                }
            }
        }
        let blobs = detect(&f, H, W, &DetectConfig::default());
        assert_eq!(blobs.len(), 1, "{blobs:?}");
        assert!(blobs[0].area >= 69, "{:?}", blobs[0]);
        assert!(periodic_distance(blobs[0].centroid, [30.0, 30.0], H, W) < 0.05);
    }

    #[test]
    fn area_bounds_drop_specks_and_clumps_and_keep_close_pairs_apart() {
        let f = frame(&[
            // Two discs of 3 px radius, 1-2 px apart: two creatures, not one.
            ([20.0, 20.0], 3.0, CYAN),
            ([28.0, 20.0], 3.0, RED),
            // A speck (1 px).
            ([60.0, 50.0], 0.5, CYAN),
            // A clump far larger than a creature.
            ([60.0, 20.0], 10.0, RED),
        ]);
        let cfg = DetectConfig {
            threshold: 0.25,
            min_area: 8,
            max_area: 100,
        };
        let blobs = detect(&f, H, W, &cfg);
        assert_eq!(blobs.len(), 2, "{blobs:?}");
        for (b, c) in blobs.iter().zip([[20.0, 20.0], [28.0, 20.0]]) {
            assert!(periodic_distance(b.centroid, c, H, W) < 0.05, "{b:?}");
            assert!((25..=32).contains(&b.area), "{b:?}");
        }
    }

    #[test]
    fn tracks_recover_velocities_gaps_and_unwrapped_positions() {
        // Creature A moves right by 1.5 px/frame and crosses the right edge; B moves up-left diagonally and
        // is missing in frame 4; C sits still. 10 frames.
        let a0 = [70.0, 10.0];
        let va = [1.5, 0.0];
        let b0 = [30.0, 50.0];
        let vb = [-0.8, -0.6];
        let c0 = [50.0, 30.0];
        let frames: Vec<Vec<f32>> = (0..10)
            .map(|t| {
                let t = t as f64;
                let mut discs = vec![
                    ([a0[0] + va[0] * t, a0[1] + va[1] * t], 3.2, CYAN),
                    ([c0[0], c0[1]], 3.2, RED),
                ];
                if t != 4.0 {
                    discs.push(([b0[0] + vb[0] * t, b0[1] + vb[1] * t], 3.2, RED));
                }
                frame(&discs)
            })
            .collect();
        let (det, tracks) = track_frames(
            &frames,
            H,
            W,
            &DetectConfig::default(),
            &LinkConfig {
                max_disp: 4.0,
                max_gap: 1,
            },
        );
        assert_eq!(det[4].len(), 2);
        assert_eq!(tracks.len(), 3, "{tracks:?}");
        let find = |p: [f64; 2]| {
            tracks
                .iter()
                .find(|t| periodic_distance(t.positions[0], p, H, W) < 1.0)
                .expect("track")
        };
        let (ta, tb, tc) = (find(a0), find(b0), find(c0));
        assert_eq!(ta.frames, (0..10).collect::<Vec<_>>());
        assert_eq!(tb.frames, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        // A ends beyond the right edge when unwrapped: 70 + 13.5 = 83.5 (wrapped 3.5).
        let last = ta.positions[9];
        assert!(
            (last[0] - 83.5).abs() < 0.3 && (last[1] - 10.0).abs() < 0.3,
            "{last:?}"
        );
        assert!((ta.wrapped(H, W)[9][0] - 3.5).abs() < 0.3);
        for (t, v) in [(ta, va), (tb, vb), (tc, [0.0, 0.0])] {
            let vel = t.velocities().expect("long track");
            let mean = [
                vel.iter().map(|v| v[0]).sum::<f64>() / vel.len() as f64,
                vel.iter().map(|v| v[1]).sum::<f64>() / vel.len() as f64,
            ];
            assert!(
                (mean[0] - v[0]).abs() < 0.05 && (mean[1] - v[1]).abs() < 0.05,
                "{mean:?} vs {v:?}"
            );
            for u in &vel {
                assert!(
                    (u[0] - v[0]).abs() < 0.3 && (u[1] - v[1]).abs() < 0.3,
                    "{u:?} vs {v:?}"
                );
            }
        }
        // Interpolated position inside B's gap.
        let p4 = tb.position_at(4).expect("inside span");
        assert!((p4[0] - (b0[0] + 4.0 * vb[0])).abs() < 0.3, "{p4:?}");
        assert_eq!(tb.position_at(10), None);
    }

    #[test]
    fn long_gaps_and_jumps_split_tracks() {
        let blob = |x: f64| Blob {
            centroid: [x, 5.0],
            area: 10,
            strength: 1.0,
            colour: [0.0; 3],
        };
        let dets = vec![
            vec![blob(10.0)],
            vec![blob(11.0)],
            vec![],
            vec![],
            vec![blob(13.0)], // gap of 2 > max_gap 1: new track
            vec![blob(30.0)], // jump of 17 > max_disp: new track
        ];
        let tracks = link(
            &dets,
            H,
            W,
            &LinkConfig {
                max_disp: 3.0,
                max_gap: 1,
            },
        );
        let lens: Vec<usize> = tracks.iter().map(Track::len).collect();
        assert_eq!(lens, vec![2, 1, 1]);
        assert_eq!(tracks[0].velocities().expect("two"), vec![[1.0, 0.0]; 2]);
        assert_eq!(tracks[1].velocities(), None);
    }

    #[test]
    fn periodic_helpers() {
        assert_eq!(wrap_delta(1.0, 79.0, 80.0), 2.0);
        assert_eq!(wrap_delta(79.0, 1.0, 80.0), -2.0);
        assert!((periodic_distance([1.0, 1.0], [79.0, 63.0], H, W) - 8f64.sqrt()).abs() < 1e-12);
        let m = circular_mean(&[79.0, 1.0], &[1.0, 1.0], 80.0);
        assert!(m < 1e-9 || (80.0 - m) < 1e-9, "{m}");
    }

    /// The look measured on some training canvases recognises the creatures of other canvases (>= 90 % of
    /// their blobs, every built-in icon), and rejects a firefly's red tail alone (its cyan head painted
    /// white) and a single-colour dot of the right size.
    #[test]
    fn creature_look_accepts_training_creatures_and_rejects_halves() {
        use crate::science::icons::{generate_canvases, BuiltinIcon, CanvasConfig, IconSource};
        let cfg = CanvasConfig {
            height: 64,
            width: 64,
            icons: (3, 5),
            icon_size: (12, 16),
            ..Default::default()
        };
        let det = DetectConfig::default();
        let blobs_of = |canvases: &[crate::science::icons::Canvas]| -> Vec<Blob> {
            canvases
                .iter()
                .flat_map(|cv| detect(&cv.data, 64, 64, &det))
                .collect()
        };
        for kind in BuiltinIcon::ALL {
            let src = IconSource::Builtin(kind);
            let look =
                CreatureLook::from_blobs(&blobs_of(&generate_canvases(&src, &cfg, 1, 0, 16)))
                    .expect("training blobs");
            let other = blobs_of(&generate_canvases(&src, &cfg, 2, 0, 16));
            let share =
                other.iter().filter(|b| look.matches(b)).count() as f64 / other.len() as f64;
            assert!(
                share >= 0.9,
                "{}: {share} of {} blobs match {look:?}",
                kind.name(),
                other.len()
            );
            if kind == BuiltinIcon::Firefly {
                let n = 64 * 64;
                let tails: Vec<Blob> = generate_canvases(&src, &cfg, 2, 0, 16)
                    .into_iter()
                    .flat_map(|mut cv| {
                        for i in 0..n {
                            if cv.data[i] < 0.0 {
                                for c in 0..3 {
                                    cv.data[c * n + i] = 1.0;
                                }
                            }
                        }
                        detect(&cv.data, 64, 64, &det)
                    })
                    .collect();
                assert!(tails.len() > 20);
                assert!(
                    tails.iter().all(|b| !look.matches(b)),
                    "a red tail alone passed as a firefly"
                );
                // A disc of the creature's area in one colour (red): the right size, the wrong look.
                let mut disc = vec![1.0f32; 3 * n];
                let r2 = look.area / std::f64::consts::PI;
                for i in 0..n {
                    let (y, x) = ((i / 64) as f64 - 31.5, (i % 64) as f64 - 31.5);
                    if x * x + y * y <= r2 {
                        disc[n + i] = -1.0;
                        disc[2 * n + i] = -1.0;
                    }
                }
                let d = detect(&disc, 64, 64, &det);
                assert_eq!(d.len(), 1);
                let ratio = d[0].area as f64 / look.area;
                assert!((0.8..1.25).contains(&ratio), "{ratio}");
                assert!(!look.matches(&d[0]));
            }
        }
    }

    #[test]
    fn every_builtin_creature_is_found_on_dataset_canvases() {
        use crate::science::icons::{generate_canvases, BuiltinIcon, CanvasConfig, IconSource};
        let cfg = CanvasConfig::default();
        for kind in BuiltinIcon::ALL {
            let (mut placed, mut found, mut blobs_total) = (0, 0, 0);
            for cv in generate_canvases(&IconSource::Builtin(kind), &cfg, 5, 0, 8) {
                let blobs = detect(&cv.data, 128, 128, &DetectConfig::default());
                blobs_total += blobs.len();
                placed += cv.placed.len();
                found += cv
                    .placed
                    .iter()
                    .filter(|p| {
                        blobs
                            .iter()
                            .any(|b| periodic_distance(b.centroid, p.centre, 128, 128) < 3.0)
                    })
                    .count();
            }
            // Touching icons may merge into one blob; that must stay rare.
            let rate = found as f64 / placed as f64;
            assert!(rate > 0.9, "{}: found {found} of {placed}", kind.name());
            assert!(
                blobs_total <= placed,
                "{}: {blobs_total} blobs for {placed} icons",
                kind.name()
            );
        }
    }

    /// A dataset canvas rolled by (1, 0.5) px per frame on the torus: every creature is tracked across
    /// the edges with that velocity. Also writes `/tmp/alife-samples/tracks.png` for people to look at.
    #[test]
    fn rolled_canvas_gives_uniform_tracks() {
        use crate::science::icons::{generate_canvases, BuiltinIcon, CanvasConfig, IconSource};
        let src = IconSource::Builtin(BuiltinIcon::Firefly);
        let cv = generate_canvases(&src, &CanvasConfig::default(), 9, 0, 1).remove(0);
        let s = 128;
        let frames: Vec<Vec<f32>> = (0..40)
            .map(|t| {
                let (dx, dy) = (t, t / 2);
                let mut f = vec![0.0; 3 * s * s];
                for c in 0..3 {
                    for y in 0..s {
                        for x in 0..s {
                            f[(c * s + (y + dy) % s) * s + (x + dx) % s] =
                                cv.data[(c * s + y) * s + x];
                        }
                    }
                }
                f
            })
            .collect();
        let (_, tracks) = track_frames(
            &frames,
            s,
            s,
            &DetectConfig::default(),
            &LinkConfig::default(),
        );
        let blobs0 = detect(&frames[0], s, s, &DetectConfig::default()).len();
        assert_eq!(tracks.len(), blobs0, "one track per creature");
        for t in &tracks {
            assert_eq!(t.len(), 40);
            let (p0, p1) = (t.positions[0], t.positions[39]);
            assert!((p1[0] - p0[0] - 39.0).abs() < 1e-6 && (p1[1] - p0[1] - 19.0).abs() < 1e-6);
        }
        let mut img =
            crate::render::rgb_canvas(&frames[39], s, s, crate::render::FieldRange::MinusOneOne)
                .expect("image")
                .upscale(4);
        let drawn: Vec<crate::render::Track> = tracks
            .iter()
            .map(|t| crate::render::Track {
                points: t.wrapped(s, s),
                color: None,
            })
            .collect();
        crate::render::image::draw_tracks(&mut img, &drawn, 4.0, 2.0);
        let dir = std::env::temp_dir().join("alife-samples");
        let _ = std::fs::create_dir_all(&dir);
        img.save_png(&dir.join("tracks.png"))
            .expect("write tracks.png");
    }
}
