//! Point sets and the low-dimensional datasets of the paper (two_peaks, ring, two_moons, lorenz).
//!
//! Points are stored row-major in one `Vec<f64>` (`n` rows of `d` coordinates) because every consumer —
//! training batches, integrators, MMD, checkpoints — wants contiguous rows and cheap chunking for rayon.
//! Every generator takes a params struct whose `Default` holds the spec's settings (science.md §4) and a
//! seed; all draws come from named [`crate::science::rng`] streams, so a dataset is a pure function of
//! its parameters and seed.

use crate::science::integrators::rk4_step;
use crate::science::lorenz::LorenzParams;
use crate::science::rng::{stream, substream};
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// `n` points of dimension `d`, row-major: point `i` is `data[i*d..(i+1)*d]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PointSet {
    /// Number of points.
    pub n: usize,
    /// Dimension of each point.
    pub d: usize,
    /// Row-major coordinates, `n * d` values.
    pub data: Vec<f64>,
}

impl PointSet {
    /// Wraps row-major data; panics if `data.len() != n * d` (a programming error, not a data error).
    pub fn new(n: usize, d: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), n * d, "PointSet data length must be n*d");
        Self { n, d, data }
    }

    /// `n` points of dimension `d`, all zero.
    pub fn zeros(n: usize, d: usize) -> Self {
        Self {
            n,
            d,
            data: vec![0.0; n * d],
        }
    }

    /// Point `i` as a slice.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Point `i` as a mutable slice.
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        &mut self.data[i * self.d..(i + 1) * self.d]
    }

    /// The points with the given indices, in that order.
    pub fn select(&self, idx: &[usize]) -> PointSet {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        PointSet::new(idx.len(), self.d, data)
    }

    /// The first `m` points (all of them if `m >= n`).
    pub fn head(&self, m: usize) -> PointSet {
        let m = m.min(self.n);
        PointSet::new(m, self.d, self.data[..m * self.d].to_vec())
    }

    /// Per-axis mean and population standard deviation.
    pub fn moments(&self) -> Standardization {
        let (n, d) = (self.n as f64, self.d);
        let mut mean = vec![0.0; d];
        for row in self.data.chunks_exact(d) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in self.data.chunks_exact(d) {
            for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (x - m) * (x - m);
            }
        }
        let std = var.iter().map(|v| (v / n).sqrt()).collect();
        Standardization { mean, std }
    }
}

/// The affine map applied by [`standardize`]: `x_std = (x - mean) / std` per axis.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardization {
    /// Per-axis mean of the raw data.
    pub mean: Vec<f64>,
    /// Per-axis population standard deviation of the raw data.
    pub std: Vec<f64>,
}

impl Standardization {
    /// Maps raw coordinates to standardised ones in place.
    pub fn apply(&self, x: &mut [f64]) {
        for (i, v) in x.iter_mut().enumerate() {
            let a = i % self.mean.len();
            *v = (*v - self.mean[a]) / self.std[a];
        }
    }

    /// Maps standardised coordinates back to raw ones in place.
    pub fn invert(&self, x: &mut [f64]) {
        for (i, v) in x.iter_mut().enumerate() {
            let a = i % self.mean.len();
            *v = *v * self.std[a] + self.mean[a];
        }
    }
}

/// Standardises each axis to zero mean and unit (population) variance; returns the map it applied.
pub fn standardize(points: &mut PointSet) -> Standardization {
    let s = points.moments();
    s.apply(&mut points.data);
    s
}

fn normal(rng: &mut crate::science::rng::Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Settings of the two_peaks dataset (spec §4).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TwoPeaksParams {
    /// Number of points (half in each peak; the first peak gets the extra one if odd).
    pub n: usize,
    /// Peak centres are `(-c, -c)` and `(c, c)`.
    pub center: f64,
    /// Isotropic standard deviation of each peak.
    pub std: f64,
}

impl Default for TwoPeaksParams {
    fn default() -> Self {
        Self {
            n: 10_000,
            center: 1.0,
            std: 0.5,
        }
    }
}

/// Two Gaussian peaks at (-1,-1) and (1,1), std 0.5, half the points each (not standardised).
pub fn two_peaks(p: &TwoPeaksParams, seed: u64) -> PointSet {
    let mut rng = stream(seed, "data/two_peaks");
    let mut data = Vec::with_capacity(2 * p.n);
    for i in 0..p.n {
        let c = if i < p.n.div_ceil(2) {
            -p.center
        } else {
            p.center
        };
        data.push(c + p.std * normal(&mut rng));
        data.push(c + p.std * normal(&mut rng));
    }
    PointSet::new(p.n, 2, data)
}

/// Settings of the ring dataset (spec §4).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RingParams {
    /// Number of points.
    pub n: usize,
    /// Inner radius.
    pub r_min: f64,
    /// Outer radius.
    pub r_max: f64,
}

impl Default for RingParams {
    fn default() -> Self {
        Self {
            n: 10_000,
            r_min: 1.0,
            r_max: 2.0,
        }
    }
}

/// Uniform points in the annulus `r_min <= r <= r_max` (r^2 uniform, angle uniform; not standardised).
pub fn ring(p: &RingParams, seed: u64) -> PointSet {
    let mut rng = stream(seed, "data/ring");
    let mut data = Vec::with_capacity(2 * p.n);
    let (a, b) = (p.r_min * p.r_min, p.r_max * p.r_max);
    for _ in 0..p.n {
        let r = (a + (b - a) * rng.gen::<f64>()).sqrt();
        let th = std::f64::consts::TAU * rng.gen::<f64>();
        data.push(r * th.cos());
        data.push(r * th.sin());
    }
    PointSet::new(p.n, 2, data)
}

