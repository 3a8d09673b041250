//! What the creatures do (spec §8): per-frame behaviour statistics from tracks, their summaries over time
//! windows and seeds, and a verdict in plain words with the numbers behind it.
//!
//! Per frame t, over the creatures detected at t (tracks observed at t):
//! - `count`: how many (all tracks, so emergence from noise shows as a rise from 0);
//! - `mean_speed`: mean |v| in pixels per frame, over tracks of at least `min_track_len` detections (shorter
//!   ones are usually flicker in noisy early frames);
//! - `polarisation`: |mean of unit velocities| over the moving ones (|v| ≥ `min_speed`): 1 when all head the
//!   same way, about 1/sqrt(n) (its RMS value) for n independent random headings;
//! - `nn_distance`: mean distance to the nearest other creature, periodic (minimum image), all creatures;
//! - `angular_momentum`: mean of (r × v) / (|r| |v|) over the moving ones, r relative to the group's
//!   centroid (circular mean per axis, so a group straddling an edge has its true centre): ±1 for pure
//!   rotation about the centroid (milling), ~0 for translation or disorder. With y pointing down, positive
//!   is clockwise on screen.
//!
//! Undefined values (no moving creature, fewer than two creatures) are NaN and are skipped by summaries.
//!
//! Verdict rules ([`Thresholds`], applied to a [`Summary`] of the last half of a run, or to per-seed means):
//! fewer than `min_count` creatures per frame on average -> "no creatures emerged"; mean speed below
//! `static_speed` -> "static / no self-propulsion"; |angular momentum| ≥ max(`milling`, `factor`/sqrt(n)) ->
//! "milling"; polarisation ≥ max(`collective`, `factor`/sqrt(n)) -> "collective motion" (the larger of the
//! two wins when both hold); otherwise "disordered motion". n is the mean number of moving creatures, and
//! 1/sqrt(n) is the RMS of both statistics for n independent random headings and positions. A spacing
//! clause compares the nearest-neighbour distance with 0.5 sqrt(A / n), its expectation for n uniformly
//! random points on area A (the Clark-Evans ratio R): R < `clustered` -> "clustering (attraction)", R >
//! `spread` -> "evenly spaced (repulsion)". An emergence clause reports the count rising from the first
//! tenth of the run.

use crate::science::tracking::{circular_mean, wrap_delta, Track};

/// Settings of the per-frame statistics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BehaviourConfig {
    /// Speed (pixels per frame) below which a creature counts as still: left out of polarisation and
    /// angular momentum, whose headings would be noise (0.05).
    pub min_speed: f64,
    /// Tracks shorter than this (detections) are counted but not used for motion statistics (3).
    pub min_track_len: usize,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            min_speed: 0.05,
            min_track_len: 3,
        }
    }
}

/// Per-frame behaviour statistics of one run; every vector has one value per frame (NaN where undefined).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BehaviourSeries {
    /// Canvas rows.
    pub height: usize,
    /// Canvas columns.
    pub width: usize,
    /// Creatures detected.
    pub count: Vec<f64>,
    /// Creatures moving at least `min_speed` (on tracks of at least `min_track_len`).
    pub moving: Vec<f64>,
    /// Mean speed, pixels per frame.
    pub mean_speed: Vec<f64>,
    /// |mean unit velocity| of the moving creatures.
    pub polarisation: Vec<f64>,
    /// Mean periodic nearest-neighbour distance, pixels.
    pub nn_distance: Vec<f64>,
    /// Normalised angular momentum about the centroid, in [-1, 1] (positive = clockwise on screen).
    pub angular_momentum: Vec<f64>,
}

impl BehaviourSeries {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }
}

