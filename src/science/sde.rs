//! The rollout SDE of the training-free flow (spec §7): dx = (K + ηI) ⋆ s(x) dt + sqrt(2η dt) dW, integrated
//! by stochastic Heun with the same noise in predictor and corrector, batched over many trajectories.
//!
//! Shaped for the evaluation protocol: every trajectory (batch item) carries its own kernel K and its own
//! noise stream id, so one batched run covers patterns x seeds x kernels while trajectories that share a
//! noise id see identical Brownian increments (paired comparisons). The score is any batched closure
//! `FnMut(x [N,C,H,W], out)`; it is called once per drift evaluation (two per step, plus one at the start),
//! and the score at each accepted state is handed to the observer, so denoised frames cost no extra pass.
//!
//! [`heun_sde_drift`] takes the drift as a closure of (x, s) instead, for flows that are not a kernel applied
//! to the score (a trained network: v(x) + η s); [`heun_sde`] is it with the kernel drift.
//!
//! Denoised frames (Tweedie): if the score model was trained on x_t = a·x0 + σε (a = sqrt(ā) with VP
//! scaling), then E[x0 | x_t] = (x_t + σ² ∇log p_t(x_t)) / a; we clamp it to [-1, 1] ([`denoise`]).

use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::science::rng::{substream, Rng};
use crate::science::skew_kernel::ConvKernel;

/// A batched score: `score(x [n, c, h, w], out)`.
pub type BatchScore<'a> = dyn FnMut(&[f32], &mut [f32]) + 'a;
/// A per-step observer: `observe(step, x, score at x)`.
pub type StepObserver<'a> = dyn FnMut(usize, &[f32], &[f32]) + 'a;

/// Settings of the rollout SDE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeConfig {
    /// Langevin weight η (0.1 in the paper).
    pub eta: f32,
    /// Time step (0.01).
    pub dt: f32,
    /// Number of Heun steps (200 for the alignment table, 300 for rollouts).
    pub steps: usize,
    /// Seed of the Brownian noise; item i uses sub-stream `noise_ids[i]`.
    pub seed: u64,
}

impl Default for SdeConfig {
    fn default() -> Self {
        Self {
            eta: 0.1,
            dt: 0.01,
            steps: 200,
            seed: 0,
        }
    }
}

