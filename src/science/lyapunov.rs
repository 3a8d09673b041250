//! Lyapunov exponents of a vector field: the largest one by the two-trajectory method of spec §5, the
//! full spectrum by QR re-orthonormalisation of tangent vectors (Benettin), and the Kaplan-Yorke dimension.
//!
//! Learned flows fix their speed only up to scale (the output batch-norm), so the largest exponent is
//! also reported per unit path length (divided by the mean speed along the reference trajectory).
//! Everything is f64 and works on fields given as closures over one point; many starts run in parallel
//! with one random stream per start, so results do not depend on the thread count.

use crate::science::integrators::rk4_step;
use crate::science::rng::substream;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Settings of the two-trajectory method (defaults: spec §5 for learned flows).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TwoTrajectoryConfig {
    /// RK4 step.
    pub dt: f64,
    /// Initial separation of the two trajectories.
    pub perturbation: f64,
    /// Steps between renormalisations.
    pub tau: usize,
    /// Number of renormalisation segments (the estimate averages them).
    pub segments: usize,
}

impl Default for TwoTrajectoryConfig {
    fn default() -> Self {
        Self {
            dt: 0.1,
            perturbation: 1e-5,
            tau: 2_500,
            segments: 1,
        }
    }
}

/// The largest exponent from one start.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LargestExponent {
    /// Mean over segments of `(log d_end - log d_start) / (tau dt)`, per time unit.
    pub per_time: f64,
    /// `per_time / mean_speed`: per unit path length of the reference trajectory.
    pub per_path_length: f64,
    /// Mean of `|f(x)|` over the reference trajectory's states.
    pub mean_speed: f64,
    /// The per-segment estimates.
    pub segment_exponents: Vec<f64>,
    /// `log(separation / perturbation)` after each step, accumulated over segments (for the
    /// "separation against time" figure); length `tau * segments`.
    pub log_growth: Vec<f64>,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Largest Lyapunov exponent from `x0` by the two-trajectory method: perturb by `perturbation` in a random
/// direction (from `substream(seed, "lyap/dir", 0)`), integrate both for `tau` RK4 steps, take the log
/// growth of the separation, rescale the perturbed state back to the initial separation, repeat.
pub fn largest_exponent<F: Fn(&[f64], &mut [f64]) + ?Sized>(
    f: &F,
    x0: &[f64],
    cfg: &TwoTrajectoryConfig,
    seed: u64,
) -> LargestExponent {
    let d = x0.len();
    let mut rng = substream(seed, "lyap/dir", 0);
    let mut dir: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let n = norm(&dir);
    dir.iter_mut().for_each(|v| *v *= cfg.perturbation / n);
    let mut x = x0.to_vec();
    let mut y: Vec<f64> = x.iter().zip(&dir).map(|(a, b)| a + b).collect();
    let (mut nx, mut ny, mut fx) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
    let mut speed_sum = 0.0;
    let mut speed_count = 0usize;
    let mut segs = Vec::with_capacity(cfg.segments);
    let mut log_growth = Vec::with_capacity(cfg.tau * cfg.segments);
    let mut acc = 0.0;
    for _ in 0..cfg.segments {
        for _ in 0..cfg.tau {
            f(&x, &mut fx);
            speed_sum += norm(&fx);
            speed_count += 1;
            rk4_step(f, &x, cfg.dt, &mut nx);
            rk4_step(f, &y, cfg.dt, &mut ny);
            std::mem::swap(&mut x, &mut nx);
            std::mem::swap(&mut y, &mut ny);
            let sep: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
            log_growth.push(acc + (norm(&sep) / cfg.perturbation).ln());
        }
        let sep: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
        let dn = norm(&sep);
        let g = (dn / cfg.perturbation).ln();
        acc += g;
        segs.push(g / (cfg.tau as f64 * cfg.dt));
        for i in 0..d {
            y[i] = x[i] + sep[i] * cfg.perturbation / dn;
        }
    }
    let per_time = segs.iter().sum::<f64>() / segs.len() as f64;
    let mean_speed = speed_sum / speed_count as f64;
    LargestExponent {
        per_time,
        per_path_length: per_time / mean_speed,
        mean_speed,
        segment_exponents: segs,
        log_growth,
    }
}

