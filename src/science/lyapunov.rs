//! Lyapunov exponents of a vector field: the largest one by the two-trajectory method of spec §5, the
//! full spectrum by QR re-orthonormalisation of tangent vectors (Benettin), and the Kaplan-Yorke dimension.
//!
//! Learned flows fix their speed only up to scale (the output batch-norm), so the largest exponent is
//! also reported per unit path length (divided by the mean speed along the reference trajectory).
//! Everything is f64. Fields are [`BatchField`]s: they evaluate a whole block of points per call, so a
//! neural field runs each layer once over all trajectories of a block (and their perturbed twins) instead
//! of one small mat-vec per point. Blocks of [`BLOCK`] starts run in parallel; every point's arithmetic is
//! the same as integrating it alone (same operations in the same order), with one random stream per start,
//! so results do not depend on the block split or the thread count.

use crate::science::integrators::rk4_step;
use crate::science::rng::substream;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Starts integrated together in one block (one parallel task); the two-trajectory method evaluates
/// `2 * BLOCK` points per field call.
pub const BLOCK: usize = 16;

/// A vector field on `R^d` evaluated on a block of points at once.
pub trait BatchField: Sync {
    /// The dimension `d`.
    fn dim(&self) -> usize;
    /// `out[p] = v(x[p])` for the row-major points `x` (`n * d` values), `out` the same shape. The value
    /// at a point must not depend on the other points of the block.
    fn eval_block(&self, x: &[f64], out: &mut [f64]);
    /// The row-major `d x d` Jacobian `d v_i / d x_j` at one point.
    fn jacobian(&self, x: &[f64], out: &mut [f64]);
}

/// A field given by per-point closures (the true Lorenz field, tests), as a [`BatchField`].
pub struct Pointwise<F, J> {
    /// The dimension.
    pub d: usize,
    /// `v` at one point.
    pub f: F,
    /// The Jacobian at one point (row-major `d x d`).
    pub jac: J,
}

impl<F, J> BatchField for Pointwise<F, J>
where
    F: Fn(&[f64], &mut [f64]) + Sync,
    J: Fn(&[f64], &mut [f64]) + Sync,
{
    fn dim(&self) -> usize {
        self.d
    }
    fn eval_block(&self, x: &[f64], out: &mut [f64]) {
        for (p, o) in x.chunks_exact(self.d).zip(out.chunks_exact_mut(self.d)) {
            (self.f)(p, o);
        }
    }
    fn jacobian(&self, x: &[f64], out: &mut [f64]) {
        (self.jac)(x, out);
    }
}

/// A per-point Jacobian that is never called.
pub type NoJacobian = fn(&[f64], &mut [f64]);

/// A [`Pointwise`] field without a Jacobian (the largest exponent and bounded starts do not need one).
pub fn pointwise<F: Fn(&[f64], &mut [f64]) + Sync>(d: usize, f: F) -> Pointwise<F, NoJacobian> {
    Pointwise {
        d,
        f,
        jac: |_, _| panic!("this field has no Jacobian"),
    }
}

/// Scratch of [`rk4_block`]: the four stages and the stage point, one row per point.
#[derive(Default)]
struct Rk4Scratch {
    k1: Vec<f64>,
    k2: Vec<f64>,
    k3: Vec<f64>,
    k4: Vec<f64>,
    tmp: Vec<f64>,
}

/// One RK4 step of every point of the block `x` into `out`; `k1` is left in `s.k1` (it is `v(x)`). The
/// element-wise arithmetic is exactly [`rk4_step`]'s, so each point gets the same bits as alone.
fn rk4_block<B: BatchField + ?Sized>(
    f: &B,
    x: &[f64],
    dt: f64,
    out: &mut [f64],
    s: &mut Rk4Scratch,
) {
    let n = x.len();
    for v in [&mut s.k1, &mut s.k2, &mut s.k3, &mut s.k4, &mut s.tmp] {
        v.resize(n, 0.0);
    }
    f.eval_block(x, &mut s.k1);
    let stage = |tmp: &mut [f64], k: &[f64], h: f64| {
        for ((t, xi), ki) in tmp.iter_mut().zip(x).zip(k) {
            *t = xi + h * ki;
        }
    };
    stage(&mut s.tmp, &s.k1, 0.5 * dt);
    f.eval_block(&s.tmp, &mut s.k2);
    stage(&mut s.tmp, &s.k2, 0.5 * dt);
    f.eval_block(&s.tmp, &mut s.k3);
    stage(&mut s.tmp, &s.k3, dt);
    f.eval_block(&s.tmp, &mut s.k4);
    for i in 0..n {
        out[i] = x[i] + dt / 6.0 * (s.k1[i] + 2.0 * s.k2[i] + 2.0 * s.k3[i] + s.k4[i]);
    }
}

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
pub fn largest_exponent<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    x0: &[f64],
    cfg: &TwoTrajectoryConfig,
    seed: u64,
) -> LargestExponent {
    let field = pointwise(x0.len(), |x: &[f64], o: &mut [f64]| f(x, o));
    two_trajectory_block(&field, &[x0.to_vec()], &[seed], cfg)
        .pop()
        .expect("one start gives one estimate")
}

