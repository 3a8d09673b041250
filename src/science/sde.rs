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

/// A batched noise-conditional score: `score(x [n, c, h, w], σ, out)`.
pub type LeveledScore<'a> = dyn FnMut(&[f32], f32, &mut [f32]) + 'a;
/// An annealing observer: `observe(step, σ, x, score at x and σ)`.
pub type LevelObserver<'a> = dyn FnMut(usize, f32, &[f32], &[f32]) + 'a;

/// Settings of [`annealed_start`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnealConfig {
    /// Langevin steps at every noise level.
    pub langevin_steps: usize,
    /// Extra Langevin steps at the top level, so that the start (uniform noise, whose mean and variance are
    /// not those of the data noised at the top level) is forgotten before the levels come down.
    pub top_steps: usize,
    /// Langevin step size as a share of the level's variance: α = `step_ratio` · σ² (NCSN's setting is
    /// about 0.2).
    pub step_ratio: f32,
    /// DDIM's η for the steps between levels: 0 is the deterministic DDIM step, 1 the DDPM ancestral step
    /// (the same marginals; fresh noise of variance c² replaces part of the predicted noise).
    pub ddim_eta: f32,
    /// The stochastic steps (`ddim_eta` > 0) apply only to steps that end below this noise level; above it
    /// the steps stay deterministic.
    pub stochastic_below: f32,
    /// Seed of the Langevin noise; item i uses sub-stream `noise_ids[i]`.
    pub seed: u64,
}

/// `levels` noise levels spaced geometrically from `sigma_max` down to `sigma` (both included).
pub fn anneal_levels(sigma_max: f32, sigma: f32, levels: usize) -> Vec<f32> {
    match levels {
        0 => Vec::new(),
        1 => vec![sigma],
        _ => (0..levels)
            .map(|k| match k {
                0 => sigma_max,
                k if k + 1 == levels => sigma,
                _ => {
                    let u = k as f32 / (levels - 1) as f32;
                    (sigma_max.ln() * (1.0 - u) + sigma.ln() * u).exp()
                }
            })
            .collect(),
    }
}

