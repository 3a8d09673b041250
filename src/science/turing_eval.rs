//! The Turing-pattern evaluations (spec §7): the paper's alignment protocol between the training-free flow
//! and the true Gray-Scott dynamics, the direct cosine between v = K ⋆ s and the Gray-Scott right-hand side,
//! and pattern-preservation statistics (radial power spectrum and value histogram distances).
//!
//! Alignment, per pattern x0 (model space [-1, 1]) and seed: run the SDE 200 steps from x0; e_flow =
//! EMA_0.9(frames) - x0, with Tweedie-denoised frames by default (raw states as an option); e_gs = (20
//! Gray-Scott steps from x0) - x0 in physical [0, 1] units; score |cos(e_flow, e_gs)| (cosines are invariant
//! to the affine map between the two unit systems). A "flow" is a list of kernel variants (e.g. γ = ±1); its
//! score for a (pattern, seed) is the max over variants. Everything — patterns x seeds x flows x variants —
//! goes through one batched SDE run (in chunks of `max_batch` items), and variants of all flows sharing a
//! (pattern, seed) share the same Brownian noise, so baselines are paired with the flow they are compared to.

use rayon::prelude::*;

use crate::science::gray_scott::{rhs, simulate, GrayScottParams};
use crate::science::sde::{heun_sde, FieldShape, FrameEma, FrameKind, SdeConfig};
use crate::science::skew_kernel::ConvKernel;

/// Settings of the alignment protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlignmentConfig {
    /// The rollout SDE (steps 200, η 0.1, dt 0.01); its seed is the base of all noise.
    pub sde: SdeConfig,
    /// Gray-Scott steps for the reference displacement (20).
    pub gs_steps: usize,
    /// EMA decay of the frames (0.9).
    pub ema_decay: f32,
    /// Average Tweedie-denoised frames (true) or raw SDE states (false).
    pub denoised: bool,
    /// Seeds (noise draws) per pattern.
    pub seeds: usize,
    /// Most trajectories integrated together (bounds memory; 64 is plenty for two cores).
    pub max_batch: usize,
}

impl Default for AlignmentConfig {
    fn default() -> Self {
        Self {
            sde: SdeConfig::default(),
            gs_steps: 20,
            ema_decay: 0.9,
            denoised: true,
            seeds: 1,
            max_batch: 64,
        }
    }
}

/// The score model as the protocol needs it: batched score, noise level, signal scale.
pub struct ScoreFn<'a> {
    /// `score(x [n, c, h, w], out)`.
    pub score: &'a (dyn Fn(&[f32], &mut [f32]) + Sync),
    /// σ of the score model.
    pub sigma: f32,
    /// sqrt(ā) with VP scaling, else 1 (see `nn::conv::LocalScore::signal_scale`).
    pub signal_scale: f32,
}

/// Alignment scores of one flow.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowAlignment {
    /// |cos| per variant, each indexed `pattern * seeds + seed`.
    pub per_variant: Vec<Vec<f64>>,
    /// Max over variants, indexed `pattern * seeds + seed`.
    pub best: Vec<f64>,
}

impl FlowAlignment {
    /// Mean ± std of [`FlowAlignment::best`].
    pub fn summary(&self) -> (f64, f64) {
        mean_std(&self.best)
    }
}

/// Sample mean and standard deviation (n - 1 in the denominator; 0 for fewer than 2 values).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// e_gs for every pattern: 20 (`steps`) Gray-Scott steps from x0, minus x0, in physical units.
pub fn gray_scott_displacement(
    p: &GrayScottParams,
    patterns: &[f32],
    h: usize,
    w: usize,
    steps: usize,
) -> Vec<f32> {
    let x0: Vec<f32> = patterns.par_iter().map(|v| 0.5 * (v + 1.0)).collect();
    let mut x = x0.clone();
    simulate(p, &mut x, h, w, steps);
    x.par_iter_mut()
        .zip(x0.par_iter())
        .for_each(|(a, b)| *a -= b);
    x
}