/// [`largest_exponent`] from many starts in parallel; start `i` uses seed `seed + i`-derived streams.
pub fn largest_exponents<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    starts: &[Vec<f64>],
    cfg: &TwoTrajectoryConfig,
    seed: u64,
) -> Vec<LargestExponent> {
    starts
        .par_iter()
        .enumerate()
        .map(|(i, x0)| {
            largest_exponent(
                f,
                x0,
                cfg,
                seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9),
            )
        })
        .collect()
}

/// Bounded starting states (spec §5): candidates drawn from N(0, I) (candidate `i` from
/// `substream(seed, "lyap/start", i)`), each integrated `steps` RK4 steps of `dt`; a candidate is kept if
/// every coordinate stays finite with `|x| < bound` along the way. Returns the final states of the first
/// `count` kept candidates in candidate order (fewer if `max_candidates` run out).
#[allow(clippy::too_many_arguments)]
pub fn bounded_starts<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    d: usize,
    count: usize,
    steps: usize,
    dt: f64,
    bound: f64,
    max_candidates: usize,
    seed: u64,
) -> Vec<Vec<f64>> {
    let mut kept = Vec::new();
    let mut next = 0usize;
    while kept.len() < count && next < max_candidates {
        let hi = (next + count.max(16)).min(max_candidates);
        let batch: Vec<Option<Vec<f64>>> = (next..hi)
            .into_par_iter()
            .map(|i| {
                let mut rng = substream(seed, "lyap/start", i as u64);
                let mut x: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
                let mut nx = vec![0.0; d];
                for _ in 0..steps {
                    rk4_step(f, &x, dt, &mut nx);
                    std::mem::swap(&mut x, &mut nx);
                    if !x.iter().all(|v| v.is_finite() && v.abs() < bound) {
                        return None;
                    }
                }
                Some(x)
            })
            .collect();
        kept.extend(batch.into_iter().flatten());
        next = hi;
    }
    kept.truncate(count);
    kept
}

/// Settings of the QR (Benettin) spectrum.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpectrumConfig {
    /// RK4 step.
    pub dt: f64,
    /// Steps integrated (state only) before measuring.
    pub transient: usize,
    /// Measured steps; the tangent vectors are re-orthonormalised after each.
    pub steps: usize,
}

/// The full Lyapunov spectrum (descending) from `x0`: the state and `d` tangent vectors are integrated
/// together by RK4 (tangents by the variational equation `dQ/dt = J(x) Q`, with `J` evaluated at the
/// RK4 stage states), and re-orthonormalised by Gram-Schmidt QR after each step; the exponents are the
/// time averages of `log |R_ii|`. `jac` writes the row-major `d x d` Jacobian at one point.
pub fn spectrum<F, J>(f: &F, jac: &J, x0: &[f64], cfg: &SpectrumConfig) -> Vec<f64>
where
    F: Fn(&[f64], &mut [f64]) + ?Sized,
    J: Fn(&[f64], &mut [f64]) + ?Sized,
{
    let d = x0.len();
    let mut x = x0.to_vec();
    let mut nx = vec![0.0; d];
    for _ in 0..cfg.transient {
        rk4_step(f, &x, cfg.dt, &mut nx);
        std::mem::swap(&mut x, &mut nx);
    }
    // combined state: x (d) then Q column-major-ish: q[k*d + i] = component i of tangent k
    let dim = d + d * d;
    let mut state = vec![0.0; dim];
    state[..d].copy_from_slice(&x);
    for k in 0..d {
        state[d + k * d + k] = 1.0;
    }
    let rhs = |s: &[f64], out: &mut [f64]| {
        f(&s[..d], &mut out[..d]);
        let mut j = vec![0.0; d * d];
        jac(&s[..d], &mut j);
        for k in 0..d {
            for i in 0..d {
                out[d + k * d + i] = (0..d).map(|c| j[i * d + c] * s[d + k * d + c]).sum();
            }
        }
    };
    let mut sums = vec![0.0; d];
    let mut next = vec![0.0; dim];
    for _ in 0..cfg.steps {
        rk4_step(&rhs, &state, cfg.dt, &mut next);
        std::mem::swap(&mut state, &mut next);
        // modified Gram-Schmidt on the d tangent vectors
        for k in 0..d {
            for p in 0..k {
                let dot: f64 = (0..d)
                    .map(|i| state[d + k * d + i] * state[d + p * d + i])
                    .sum();
                for i in 0..d {
                    state[d + k * d + i] -= dot * state[d + p * d + i];
                }
            }
            let n = norm(&state[d + k * d..d + (k + 1) * d]);
            sums[k] += n.ln();
            state[d + k * d..d + (k + 1) * d]
                .iter_mut()
                .for_each(|v| *v /= n);
        }
    }
    let t = cfg.steps as f64 * cfg.dt;
    let mut l: Vec<f64> = sums.iter().map(|s| s / t).collect();
    l.sort_by(|a, b| b.partial_cmp(a).expect("finite exponents"));
    l
}

