//! Fixed-step integrators for fields on points: classic RK4 (one point, or many points in parallel)
//! and Euler-Maruyama for SDEs with additive isotropic noise.
//!
//! Fields are closures over one point, `Fn(&[f64], &mut [f64])`, so the true Lorenz field, a plain-Rust
//! neural field and composites like `v + eta*s` all fit. The batched versions split the points over
//! rayon workers; each point's arithmetic is independent of the split, so results are bit-identical
//! whatever the thread count. Noise comes from one [`substream`] per point for the same reason.

use crate::science::points::PointSet;
use crate::science::rng::substream;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// One classic RK4 step of `dx/dt = f(x)` from `x` over `dt`, written into `out` (`out` may not alias `x`).
pub fn rk4_step<F: Fn(&[f64], &mut [f64]) + ?Sized>(f: &F, x: &[f64], dt: f64, out: &mut [f64]) {
    let d = x.len();
    let mut k1 = vec![0.0; d];
    let mut k2 = vec![0.0; d];
    let mut k3 = vec![0.0; d];
    let mut k4 = vec![0.0; d];
    let mut tmp = vec![0.0; d];
    f(x, &mut k1);
    for i in 0..d {
        tmp[i] = x[i] + 0.5 * dt * k1[i];
    }
    f(&tmp, &mut k2);
    for i in 0..d {
        tmp[i] = x[i] + 0.5 * dt * k2[i];
    }
    f(&tmp, &mut k3);
    for i in 0..d {
        tmp[i] = x[i] + dt * k3[i];
    }
    f(&tmp, &mut k4);
    for i in 0..d {
        out[i] = x[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
}

/// Integrates one point for `steps` RK4 steps; returns the `steps + 1` states (start included), row-major.
pub fn rk4_trajectory<F: Fn(&[f64], &mut [f64]) + ?Sized>(
    f: &F,
    x0: &[f64],
    dt: f64,
    steps: usize,
) -> PointSet {
    let d = x0.len();
    let mut data = Vec::with_capacity((steps + 1) * d);
    data.extend_from_slice(x0);
    let mut x = x0.to_vec();
    let mut next = vec![0.0; d];
    for _ in 0..steps {
        rk4_step(f, &x, dt, &mut next);
        std::mem::swap(&mut x, &mut next);
        data.extend_from_slice(&x);
    }
    PointSet::new(steps + 1, d, data)
}

/// Advances every point of `points` by `steps` RK4 steps in place, points in parallel.
pub fn rk4_batch<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    points: &mut PointSet,
    dt: f64,
    steps: usize,
) {
    let d = points.d;
    points.data.par_chunks_mut(d).for_each(|x| {
        let mut next = vec![0.0; d];
        for _ in 0..steps {
            rk4_step(f, x, dt, &mut next);
            x.copy_from_slice(&next);
        }
    });
}

/// Like [`rk4_batch`] but records every step: returns `steps + 1` snapshots of all points (start first).
pub fn rk4_batch_snapshots<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    start: &PointSet,
    dt: f64,
    steps: usize,
) -> Vec<PointSet> {
    let trajs: Vec<PointSet> = (0..start.n)
        .into_par_iter()
        .map(|i| rk4_trajectory(f, start.row(i), dt, steps))
        .collect();
    (0..=steps)
        .map(|s| {
            let mut data = Vec::with_capacity(start.n * start.d);
            for t in &trajs {
                data.extend_from_slice(t.row(s));
            }
            PointSet::new(start.n, start.d, data)
        })
        .collect()
}

/// Euler-Maruyama for `dx = f(x) dt + g dW` (scalar `g`, isotropic): `x += f(x) dt + g sqrt(dt) xi`.
///
/// Langevin-corrected flows `dx = (v + eta s) dt + sqrt(2 eta) dW` use `g = sqrt(2 eta)`. Returns, for each
/// start point, its `steps + 1` states; point `i` draws its noise from `substream(seed, "em", i)`.
pub fn euler_maruyama<F: Fn(&[f64], &mut [f64]) + Sync + ?Sized>(
    f: &F,
    g: f64,
    start: &PointSet,
    dt: f64,
    steps: usize,
    seed: u64,
) -> Vec<PointSet> {
    let d = start.d;
    (0..start.n)
        .into_par_iter()
        .map(|i| {
            let mut rng = substream(seed, "em", i as u64);
            let mut x = start.row(i).to_vec();
            let mut fx = vec![0.0; d];
            let mut data = Vec::with_capacity((steps + 1) * d);
            data.extend_from_slice(&x);
            let sd = g * dt.sqrt();
            for _ in 0..steps {
                f(&x, &mut fx);
                for j in 0..d {
                    let xi: f64 = StandardNormal.sample(&mut rng);
                    x[j] += fx[j] * dt + sd * xi;
                }
                data.extend_from_slice(&x);
            }
            PointSet::new(steps + 1, d, data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rk4_is_fourth_order_on_rotation() {
        // dx/dt = (-y, x): exact solution is a rotation; error of RK4 over fixed time ~ dt^4.
        let f = |x: &[f64], o: &mut [f64]| {
            o[0] = -x[1];
            o[1] = x[0];
        };
        let err = |dt: f64| {
            let n = (1.0 / dt).round() as usize;
            let tr = rk4_trajectory(&f, &[1.0, 0.0], dt, n);
            let e = tr.row(n);
            ((e[0] - 1f64.cos()).powi(2) + (e[1] - 1f64.sin()).powi(2)).sqrt()
        };
        let ratio = err(0.1) / err(0.05);
        assert!((ratio - 16.0).abs() < 1.5, "order ratio {ratio}");
        let mut ps = PointSet::new(2, 2, vec![1.0, 0.0, 0.0, 2.0]);
        rk4_batch(&f, &mut ps, 0.1, 10);
        assert_eq!(ps.row(0), rk4_trajectory(&f, &[1.0, 0.0], 0.1, 10).row(10));
    }

    #[test]
    fn euler_maruyama_ou_variance() {
        // dx = -x dt + sqrt(2) dW has stationary variance 1.
        let f = |x: &[f64], o: &mut [f64]| o[0] = -x[0];
        let start = PointSet::zeros(2000, 1);
        let paths = euler_maruyama(&f, 2f64.sqrt(), &start, 0.01, 500, 3);
        let var = paths.iter().map(|p| p.data[500] * p.data[500]).sum::<f64>() / 2000.0;
        assert!((var - 1.0).abs() < 0.1, "var {var}");
    }
}