/// Runs the alignment protocol for `flows` (each a list of kernel variants over 2 channels) on `patterns`
/// `[P, 2, h, w]` (model space). Returns one [`FlowAlignment`] per flow.
pub fn alignment(
    p: &GrayScottParams,
    patterns: &[f32],
    h: usize,
    w: usize,
    flows: &[Vec<ConvKernel>],
    model: &ScoreFn<'_>,
    cfg: &AlignmentConfig,
) -> Vec<FlowAlignment> {
    let len = 2 * h * w;
    let np = patterns.len() / len;
    let e_gs = gray_scott_displacement(p, patterns, h, w, cfg.gs_steps);
    // Items: (flow, variant, pattern, seed); noise id = pattern * seeds + seed (shared across flows).
    let mut items = Vec::new();
    for (f, variants) in flows.iter().enumerate() {
        for v in 0..variants.len() {
            for pat in 0..np {
                for s in 0..cfg.seeds {
                    items.push((f, v, pat, s));
                }
            }
        }
    }
    let mut cos = vec![0.0f64; items.len()];
    let kind = if cfg.denoised {
        FrameKind::Denoised {
            sigma: model.sigma,
            signal_scale: model.signal_scale,
        }
    } else {
        FrameKind::Raw
    };
    for (chunk_i, chunk) in items.chunks(cfg.max_batch.max(1)).enumerate() {
        let n = chunk.len();
        let mut x = Vec::with_capacity(n * len);
        for &(_, _, pat, _) in chunk {
            x.extend_from_slice(&patterns[pat * len..(pat + 1) * len]);
        }
        let kernels: Vec<&ConvKernel> = chunk.iter().map(|&(f, v, _, _)| &flows[f][v]).collect();
        let ids: Vec<u64> = chunk
            .iter()
            .map(|&(_, _, pat, s)| (pat * cfg.seeds + s) as u64)
            .collect();
        let mut ema = FrameEma::new(cfg.ema_decay, kind);
        heun_sde(
            &mut x,
            FieldShape { n, c: 2, h, w },
            &kernels,
            &ids,
            &cfg.sde,
            &mut |x, out| (model.score)(x, out),
            &mut |_, x, s| ema.update(x, s),
        );
        for (j, &(_, _, pat, _)) in chunk.iter().enumerate() {
            let x0 = &patterns[pat * len..(pat + 1) * len];
            let e_flow: Vec<f32> = ema.ema[j * len..(j + 1) * len]
                .iter()
                .zip(x0)
                .map(|(a, b)| a - b)
                .collect();
            cos[chunk_i * cfg.max_batch.max(1) + j] =
                cosine(&e_flow, &e_gs[pat * len..(pat + 1) * len]).abs();
        }
    }
    flows
        .iter()
        .enumerate()
        .map(|(f, variants)| {
            let per_variant: Vec<Vec<f64>> = (0..variants.len())
                .map(|v| {
                    items
                        .iter()
                        .zip(&cos)
                        .filter(|(it, _)| it.0 == f && it.1 == v)
                        .map(|(_, &c)| c)
                        .collect()
                })
                .collect();
            let best = (0..np * cfg.seeds)
                .map(|i| {
                    per_variant
                        .iter()
                        .map(|pv| pv[i])
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            FlowAlignment { per_variant, best }
        })
        .collect()
}

/// The signed cosine, per pattern, between v(x0) = K ⋆ s(x0) and the true Gray-Scott right-hand side at x0
/// (patterns `[P, 2, h, w]` in model space).
pub fn direct_cosine(
    p: &GrayScottParams,
    patterns: &[f32],
    h: usize,
    w: usize,
    kernel: &ConvKernel,
    score: &dyn Fn(&[f32], &mut [f32]),
) -> Vec<f64> {
    let len = 2 * h * w;
    let mut s = vec![0.0f32; patterns.len()];
    score(patterns, &mut s);
    let mut v = vec![0.0f32; patterns.len()];
    kernel.apply(&s, h, w, &mut v);
    let phys: Vec<f32> = patterns.iter().map(|x| 0.5 * (x + 1.0)).collect();
    let r = rhs(p, &phys, h, w);
    v.chunks(len)
        .zip(r.chunks(len))
        .map(|(a, b)| cosine(a, b))
        .collect()
}

/// The radially averaged power spectrum of a batch of fields `[n, c, h, w]`, averaged over items and
/// channels (each channel's mean removed), bins r = 0 .. min(h, w)/2 of integer radius, normalised to sum 1.
pub fn radial_power_spectrum(fields: &[f32], c: usize, h: usize, w: usize) -> Vec<f64> {
    let hw = h * w;
    assert_eq!(fields.len() % (c * hw), 0, "fields must be [n, c, h, w]");
    let nb = h.min(w) / 2 + 1;
    let tw = |n: usize| -> Vec<(f64, f64)> {
        (0..n)
            .map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                (a.cos(), a.sin())
            })
            .collect()
    };
    let (th, tww) = (tw(h), tw(w));
    let per: Vec<(Vec<f64>, Vec<f64>)> = fields
        .par_chunks(hw)
        .map(|ch| {
            let mean = ch.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
            // Row DFTs.
            let mut rows = vec![(0.0f64, 0.0f64); hw];
            for y in 0..h {
                for k in 0..w {
                    let (mut re, mut im) = (0.0, 0.0);
                    for x in 0..w {
                        let v = ch[y * w + x] as f64 - mean;
                        let t = tww[(k * x) % w];
                        re += v * t.0;
                        im += v * t.1;
                    }
                    rows[y * w + k] = (re, im);
                }
            }
            let (mut pw, mut cnt) = (vec![0.0f64; nb], vec![0.0f64; nb]);
            for k in 0..w {
                for l in 0..h {
                    let (mut re, mut im) = (0.0, 0.0);
                    for y in 0..h {
                        let (a, b) = rows[y * w + k];
                        let t = th[(l * y) % h];
                        re += a * t.0 - b * t.1;
                        im += a * t.1 + b * t.0;
                    }
                    let fy = if l <= h / 2 {
                        l as f64
                    } else {
                        l as f64 - h as f64
                    };
                    let fx = if k <= w / 2 {
                        k as f64
                    } else {
                        k as f64 - w as f64
                    };
                    let r = (fy * fy + fx * fx).sqrt().round() as usize;
                    if r < nb {
                        pw[r] += re * re + im * im;
                        cnt[r] += 1.0;
                    }
                }
            }
            (pw, cnt)
        })
        .collect();
    let mut spec = vec![0.0f64; nb];
    for (pw, cnt) in &per {
        for r in 0..nb {
            if cnt[r] > 0.0 {
                spec[r] += pw[r] / cnt[r];
            }
        }
    }
    let total: f64 = spec.iter().sum();
    if total > 0.0 {
        spec.iter_mut().for_each(|v| *v /= total);
    }
    spec
}