/// Settings of the two_moons dataset (spec §4).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TwoMoonsParams {
    /// Number of points (the upper moon gets the extra one if odd).
    pub n: usize,
    /// Standard deviation of the Gaussian noise added to each coordinate.
    pub noise: f64,
    /// Whether to standardise each axis afterwards (the spec does).
    pub standardize: bool,
}

impl Default for TwoMoonsParams {
    fn default() -> Self {
        Self {
            n: 5_000,
            noise: 0.1,
            standardize: true,
        }
    }
}

/// Two interleaved half circles (the second flipped and shifted by +1 in x, -0.5 in y, as in the
/// classic construction), angle uniform, Gaussian noise, standardised per axis by default.
pub fn two_moons(p: &TwoMoonsParams, seed: u64) -> PointSet {
    let mut rng = stream(seed, "data/two_moons");
    let mut data = Vec::with_capacity(2 * p.n);
    let n_upper = p.n.div_ceil(2);
    for i in 0..p.n {
        let th = std::f64::consts::PI * rng.gen::<f64>();
        let (x, y) = if i < n_upper {
            (th.cos(), th.sin())
        } else {
            (1.0 - th.cos(), 0.5 - th.sin())
        };
        data.push(x + p.noise * normal(&mut rng));
        data.push(y + p.noise * normal(&mut rng));
    }
    let mut ps = PointSet::new(p.n, 2, data);
    if p.standardize {
        standardize(&mut ps);
    }
    ps
}

/// Settings of the Lorenz dataset (spec §4).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LorenzDataParams {
    /// The Lorenz system.
    pub system: LorenzParams,
    /// Number of independent runs (each from its own N(0, I) start).
    pub runs: usize,
    /// Recorded RK4 steps per run.
    pub steps: usize,
    /// RK4 steps integrated and discarded before recording (0 keeps the transient, as the spec's
    /// reference moments suggest; see [`lorenz`]).
    pub transient: usize,
    /// RK4 time step.
    pub dt: f64,
}

impl Default for LorenzDataParams {
    fn default() -> Self {
        Self {
            system: LorenzParams::default(),
            runs: 10,
            steps: 5_000,
            transient: 0,
            dt: 0.01,
        }
    }
}

/// Lorenz states: `runs` trajectories of `steps` RK4 steps from N(0, I) starts, raw (not standardised;
/// call [`standardize`] and keep the [`Standardization`] to compare with the true field later).
///
/// Each run records the states after steps 1..=steps (after `transient` discarded steps). The default
/// keeps no transient; the trajectory leaves the neighbourhood of the origin within ~2 time units,
/// so the transient is ~4 % of each run (measured moments are in the test below).
pub fn lorenz(p: &LorenzDataParams, seed: u64) -> PointSet {
    let runs: Vec<Vec<f64>> = (0..p.runs)
        .into_par_iter()
        .map(|r| {
            let mut rng = substream(seed, "data/lorenz", r as u64);
            let mut x = [normal(&mut rng), normal(&mut rng), normal(&mut rng)];
            let mut next = [0.0; 3];
            let f = |x: &[f64], out: &mut [f64]| p.system.field(x, out);
            for _ in 0..p.transient {
                rk4_step(&f, &x, p.dt, &mut next);
                x = next;
            }
            let mut out = Vec::with_capacity(3 * p.steps);
            for _ in 0..p.steps {
                rk4_step(&f, &x, p.dt, &mut next);
                x = next;
                out.extend_from_slice(&x);
            }
            out
        })
        .collect();
    PointSet::new(p.runs * p.steps, 3, runs.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_have_spec_shapes_and_moments() {
        let tp = two_peaks(&TwoPeaksParams::default(), 1);
        assert_eq!((tp.n, tp.d), (10_000, 2));
        let m = tp.moments();
        assert!(m.mean[0].abs() < 0.03, "{m:?}");
        // std of the mixture: sqrt(0.25 + 1) per axis
        assert!((m.std[0] - 1.25f64.sqrt()).abs() < 0.02, "{m:?}");
        let r = ring(&RingParams::default(), 1);
        for i in 0..r.n {
            let rr = r.row(i).iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((1.0..=2.0).contains(&rr));
        }
        let tm = two_moons(&TwoMoonsParams::default(), 1);
        let m = tm.moments();
        assert!(m.mean[0].abs() < 1e-12 && (m.std[1] - 1.0).abs() < 1e-12);
        assert_eq!(two_moons(&TwoMoonsParams::default(), 1), tm);
    }

    #[test]
    fn lorenz_dataset_moments_near_spec() {
        let mut ps = lorenz(&LorenzDataParams::default(), 0);
        assert_eq!((ps.n, ps.d), (50_000, 3));
        let s = standardize(&mut ps);
        eprintln!("lorenz moments {s:?}");
        // spec §4: mean ≈ (-0.19, -0.19, 24.5), std ≈ (8.1, 8.9, 7.6); attractor std differs by seed
        assert!(s.mean[0].abs() < 1.5 && s.mean[1].abs() < 1.5);
        assert!((s.mean[2] - 24.0).abs() < 1.5, "{s:?}");
        assert!(
            (s.std[0] - 8.0).abs() < 0.8 && (s.std[1] - 9.0).abs() < 0.8,
            "{s:?}"
        );
        assert!((s.std[2] - 8.0).abs() < 1.0, "{s:?}");
    }
}