/// Computes the per-frame statistics of `tracks` over frames `0..n_frames` of an `h x w` canvas.
pub fn behaviour_series(
    tracks: &[Track],
    n_frames: usize,
    h: usize,
    w: usize,
    cfg: &BehaviourConfig,
) -> BehaviourSeries {
    let (hf, wf) = (h as f64, w as f64);
    // Per frame: (wrapped position, velocity if usable for motion statistics).
    type Seen = ([f64; 2], Option<[f64; 2]>);
    let mut at: Vec<Vec<Seen>> = vec![Vec::new(); n_frames];
    for t in tracks {
        let vel = t.velocities().filter(|_| t.len() >= cfg.min_track_len);
        for (k, (&f, p)) in t.frames.iter().zip(&t.positions).enumerate() {
            if f < n_frames {
                let wrapped = [p[0].rem_euclid(wf), p[1].rem_euclid(hf)];
                at[f].push((wrapped, vel.as_ref().map(|v| v[k])));
            }
        }
    }
    let mut s = BehaviourSeries {
        height: h,
        width: w,
        count: Vec::with_capacity(n_frames),
        moving: Vec::with_capacity(n_frames),
        mean_speed: Vec::with_capacity(n_frames),
        polarisation: Vec::with_capacity(n_frames),
        nn_distance: Vec::with_capacity(n_frames),
        angular_momentum: Vec::with_capacity(n_frames),
    };
    for items in &at {
        s.count.push(items.len() as f64);
        let speeds: Vec<f64> = items
            .iter()
            .filter_map(|(_, v)| v.map(|v| v[0].hypot(v[1])))
            .collect();
        s.mean_speed.push(mean(&speeds));
        let moving: Vec<([f64; 2], [f64; 2])> = items
            .iter()
            .filter_map(|&(p, v)| {
                v.filter(|v| v[0].hypot(v[1]) >= cfg.min_speed)
                    .map(|v| (p, v))
            })
            .collect();
        s.moving.push(moving.len() as f64);
        let positions: Vec<[f64; 2]> = items.iter().map(|(p, _)| *p).collect();
        s.nn_distance.push(nn_distance(&positions, h, w));
        if moving.is_empty() {
            s.polarisation.push(f64::NAN);
            s.angular_momentum.push(f64::NAN);
            continue;
        }
        let (mut ux, mut uy) = (0.0, 0.0);
        for (_, v) in &moving {
            let n = v[0].hypot(v[1]);
            ux += v[0] / n;
            uy += v[1] / n;
        }
        let m = moving.len() as f64;
        s.polarisation.push((ux / m).hypot(uy / m));
        s.angular_momentum.push(angular_momentum(&moving, h, w));
    }
    s
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Mean periodic nearest-neighbour distance of points (x, y) on an `h x w` torus; NaN for fewer than two.
pub fn nn_distance(points: &[[f64; 2]], h: usize, w: usize) -> f64 {
    if points.len() < 2 {
        return f64::NAN;
    }
    let total: f64 = points
        .iter()
        .enumerate()
        .map(|(i, a)| {
            points
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, b)| crate::science::tracking::periodic_distance(*a, *b, h, w))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    total / points.len() as f64
}

/// Mean of (r × v) / (|r| |v|) over (position, velocity) pairs, r from the periodic centroid; in [-1, 1].
pub fn angular_momentum(items: &[([f64; 2], [f64; 2])], h: usize, w: usize) -> f64 {
    let (hf, wf) = (h as f64, w as f64);
    let ones = vec![1.0; items.len()];
    let xs: Vec<f64> = items.iter().map(|(p, _)| p[0]).collect();
    let ys: Vec<f64> = items.iter().map(|(p, _)| p[1]).collect();
    let (cx, cy) = (circular_mean(&xs, &ones, wf), circular_mean(&ys, &ones, hf));
    let terms: Vec<f64> = items
        .iter()
        .filter_map(|(p, v)| {
            let r = [wrap_delta(p[0], cx, wf), wrap_delta(p[1], cy, hf)];
            let (nr, nv) = (r[0].hypot(r[1]), v[0].hypot(v[1]));
            (nr > 1e-9 && nv > 0.0).then(|| (r[0] * v[1] - r[1] * v[0]) / (nr * nv))
        })
        .collect();
    mean(&terms)
}

/// Mean, standard deviation and number of finite values of a statistic.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    /// Mean (NaN when n = 0).
    pub mean: f64,
    /// Sample standard deviation, n - 1 (0 for one value, NaN when n = 0).
    pub std: f64,
    /// Finite values used.
    pub n: usize,
}

impl Stat {
    /// Statistics of the finite values of `v`.
    pub fn of(v: &[f64]) -> Self {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if f.is_empty() {
            return Self {
                mean: f64::NAN,
                std: f64::NAN,
                n: 0,
            };
        }
        let m = f.iter().sum::<f64>() / f.len() as f64;
        // The sample standard deviation (n - 1), as every stage's `spread` metric, so that a verdict's
        // "± s" and the metrics agree; 0 for one value.
        let var = f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (f.len().max(2) - 1) as f64;
        Self {
            mean: m,
            std: var.sqrt(),
            n: f.len(),
        }
    }