/// The seed of start `i` of [`largest_exponents`].
fn start_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9)
}

/// [`largest_exponent`] from many starts in parallel; start `i` uses seed `seed + i`-derived streams.
pub fn largest_exponents<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    starts: &[Vec<f64>],
    cfg: &TwoTrajectoryConfig,
    seed: u64,
) -> Vec<LargestExponent> {
    let d = starts.first().map(Vec::len).unwrap_or(0);
    largest_exponents_of(
        &pointwise(d, |x: &[f64], o: &mut [f64]| f(x, o)),
        starts,
        cfg,
        seed,
    )
}

/// [`largest_exponents`] for a [`BatchField`]: blocks of [`BLOCK`] starts (each with its perturbed twin)
/// advance together, blocks in parallel. Identical results to the one-start version.
pub fn largest_exponents_of<B: BatchField + ?Sized>(
    f: &B,
    starts: &[Vec<f64>],
    cfg: &TwoTrajectoryConfig,
    seed: u64,
) -> Vec<LargestExponent> {
    let blocks: Vec<Vec<LargestExponent>> = starts
        .par_chunks(BLOCK)
        .enumerate()
        .map(|(b, chunk)| {
            let seeds: Vec<u64> = (0..chunk.len())
                .map(|j| start_seed(seed, b * BLOCK + j))
                .collect();
            two_trajectory_block(f, chunk, &seeds, cfg)
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// The two-trajectory method for a block of starts: rows `0..m` of the state are the reference
/// trajectories, rows `m..2m` their perturbed twins. Per start, the same operations as one start alone.
fn two_trajectory_block<B: BatchField + ?Sized>(
    f: &B,
    starts: &[Vec<f64>],
    seeds: &[u64],
    cfg: &TwoTrajectoryConfig,
) -> Vec<LargestExponent> {
    let d = f.dim();
    let m = starts.len();
    let mut state = vec![0.0; 2 * m * d];
    for (j, (x0, &seed)) in starts.iter().zip(seeds).enumerate() {
        let mut rng = substream(seed, "lyap/dir", 0);
        let mut dir: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let n = norm(&dir);
        dir.iter_mut().for_each(|v| *v *= cfg.perturbation / n);
        state[j * d..(j + 1) * d].copy_from_slice(x0);
        for i in 0..d {
            state[(m + j) * d + i] = x0[i] + dir[i];
        }
    }
    let mut next = vec![0.0; 2 * m * d];
    let mut scratch = Rk4Scratch::default();
    let mut speed_sum = vec![0.0; m];
    let mut speed_count = 0usize;
    let mut segs = vec![Vec::with_capacity(cfg.segments); m];
    let mut log_growth = vec![Vec::with_capacity(cfg.tau * cfg.segments); m];
    let mut acc = vec![0.0; m];
    let mut sep = vec![0.0; d];
    for _ in 0..cfg.segments {
        for _ in 0..cfg.tau {
            rk4_block(f, &state, cfg.dt, &mut next, &mut scratch);
            // the speed at the reference state before the step is RK4's first stage there
            for (j, s) in speed_sum.iter_mut().enumerate() {
                *s += norm(&scratch.k1[j * d..(j + 1) * d]);
            }
            speed_count += 1;
            std::mem::swap(&mut state, &mut next);
            for j in 0..m {
                for i in 0..d {
                    sep[i] = state[(m + j) * d + i] - state[j * d + i];
                }
                log_growth[j].push(acc[j] + (norm(&sep) / cfg.perturbation).ln());
            }
        }
        for j in 0..m {
            for i in 0..d {
                sep[i] = state[(m + j) * d + i] - state[j * d + i];
            }
            let dn = norm(&sep);
            let g = (dn / cfg.perturbation).ln();
            acc[j] += g;
            segs[j].push(g / (cfg.tau as f64 * cfg.dt));
            for i in 0..d {
                state[(m + j) * d + i] = state[j * d + i] + sep[i] * cfg.perturbation / dn;
            }
        }
    }
    segs.into_iter()
        .zip(log_growth)
        .zip(speed_sum)
        .map(|((segs, log_growth), speed_sum)| {
            let per_time = segs.iter().sum::<f64>() / segs.len() as f64;
            let mean_speed = speed_sum / speed_count as f64;
            LargestExponent {
                per_time,
                per_path_length: per_time / mean_speed,
                mean_speed,
                segment_exponents: segs,
                log_growth,
            }
        })
        .collect()
}

/// Settings of the search for bounded starting states ([`bounded_starts`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StartSearch {
    /// How many starts to return.
    pub count: usize,
    /// RK4 steps each candidate must survive.
    pub steps: usize,
    /// RK4 step.
    pub dt: f64,
    /// Every coordinate must stay below this in absolute value.
    pub bound: f64,
    /// Candidates tried at most.
    pub max_candidates: usize,
}

/// Bounded starting states (spec §5): candidates drawn from N(0, I) (candidate `i` from
/// `substream(seed, "lyap/start", i)`), each integrated `steps` RK4 steps of `dt`; a candidate is kept if
/// every coordinate stays finite with `|x| < bound` along the way. Returns the final states of the first
/// `count` kept candidates in candidate order (fewer if `max_candidates` run out).
pub fn bounded_starts<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    d: usize,
    search: &StartSearch,
    seed: u64,
) -> Vec<Vec<f64>> {
    bounded_starts_of(
        &pointwise(d, |x: &[f64], o: &mut [f64]| f(x, o)),
        search,
        seed,
    )
}

/// [`bounded_starts`] for a [`BatchField`]: candidates advance in blocks of [`BLOCK`], blocks in parallel,
/// and a candidate leaves its block as soon as it leaves the bound.
pub fn bounded_starts_of<B: BatchField + ?Sized>(
    f: &B,
    search: &StartSearch,
    seed: u64,
) -> Vec<Vec<f64>> {
    let StartSearch {
        count,
        steps,
        dt,
        bound,
        max_candidates,
    } = *search;
    let d = f.dim();
    let mut kept = Vec::new();
    let mut next = 0usize;
    while kept.len() < count && next < max_candidates {
        // Only as many candidates per round as starts are still missing (at least 16, to keep the workers
        // busy): the kept starts are the first `count` survivors in candidate order however many are tried.
        let hi = (next + (count - kept.len()).max(16)).min(max_candidates);
        let ids: Vec<usize> = (next..hi).collect();
        let batch: Vec<Vec<Option<Vec<f64>>>> = ids
            .par_chunks(BLOCK / 2)
            .map(|chunk| {
                // rows of `state` are the candidates `alive` still within the bound
                let mut alive: Vec<usize> = (0..chunk.len()).collect();
                let mut state: Vec<f64> = chunk
                    .iter()
                    .flat_map(|&i| {
                        let mut rng = substream(seed, "lyap/start", i as u64);
                        (0..d)
                            .map(|_| StandardNormal.sample(&mut rng))
                            .collect::<Vec<f64>>()
                    })
                    .collect();
                let mut nx = vec![0.0; state.len()];
                let mut scratch = Rk4Scratch::default();
                for _ in 0..steps {
                    if alive.is_empty() {
                        break;
                    }
                    nx.resize(state.len(), 0.0);
                    rk4_block(f, &state, dt, &mut nx, &mut scratch);
                    std::mem::swap(&mut state, &mut nx);
                    let inside = |r: usize| {
                        state[r * d..(r + 1) * d]
                            .iter()
                            .all(|v| v.is_finite() && v.abs() < bound)
                    };
                    if (0..alive.len()).all(inside) {
                        continue;
                    }
                    let keep: Vec<usize> = (0..alive.len()).filter(|&r| inside(r)).collect();
                    state = keep
                        .iter()
                        .flat_map(|&r| state[r * d..(r + 1) * d].to_vec())
                        .collect();
                    alive = keep.iter().map(|&r| alive[r]).collect();
                }
                let mut out = vec![None; chunk.len()];
                for (r, &c) in alive.iter().enumerate() {
                    out[c] = Some(state[r * d..(r + 1) * d].to_vec());
                }
                out
            })
            .collect();
        kept.extend(batch.into_iter().flatten().flatten());
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

/// [`spectrum`] of a [`BatchField`] (the state and its tangents advance one point at a time).
pub fn spectrum_of<B: BatchField + ?Sized>(f: &B, x0: &[f64], cfg: &SpectrumConfig) -> Vec<f64> {
    spectrum(
        &|x: &[f64], o: &mut [f64]| f.eval_block(x, o),
        &|x: &[f64], o: &mut [f64]| f.jacobian(x, o),
        x0,
        cfg,
    )
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
        let starts = bounded_starts(
            &f,
            3,
            &StartSearch {
                count: 4,
                steps: 2000,
                dt: 0.01,
                bound: 100.0,
                max_candidates: 100,
            },
            1,
        );
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

    /// The block integrators give the bits of the plain per-point loops they replaced.
    #[test]
    fn blocks_match_per_point_loops() {
        // Lorenz in units of 10, so that N(0, I) starts are spread over the attractor's basin
        let p = LorenzParams::default();
        let f = |x: &[f64], o: &mut [f64]| {
            p.field(&[10.0 * x[0], 10.0 * x[1], 10.0 * x[2]], o);
            o.iter_mut().for_each(|v| *v /= 10.0);
        };
        let (steps, dt, bound, seed) = (300, 0.01, 5.0, 4);
        // per candidate, in candidate order: keep the final state if it stays within the bound
        let mut plain_starts = Vec::new();
        for i in 0..200u64 {
            let mut rng = substream(seed, "lyap/start", i);
            let mut x: Vec<f64> = (0..3).map(|_| StandardNormal.sample(&mut rng)).collect();
            let mut nx = vec![0.0; 3];
            let mut ok = true;
            for _ in 0..steps {
                rk4_step(&f, &x, dt, &mut nx);
                std::mem::swap(&mut x, &mut nx);
                ok &= x.iter().all(|v| v.is_finite() && v.abs() < bound);
            }
            if ok {
                plain_starts.push(x);
            }
        }
        // some candidates leave the bound, enough stay (113 of 200)
        assert!(
            (20..200).contains(&plain_starts.len()),
            "{}",
            plain_starts.len()
        );
        assert_eq!(
            bounded_starts(
                &f,
                3,
                &StartSearch {
                    count: 19,
                    steps,
                    dt,
                    bound,
                    max_candidates: 200
                },
                seed
            ),
            plain_starts[..19]
        );
        let cfg = TwoTrajectoryConfig {
            dt,
            perturbation: 1e-8,
            tau: 50,
            segments: 3,
        };
        let starts: Vec<Vec<f64>> = plain_starts.iter().take(19).cloned().collect();
        let blocks = largest_exponents(&f, &starts, &cfg, 7);
        for (i, (x0, got)) in starts.iter().zip(&blocks).enumerate() {
            // the loop of the original one-start implementation
            let mut rng = substream(start_seed(7, i), "lyap/dir", 0);
            let mut dir: Vec<f64> = (0..3).map(|_| StandardNormal.sample(&mut rng)).collect();
            let n = norm(&dir);
            dir.iter_mut().for_each(|v| *v *= cfg.perturbation / n);
            let mut x = x0.clone();
            let mut y: Vec<f64> = x.iter().zip(&dir).map(|(a, b)| a + b).collect();
            let (mut nx, mut ny, mut fx) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 3]);
            let (mut speed, mut segs, mut growth, mut acc) = (0.0, vec![], vec![], 0.0);
            for _ in 0..cfg.segments {
                for _ in 0..cfg.tau {
                    f(&x, &mut fx);
                    speed += norm(&fx);
                    rk4_step(&f, &x, dt, &mut nx);
                    rk4_step(&f, &y, dt, &mut ny);
                    std::mem::swap(&mut x, &mut nx);
                    std::mem::swap(&mut y, &mut ny);
                    let sep: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
                    growth.push(acc + (norm(&sep) / cfg.perturbation).ln());
                }
                let sep: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
                let dn = norm(&sep);
                let g = (dn / cfg.perturbation).ln();
                acc += g;
                segs.push(g / (cfg.tau as f64 * dt));
                for i in 0..3 {
                    y[i] = x[i] + sep[i] * cfg.perturbation / dn;
                }
            }
            assert_eq!(got.segment_exponents, segs);
            assert_eq!(got.log_growth, growth);
            assert_eq!(
                got.mean_speed.to_bits(),
                (speed / (cfg.tau * cfg.segments) as f64).to_bits()
            );
        }
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