/// Shape of a batch of fields `[n, c, h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl FieldShape {
    /// Values per item.
    pub fn item_len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Values in the batch.
    pub fn len(&self) -> usize {
        self.n * self.item_len()
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// drift_i = K_i ⋆ s_i + η s_i for every item.
fn drift(kernels: &[&ConvKernel], eta: f32, s: &[f32], shape: FieldShape, out: &mut [f32]) {
    let len = shape.item_len();
    out.par_chunks_mut(len)
        .zip(s.par_chunks(len))
        .zip(kernels.par_iter())
        .for_each(|((o, si), k)| {
            k.apply_one(si, shape.h, shape.w, o);
            o.iter_mut().zip(si).for_each(|(o, s)| *o += eta * s);
        });
}

/// Integrates the SDE in place on the batch `x` (`shape`), item i with kernel `kernels[i]` and noise stream
/// `noise_ids[i]`. `score(x, out)` fills the batched score; `observe(step, x, s)` sees the state after every
/// step (step 0 = the start) and the score there.
pub fn heun_sde(
    x: &mut [f32],
    shape: FieldShape,
    kernels: &[&ConvKernel],
    noise_ids: &[u64],
    cfg: &SdeConfig,
    score: &mut BatchScore<'_>,
    observe: &mut StepObserver<'_>,
) {
    assert_eq!(kernels.len(), shape.n, "one kernel per item");
    for k in kernels {
        assert!(
            k.c_in == shape.c && k.c_out == shape.c,
            "kernel channels must match the field"
        );
    }
    let eta = cfg.eta;
    heun_sde_drift(
        x,
        shape,
        noise_ids,
        cfg,
        score,
        &mut |_, s, out| drift(kernels, eta, s, shape, out),
        observe,
    );
}

/// A batched drift: `drift(x, s, out)` with the state `x`, the score `s` at `x` and `out` the drift (all
/// `[n, c, h, w]`). For a skew kernel it is `(K + ηI) ⋆ s`; for a trained flow `v(x) + η s`.
pub type BatchDrift<'a> = dyn FnMut(&[f32], &[f32], &mut [f32]) + 'a;

/// [`heun_sde`] with any drift: dx = drift(x, s(x)) dt + sqrt(2η dt) dW (η = `cfg.eta` sets only the noise
/// here; the drift closure adds η s itself). Same noise streams, score calls and observer as [`heun_sde`],
/// which is this function with the kernel drift, so paired runs of kernels and trained flows share their
/// Brownian paths.
pub fn heun_sde_drift(
    x: &mut [f32],
    shape: FieldShape,
    noise_ids: &[u64],
    cfg: &SdeConfig,
    score: &mut BatchScore<'_>,
    drift: &mut BatchDrift<'_>,
    observe: &mut StepObserver<'_>,
) {
    assert_eq!(x.len(), shape.len(), "x must be [n, c, h, w]");
    assert_eq!(noise_ids.len(), shape.n, "one noise id per item");
    let len = shape.item_len();
    let mut rngs: Vec<Rng> = noise_ids
        .iter()
        .map(|&id| substream(cfg.seed, "sde/noise", id))
        .collect();
    let mut s = vec![0.0f32; x.len()];
    let (mut d0, mut d1) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    let mut noise = vec![0.0f32; x.len()];
    let mut xp = vec![0.0f32; x.len()];
    let amp = (2.0 * cfg.eta * cfg.dt).sqrt();
    let dt = cfg.dt;
    score(x, &mut s);
    observe(0, x, &s);
    for step in 1..=cfg.steps {
        noise
            .par_chunks_mut(len)
            .zip(rngs.par_iter_mut())
            .for_each(|(nz, rng)| {
                nz.iter_mut().for_each(|v| {
                    *v = {
                        let z: f32 = StandardNormal.sample(rng);
                        amp * z
                    }
                });
            });
        drift(x, &s, &mut d0);
        xp.par_iter_mut()
            .zip(x.par_iter())
            .zip(d0.par_iter().zip(noise.par_iter()))
            .for_each(|((p, &x), (&d, &z))| *p = x + d * dt + z);
        score(&xp, &mut s);
        drift(&xp, &s, &mut d1);
        x.par_iter_mut()
            .zip(d0.par_iter().zip(d1.par_iter()))
            .zip(noise.par_iter())
            .for_each(|((x, (&a, &b)), &z)| *x += 0.5 * (a + b) * dt + z);
        score(x, &mut s);
        observe(step, x, &s);
    }
}

/// Tweedie's denoised estimate x̂0 = (x + σ² s) / `signal_scale`, clamped to [-1, 1], into `out`.
pub fn denoise(x: &[f32], s: &[f32], sigma: f32, signal_scale: f32, out: &mut [f32]) {
    let s2 = sigma * sigma;
    out.par_iter_mut()
        .zip(x.par_iter().zip(s.par_iter()))
        .for_each(|(o, (&x, &s))| *o = ((x + s2 * s) / signal_scale).clamp(-1.0, 1.0));
}

/// What [`FrameEma`] averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FrameKind {
    /// The raw (noisy) SDE states.
    Raw,
    /// Tweedie-denoised, clamped frames at noise level `sigma` with the model's `signal_scale`.
    Denoised {
        /// σ of the score model.
        sigma: f32,
        /// sqrt(ā) with VP scaling, else 1.
        signal_scale: f32,
    },
}

/// An exponential moving average of frames, `ema <- decay·ema + (1 - decay)·frame`, started at the first
/// frame; feed it from the [`heun_sde`] observer.
#[derive(Clone, Debug)]
pub struct FrameEma {
    /// Decay (0.9 in the paper).
    pub decay: f32,
    /// What is averaged.
    pub kind: FrameKind,
    /// The current average (empty before the first frame).
    pub ema: Vec<f32>,
    frame: Vec<f32>,
}