    /// "0.82 ± 0.05" with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.*} ± {:.*}", digits, self.mean, digits, self.std)
    }
}

/// Summary statistics over a window of frames (or, from [`over_seeds`], over runs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// What the ± spreads are over, for texts: "the last half" or "4 seeds".
    pub over: String,
    /// Canvas area in pixels (for the spacing baseline).
    pub area: f64,
    /// Creatures per frame in the first tenth of the run (emergence baseline).
    pub count_start: Stat,
    /// Creatures per frame.
    pub count: Stat,
    /// Moving creatures per frame.
    pub moving: Stat,
    /// Mean speed (pixels per frame).
    pub mean_speed: Stat,
    /// Polarisation.
    pub polarisation: Stat,
    /// Nearest-neighbour distance (pixels).
    pub nn_distance: Stat,
    /// Angular momentum about the centroid.
    pub angular_momentum: Stat,
}

impl Summary {
    /// 1/sqrt(n) for the mean number n of moving creatures: the RMS polarisation (and about the RMS angular
    /// momentum) of n independent random headings. NaN without moving creatures.
    pub fn random_baseline(&self) -> f64 {
        if self.moving.mean >= 1.0 {
            1.0 / self.moving.mean.sqrt()
        } else {
            f64::NAN
        }
    }

    /// 0.5 sqrt(A / n): the mean nearest-neighbour distance of n uniformly random points on area A.
    pub fn random_spacing(&self) -> f64 {
        if self.count.mean >= 2.0 {
            0.5 * (self.area / self.count.mean).sqrt()
        } else {
            f64::NAN
        }
    }
}

/// Summarises frames `from..to` (clamped to the series) of a run; the ± are spreads over time.
pub fn summarize(series: &BehaviourSeries, from: usize, to: usize) -> Summary {
    let n = series.len();
    let (a, b) = (from.min(n), to.min(n).max(from.min(n)));
    let start = (n / 10).max(1).min(n);
    let over = if a == n / 2 && b == n {
        "the last half".to_string()
    } else {
        format!("frames {a}-{b}")
    };
    Summary {
        over,
        area: (series.height * series.width) as f64,
        count_start: Stat::of(&series.count[..start]),
        count: Stat::of(&series.count[a..b]),
        moving: Stat::of(&series.moving[a..b]),
        mean_speed: Stat::of(&series.mean_speed[a..b]),
        polarisation: Stat::of(&series.polarisation[a..b]),
        nn_distance: Stat::of(&series.nn_distance[a..b]),
        angular_momentum: Stat::of(&series.angular_momentum[a..b]),
    }
}

/// Summarises the last half of a run (the window verdicts use: creatures have had time to emerge).
pub fn summarize_last_half(series: &BehaviourSeries) -> Summary {
    summarize(series, series.len() / 2, series.len())
}

/// Combines per-run summaries: each statistic's mean over runs, ± its spread over runs. Empty input gives
/// a summary of NaNs.
pub fn over_seeds(runs: &[Summary]) -> Summary {
    let pick = |f: fn(&Summary) -> Stat| -> Stat {
        Stat::of(&runs.iter().map(|s| f(s).mean).collect::<Vec<_>>())
    };
    Summary {
        over: format!("{} seeds", runs.len()),
        area: runs.first().map_or(f64::NAN, |s| s.area),
        count_start: pick(|s| s.count_start),
        count: pick(|s| s.count),
        moving: pick(|s| s.moving),
        mean_speed: pick(|s| s.mean_speed),
        polarisation: pick(|s| s.polarisation),
        nn_distance: pick(|s| s.nn_distance),
        angular_momentum: pick(|s| s.angular_momentum),
    }
}

/// Per-frame mean and spread over runs of one statistic (for bands in plots).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Band {
    /// Mean over runs (finite values only; NaN where none).
    pub mean: Vec<f64>,
    /// Standard deviation over runs.
    pub std: Vec<f64>,
}