/// Brings any start `x` (uniform noise, say) to a sample of the density noised at the last of `sigmas`, for
/// a score that is valid only near the data blurred at its level: annealed Langevin dynamics with a
/// predictor between levels (Song et al.'s predictor-corrector sampler). At every level σ_k (decreasing):
/// `langevin_steps` Langevin steps x += α s(x, σ_k) + sqrt(2α) z with α = `step_ratio`·σ_k², which target
/// p_σk (at the top level p is nearly Gaussian, so they forget the start quickly); then one DDIM step to
/// the next level, x = a_{k+1} x̂0 + sqrt(σ_{k+1}² - c²) ε̂ + c z with the Tweedie estimate
/// x̂0 = (x + σ_k² s)/a_k clamped to [-1, 1] and ε̂ = (x - a_k x̂0)/σ_k, where a = `signal_scale(σ)`
/// (sqrt(1 - σ²) for a variance-preserving model, 1 otherwise) and c is DDIM's noise for
/// [`AnnealConfig::ddim_eta`] (0, deterministic, by default). Score passes: levels x (langevin_steps + 1).
/// `observe` sees every state with its level and score; steps count from 0 (the start at the top level).
/// `top_steps` more Langevin steps at the top level come first. Returns the number of observed steps.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors heun_sde: state, shape, noise ids, levels, settings and the two closures"
)]
pub fn annealed_start(
    x: &mut [f32],
    shape: FieldShape,
    noise_ids: &[u64],
    sigmas: &[f32],
    signal_scale: &dyn Fn(f32) -> f32,
    cfg: &AnnealConfig,
    score: &mut LeveledScore<'_>,
    observe: &mut LevelObserver<'_>,
) -> usize {
    assert_eq!(x.len(), shape.len(), "x must be [n, c, h, w]");
    assert_eq!(noise_ids.len(), shape.n, "one noise id per item");
    let Some(&top) = sigmas.first() else {
        return 0;
    };
    let len = shape.item_len();
    let mut rngs: Vec<Rng> = noise_ids
        .iter()
        .map(|&id| substream(cfg.seed, "anneal/noise", id))
        .collect();
    let mut s = vec![0.0f32; x.len()];
    score(x, top, &mut s);
    let mut step = 0;
    observe(step, top, x, &s);
    for (k, &sigma) in sigmas.iter().enumerate() {
        let alpha = cfg.step_ratio * sigma * sigma;
        let amp = (2.0 * alpha).sqrt();
        let n_steps = cfg.langevin_steps + if k == 0 { cfg.top_steps } else { 0 };
        for _ in 0..n_steps {
            x.par_chunks_mut(len)
                .zip(s.par_chunks(len))
                .zip(rngs.par_iter_mut())
                .for_each(|((xi, si), rng)| {
                    xi.iter_mut().zip(si).for_each(|(x, &s)| {
                        let z: f32 = StandardNormal.sample(rng);
                        *x += alpha * s + amp * z;
                    })
                });
            score(x, sigma, &mut s);
            step += 1;
            observe(step, sigma, x, &s);
        }
        if let Some(&next) = sigmas.get(k + 1) {
            let (a, a_next) = (signal_scale(sigma), signal_scale(next));
            let s2 = sigma * sigma;
            // DDIM's noise for ᾱ = a²: c = η (σ'/σ) sqrt(1 - a²/a'²); the predicted noise keeps the rest of
            // σ'², so every step lands on the same marginal whatever η.
            let c = if cfg.ddim_eta > 0.0 && next < cfg.stochastic_below {
                cfg.ddim_eta * (next / sigma) * (1.0 - (a / a_next).powi(2)).max(0.0).sqrt()
            } else {
                0.0
            };
            let keep = if c > 0.0 {
                (next * next - c * c).max(0.0).sqrt()
            } else {
                next
            };
            x.par_chunks_mut(len)
                .zip(s.par_chunks(len))
                .zip(rngs.par_iter_mut())
                .for_each(|((xi, si), rng)| {
                    xi.iter_mut().zip(si).for_each(|(x, &s)| {
                        let x0 = ((*x + s2 * s) / a).clamp(-1.0, 1.0);
                        let eps = (*x - a * x0) / sigma;
                        *x = a_next * x0 + keep * eps;
                        if c > 0.0 {
                            let z: f32 = StandardNormal.sample(rng);
                            *x += c * z;
                        }
                    })
                });
            score(x, next, &mut s);
            step += 1;
            observe(step, next, x, &s);
        }
    }
    step + 1
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

    /// The fields the annealing tests run on: 4 one-channel 32x32 fields.
    const GAUSSIAN_FIELDS: FieldShape = FieldShape {
        n: 4,
        c: 1,
        h: 32,
        w: 32,
    };

    /// The variance-preserving signal scale a = sqrt(1 - σ²).
    fn vp(sig: f32) -> f32 {
        (1.0 - sig * sig).sqrt()
    }

    /// The exact score of per-pixel Gaussian data x0 ~ N(m, v) noised the VP way (a = sqrt(1 - σ²)):
    /// s(x, σ) = -(x - a m)/(a² v + σ²).
    fn gaussian_vp_score(m: f32, v: f32) -> impl FnMut(&[f32], f32, &mut [f32]) {
        move |x, sig, out| {
            let a = vp(sig);
            let var = a * a * v + sig * sig;
            out.iter_mut()
                .zip(x)
                .for_each(|(o, &x)| *o = -(x - a * m) / var);
        }
    }

    /// Sample mean and (population) variance.
    fn mean_var(x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    /// Per-pixel Gaussian data x0 ~ N(m, v) noised the VP way has the exact score
    /// s(x, σ) = -(x - a m)/(a² v + σ²), a = sqrt(1 - σ²). Annealing uniform noise from σ 0.92 to 0.235 must
    /// land on that density: sample mean a·m and variance a²v + σ², within a few standard errors.
    #[test]
    fn annealed_start_reaches_the_noised_gaussian_from_uniform_noise() {
        let (m, v) = (0.3f32, 0.04f32);
        let shape = GAUSSIAN_FIELDS;
        let mut rng = crate::science::rng::stream(1, "test");
        let mut x: Vec<f32> = (0..shape.len())
            .map(|_| rand::Rng::gen_range(&mut rng, -1.0f32..1.0))
            .collect();
        let sigmas = anneal_levels(0.92, 0.235, 12);
        assert_eq!(sigmas.len(), 12);
        assert!((sigmas[0] - 0.92).abs() < 1e-6 && (sigmas[11] - 0.235).abs() < 1e-6);
        let mut seen = Vec::new();
        let cfg = AnnealConfig {
            langevin_steps: 3,
            top_steps: 2,
            step_ratio: 0.2,
            ddim_eta: 0.0,
            stochastic_below: 1.0,
            seed: 5,
        };
        let steps = annealed_start(
            &mut x,
            shape,
            &[0, 1, 2, 3],
            &sigmas,
            &vp,
            &cfg,
            &mut gaussian_vp_score(m, v),
            &mut |step, sig, _, _| seen.push((step, sig)),
        );
        assert_eq!(steps, 12 * 4 + 2);
        assert_eq!(seen.len(), steps);
        assert_eq!(seen.last().unwrap().1, 0.235);
        let a = vp(0.235);
        let (mean, var) = mean_var(&x);
        let (want_mean, want_var) = ((a * m) as f64, (a * a * v + 0.235 * 0.235) as f64);
        assert!(
            (mean - want_mean).abs() < 0.02,
            "mean {mean} vs {want_mean}"
        );
        assert!(
            (var / want_var - 1.0).abs() < 0.1,
            "variance {var} vs {want_var}"
        );
    }

    /// DDIM steps alone (no Langevin), from an exact sample of the top level's density, with the exact score
    /// of per-pixel Gaussian data: deterministic (η 0) and ancestral (η 1) steps must both land on the
    /// density at the bottom level (the same marginals); η applied only below a level under the bottom one
    /// is the deterministic run, bit for bit.
    #[test]
    fn ddim_steps_keep_the_marginals_whatever_eta() {
        let (m, v) = (0.3f32, 0.04f32);
        let shape = GAUSSIAN_FIELDS;
        let sigmas = anneal_levels(0.92, 0.235, 20);
        let run = |eta: f32, below: f32| {
            let mut rng = crate::science::rng::stream(2, "test");
            let a = vp(0.92);
            let sd = (a * a * v + 0.92 * 0.92).sqrt();
            let mut x: Vec<f32> = (0..shape.len())
                .map(|_| a * m + sd * Distribution::<f32>::sample(&StandardNormal, &mut rng))
                .collect();
            let cfg = AnnealConfig {
                langevin_steps: 0,
                top_steps: 0,
                step_ratio: 0.2,
                ddim_eta: eta,
                stochastic_below: below,
                seed: 5,
            };
            annealed_start(
                &mut x,
                shape,
                &[0, 1, 2, 3],
                &sigmas,
                &vp,
                &cfg,
                &mut gaussian_vp_score(m, v),
                &mut |_, _, _, _| {},
            );
            x
        };
        let a = vp(0.235);
        let (want_mean, want_var) = ((a * m) as f64, (a * a * v + 0.235 * 0.235) as f64);
        let deterministic = run(0.0, 1.0);
        let ancestral = run(1.0, 1.0);
        for (name, x) in [("η 0", &deterministic), ("η 1", &ancestral)] {
            let (mean, var) = mean_var(x);
            assert!(
                (mean - want_mean).abs() < 0.02,
                "{name}: mean {mean} vs {want_mean}"
            );
            assert!(
                (var / want_var - 1.0).abs() < 0.08,
                "{name}: variance {var} vs {want_var}"
            );
        }
        assert_ne!(deterministic, ancestral, "η 1 must draw fresh noise");
        assert_eq!(run(1.0, 0.2), deterministic, "no step ends below σ 0.2");
    }
}