impl FrameEma {
    /// An empty average.
    pub fn new(decay: f32, kind: FrameKind) -> Self {
        Self {
            decay,
            kind,
            ema: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// The frame of state `x` with score `s` (raw or denoised).
    pub fn frame(&mut self, x: &[f32], s: &[f32]) -> &[f32] {
        self.frame.resize(x.len(), 0.0);
        match self.kind {
            FrameKind::Raw => self.frame.copy_from_slice(x),
            FrameKind::Denoised {
                sigma,
                signal_scale,
            } => denoise(x, s, sigma, signal_scale, &mut self.frame),
        }
        &self.frame
    }

    /// Adds the frame of state `x` with score `s`.
    pub fn update(&mut self, x: &[f32], s: &[f32]) {
        self.frame(x, s);
        if self.ema.is_empty() {
            self.ema = self.frame.clone();
        } else {
            let d = self.decay;
            self.ema
                .par_iter_mut()
                .zip(self.frame.par_iter())
                .for_each(|(e, &f)| *e = d * *e + (1.0 - d) * f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For a Gaussian N(0, 1) score s(x) = -x and K = 0, the SDE is an OU process whose stationary variance
    /// is 1: starting there, the sample variance stays near 1. Also: paired noise ids give identical paths.
    #[test]
    fn ou_process_keeps_unit_variance_and_pairs_noise() {
        let shape = FieldShape {
            n: 4,
            c: 2,
            h: 16,
            w: 16,
        };
        let mut rng = substream(1, "init", 0);
        let mut x: Vec<f32> = (0..shape.len())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        x.copy_within(0..shape.item_len(), shape.item_len()); // items 0 and 1 start equal
        let zero = ConvKernel::zero(2);
        let cfg = SdeConfig {
            eta: 1.0,
            dt: 0.05,
            steps: 200,
            seed: 3,
        };
        heun_sde(
            &mut x,
            shape,
            &[&zero; 4],
            &[7, 7, 8, 9],
            &cfg,
            &mut |x, s| s.iter_mut().zip(x).for_each(|(s, x)| *s = -x),
            &mut |_, _, _| {},
        );
        let l = shape.item_len();
        assert_eq!(x[..l], x[l..2 * l]);
        let var = x[2 * l..].iter().map(|v| (v * v) as f64).sum::<f64>() / (2 * l) as f64;
        assert!((var - 1.0).abs() < 0.15, "{var}");
    }

    /// A skew kernel on an isotropic Gaussian is a pure rotation: with η = 0 the norm is preserved (Heun is
    /// second order, so up to O(dt²) per step).
    #[test]
    fn skew_flow_without_noise_preserves_norm() {
        let shape = FieldShape {
            n: 1,
            c: 2,
            h: 8,
            w: 8,
        };
        let mut rng = substream(2, "init", 0);
        let mut x: Vec<f32> = (0..shape.len())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let k = ConvKernel::spatial(2, 3, 5);
        let cfg = SdeConfig {
            eta: 0.0,
            dt: 0.01,
            steps: 100,
            seed: 0,
        };
        heun_sde(
            &mut x,
            shape,
            &[&k],
            &[0],
            &cfg,
            &mut |x, s| s.iter_mut().zip(x).for_each(|(s, x)| *s = -x),
            &mut |_, _, _| {},
        );
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n1 / n0 - 1.0).abs() < 1e-3, "{n0} -> {n1}");
    }

    /// The drift-closure form with the kernel drift written out reproduces [`heun_sde`] bit for bit, and a
    /// drift that reads x (here v(x) = -x, an OU pull) sees the predictor state in the corrector.
    #[test]
    fn drift_closure_matches_the_kernel_form() {
        let shape = FieldShape {
            n: 2,
            c: 2,
            h: 6,
            w: 6,
        };
        let mut rng = substream(4, "init", 0);
        let x0: Vec<f32> = (0..shape.len())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let k = ConvKernel::spatial(2, 3, 1);
        let cfg = SdeConfig {
            eta: 0.3,
            dt: 0.02,
            steps: 20,
            seed: 9,
        };
        let score = |x: &[f32], s: &mut [f32]| s.iter_mut().zip(x).for_each(|(s, x)| *s = -x);
        let mut a = x0.clone();
        heun_sde(
            &mut a,
            shape,
            &[&k, &k],
            &[1, 2],
            &cfg,
            &mut |x, s| score(x, s),
            &mut |_, _, _| {},
        );
        let mut b = x0.clone();
        heun_sde_drift(
            &mut b,
            shape,
            &[1, 2],
            &cfg,
            &mut |x, s| score(x, s),
            &mut |_, s, o| drift(&[&k, &k], 0.3, s, shape, o),
            &mut |_, _, _| {},
        );
        assert_eq!(a, b);
        // dx = -x dt deterministically (η = 0): Heun's factor per step is 1 - dt + dt²/2.
        let cfg0 = SdeConfig { eta: 0.0, ..cfg };
        let mut c = x0.clone();
        heun_sde_drift(
            &mut c,
            shape,
            &[1, 2],
            &cfg0,
            &mut |x, s| score(x, s),
            &mut |x, _, o| o.iter_mut().zip(x).for_each(|(o, x)| *o = -x),
            &mut |_, _, _| {},
        );
        let f = (1.0f32 - 0.02 + 0.0002).powi(20);
        for (c, x) in c.iter().zip(&x0) {
            assert!((c - f * x).abs() < 1e-5, "{c} vs {}", f * x);
        }
    }

    #[test]
    fn tweedie_inverts_the_forward_process_for_a_point_mass() {
        // p0 = δ(x0): p_t = N(a x0, σ²), score = -(x - a x0)/σ², Tweedie returns x0 exactly.
        let (a, sig, x0) = (0.97f32, 0.235f32, 0.3f32);
        let x = [0.9f32];
        let s = [-(x[0] - a * x0) / (sig * sig)];
        let mut out = [0.0f32];
        denoise(&x, &s, sig, a, &mut out);
        assert!((out[0] - x0).abs() < 1e-6);
    }
}