/// Per-frame bands over runs for (count, mean speed, polarisation, nn distance, angular momentum), in
/// that order; runs are cut to the shortest.
pub fn bands_over_seeds(runs: &[BehaviourSeries]) -> [Band; 5] {
    let n = runs.iter().map(BehaviourSeries::len).min().unwrap_or(0);
    let band = |f: fn(&BehaviourSeries) -> &Vec<f64>| {
        let stats: Vec<Stat> = (0..n)
            .map(|t| Stat::of(&runs.iter().map(|r| f(r)[t]).collect::<Vec<_>>()))
            .collect();
        Band {
            mean: stats.iter().map(|s| s.mean).collect(),
            std: stats.iter().map(|s| s.std).collect(),
        }
    };
    [
        band(|r| &r.count),
        band(|r| &r.mean_speed),
        band(|r| &r.polarisation),
        band(|r| &r.nn_distance),
        band(|r| &r.angular_momentum),
    ]
}

/// Verdict thresholds (see the module docs for the rules).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// Fewer creatures per frame than this on average: none emerged (1.0).
    pub min_count: f64,
    /// Mean speed below this (pixels per frame): static (0.05).
    pub static_speed: f64,
    /// Least |angular momentum| for milling (0.5).
    pub milling: f64,
    /// Least polarisation for collective motion (0.5).
    pub collective: f64,
    /// Both must also exceed this many times the random baseline 1/sqrt(n) (2.0).
    pub factor: f64,
    /// Clark-Evans ratio below which creatures cluster (0.7).
    pub clustered: f64,
    /// Clark-Evans ratio above which creatures keep apart (1.4).
    pub spread: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_count: 1.0,
            static_speed: 0.05,
            milling: 0.5,
            collective: 0.5,
            factor: 2.0,
            clustered: 0.7,
            spread: 1.4,
        }
    }
}

/// The kind of behaviour a run shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BehaviourKind {
    /// Too few creatures to say anything.
    NoCreatures,
    /// Creatures, but they do not move.
    Static,
    /// Rotation about the group's centre.
    Milling,
    /// Aligned motion (flocking).
    Collective,
    /// Moving, neither aligned nor rotating.
    Disordered,
}

/// A verdict: the kind and a sentence with the numbers behind it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The behaviour.
    pub kind: BehaviourKind,
    /// Plain words with numbers, e.g. "collective motion (polarisation 0.82 ± 0.05 over the last half,
    /// random would be ~1/sqrt(n) = 0.30); ...".
    pub text: String,
}

