//! Multi-channel circular convolution kernels `K[o, i, dy, dx]` and their application to `[N, C, H, W]`
//! fields; in particular skew-adjoint kernels (K[o,i,d] = -K[i,o,-d]) that turn a score into a flow
//! v = K ⋆ s preserving the density exactly (spec §7), and the non-skew baselines the paper compares with.
//!
//! Convention: `apply` is a periodic cross-correlation, `out[o, y, x] = Σ_{i,a,b} K[o,i,a,b] ·
//! in[i, y + a - r, x + b - r]` (r = size / 2, indices wrapped). Its adjoint has `K*[i,o,d] = K[o,i,-d]`,
//! so a kernel is skew-adjoint exactly when `K[o,i,d] = -K[i,o,-d]`, and then ⟨Kx, y⟩ = -⟨x, Ky⟩.
//! Every random kernel is normalised to Frobenius norm 1 — the norm of the paper's rotation
//! ±[[0,1],[-1,0]]/√2 — so kernels of every kind drive the flow at comparable speed.
//! Kernels are small (≤ a few hundred weights), so application is a direct loop of shifted row-axpys,
//! parallel over samples; it costs far less than one score-network pass.

use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::science::rng::stream;

/// A multi-channel periodic convolution kernel of odd spatial size.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvKernel {
    /// Output channels.
    pub c_out: usize,
    /// Input channels.
    pub c_in: usize,
    /// Spatial size (odd); 1 for a pure channel mix.
    pub size: usize,
    /// Weights, `[c_out, c_in, size, size]` row-major.
    pub data: Vec<f32>,
}

impl ConvKernel {
    /// A kernel from raw weights `[c_out, c_in, size, size]`.
    pub fn new(c_out: usize, c_in: usize, size: usize, data: Vec<f32>) -> Self {
        assert!(size % 2 == 1, "kernel size must be odd");
        assert_eq!(
            data.len(),
            c_out * c_in * size * size,
            "kernel data has the wrong length"
        );
        Self {
            c_out,
            c_in,
            size,
            data,
        }
    }

    /// The paper's channel rotation γ·[[0,1],[-1,0]]/√2 as a 1x1 kernel over 2 channels; `gamma` is ±1.
    pub fn rotation(gamma: f32) -> Self {
        let a = gamma / std::f32::consts::SQRT_2;
        Self::new(2, 2, 1, vec![0.0, a, -a, 0.0])
    }

    /// A random spatial skew kernel of odd `size`: P ~ N(0, 1) of shape `[c, c, size, size]` drawn from
    /// `seed`, K = P - flip(transpose(P)) (i.e. K[o,i,d] = P[o,i,d] - P[i,o,-d]), scaled to Frobenius norm 1.
    pub fn spatial(channels: usize, size: usize, seed: u64) -> Self {
        Self::random_skew(channels, size, seed, "skew-kernel/spatial")
    }

    /// A random 1x1 skew channel-mixing kernel (a random antisymmetric c x c matrix, Frobenius norm 1).
    pub fn channel_mixing(channels: usize, seed: u64) -> Self {
        Self::random_skew(channels, 1, seed, "skew-kernel/channel-mixing")
    }

    /// The paper's baseline: a random non-skew 1x1 channel kernel (entries N(0,1), Frobenius norm 1).
    pub fn random_nonskew(channels: usize, seed: u64) -> Self {
        let mut rng = stream(seed, "skew-kernel/nonskew");
        let data = (0..channels * channels)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let mut k = Self::new(channels, channels, 1, data);
        k.normalise();
        k
    }

    /// The zero kernel (pure Langevin dynamics when used as the flow).
    pub fn zero(channels: usize) -> Self {
        Self::new(channels, channels, 1, vec![0.0; channels * channels])
    }

    fn random_skew(c: usize, s: usize, seed: u64, name: &str) -> Self {
        let mut rng = stream(seed, name);
        let p: Vec<f32> = (0..c * c * s * s)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let idx = |o: usize, i: usize, a: usize, b: usize| ((o * c + i) * s + a) * s + b;
        let mut data = vec![0.0f32; p.len()];
        for o in 0..c {
            for i in 0..c {
                for a in 0..s {
                    for b in 0..s {
                        data[idx(o, i, a, b)] =
                            p[idx(o, i, a, b)] - p[idx(i, o, s - 1 - a, s - 1 - b)];
                    }
                }
            }
        }
        let mut k = Self::new(c, c, s, data);
        k.normalise();
        k
    }

    /// Scales to Frobenius norm 1 (a zero kernel stays zero).
    fn normalise(&mut self) {
        let n = self.frobenius_norm();
        if n > 0.0 {
            self.data.iter_mut().for_each(|x| *x /= n);
        }
    }