/// Distance between the radial power spectra of two batches: mean over radii 1 .. min(h,w)/2 of
/// |log10 P_a(r) - log10 P_b(r)| (a floor of 1e-12 avoids log 0). 0 for identical statistics.
pub fn spectrum_distance(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
    let (pa, pb) = (
        radial_power_spectrum(a, c, h, w),
        radial_power_spectrum(b, c, h, w),
    );
    let terms: Vec<f64> = (1..pa.len())
        .map(|r| (pa[r].max(1e-12).log10() - pb[r].max(1e-12).log10()).abs())
        .collect();
    terms.iter().sum::<f64>() / terms.len().max(1) as f64
}

/// Total-variation distance (in [0, 1]) between the value histograms of two batches `[n, c, h, w]`, per
/// channel with `bins` bins over [-1, 1] (values outside are clamped), averaged over channels.
pub fn histogram_distance(a: &[f32], b: &[f32], c: usize, h: usize, w: usize, bins: usize) -> f64 {
    let hw = h * w;
    let hist = |f: &[f32], ch: usize| -> Vec<f64> {
        let mut hg = vec![0.0f64; bins];
        let mut n = 0.0;
        for item in f.chunks(c * hw) {
            for &v in &item[ch * hw..(ch + 1) * hw] {
                let i = (((v.clamp(-1.0, 1.0) + 1.0) * 0.5 * bins as f32) as usize).min(bins - 1);
                hg[i] += 1.0;
                n += 1.0;
            }
        }
        hg.iter_mut().for_each(|x| *x /= n);
        hg
    };
    (0..c)
        .map(|ch| {
            let (ha, hb) = (hist(a, ch), hist(b, ch));
            0.5 * ha.iter().zip(&hb).map(|(x, y)| (x - y).abs()).sum::<f64>()
        })
        .sum::<f64>()
        / c as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_helpers() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-9);
        // A pure cosine wave of frequency 4 puts all power at radius 4.
        let (h, w) = (16, 16);
        let f: Vec<f32> = (0..h * w)
            .map(|i| (2.0 * std::f32::consts::PI * 4.0 * (i % w) as f32 / w as f32).cos())
            .collect();
        let spec = radial_power_spectrum(&f, 1, h, w);
        assert!((spec[4] - 1.0).abs() < 1e-9, "{spec:?}");
        assert!(spectrum_distance(&f, &f, 1, h, w) < 1e-12);
        assert_eq!(histogram_distance(&f, &f, 1, h, w, 32), 0.0);
        let g: Vec<f32> = f.iter().map(|v| -v.abs()).collect();
        assert!(histogram_distance(&f, &g, 1, h, w, 32) > 0.3);
    }

    /// With the exact-for-Gaussian score and a pattern-free start the protocol runs, pairs noise, and the
    /// zero flow (pure Langevin) gives the same |cos| for both of its (identical) variants.
    #[test]
    fn alignment_runs_batched_and_paired() {
        let p = crate::science::gray_scott::preset("waves").unwrap();
        let (h, w) = (16, 16);
        let mut pats = crate::science::gray_scott::generate(&p, h, 200, 2, 3);
        crate::science::gray_scott::to_model_space(&mut pats);
        let score =
            |x: &[f32], out: &mut [f32]| out.iter_mut().zip(x).for_each(|(o, x)| *o = -x / 0.05);
        let model = ScoreFn {
            score: &score,
            sigma: 0.235,
            signal_scale: 1.0,
        };
        let flows = vec![
            vec![ConvKernel::zero(2), ConvKernel::zero(2)],
            vec![ConvKernel::rotation(1.0), ConvKernel::rotation(-1.0)],
        ];
        let cfg = AlignmentConfig {
            sde: SdeConfig {
                steps: 20,
                ..Default::default()
            },
            seeds: 2,
            max_batch: 3,
            ..Default::default()
        };
        let res = alignment(&p, &pats, h, w, &flows, &model, &cfg);
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].best.len(), 4);
        assert_eq!(res[0].per_variant[0], res[0].per_variant[1]);
        assert!(res
            .iter()
            .all(|r| r.best.iter().all(|c| (0.0..=1.0).contains(c))));
    }
}