/// Judges a summary (see the module docs for the rules).
pub fn verdict(s: &Summary, th: &Thresholds) -> Verdict {
    let over = &s.over;
    if s.count.mean.is_nan() || s.count.mean < th.min_count {
        let text = format!(
            "no creatures emerged ({} creatures per frame over {over}, fewer than {})",
            s.count.show(1),
            th.min_count
        );
        return Verdict {
            kind: BehaviourKind::NoCreatures,
            text,
        };
    }
    let base = s.random_baseline();
    let speed = format!("mean speed {} px/frame", s.mean_speed.show(3));
    let (kind, head) = if s.mean_speed.mean.is_nan() || s.mean_speed.mean < th.static_speed {
        (
            BehaviourKind::Static,
            format!(
                "static / no self-propulsion ({speed} over {over}, below {})",
                th.static_speed
            ),
        )
    } else {
        let bar = |min: f64| {
            if base.is_finite() {
                min.max(th.factor * base)
            } else {
                min
            }
        };
        let (p, l) = (s.polarisation.mean, s.angular_momentum.mean);
        let collective = p >= bar(th.collective);
        let milling = l.abs() >= bar(th.milling);
        let base_text = format!("random would be ~1/sqrt(n) = {base:.2}");
        if milling && (!collective || l.abs() > p) {
            let dir = if l > 0.0 {
                "clockwise"
            } else {
                "counter-clockwise"
            };
            (
                BehaviourKind::Milling,
                format!(
                    "milling, {dir} on screen (angular momentum {} over {over}, {base_text}; {speed})",
                    s.angular_momentum.show(2)
                ),
            )
        } else if collective {
            (
                BehaviourKind::Collective,
                format!(
                    "collective motion (polarisation {} over {over}, {base_text}; {speed})",
                    s.polarisation.show(2)
                ),
            )
        } else {
            (
                BehaviourKind::Disordered,
                format!(
                    "disordered motion (polarisation {}, angular momentum {} over {over}, {base_text}; {speed})",
                    s.polarisation.show(2),
                    s.angular_momentum.show(2)
                ),
            )
        }
    };
    let mut text = head;
    let spacing = s.random_spacing();
    if spacing.is_finite() && s.nn_distance.mean.is_finite() {
        let r = s.nn_distance.mean / spacing;
        let word = if r < th.clustered {
            "clustering (attraction)"
        } else if r > th.spread {
            "evenly spaced (repulsion)"
        } else {
            "randomly spaced"
        };
        text += &format!(
            "; {word}: nearest neighbour {} px = {r:.2} x random spacing {spacing:.1} px",
            s.nn_distance.show(1)
        );
    }
    if s.count_start.mean < 0.5 * s.count.mean {
        text += &format!(
            "; creatures emerged from noise ({:.1} -> {:.1} per frame)",
            s.count_start.mean, s.count.mean
        );
    }
    Verdict { kind, text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::science::rng::stream;
    use rand::Rng as _;

    const S: usize = 128;

    /// A track observed at every frame `0..frames` with unwrapped positions from `pos(t)`.
    fn track(frames: usize, pos: impl Fn(f64) -> [f64; 2]) -> Track {
        Track {
            frames: (0..frames).collect(),
            positions: (0..frames).map(|t| pos(t as f64)).collect(),
            areas: vec![50; frames],
        }
    }

    fn run(tracks: &[Track], frames: usize) -> (BehaviourSeries, Verdict, Summary) {
        let s = behaviour_series(tracks, frames, S, S, &BehaviourConfig::default());
        let sum = summarize_last_half(&s);
        (s, verdict(&sum, &Thresholds::default()), sum)
    }

    #[test]
    fn aligned_motion_is_collective() {
        let mut rng = stream(1, "flock");
        let tracks: Vec<Track> = (0..10)
            .map(|_| {
                let p0 = [rng.gen_range(0.0..128.0), rng.gen_range(0.0..128.0)];
                track(40, move |t| [p0[0] + 1.2 * t, p0[1] - 0.5 * t])
            })
            .collect();
        let (s, v, sum) = run(&tracks, 40);
        assert!(s.polarisation.iter().all(|p| (p - 1.0).abs() < 1e-9));
        assert!((sum.mean_speed.mean - 1.3).abs() < 1e-9);
        assert_eq!(v.kind, BehaviourKind::Collective, "{}", v.text);
        assert!(v.text.starts_with("collective motion (polarisation 1.00 ± 0.00 over the last half, random would be ~1/sqrt(n) = 0.32"), "{}", v.text);
    }

    #[test]
    fn random_headings_give_the_random_baseline() {
        // 16 creatures, each a random walk with unit steps in fresh random directions.
        let n = 16;
        let frames = 400;
        let tracks: Vec<Track> = (0..n)
            .map(|k| {
                let mut rng = crate::science::rng::substream(2, "walk", k);
                let mut p = [rng.gen_range(0.0..128.0), rng.gen_range(0.0..128.0)];
                let mut pts = Vec::new();
                for _ in 0..frames {
                    pts.push(p);
                    let a: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
                    p = [p[0] + a.cos(), p[1] + a.sin()];
                }
                Track {
                    frames: (0..frames).collect(),
                    positions: pts,
                    areas: vec![50; frames],
                }
            })
            .collect();
        let (s, v, _) = run(&tracks, frames);
        let rms = (s.polarisation.iter().map(|p| p * p).sum::<f64>() / frames as f64).sqrt();
        let expect = 1.0 / (n as f64).sqrt();
        assert!((rms - expect).abs() < 0.1 * expect, "rms {rms} vs {expect}");
        assert_eq!(v.kind, BehaviourKind::Disordered, "{}", v.text);
        assert!(v.text.contains("randomly spaced"), "{}", v.text);
    }

    fn ring(n: usize, centre: [f64; 2], radius: f64, omega: f64, frames: usize) -> Vec<Track> {
        (0..n)
            .map(|k| {
                let a0 = std::f64::consts::TAU * k as f64 / n as f64;
                track(frames, move |t| {
                    let a = a0 + omega * t;
                    [centre[0] + radius * a.cos(), centre[1] + radius * a.sin()]
                })
            })
            .collect()
    }

    #[test]
    fn rotation_about_the_centre_is_milling_even_across_the_edge() {
        for (centre, omega, sign) in [
            ([64.0, 64.0], 0.05, 1.0),
            ([64.0, 64.0], -0.05, -1.0),
            ([0.0, 127.0], 0.05, 1.0),
        ] {
            let (s, v, sum) = run(&ring(8, centre, 20.0, omega, 60), 60);
            for l in &s.angular_momentum {
                assert!((l - sign).abs() < 0.01, "{l} at {centre:?}");
            }
            assert!(sum.polarisation.mean < 0.05);
            assert_eq!(v.kind, BehaviourKind::Milling, "{}", v.text);
            let dir = if sign > 0.0 {
                "milling, clockwise"
            } else {
                "milling, counter-clockwise"
            };
            assert!(v.text.starts_with(dir), "{}", v.text);
        }
    }

    #[test]
    fn still_creatures_and_empty_runs() {
        let still: Vec<Track> = (0..6)
            .map(|k| track(30, move |_| [10.0 + 20.0 * k as f64, 40.0]))
            .collect();
        let (_, v, _) = run(&still, 30);
        assert_eq!(v.kind, BehaviourKind::Static, "{}", v.text);
        let (s, v, _) = run(&[], 30);
        assert!(s.polarisation.iter().all(|p| p.is_nan()));
        assert_eq!(v.kind, BehaviourKind::NoCreatures);
        assert!(
            v.text.starts_with("no creatures emerged (0.0 ± 0.0"),
            "{}",
            v.text
        );
    }

    #[test]
    fn clusters_and_emergence_are_reported() {
        // Eight creatures in a tight group translating together, appearing at frame 10.
        let tracks: Vec<Track> = (0..8)
            .map(|k| {
                let off = [(k % 4) as f64 * 4.0, (k / 4) as f64 * 4.0];
                let mut t = track(40, move |t| [50.0 + off[0] + 0.5 * t, 50.0 + off[1]]);
                t.frames.drain(..10);
                t.positions.drain(..10);
                t.areas.drain(..10);
                t
            })
            .collect();
        let (s, v, sum) = run(&tracks, 40);
        assert_eq!(s.count[0], 0.0);
        assert_eq!(s.count[39], 8.0);
        assert!((sum.nn_distance.mean - 4.0).abs() < 1e-9);
        assert!(v.text.contains("clustering (attraction)"), "{}", v.text);
        assert!(
            v.text
                .contains("creatures emerged from noise (0.0 -> 8.0 per frame)"),
            "{}",
            v.text
        );
    }

    #[test]
    fn periodic_nearest_neighbours_and_seed_spread() {
        assert_eq!(
            nn_distance(&[[1.0, 5.0], [127.0, 5.0], [60.0, 60.0]], S, S),
            (2.0 + 2.0 + (59.0f64.powi(2) + 55.0f64.powi(2)).sqrt()) / 3.0
        );
        let a = summarize_last_half(&behaviour_series(
            &ring(8, [64.0, 64.0], 20.0, 0.05, 20),
            20,
            S,
            S,
            &BehaviourConfig::default(),
        ));
        let b = summarize_last_half(&behaviour_series(
            &ring(8, [64.0, 64.0], 20.0, -0.05, 20),
            20,
            S,
            S,
            &BehaviourConfig::default(),
        ));
        let both = over_seeds(&[a, b]);
        assert_eq!(both.over, "2 seeds");
        assert!(both.angular_momentum.mean.abs() < 1e-6);
        // Sample std of (+1, -1): sqrt(2).
        assert!((both.angular_momentum.std - 2f64.sqrt()).abs() < 0.01);
        let bands = bands_over_seeds(&[
            behaviour_series(
                &ring(4, [64.0, 64.0], 10.0, 0.1, 5),
                5,
                S,
                S,
                &BehaviourConfig::default(),
            ),
            behaviour_series(&[], 5, S, S, &BehaviourConfig::default()),
        ]);
        assert_eq!(bands[0].mean, vec![2.0; 5]);
        // Counts 4 and 0: sample std sqrt(8).
        assert_eq!(bands[0].std, vec![8f64.sqrt(); 5]);
    }
}