    /// The Frobenius norm of the weights.
    pub fn frobenius_norm(&self) -> f32 {
        self.data.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    /// The kernel times `factor` (e.g. -1 for the opposite sign γ).
    pub fn scaled(&self, factor: f32) -> Self {
        Self {
            data: self.data.iter().map(|x| x * factor).collect(),
            ..self.clone()
        }
    }

    /// The largest violation max |K[o,i,d] + K[i,o,-d]| of skew-adjointness (0 for a skew kernel).
    pub fn skew_defect(&self) -> f32 {
        if self.c_in != self.c_out {
            return f32::INFINITY;
        }
        let (c, s) = (self.c_in, self.size);
        let idx = |o: usize, i: usize, a: usize, b: usize| ((o * c + i) * s + a) * s + b;
        let mut worst = 0.0f32;
        for o in 0..c {
            for i in 0..c {
                for a in 0..s {
                    for b in 0..s {
                        let d =
                            self.data[idx(o, i, a, b)] + self.data[idx(i, o, s - 1 - a, s - 1 - b)];
                        worst = worst.max(d.abs());
                    }
                }
            }
        }
        worst
    }

    /// Applies the kernel to one `[c_in, h, w]` field, writing `[c_out, h, w]` into `out`.
    pub fn apply_one(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let hw = h * w;
        assert_eq!(x.len(), self.c_in * hw, "input must be [c_in, h, w]");
        assert_eq!(out.len(), self.c_out * hw, "output must be [c_out, h, w]");
        out.fill(0.0);
        let (s, r) = (self.size, (self.size / 2) as isize);
        for o in 0..self.c_out {
            let oc = &mut out[o * hw..(o + 1) * hw];
            for i in 0..self.c_in {
                let xc = &x[i * hw..(i + 1) * hw];
                for a in 0..s {
                    for b in 0..s {
                        let k = self.data[((o * self.c_in + i) * s + a) * s + b];
                        if k == 0.0 {
                            continue;
                        }
                        let dy = a as isize - r;
                        let dx = (b as isize - r).rem_euclid(w as isize) as usize;
                        for y in 0..h {
                            let sy = (y as isize + dy).rem_euclid(h as isize) as usize;
                            let src = &xc[sy * w..(sy + 1) * w];
                            let dst = &mut oc[y * w..(y + 1) * w];
                            // out[x] += k * src[(x + dx) mod w], as two contiguous pieces.
                            let (d1, d2) = dst.split_at_mut(w - dx);
                            d1.iter_mut().zip(&src[dx..]).for_each(|(d, v)| *d += k * v);
                            d2.iter_mut().zip(&src[..dx]).for_each(|(d, v)| *d += k * v);
                        }
                    }
                }
            }
        }
    }

    /// Applies the kernel to every sample of an `[n, c_in, h, w]` batch, in parallel over samples.
    pub fn apply(&self, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let (ni, no) = (self.c_in * h * w, self.c_out * h * w);
        assert_eq!(x.len() / ni, out.len() / no, "batch sizes differ");
        out.par_chunks_mut(no)
            .zip(x.par_chunks(ni))
            .for_each(|(o, xi)| self.apply_one(xi, h, w, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// ⟨Kx, y⟩ + ⟨x, Ky⟩ relative to |⟨Kx, y⟩|, on random fields of a non-square grid.
    fn skew_residual(k: &ConvKernel) -> f64 {
        let (n, h, w) = (2, 7, 9);
        let mut rng = stream(3, "test");
        let len = n * k.c_in * h * w;
        let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let y: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let (mut kx, mut ky) = (vec![0.0; len], vec![0.0; len]);
        k.apply(&x, h, w, &mut kx);
        k.apply(&y, h, w, &mut ky);
        let (a, b) = (dot(&kx, &y), dot(&x, &ky));
        (a + b).abs() / a.abs().max(1e-12)
    }

    #[test]
    fn skew_kernels_are_skew_adjoint() {
        for k in [
            ConvKernel::rotation(1.0),
            ConvKernel::rotation(-1.0),
            ConvKernel::spatial(2, 5, 1),
            ConvKernel::spatial(3, 3, 2),
            ConvKernel::channel_mixing(3, 4),
        ] {
            assert!(k.skew_defect() < 1e-7);
            assert!((k.frobenius_norm() - 1.0).abs() < 1e-5);
            let r = skew_residual(&k);
            assert!(
                r < 1e-5,
                "kernel size {} c {}: residual {r}",
                k.size,
                k.c_in
            );
        }
        let base = ConvKernel::random_nonskew(2, 5);
        assert!(base.skew_defect() > 1e-2);
        assert!(skew_residual(&base) > 1e-2);
    }

    /// The shift convention: a kernel with a single 1 at (a, b) reads in[y + a - r, x + b - r].
    #[test]
    fn correlation_convention() {
        let mut data = vec![0.0; 9];
        data[2 * 3 + 1] = 1.0; // a = 2 (dy = +1), b = 1 (dx = 0)
        let k = ConvKernel::new(1, 1, 3, data);
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 3 x 4
        let mut out = vec![0.0; 12];
        k.apply_one(&x, 3, 4, &mut out);
        assert_eq!(out[0], x[4]);
        assert_eq!(out[8], x[0]); // wraps
    }
}