/// Kaplan-Yorke dimension `j + (l_1 + .. + l_j) / |l_{j+1}|`, `j` the largest index with a non-negative
/// partial sum; `exponents` in any order. Returns `d` if every partial sum is non-negative, 0 if `l_1 < 0`.
pub fn kaplan_yorke(exponents: &[f64]) -> f64 {
    let mut l = exponents.to_vec();
    l.sort_by(|a, b| b.partial_cmp(a).expect("finite exponents"));
    let mut sum = 0.0;
    for (j, &lj) in l.iter().enumerate() {
        if sum + lj < 0.0 {
            return j as f64 + sum / lj.abs();
        }
        sum += lj;
    }
    l.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::science::lorenz::LorenzParams;

    // Reference values for the true Lorenz system (sigma 10, rho 28, beta 8/3): lambda = (0.906, 0, -14.57),
    // Kaplan-Yorke 2.06 (spec §5; Sprott's tables).
    #[test]
    fn lorenz_largest_exponent_two_trajectory() {
        let p = LorenzParams::default();
        let f = |x: &[f64], o: &mut [f64]| p.field(x, o);
        let starts = bounded_starts(&f, 3, 4, 2000, 0.01, 100.0, 100, 1);
        assert_eq!(starts.len(), 4);
        let cfg = TwoTrajectoryConfig {
            dt: 0.01,
            perturbation: 1e-8,
            tau: 100,
            segments: 250,
        };
        let est = largest_exponents(&f, &starts, &cfg, 2);
        let mean = est.iter().map(|e| e.per_time).sum::<f64>() / 4.0;
        assert!((mean - 0.906).abs() < 0.05 * 0.906, "lambda_1 {mean}");
        assert!(est[0].mean_speed > 10.0 && est[0].log_growth.len() == 25_000);
    }

    #[test]
    fn lorenz_spectrum_and_kaplan_yorke() {
        let p = LorenzParams::default();
        let f = |x: &[f64], o: &mut [f64]| p.field(x, o);
        let j = |x: &[f64], o: &mut [f64]| p.jacobian(x, o);
        let cfg = SpectrumConfig {
            dt: 0.01,
            transient: 1000,
            steps: 100_000,
        };
        let l = spectrum(&f, &j, &[1.0, 1.0, 20.0], &cfg);
        assert!((l[0] - 0.906).abs() < 0.05 * 0.906, "{l:?}");
        assert!(l[1].abs() < 0.02, "{l:?}");
        assert!((l[2] + 14.57).abs() < 0.1, "{l:?}");
        // the sum is the divergence -(sigma + 1 + beta) exactly
        assert!(
            (l.iter().sum::<f64>() + 11.0 + 8.0 / 3.0).abs() < 1e-3,
            "{l:?}"
        );
        let ky = kaplan_yorke(&l);
        assert!((ky - 2.06).abs() < 0.01, "KY {ky}");
        assert_eq!(kaplan_yorke(&[-1.0, -2.0]), 0.0);
    }
}
