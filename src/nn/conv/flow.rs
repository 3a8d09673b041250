//! The trained local flow for images (spec §2 and §7, issue 8): a small translation-equivariant network
//! v(x) trained so that the noised data density p is stationary under dx/dt = v, i.e. by minimising the
//! Stein residual r = ∇·v + v·∇log p, with exact forward-mode tangents for ∇·v and a hand-written reverse
//! pass through them.
//!
//! **Network** (channels c, hidden width C, circular padding): `a1 = K ⋆ x` (3x3 stencil c -> C; isotropic by
//! default: per (out, in) pair one centre, one edge and one corner weight, so the kernel is invariant under
//! the 8 symmetries of the square), `z1 = silu(BN1(a1))`, `a2 = W2 z1` (1x1 C -> C), `z2 = silu(BN2(a2))`,
//! `a3 = W3 z2` (1x1 C -> c), `v = BN3(a3)` without affine parameters, which fixes each output channel to
//! zero mean and unit variance over the batch and so rules out v = 0. No convolution has a bias: every one is
//! followed by a batch-norm whose mean subtraction cancels it exactly. Batch-norm uses batch statistics
//! (biased variance, over batch and pixels) in training and running statistics (momentum 0.1, unbiased
//! variance, PyTorch's convention) in evaluation ([`ImageFlow::velocity`], validation).
//!
//! **Tangents.** Each batch item carries `S = 1 + P` streams: the primal and P probe tangents, stored per item
//! as `[C, S, h*w]` so a 1x1 convolution of all streams is one matrix product. Convolutions are linear (the
//! tangent of a conv is the conv of the tangent), SiLU multiplies by silu'(n), and batch-norm with batch
//! statistics has tangent `t_x̂ = (t_a - mean t_a - x̂ mean(x̂ t_a)) / σ` (the statistics move with the
//! input, so this is the exact JVP of the training-mode network w.r.t. the whole batch input).
//!
//! **Loss.** For item i and probe z_j, `r_k,i = (1/P_k) Σ_{j∈k} <z_j, J z_j>_i + <v_i, s_i>`, two independent
//! estimates k = 1, 2 of P_k probes each; `L = A / D`, `A = mean_i r1_i r2_i`, `D = mean_i |v_i|²` (an
//! unbiased estimate of E r² up to the normaliser). Its gradient, derived by hand:
//! * `∂L/∂r1_i = r2_i / (B D)`, `∂L/∂r2_i = r1_i / (B D)`;
//! * output adjoints: `v̄_i = (∂L/∂r1_i + ∂L/∂r2_i) s_i - 2 L v_i / (B D)` (the second term is the
//!   normaliser), `t̄_v,j,i = ∂L/∂r_k(j),i · z_j,i / P_k`;
//! * 1x1 conv `a = W h` on all streams: `W̄ += Σ_streams ā hᵀ`, `h̄ = Wᵀ ā`; the 3x3 stencil likewise through
//!   [`conv_backward`], then each orbit's 3x3 gradient entries are summed onto its scalar;
//! * SiLU on (n, t_n): `n̄ = z̄ silu'(n) + Σ_j t̄_z,j silu''(n) t_n,j`, `t̄_n,j = silu'(n) t̄_z,j`;
//! * batch-norm (per channel, N = B·h·w, g_j = γ t̄_n,j, m_j = mean(x̂ t_a,j)):
//!   `γ̄ = Σ n̄ x̂ + Σ_j Σ t̄_n,j t_x̂,j`, `β̄ = Σ n̄`; `t̄_a,j = (g_j - mean g_j - x̂ mean(x̂ g_j)) / σ`;
//!   the primal path collects `x̂̄ = γ n̄ - Σ_j [m_j g_j + mean(x̂ g_j) t_a,j] / σ` and
//!   `σ̄ = -Σ_j Σ g_j t_x̂,j / σ`, then `ā = (x̂̄ - mean x̂̄ - x̂ mean(x̂ x̂̄)) / σ + x̂ σ̄ / N`
//!   (using ∂σ/∂a = x̂/N). All these batch means are one reduction round per layer.
//!
//! Reductions run per item in f64 in parallel (rayon) and are summed in item order, so results are
//! bit-identical for a seed whatever the thread count. Everything is generic over f32 (training) and f64
//! (finite-difference checks in the tests).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gemm::Parallelism;
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::layer::{conv_backward, conv_forward, matmul, ConvShape, Real};
use super::model::augment;
use crate::science::rng::{stream, substream};

/// The architecture of an [`ImageFlow`] (stored as JSON in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFlowArch {
    /// Data channels c (2 for Gray-Scott).
    pub channels: usize,
    /// Hidden width C (32 in the paper).
    pub hidden: usize,
    /// Parameterise the 3x3 stencil by (centre, edge, corner) per channel pair, making the network
    /// equivariant under 90° rotations and reflections; otherwise a full 3x3 kernel.
    pub isotropic: bool,
    /// The batch-norm ε.
    pub bn_eps: f64,
}

impl Default for ImageFlowArch {
    fn default() -> Self {
        Self {
            channels: 2,
            hidden: 32,
            isotropic: true,
            bn_eps: 1e-5,
        }
    }
}

/// Offsets of the parameter blocks in [`ImageFlow::params`].
#[derive(Clone, Copy, Debug)]
struct Layout {
    k1: usize,
    g1: usize,
    b1: usize,
    w2: usize,
    g2: usize,
    b2: usize,
    w3: usize,
    end: usize,
}

impl ImageFlowArch {
    /// Scalars per (out, in) pair of the stencil: 3 when isotropic, else 9.
    fn taps(&self) -> usize {
        if self.isotropic {
            3
        } else {
            9
        }
    }

    fn layout(&self) -> Layout {
        let (c, h) = (self.channels, self.hidden);
        let k1 = 0;
        let g1 = k1 + h * c * self.taps();
        let b1 = g1 + h;
        let w2 = b1 + h;
        let g2 = w2 + h * h;
        let b2 = g2 + h;
        let w3 = b2 + h;
        let end = w3 + c * h;
        Layout {
            k1,
            g1,
            b1,
            w2,
            g2,
            b2,
            w3,
            end,
        }
    }

    /// The number of trainable parameters.
    pub fn param_len(&self) -> usize {
        self.layout().end
    }

    fn shape1(&self) -> ConvShape {
        ConvShape {
            c_in: self.channels,
            c_out: self.hidden,
            dilation: 1,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.hidden == 0 || self.bn_eps.is_nan() || self.bn_eps <= 0.0 {
            bail!(
                "invalid image flow architecture {self:?}: need positive widths and batch-norm eps"
            );
        }
        Ok(())
    }
}

/// The orbit (0 centre, 1 edge, 2 corner) of each tap of a 3x3 kernel under the square's symmetries.
const ORBIT: [usize; 9] = [2, 1, 2, 1, 0, 1, 2, 1, 2];

/// The full conv parameters `[C, c, 3, 3]` plus a zero bias from the stencil parameters.
fn expand_kernel<T: Real>(arch: &ImageFlowArch, k: &[T]) -> Vec<T> {
    let s = arch.shape1();
    let mut full = vec![T::default(); s.param_len()];
    let pairs = arch.hidden * arch.channels;
    for p in 0..pairs {
        for t in 0..9 {
            full[p * 9 + t] = if arch.isotropic {
                k[p * 3 + ORBIT[t]]
            } else {
                k[p * 9 + t]
            };
        }
    }
    full
}

/// Chain rule of [`expand_kernel`]: adds the 3x3 gradient (summed over each orbit) into `dk`.
fn reduce_kernel_grad(arch: &ImageFlowArch, full: &[f64], dk: &mut [f64]) {
    let pairs = arch.hidden * arch.channels;
    for p in 0..pairs {
        for t in 0..9 {
            if arch.isotropic {
                dk[p * 3 + ORBIT[t]] += full[p * 9 + t];
            } else {
                dk[p * 9 + t] += full[p * 9 + t];
            }
        }
    }
}

/// Running batch-norm statistics (evaluation mode), per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats {
    /// Running means of BN1, BN2 (C each) and BN3 (c).
    pub mean: [Vec<f64>; 3],
    /// Running (unbiased) variances, same shapes.
    pub var: [Vec<f64>; 3],
}

impl RunningStats {
    fn new(arch: &ImageFlowArch) -> Self {
        let (c, h) = (arch.channels, arch.hidden);
        Self {
            mean: [vec![0.0; h], vec![0.0; h], vec![0.0; c]],
            var: [vec![1.0; h], vec![1.0; h], vec![1.0; c]],
        }
    }
}

/// A trained (or freshly initialised) image flow.
#[derive(Clone, Debug)]
pub struct ImageFlow {
    /// Architecture.
    pub arch: ImageFlowArch,
    /// Trainable parameters: stencil `[C, c, 3]` (centre, edge, corner; `[C, c, 9]` when not isotropic),
    /// BN1 γ `[C]`, β `[C]`, W2 `[C, C]`, BN2 γ `[C]`, β `[C]`, W3 `[c, C]`.
    pub params: Vec<f32>,
    /// Running batch-norm statistics used by [`ImageFlow::velocity`].
    pub running: RunningStats,
}

/// Batch-norm statistics of one layer: the primal batch mean and variance plus the tangent means the
/// backward pass needs.
struct BnCache {
    mu: Vec<f64>,
    var: Vec<f64>,
    sigma: Vec<f64>,
    /// mean(t_a,j) per `[C, P]`.
    mt: Vec<f64>,
    /// mean(x̂ t_a,j) per `[C, P]`.
    m: Vec<f64>,
}

/// Which statistics a batch-norm uses.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Batch,
    Running(&'a [f64], &'a [f64]),
}

/// Sums per-item partial vectors in item order (deterministic whatever the thread count).
fn ordered_sum(parts: Vec<Vec<f64>>) -> Vec<f64> {
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("at least one item");
    for p in it {
        acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    acc
}

/// Batch-norm (without affine) of `a` `[B, C, S, hw]` into `xh` (same shape), tangents included.
fn bn_forward<T: Real>(
    a: &[T],
    c: usize,
    s: usize,
    hw: usize,
    eps: f64,
    mode: Mode,
    xh: &mut [T],
) -> BnCache {
    let item = c * s * hw;
    let b = a.len() / item;
    let p = s - 1;
    let n = (b * hw) as f64;
    let (mu, var, sigma, mt, m) = match mode {
        Mode::Running(rm, rv) => {
            let sigma: Vec<f64> = rv.iter().map(|v| (v + eps).sqrt()).collect();
            (rm.to_vec(), rv.to_vec(), sigma, vec![], vec![])
        }
        Mode::Batch => {
            // Round 1: Σ a and Σ t_a,j.
            let sums = ordered_sum(
                a.par_chunks(item)
                    .map(|x| {
                        (0..c * s)
                            .map(|r| x[r * hw..(r + 1) * hw].iter().map(|v| v.to_f64()).sum())
                            .collect()
                    })
                    .collect(),
            );
            let mu: Vec<f64> = (0..c).map(|ch| sums[ch * s] / n).collect();
            let mut mt = vec![0.0; c * p];
            for ch in 0..c {
                for j in 0..p {
                    mt[ch * p + j] = sums[ch * s + 1 + j] / n;
                }
            }
            // Round 2: Σ (a-μ)² and Σ (a-μ) t_a,j.
            let sums2 = ordered_sum(
                a.par_chunks(item)
                    .map(|x| {
                        let mut out = vec![0.0; c * s];
                        for ch in 0..c {
                            let row = &x[ch * s * hw..(ch * s + 1) * hw];
                            for (q, o) in out[ch * s..(ch + 1) * s].iter_mut().enumerate() {
                                let t = &x[(ch * s + q) * hw..(ch * s + q + 1) * hw];
                                *o = row
                                    .iter()
                                    .zip(t)
                                    .map(|(&u, &v)| (u.to_f64() - mu[ch]) * v.to_f64())
                                    .sum();
                            }
                        }
                        out
                    })
                    .collect(),
            );
            let var: Vec<f64> = (0..c).map(|ch| sums2[ch * s] / n).collect();
            let sigma: Vec<f64> = var.iter().map(|v| (v + eps).sqrt()).collect();
            let mut m = vec![0.0; c * p];
            for ch in 0..c {
                for j in 0..p {
                    m[ch * p + j] = sums2[ch * s + 1 + j] / (n * sigma[ch]);
                }
            }
            (mu, var, sigma, mt, m)
        }
    };
    let batch = matches!(mode, Mode::Batch);
    xh.par_chunks_mut(item)
        .zip(a.par_chunks(item))
        .for_each(|(y, x)| {
            for ch in 0..c {
                let (mu_c, inv) = (mu[ch], 1.0 / sigma[ch]);
                let base = ch * s * hw;
                for k in 0..hw {
                    y[base + k] = T::from_f64((x[base + k].to_f64() - mu_c) * inv);
                }
                for j in 0..p {
                    let off = base + (1 + j) * hw;
                    let (mtj, mj) = if batch {
                        (mt[ch * p + j], m[ch * p + j])
                    } else {
                        (0.0, 0.0)
                    };
                    for k in 0..hw {
                        let xhat = y[base + k].to_f64();
                        y[off + k] = T::from_f64((x[off + k].to_f64() - mtj - xhat * mj) * inv);
                    }
                }
            }
        });
    BnCache {
        mu,
        var,
        sigma,
        mt,
        m,
    }
}

#[inline]
fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

/// silu(n), silu'(n), silu''(n).
#[inline]
fn silu3(n: f64) -> (f64, f64, f64) {
    let s = sigmoid(n);
    (
        n * s,
        s * (1.0 + n * (1.0 - s)),
        s * (1.0 - s) * (2.0 + n * (1.0 - 2.0 * s)),
    )
}

/// `z = silu(γ x̂ + β)` with tangents `t_z = silu'(n) γ t_x̂`, over `[B, C, S, hw]`.
fn affine_silu<T: Real>(
    xh: &[T],
    gamma: &[T],
    beta: &[T],
    c: usize,
    s: usize,
    hw: usize,
) -> Vec<T> {
    let mut z = vec![T::default(); xh.len()];
    z.par_chunks_mut(c * s * hw)
        .zip(xh.par_chunks(c * s * hw))
        .for_each(|(z, x)| {
            for ch in 0..c {
                let (g, b) = (gamma[ch].to_f64(), beta[ch].to_f64());
                let base = ch * s * hw;
                for k in 0..hw {
                    let (f, d, _) = silu3(g * x[base + k].to_f64() + b);
                    z[base + k] = T::from_f64(f);
                    for q in 1..s {
                        let i = base + q * hw + k;
                        z[i] = T::from_f64(d * g * x[i].to_f64());
                    }
                }
            }
        });
    z
}

/// The recorded forward pass of a batch.
struct Tape<T> {
    b: usize,
    s: usize,
    kfull: Vec<T>,
    a1: Vec<T>,
    x1: Vec<T>,
    z1: Vec<T>,
    a2: Vec<T>,
    x2: Vec<T>,
    z2: Vec<T>,
    a3: Vec<T>,
    /// The output `[B, c, S, hw]`: v and its tangents J z_j.
    v: Vec<T>,
    bn: [BnCache; 3],
}

/// `out [B, co, S, hw] = W [co, ci] · inp [B, ci, S, hw]` per item.
fn pointwise<T: Real>(w: &[T], inp: &[T], ci: usize, co: usize, sh: usize) -> Vec<T> {
    let b = inp.len() / (ci * sh);
    let mut out = vec![T::default(); b * co * sh];
    out.par_chunks_mut(co * sh)
        .zip(inp.par_chunks(ci * sh))
        .for_each(|(o, x)| {
            matmul(
                co,
                sh,
                ci,
                o,
                (sh, 1),
                w,
                (ci, 1),
                x,
                (sh, 1),
                false,
                Parallelism::None,
            )
        });
    out
}

#[expect(clippy::too_many_arguments, reason = "a flat numeric kernel signature")]
/// Forward pass of `x` `[B, c, hw]` with probe tangents `probes` `[B, P, c, hw]` (P may be 0).
fn forward<T: Real>(
    arch: &ImageFlowArch,
    params: &[T],
    x: &[T],
    probes: &[T],
    p: usize,
    h: usize,
    w: usize,
    running: Option<&RunningStats>,
) -> Tape<T> {
    let (c, ch) = (arch.channels, arch.hidden);
    let hw = h * w;
    let b = x.len() / (c * hw);
    let s = 1 + p;
    let l = arch.layout();
    let kfull = expand_kernel(arch, &params[l.k1..l.g1]);
    let shape = arch.shape1();
    let mut a1 = vec![T::default(); b * ch * s * hw];
    a1.par_chunks_mut(ch * s * hw)
        .enumerate()
        .for_each(|(i, out)| {
            let mut col = vec![T::default(); c * 9 * hw];
            let mut tmp = vec![T::default(); ch * hw];
            for q in 0..s {
                let inp = if q == 0 {
                    &x[i * c * hw..(i + 1) * c * hw]
                } else {
                    &probes[((i * p) + q - 1) * c * hw..][..c * hw]
                };
                conv_forward(
                    &shape,
                    &kfull,
                    inp,
                    h,
                    w,
                    &mut tmp,
                    &mut col,
                    Parallelism::None,
                );
                for o in 0..ch {
                    out[(o * s + q) * hw..][..hw].copy_from_slice(&tmp[o * hw..(o + 1) * hw]);
                }
            }
        });
    let mode = |k: usize| match running {
        Some(r) => Mode::Running(&r.mean[k], &r.var[k]),
        None => Mode::Batch,
    };
    let eps = arch.bn_eps;
    let mut x1 = vec![T::default(); a1.len()];
    let bn1 = bn_forward(&a1, ch, s, hw, eps, mode(0), &mut x1);
    let z1 = affine_silu(&x1, &params[l.g1..l.b1], &params[l.b1..l.w2], ch, s, hw);
    let a2 = pointwise(&params[l.w2..l.g2], &z1, ch, ch, s * hw);
    let mut x2 = vec![T::default(); a2.len()];
    let bn2 = bn_forward(&a2, ch, s, hw, eps, mode(1), &mut x2);
    let z2 = affine_silu(&x2, &params[l.g2..l.b2], &params[l.b2..l.w3], ch, s, hw);
    let a3 = pointwise(&params[l.w3..l.end], &z2, ch, c, s * hw);
    let mut v = vec![T::default(); a3.len()];
    let bn3 = bn_forward(&a3, c, s, hw, eps, mode(2), &mut v);
    Tape {
        b,
        s,
        kfull,
        a1,
        x1,
        z1,
        a2,
        x2,
        z2,
        a3,
        v,
        bn: [bn1, bn2, bn3],
    }
}

/// Backward of a batch-norm in batch mode. `dn` `[B, C, S, hw]` holds n̄ and t̄_n,j (n = γ x̂ + β);
/// returns ā and t̄_a,j; adds γ̄, β̄ into `dgb` (`[2C]`, γ then β) when given.
#[expect(clippy::too_many_arguments, reason = "a flat numeric kernel signature")]
fn bn_backward<T: Real>(
    a: &[T],
    xh: &[T],
    cache: &BnCache,
    gamma: Option<&[T]>,
    dn: &[T],
    c: usize,
    s: usize,
    hw: usize,
    dgb: Option<&mut [f64]>,
) -> Vec<T> {
    let item = c * s * hw;
    let b = a.len() / item;
    let p = s - 1;
    let n = (b * hw) as f64;
    let gam = |ch: usize| gamma.map_or(1.0, |g| g[ch].to_f64());
    // Per channel: Σ n̄, Σ n̄ x̂, then per probe Σ q, Σ q x̂, Σ q t_x̂ (q = t̄_n).
    let width = 2 + 3 * p;
    let sums = ordered_sum(
        dn.par_chunks(item)
            .zip(xh.par_chunks(item))
            .map(|(d, x)| {
                let mut out = vec![0.0; c * width];
                for ch in 0..c {
                    let base = ch * s * hw;
                    let o = &mut out[ch * width..(ch + 1) * width];
                    for k in 0..hw {
                        let (nb, xk) = (d[base + k].to_f64(), x[base + k].to_f64());
                        o[0] += nb;
                        o[1] += nb * xk;
                        for j in 0..p {
                            let i = base + (1 + j) * hw + k;
                            let q = d[i].to_f64();
                            o[2 + 3 * j] += q;
                            o[3 + 3 * j] += q * xk;
                            o[4 + 3 * j] += q * x[i].to_f64();
                        }
                    }
                }
                out
            })
            .collect(),
    );
    if let Some(dgb) = dgb {
        for ch in 0..c {
            let o = &sums[ch * width..(ch + 1) * width];
            dgb[ch] += o[1] + (0..p).map(|j| o[4 + 3 * j]).sum::<f64>();
            dgb[c + ch] += o[0];
        }
    }
    // Per-channel coefficients.
    struct Coef {
        inv: f64,
        g: f64,
        mean_xb: f64,
        mean_xbx: f64,
        sig_bar_n: f64,
        /// Per probe: mean(g_j), mean(x̂ g_j), m_j.
        probe: Vec<(f64, f64, f64)>,
    }
    let coefs: Vec<Coef> = (0..c)
        .map(|ch| {
            let o = &sums[ch * width..(ch + 1) * width];
            let g = gam(ch);
            let sigma = cache.sigma[ch];
            let probe: Vec<(f64, f64, f64)> = (0..p)
                .map(|j| {
                    (
                        g * o[2 + 3 * j] / n,
                        g * o[3 + 3 * j] / n,
                        cache.m[ch * p + j],
                    )
                })
                .collect();
            let mut mean_xb = g * o[0] / n;
            let mut mean_xbx = g * o[1] / n;
            let mut sig_bar = 0.0;
            for (j, &(mg, mgx, mj)) in probe.iter().enumerate() {
                mean_xb -= (mj * mg + mgx * cache.mt[ch * p + j]) / sigma;
                mean_xbx -= (mj * mgx + mgx * mj) / sigma;
                sig_bar -= g * o[4 + 3 * j] / sigma;
            }
            Coef {
                inv: 1.0 / sigma,
                g,
                mean_xb,
                mean_xbx,
                sig_bar_n: sig_bar / n,
                probe,
            }
        })
        .collect();
    let mut da = vec![T::default(); a.len()];
    da.par_chunks_mut(item)
        .zip(
            dn.par_chunks(item)
                .zip(xh.par_chunks(item).zip(a.par_chunks(item))),
        )
        .for_each(|(out, (d, (x, av)))| {
            for (ch, cf) in coefs.iter().enumerate() {
                let base = ch * s * hw;
                for k in 0..hw {
                    let xk = x[base + k].to_f64();
                    let mut xb = cf.g * d[base + k].to_f64();
                    for (j, &(mg, mgx, mj)) in cf.probe.iter().enumerate() {
                        let i = base + (1 + j) * hw + k;
                        let gj = cf.g * d[i].to_f64();
                        xb -= (mj * gj + mgx * av[i].to_f64()) * cf.inv;
                        out[i] = T::from_f64((gj - mg - xk * mgx) * cf.inv);
                    }
                    out[base + k] = T::from_f64(
                        (xb - cf.mean_xb - xk * cf.mean_xbx) * cf.inv + xk * cf.sig_bar_n,
                    );
                }
            }
        });
    da
}

/// Backward of `z = silu(γ x̂ + β)` with tangents: returns (n̄, t̄_n,j) from (z̄, t̄_z,j).
fn affine_silu_backward<T: Real>(
    xh: &[T],
    gamma: &[T],
    beta: &[T],
    dz: &[T],
    c: usize,
    s: usize,
    hw: usize,
) -> Vec<T> {
    let mut dn = vec![T::default(); xh.len()];
    dn.par_chunks_mut(c * s * hw)
        .zip(xh.par_chunks(c * s * hw).zip(dz.par_chunks(c * s * hw)))
        .for_each(|(o, (x, d))| {
            for ch in 0..c {
                let (g, b) = (gamma[ch].to_f64(), beta[ch].to_f64());
                let base = ch * s * hw;
                for k in 0..hw {
                    let (_, d1, d2) = silu3(g * x[base + k].to_f64() + b);
                    let mut nb = d[base + k].to_f64() * d1;
                    for q in 1..s {
                        let i = base + q * hw + k;
                        let tz = d[i].to_f64();
                        nb += tz * d2 * g * x[i].to_f64();
                        o[i] = T::from_f64(d1 * tz);
                    }
                    o[base + k] = T::from_f64(nb);
                }
            }
        });
    dn
}

/// Backward of [`pointwise`]: adds W̄ into `dw` and returns the input adjoint.
fn pointwise_backward<T: Real>(
    w: &[T],
    inp: &[T],
    dout: &[T],
    ci: usize,
    co: usize,
    sh: usize,
    dw: &mut [f64],
) -> Vec<T> {
    let parts: Vec<(Vec<T>, Vec<T>)> = inp
        .par_chunks(ci * sh)
        .zip(dout.par_chunks(co * sh))
        .map(|(x, d)| {
            let mut g = vec![T::default(); co * ci];
            matmul(
                co,
                ci,
                sh,
                &mut g,
                (ci, 1),
                d,
                (sh, 1),
                x,
                (1, sh),
                false,
                Parallelism::None,
            );
            let mut dx = vec![T::default(); ci * sh];
            matmul(
                ci,
                sh,
                co,
                &mut dx,
                (sh, 1),
                w,
                (1, ci),
                d,
                (sh, 1),
                false,
                Parallelism::None,
            );
            (g, dx)
        })
        .collect();
    let mut din = Vec::with_capacity(inp.len());
    for (g, dx) in parts {
        dw.iter_mut().zip(&g).for_each(|(a, b)| *a += b.to_f64());
        din.extend(dx);
    }
    din
}

/// The probe part and the result of one loss evaluation.
struct LossParts {
    loss: f64,
    grad: Option<Vec<f64>>,
    /// Batch means and variances of the three batch-norms (training mode only).
    stats: Option<[(Vec<f64>, Vec<f64>); 3]>,
}

/// The loss `mean(r1 r2) / mean |v|²` of a batch `x` `[B, c, hw]` with scores `score` (same shape) and
/// probes `[B, 2P, c, hw]` (first P for r1, last P for r2), and its gradient w.r.t. the parameters when
/// `want_grad` (training mode only).
#[expect(clippy::too_many_arguments, reason = "a flat numeric kernel signature")]
fn loss_grad<T: Real>(
    arch: &ImageFlowArch,
    params: &[T],
    x: &[T],
    score: &[T],
    probes: &[T],
    ppe: usize,
    h: usize,
    w: usize,
    running: Option<&RunningStats>,
    want_grad: bool,
) -> LossParts {
    let c = arch.channels;
    let hw = h * w;
    let p = 2 * ppe;
    let tape = forward(arch, params, x, probes, p, h, w, running);
    let (b, s) = (tape.b, tape.s);
    // Per item: r1, r2, |v|².
    let per: Vec<(f64, f64, f64)> = tape
        .v
        .par_chunks(c * s * hw)
        .enumerate()
        .map(|(i, v)| {
            let mut r = [0.0f64; 2];
            let mut vs = 0.0;
            let mut vv = 0.0;
            for ch in 0..c {
                let base = ch * s * hw;
                let si = &score[(i * c + ch) * hw..][..hw];
                for k in 0..hw {
                    let vk = v[base + k].to_f64();
                    vs += vk * si[k].to_f64();
                    vv += vk * vk;
                }
                for j in 0..p {
                    let z = &probes[((i * p + j) * c + ch) * hw..][..hw];
                    let t = &v[base + (1 + j) * hw..][..hw];
                    r[j / ppe] += z
                        .iter()
                        .zip(t)
                        .map(|(&a, &b)| a.to_f64() * b.to_f64())
                        .sum::<f64>()
                        / ppe as f64;
                }
            }
            (r[0] + vs, r[1] + vs, vv)
        })
        .collect();
    let bf = b as f64;
    let a_mean = per.iter().map(|q| q.0 * q.1).sum::<f64>() / bf;
    let d_mean = per.iter().map(|q| q.2).sum::<f64>() / bf;
    let loss = a_mean / d_mean;
    let stats = running.is_none().then(|| {
        let f = |k: usize| (tape.bn[k].mu.clone(), tape.bn[k].var.clone());
        [f(0), f(1), f(2)]
    });
    if !want_grad {
        return LossParts {
            loss,
            grad: None,
            stats,
        };
    }
    assert!(running.is_none(), "gradients only in training mode");
    let l = arch.layout();
    let ch = arch.hidden;
    let mut grad = vec![0.0f64; l.end];
    // Output adjoints.
    let mut dv = vec![T::default(); tape.v.len()];
    dv.par_chunks_mut(c * s * hw)
        .enumerate()
        .for_each(|(i, d)| {
            let (r1, r2, _) = per[i];
            let (g1, g2) = (r2 / (bf * d_mean), r1 / (bf * d_mean));
            let vcoef = -2.0 * loss / (bf * d_mean);
            let v = &tape.v[i * c * s * hw..][..c * s * hw];
            for cc in 0..c {
                let base = cc * s * hw;
                let si = &score[(i * c + cc) * hw..][..hw];
                for k in 0..hw {
                    d[base + k] =
                        T::from_f64((g1 + g2) * si[k].to_f64() + vcoef * v[base + k].to_f64());
                }
                for j in 0..p {
                    let gk = if j < ppe { g1 } else { g2 } / ppe as f64;
                    let z = &probes[((i * p + j) * c + cc) * hw..][..hw];
                    for k in 0..hw {
                        d[base + (1 + j) * hw + k] = T::from_f64(gk * z[k].to_f64());
                    }
                }
            }
        });
    let da3 = bn_backward(&tape.a3, &tape.v, &tape.bn[2], None, &dv, c, s, hw, None);
    let dz2 = pointwise_backward(
        &params[l.w3..l.end],
        &tape.z2,
        &da3,
        ch,
        c,
        s * hw,
        &mut grad[l.w3..l.end],
    );
    let dn2 = affine_silu_backward(
        &tape.x2,
        &params[l.g2..l.b2],
        &params[l.b2..l.w3],
        &dz2,
        ch,
        s,
        hw,
    );
    let da2 = bn_backward(
        &tape.a2,
        &tape.x2,
        &tape.bn[1],
        Some(&params[l.g2..l.b2]),
        &dn2,
        ch,
        s,
        hw,
        Some(&mut grad[l.g2..l.w3]),
    );
    let dz1 = pointwise_backward(
        &params[l.w2..l.g2],
        &tape.z1,
        &da2,
        ch,
        ch,
        s * hw,
        &mut grad[l.w2..l.g2],
    );
    let dn1 = affine_silu_backward(
        &tape.x1,
        &params[l.g1..l.b1],
        &params[l.b1..l.w2],
        &dz1,
        ch,
        s,
        hw,
    );
    let da1 = bn_backward(
        &tape.a1,
        &tape.x1,
        &tape.bn[0],
        Some(&params[l.g1..l.b1]),
        &dn1,
        ch,
        s,
        hw,
        Some(&mut grad[l.g1..l.w2]),
    );
    // The stencil: conv weight gradients of every stream, summed in item order.
    let shape = arch.shape1();
    let parts: Vec<Vec<T>> = da1
        .par_chunks(ch * s * hw)
        .enumerate()
        .map(|(i, d)| {
            let mut col = vec![T::default(); c * 9 * hw];
            let mut dout = vec![T::default(); ch * hw];
            let mut g = vec![T::default(); shape.param_len()];
            for q in 0..s {
                for o in 0..ch {
                    dout[o * hw..(o + 1) * hw].copy_from_slice(&d[(o * s + q) * hw..][..hw]);
                }
                let inp = if q == 0 {
                    &x[i * c * hw..(i + 1) * c * hw]
                } else {
                    &probes[((i * p) + q - 1) * c * hw..][..c * hw]
                };
                conv_backward(
                    &shape,
                    &tape.kfull,
                    inp,
                    h,
                    w,
                    &dout,
                    &mut g,
                    None,
                    &mut col,
                    Parallelism::None,
                );
            }
            g
        })
        .collect();
    let mut full = vec![0.0f64; shape.param_len()];
    for g in parts {
        full.iter_mut().zip(&g).for_each(|(a, b)| *a += b.to_f64());
    }
    reduce_kernel_grad(arch, &full, &mut grad[l.k1..l.g1]);
    LossParts {
        loss,
        grad: Some(grad),
        stats,
    }
}

impl ImageFlow {
    /// A freshly initialised flow: stencil and 1x1 weights uniform in ±1/sqrt(fan_in) (fan_in = 9c for the
    /// stencil, C for the 1x1 layers), γ = 1, β = 0, running means 0 and variances 1.
    pub fn init(arch: ImageFlowArch, seed: u64) -> Self {
        let mut rng = stream(seed, "image-flow/init");
        let l = arch.layout();
        let (c, ch) = (arch.channels, arch.hidden);
        let mut params = vec![0.0f32; l.end];
        let b1 = 1.0 / ((9 * c) as f32).sqrt();
        let bh = 1.0 / (ch as f32).sqrt();
        params[l.k1..l.g1]
            .iter_mut()
            .for_each(|v| *v = rng.gen_range(-b1..b1));
        params[l.g1..l.b1].fill(1.0);
        params[l.w2..l.g2]
            .iter_mut()
            .for_each(|v| *v = rng.gen_range(-bh..bh));
        params[l.g2..l.b2].fill(1.0);
        params[l.w3..l.end]
            .iter_mut()
            .for_each(|v| *v = rng.gen_range(-bh..bh));
        let running = RunningStats::new(&arch);
        Self {
            arch,
            params,
            running,
        }
    }

    /// The velocity v(x) of a batch `x` `[n, c, h, w]` in evaluation mode (running batch-norm statistics, so
    /// each item is independent of the others), written to `out` (same shape).
    pub fn velocity(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let len = self.arch.channels * h * w;
        assert_eq!(x.len(), n * len, "x must be [n, c, h, w]");
        assert_eq!(out.len(), n * len, "out must be [n, c, h, w]");
        let tape = forward(
            &self.arch,
            &self.params,
            x,
            &[],
            0,
            h,
            w,
            Some(&self.running),
        );
        out.copy_from_slice(&tape.v);
    }

    /// Sets the running batch-norm statistics to the batch statistics of `x` `[n, c, h, w]` (unbiased
    /// variance, as training stores them), leaving the weights alone. This is how an untrained network is
    /// made a fair baseline in evaluation mode: its output batch-norm then normalises v on data like the
    /// trained network's does, instead of passing raw activations through the initial mean 0 / variance 1.
    pub fn calibrate_running_stats(&mut self, x: &[f32], n: usize, h: usize, w: usize) {
        let len = self.arch.channels * h * w;
        assert_eq!(x.len(), n * len, "x must be [n, c, h, w]");
        let tape = forward(&self.arch, &self.params, x, &[], 0, h, w, None);
        let cnt = (n * h * w) as f64;
        let unbias = if cnt > 1.0 { cnt / (cnt - 1.0) } else { 1.0 };
        for k in 0..3 {
            self.running.mean[k] = tape.bn[k].mu.clone();
            self.running.var[k] = tape.bn[k].var.iter().map(|v| v * unbias).collect();
        }
    }

    /// The velocity in training mode (batch statistics of this batch), for tests and diagnostics.
    pub fn velocity_batch_stats(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let len = self.arch.channels * h * w;
        assert_eq!(x.len(), n * len, "x must be [n, c, h, w]");
        let tape = forward(&self.arch, &self.params, x, &[], 0, h, w, None);
        out.copy_from_slice(&tape.v);
    }

    /// Saves to a safetensors file (f32, PyTorch-style names and layouts) and writes a JSON sidecar
    /// `<path>.json` for people (the architecture and the tensor list; [`ImageFlow::load`] reads only the
    /// safetensors file). Tensors: `stencil` `[C, c, 3]` (centre, edge, corner) when isotropic, else
    /// `conv1.weight` `[C, c, 3, 3]`; `bn1.weight`, `bn1.bias`, `bn1.running_mean`, `bn1.running_var` `[C]`;
    /// `conv2.weight` `[C, C, 1, 1]`; `bn2.*` likewise; `conv3.weight` `[c, C, 1, 1]`;
    /// `bn3.running_mean`, `bn3.running_var` `[c]`. Metadata: `"arch"` (JSON [`ImageFlowArch`]) only;
    /// the sidecar names the format `eqflow-image-flow-v1`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bufs = self.tensors();
        super::checkpoint::save(path, &bufs, &self.arch, "image flow")?;
        let sidecar = serde_json::json!({
            "format": "eqflow-image-flow-v1",
            "arch": self.arch,
            "param_len": self.arch.param_len(),
            "tensors": bufs.iter().map(|(n, s, _)| serde_json::json!({"name": n, "shape": s})).collect::<Vec<_>>(),
        });
        let side = sidecar_path(path);
        std::fs::write(&side, serde_json::to_string_pretty(&sidecar)?)
            .with_context(|| format!("writing {}", side.display()))
    }

    /// The named tensors of a checkpoint, in file order.
    fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let l = self.arch.layout();
        let (c, ch) = (self.arch.channels, self.arch.hidden);
        let p = &self.params;
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let r = &self.running;
        let stencil = if self.arch.isotropic {
            ("stencil".to_string(), vec![ch, c, 3])
        } else {
            ("conv1.weight".to_string(), vec![ch, c, 3, 3])
        };
        vec![
            (stencil.0, stencil.1, p[l.k1..l.g1].to_vec()),
            ("bn1.weight".into(), vec![ch], p[l.g1..l.b1].to_vec()),
            ("bn1.bias".into(), vec![ch], p[l.b1..l.w2].to_vec()),
            ("bn1.running_mean".into(), vec![ch], f(&r.mean[0])),
            ("bn1.running_var".into(), vec![ch], f(&r.var[0])),
            (
                "conv2.weight".into(),
                vec![ch, ch, 1, 1],
                p[l.w2..l.g2].to_vec(),
            ),
            ("bn2.weight".into(), vec![ch], p[l.g2..l.b2].to_vec()),
            ("bn2.bias".into(), vec![ch], p[l.b2..l.w3].to_vec()),
            ("bn2.running_mean".into(), vec![ch], f(&r.mean[1])),
            ("bn2.running_var".into(), vec![ch], f(&r.var[1])),
            (
                "conv3.weight".into(),
                vec![c, ch, 1, 1],
                p[l.w3..l.end].to_vec(),
            ),
            ("bn3.running_mean".into(), vec![c], f(&r.mean[2])),
            ("bn3.running_var".into(), vec![c], f(&r.var[2])),
        ]
    }

    /// Loads a checkpoint written by [`ImageFlow::save`], checking names, shapes and dtype.
    pub fn load(path: &Path) -> Result<Self> {
        let (arch, file): (ImageFlowArch, _) = super::checkpoint::load(path, "image flow")?;
        arch.validate()?;
        let mut flow = Self::init(arch, 0);
        let loaded = flow
            .tensors()
            .iter()
            .map(|(name, shape, _)| file.tensor(name, shape))
            .collect::<Result<Vec<_>>>()?;
        let d = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let mut params = Vec::with_capacity(flow.arch.param_len());
        for i in [0, 1, 2, 5, 6, 7, 10] {
            params.extend_from_slice(&loaded[i]);
        }
        flow.params = params;
        flow.running = RunningStats {
            mean: [d(&loaded[3]), d(&loaded[8]), d(&loaded[11])],
            var: [d(&loaded[4]), d(&loaded[9]), d(&loaded[12])],
        };
        Ok(flow)
    }
}

/// `<path>.json`.
fn sidecar_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    s.into()
}

/// Settings of [`train_image_flow`]. `Default` gives the paper's choices where it states them (AdamW lr 0.01,
/// 2 + 2 probes, timestep 10) and CPU-sized ones elsewhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFlowConfig {
    /// Architecture of the network trained.
    pub arch: ImageFlowArch,
    /// Optimiser steps.
    pub iterations: usize,
    /// Crops per step.
    pub batch: usize,
    /// Side of the random periodic square crops (with one of the 8 square symmetries); `None` uses whole
    /// fields (which must then be square for the symmetries).
    pub crop: Option<usize>,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Decoupled weight decay of AdamW (applied to every parameter, as PyTorch does by default).
    pub weight_decay: f64,
    /// Fraction of the steps spent warming the learning rate up linearly (from lr/25), then cosine decay to 0.
    pub warmup: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Probes per Hutchinson estimate (two independent estimates r1, r2 are formed).
    pub probes_per_estimate: usize,
    /// ā of the noise level (0.94478 = DDPM timestep 10); inputs are `sqrt(ā) x0 + sqrt(1-ā) ε`.
    pub abar: f32,
    /// Scale clean data by sqrt(ā) (VP scaling, as the local score model is trained).
    pub vp_scaling: bool,
    /// Momentum of the running batch-norm statistics.
    pub bn_momentum: f64,
    /// Fraction of the samples held out for validation (at least one sample when > 0 and n > 1).
    pub val_fraction: f64,
    /// Validate every this many steps (and after the last).
    pub val_every: usize,
    /// Crops in the (fixed) validation batch.
    pub val_batch: usize,
    /// Seed of initialisation, split, batches, noise and probes.
    pub seed: u64,
}

impl Default for ImageFlowConfig {
    fn default() -> Self {
        Self {
            arch: ImageFlowArch::default(),
            iterations: 500,
            batch: 8,
            crop: Some(48),
            lr: 0.01,
            weight_decay: 0.01,
            warmup: 0.05,
            grad_clip: Some(1.0),
            probes_per_estimate: 2,
            abar: 0.94478,
            vp_scaling: true,
            bn_momentum: 0.1,
            val_fraction: 0.1,
            val_every: 50,
            val_batch: 16,
            seed: 0,
        }
    }
}

/// What [`train_image_flow`] recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    /// Training loss of every step (batch statistics).
    pub train: Vec<f64>,
    /// (step, validation loss in evaluation mode) at each validation.
    pub val: Vec<(usize, f64)>,
    /// Mean wall-clock seconds per optimiser step (validation excluded).
    pub secs_per_iter: f64,
}

fn lr_at(cfg: &ImageFlowConfig, it: usize) -> f64 {
    let warm = ((cfg.iterations as f64 * cfg.warmup).ceil() as usize).max(1);
    if it < warm {
        cfg.lr * (0.04 + 0.96 * it as f64 / warm as f64)
    } else {
        let p = (it - warm) as f64 / (cfg.iterations - warm).max(1) as f64;
        cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// The score signature [`train_image_flow`] takes: `score(x [n, c, h, w], n, h, w, out)`.
pub type ScoreFn<'a> = &'a dyn Fn(&[f32], usize, usize, usize, &mut [f32]);

/// A batch: noised crops, their scores and the probes.
struct Batch {
    x: Vec<f32>,
    s: Vec<f32>,
    z: Vec<f32>,
}

#[expect(clippy::too_many_arguments, reason = "internal helper")]
fn make_batch(
    data: &[f32],
    pool: &[usize],
    c: usize,
    h: usize,
    w: usize,
    cs: usize,
    count: usize,
    cfg: &ImageFlowConfig,
    name: &str,
    index: u64,
    score: ScoreFn,
) -> Batch {
    let sigma = (1.0 - cfg.abar).sqrt();
    let scale = if cfg.vp_scaling { cfg.abar.sqrt() } else { 1.0 };
    let p = 2 * cfg.probes_per_estimate;
    let len = c * cs * cs;
    let items: Vec<(Vec<f32>, Vec<f32>)> = (0..count)
        .into_par_iter()
        .map(|b| {
            let mut rng = substream(cfg.seed, name, index * count as u64 + b as u64);
            let idx = pool[rng.gen_range(0..pool.len())];
            let x0 = augment(&data[idx * c * h * w..][..c * h * w], c, h, w, cs, &mut rng);
            let xt: Vec<f32> = x0
                .iter()
                .map(|&x| {
                    let e: f32 = StandardNormal.sample(&mut rng);
                    scale * x + sigma * e
                })
                .collect();
            let z: Vec<f32> = (0..p * len)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            (xt, z)
        })
        .collect();
    let mut x = Vec::with_capacity(count * len);
    let mut z = Vec::with_capacity(count * p * len);
    for (a, b) in items {
        x.extend(a);
        z.extend(b);
    }
    let mut s = vec![0.0f32; x.len()];
    score(&x, count, cs, cs, &mut s);
    Batch { x, s, z }
}

/// Trains an image flow on `data` `[n, c, h, w]` (model space [-1, 1]) against `score` (the score of the
/// noised density at ā, e.g. `|x, n, h, w, out| local.score(x, n, h, w, out)`): each step draws `batch`
/// random periodic crops with random square symmetries from the training split, noises them, evaluates the
/// score, draws 2P Gaussian probes and takes an AdamW step on `mean(r1 r2) / mean |v|²` (gradient clipping,
/// warm-up + cosine schedule), updating the running batch-norm statistics. Every `val_every` steps (and
/// after the last) the loss of a fixed validation batch from the held-out split is computed in evaluation
/// mode. Calls `on_iter(step, train loss, validation loss if computed)`. Fails, naming the step, when the
/// loss or gradient stops being finite. Bit-reproducible for a seed (whatever the thread count, given the
/// score function is).
pub fn train_image_flow(
    data: &[f32],
    h: usize,
    w: usize,
    score: ScoreFn,
    cfg: &ImageFlowConfig,
    on_iter: &mut dyn FnMut(usize, f64, Option<f64>),
) -> Result<(ImageFlow, TrainLog)> {
    train_image_flow_observed(data, h, w, score, cfg, &mut |it, l, v, _| on_iter(it, l, v))
}

/// The callback of [`train_image_flow_observed`]: `(step, train loss, validation loss if computed, &flow)`.
pub type FlowObserver<'a> = dyn FnMut(usize, f64, Option<f64>, &ImageFlow) + 'a;

/// [`train_image_flow`] whose callback also sees the network after each step
/// (`on_iter(step, train loss, validation loss if computed, &flow)`), e.g. to track its alignment with a
/// known field at the validation steps. Observing changes nothing: the result is bit-identical.
pub fn train_image_flow_observed(
    data: &[f32],
    h: usize,
    w: usize,
    score: ScoreFn,
    cfg: &ImageFlowConfig,
    on_iter: &mut FlowObserver<'_>,
) -> Result<(ImageFlow, TrainLog)> {
    let arch = cfg.arch.clone();
    arch.validate()?;
    let c = arch.channels;
    let n = data.len() / (c * h * w).max(1);
    if n == 0 || data.len() != n * c * h * w {
        bail!(
            "training data has {} values, not a nonempty [n, {c}, {h}, {w}] batch",
            data.len()
        );
    }
    if cfg.batch < 2 || cfg.probes_per_estimate == 0 || cfg.iterations == 0 {
        bail!("image flow training needs batch >= 2 (batch-norm), >= 1 probe per estimate and >= 1 iteration");
    }
    let cs = cfg.crop.unwrap_or(h.min(w)).min(h).min(w);
    // Seeded split.
    let mut order: Vec<usize> = (0..n).collect();
    {
        let mut rng = stream(cfg.seed, "image-flow/split");
        for i in (1..n).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
    }
    let n_val = if cfg.val_fraction > 0.0 && n > 1 {
        ((n as f64 * cfg.val_fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let (val_pool, train_pool) = order.split_at(n_val);
    let val = (n_val > 0).then(|| {
        make_batch(
            data,
            val_pool,
            c,
            h,
            w,
            cs,
            cfg.val_batch.max(1),
            cfg,
            "image-flow/val",
            0,
            score,
        )
    });
    let mut flow = ImageFlow::init(arch.clone(), cfg.seed);
    let np = flow.params.len();
    let (mut m, mut v) = (vec![0.0f64; np], vec![0.0f64; np]);
    let (b1, b2, eps_adam) = (0.9f64, 0.999f64, 1e-8f64);
    let mut log = TrainLog::default();
    let mut busy = 0.0;
    let ppe = cfg.probes_per_estimate;
    for it in 0..cfg.iterations {
        let t0 = Instant::now();
        let bt = make_batch(
            data,
            train_pool,
            c,
            h,
            w,
            cs,
            cfg.batch,
            cfg,
            "image-flow/batch",
            it as u64,
            score,
        );
        let out = loss_grad(
            &arch,
            &flow.params,
            &bt.x,
            &bt.s,
            &bt.z,
            ppe,
            cs,
            cs,
            None,
            true,
        );
        let mut grad = out.grad.expect("gradient requested");
        if !out.loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            bail!(
                "image flow training diverged: loss {} at iteration {it} (try a lower lr than {})",
                out.loss,
                cfg.lr
            );
        }
        if let Some(clip) = cfg.grad_clip {
            let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            if norm > clip {
                grad.iter_mut().for_each(|g| *g *= clip / norm);
            }
        }
        let lr = lr_at(cfg, it);
        let t = (it + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for j in 0..np {
            m[j] = b1 * m[j] + (1.0 - b1) * grad[j];
            v[j] = b2 * v[j] + (1.0 - b2) * grad[j] * grad[j];
            let p = flow.params[j] as f64 * (1.0 - lr * cfg.weight_decay);
            flow.params[j] = (p - lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps_adam)) as f32;
        }
        // Running statistics from the primal batch statistics (unbiased variance).
        let stats = out.stats.expect("training mode records statistics");
        let cnt = (cfg.batch * cs * cs) as f64;
        let mom = cfg.bn_momentum;
        for (k, (mu, var)) in stats.iter().enumerate() {
            for ch in 0..mu.len() {
                let rm = &mut flow.running.mean[k][ch];
                *rm = (1.0 - mom) * *rm + mom * mu[ch];
                let rv = &mut flow.running.var[k][ch];
                *rv = (1.0 - mom) * *rv + mom * var[ch] * cnt / (cnt - 1.0);
            }
        }
        busy += t0.elapsed().as_secs_f64();
        log.train.push(out.loss);
        let val_loss = match &val {
            Some(vb) if (it + 1) % cfg.val_every.max(1) == 0 || it + 1 == cfg.iterations => {
                let r = loss_grad(
                    &arch,
                    &flow.params,
                    &vb.x,
                    &vb.s,
                    &vb.z,
                    ppe,
                    cs,
                    cs,
                    Some(&flow.running),
                    false,
                );
                if !r.loss.is_finite() {
                    bail!(
                        "image flow validation loss {} at iteration {it} is not finite",
                        r.loss
                    );
                }
                log.val.push((it, r.loss));
                Some(r.loss)
            }
            _ => None,
        };
        on_iter(it, out.loss, val_loss, &flow);
    }
    log.secs_per_iter = busy / cfg.iterations as f64;
    Ok((flow, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, rng: &mut impl rand::Rng) -> Vec<f64> {
        (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    fn small_arch(isotropic: bool) -> ImageFlowArch {
        ImageFlowArch {
            channels: 2,
            hidden: 4,
            isotropic,
            bn_eps: 1e-5,
        }
    }

    /// Parameters with nonzero β and non-unit γ so every path matters.
    fn params_f64(arch: &ImageFlowArch, seed: u64) -> Vec<f64> {
        let f = ImageFlow::init(arch.clone(), seed);
        let mut rng = stream(seed, "test/perturb");
        f.params
            .iter()
            .map(|&v| v as f64 + rng.gen_range(-0.3..0.3))
            .collect()
    }

    /// After calibration on a batch, evaluation mode on that batch matches training mode up to the
    /// unbiased-vs-biased variance factor N/(N-1) (N = 2·8·8 = 128 here, so about 0.4 % in v).
    #[test]
    fn calibrated_running_stats_reproduce_batch_statistics() {
        let arch = small_arch(true);
        let mut flow = ImageFlow::init(arch, 3);
        let (b, h, w) = (2, 8, 8);
        let mut rng = stream(4, "test/calibrate");
        let x: Vec<f32> = rnd(b * 2 * h * w, &mut rng)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let (mut a, mut e) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
        flow.velocity_batch_stats(&x, b, h, w, &mut a);
        flow.calibrate_running_stats(&x, b, h, w);
        flow.velocity(&x, b, h, w, &mut e);
        let num: f32 = a.iter().zip(&e).map(|(p, q)| (p - q).powi(2)).sum();
        let den: f32 = a.iter().map(|p| p * p).sum();
        assert!(
            (num / den).sqrt() < 0.02,
            "relative difference {}",
            (num / den).sqrt()
        );
    }

    /// (a) The tangents of the training-mode network (batch statistics, which move with the input) equal
    /// central differences of v along each probe, on a non-square grid.
    #[test]
    fn tangent_pass_matches_finite_differences() {
        for iso in [true, false] {
            let arch = small_arch(iso);
            let params = params_f64(&arch, 1);
            let (b, h, w, p) = (3, 5, 6, 2);
            let mut rng = stream(2, "test/tangent");
            let x = rnd(b * 2 * h * w, &mut rng);
            let z = rnd(b * p * 2 * h * w, &mut rng);
            let tape = forward(&arch, &params, &x, &z, p, h, w, None);
            let hw = h * w;
            let e = 1e-5;
            for j in 0..p {
                // The whole batch moves along probe j.
                let dir: Vec<f64> = (0..b)
                    .flat_map(|i| z[(i * p + j) * 2 * hw..][..2 * hw].to_vec())
                    .collect();
                let shift = |sgn: f64| -> Vec<f64> {
                    let xs: Vec<f64> = x.iter().zip(&dir).map(|(a, d)| a + sgn * e * d).collect();
                    forward(&arch, &params, &xs, &[], 0, h, w, None).v
                };
                let (vp, vm) = (shift(1.0), shift(-1.0));
                for i in 0..b {
                    for ch in 0..2 {
                        for k in 0..hw {
                            let fd =
                                (vp[(i * 2 + ch) * hw + k] - vm[(i * 2 + ch) * hw + k]) / (2.0 * e);
                            let t = tape.v[((i * 2 + ch) * (1 + p) + 1 + j) * hw + k];
                            assert!(
                                (fd - t).abs() < 1e-6 * (1.0 + fd.abs()),
                                "iso {iso} probe {j} item {i} ch {ch} px {k}: fd {fd} vs tangent {t}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// (b) The hand-written gradient of mean(r1 r2)/mean|v|² (fixed probes, batch statistics) equals central
    /// differences in every parameter.
    #[test]
    fn loss_gradient_matches_finite_differences() {
        for iso in [true, false] {
            let arch = small_arch(iso);
            let params = params_f64(&arch, 3);
            let (b, h, w, ppe) = (3, 4, 5, 2);
            let mut rng = stream(4, "test/loss");
            let x = rnd(b * 2 * h * w, &mut rng);
            let s = rnd(b * 2 * h * w, &mut rng);
            let z = rnd(b * 2 * ppe * 2 * h * w, &mut rng);
            let out = loss_grad(&arch, &params, &x, &s, &z, ppe, h, w, None, true);
            let g = out.grad.expect("grad");
            let f = |p: &[f64]| loss_grad(&arch, p, &x, &s, &z, ppe, h, w, None, false).loss;
            let e = 1e-6;
            for j in 0..params.len() {
                let (mut a, mut bb) = (params.clone(), params.clone());
                a[j] += e;
                bb[j] -= e;
                let fd = (f(&a) - f(&bb)) / (2.0 * e);
                assert!(
                    (fd - g[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "iso {iso} param {j}: fd {fd} vs {}",
                    g[j]
                );
            }
        }
    }

    /// The 8 symmetries of a square `[n, c, s, s]` batch.
    fn transform(x: &[f64], n: usize, s: usize, t: u8) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for plane in 0..x.len() / (s * s) {
            let _ = n;
            for y in 0..s {
                for xx in 0..s {
                    let (mut yy, mut xs) = if t & 4 != 0 { (xx, y) } else { (y, xx) };
                    if t & 1 != 0 {
                        yy = s - 1 - yy;
                    }
                    if t & 2 != 0 {
                        xs = s - 1 - xs;
                    }
                    out[(plane * s + y) * s + xx] = x[(plane * s + yy) * s + xs];
                }
            }
        }
        out
    }

    /// (c) With the isotropic stencil, transforming the input by any symmetry of the square transforms
    /// the output (and its tangents) the same way, in training and evaluation modes.
    #[test]
    fn isotropic_flow_is_equivariant() {
        let arch = small_arch(true);
        let params = params_f64(&arch, 5);
        let (b, s, p) = (2, 6, 1);
        let mut rng = stream(6, "test/equi");
        let x = rnd(b * 2 * s * s, &mut rng);
        let z = rnd(b * p * 2 * s * s, &mut rng);
        let mut running = RunningStats::new(&arch);
        running.mean[0].iter_mut().for_each(|m| *m = 0.1);
        for run in [None, Some(&running)] {
            let base = forward(&arch, &params, &x, &z, p, s, s, run).v;
            for t in 1..8u8 {
                let got = forward(
                    &arch,
                    &params,
                    &transform(&x, b, s, t),
                    &transform(&z, b, s, t),
                    p,
                    s,
                    s,
                    run,
                )
                .v;
                let want = transform(&base, b, s, t);
                for (k, (a, bb)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - bb).abs() < 1e-10,
                        "symmetry {t} entry {k}: {a} vs {bb}"
                    );
                }
            }
        }
        // The full (non-isotropic) stencil is not equivariant: the test can fail.
        let arch = small_arch(false);
        let params = params_f64(&arch, 5);
        let base = forward(&arch, &params, &x, &[], 0, s, s, None).v;
        let got = forward(&arch, &params, &transform(&x, b, s, 1), &[], 0, s, s, None).v;
        let want = transform(&base, b, s, 1);
        assert!(got.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-6));
    }

    #[test]
    fn save_load_roundtrip() {
        let mut f = ImageFlow::init(small_arch(true), 1);
        f.running.mean[1][2] = 0.5;
        f.running.var[2][1] = 2.0;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.safetensors");
        f.save(&path).expect("save");
        assert!(sidecar_path(&path).exists());
        let back = ImageFlow::load(&path).expect("load");
        assert_eq!(back.arch, f.arch);
        assert_eq!(back.params, f.params);
        assert_eq!(back.running, f.running);
        let x: Vec<f32> = (0..2 * 2 * 8 * 8)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let (mut a, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        f.velocity(&x, 2, 8, 8, &mut a);
        back.velocity(&x, 2, 8, 8, &mut b);
        assert_eq!(a, b);
    }

    /// A short run on tiny waves fields with a briefly trained local score: the loss falls, the run is
    /// bit-reproducible, and validation losses are reported.
    #[test]
    fn training_on_waves_reduces_loss() {
        use crate::nn::conv::{train_local_score, LocalScoreConfig};
        let p = crate::science::gray_scott::preset("waves").expect("preset");
        let mut data = crate::science::gray_scott::generate(&p, 32, 1500, 6, 1);
        crate::science::gray_scott::to_model_space(&mut data);
        let scfg = LocalScoreConfig {
            width: 8,
            dilations: vec![1, 2, 2, 1],
            iterations: 40,
            batch: 8,
            crop: Some(24),
            lr: 5e-3,
            ..Default::default()
        };
        let (sm, _) = train_local_score(&data, 32, 32, 2, &scfg, &mut |_, _| {}).expect("score");
        let score =
            |x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]| sm.score(x, n, h, w, out);
        let cfg = ImageFlowConfig {
            arch: ImageFlowArch {
                hidden: 8,
                ..Default::default()
            },
            iterations: 60,
            batch: 4,
            crop: Some(16),
            val_every: 20,
            val_batch: 4,
            ..Default::default()
        };
        let mut seen = 0;
        let (_, log) = train_image_flow(&data, 32, 32, &score, &cfg, &mut |_, _, v| {
            seen += v.is_some() as usize
        })
        .expect("training");
        assert_eq!(seen, 3);
        let first: f64 = log.train[..10].iter().sum::<f64>() / 10.0;
        let last: f64 = log.train[log.train.len() - 10..].iter().sum::<f64>() / 10.0;
        assert!(last < 0.7 * first, "loss {first} -> {last}");
        let (_, again) =
            train_image_flow(&data, 32, 32, &score, &cfg, &mut |_, _, _| {}).expect("training");
        assert_eq!(log.train, again.train);
        assert_eq!(log.val, again.val);
    }

    /// The same seed gives bit-identical training on 1 and 2 threads (with a thread-independent score),
    /// and a non-finite loss is an error naming the step.
    #[test]
    fn training_is_thread_count_independent_and_reports_nan() {
        let p = crate::science::gray_scott::preset("waves").expect("preset");
        let mut data = crate::science::gray_scott::generate(&p, 24, 800, 4, 2);
        crate::science::gray_scott::to_model_space(&mut data);
        // The exact score of N(0, I) data noised to σ: a stand-in that is the same on every thread count.
        let gauss = |x: &[f32], _n: usize, _h: usize, _w: usize, out: &mut [f32]| {
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = -v)
        };
        let cfg = ImageFlowConfig {
            arch: ImageFlowArch {
                hidden: 6,
                ..Default::default()
            },
            iterations: 6,
            batch: 3,
            crop: Some(12),
            val_every: 3,
            val_batch: 2,
            ..Default::default()
        };
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| train_image_flow(&data, 24, 24, &gauss, &cfg, &mut |_, _, _| {}))
                .expect("training")
        };
        let (f1, l1) = run(1);
        let (f2, l2) = run(2);
        assert_eq!(l1.train, l2.train);
        assert_eq!(l1.val, l2.val);
        assert_eq!(f1.params, f2.params);
        assert_eq!(f1.running, f2.running);
        let bad = |_: &[f32], _: usize, _: usize, _: usize, out: &mut [f32]| out.fill(f32::NAN);
        let err = train_image_flow(&data, 24, 24, &bad, &cfg, &mut |_, _, _| {})
            .expect_err("NaN scores must fail");
        assert!(err.to_string().contains("iteration 0"), "{err}");
    }

    /// Measurement, not a check (run with `--ignored --nocapture`, `RAYON_NUM_THREADS=2`): seconds per step
    /// at batch 8 of 48x48 crops, and the direct cosine between v(x) (evaluation mode) and the true
    /// Gray-Scott right-hand side on held-out 64x64 waves patterns, trained vs randomly initialised.
    #[test]
    #[ignore = "a measurement of a few minutes"]
    fn measure_waves_speed_and_direct_cosine() {
        use crate::nn::conv::{train_local_score, LocalScoreConfig};
        use crate::science::gray_scott::{generate, preset, rhs, to_model_space};
        use crate::science::turing_eval::cosine;
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (n, size) = (env("N", 48), 64);
        let p = preset("waves").expect("preset");
        let t = Instant::now();
        let mut data = generate(&p, size, 3000, n, 7);
        to_model_space(&mut data);
        println!("data {n} x {size}^2 in {:.1} s", t.elapsed().as_secs_f64());
        let (train, test) = data.split_at((n - 8) * 2 * size * size);
        let scfg = LocalScoreConfig {
            iterations: env("SCORE_ITERS", 300),
            batch: 8,
            crop: Some(48),
            ..Default::default()
        };
        let t = Instant::now();
        let (sm, sl) =
            train_local_score(train, size, size, 2, &scfg, &mut |_, _| {}).expect("score");
        println!(
            "score: {} iters in {:.1} s, loss {:.4} -> {:.4}",
            scfg.iterations,
            t.elapsed().as_secs_f64(),
            sl[0],
            sl[sl.len() - 1]
        );
        let score =
            |x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]| sm.score(x, n, h, w, out);
        let cfg = ImageFlowConfig {
            iterations: env("FLOW_ITERS", 300),
            ..Default::default()
        };
        let (flow, log) = train_image_flow(train, size, size, &score, &cfg, &mut |it, l, v| {
            if let Some(v) = v {
                println!("  step {it}: train {l:.4} val {v:.4}");
            }
        })
        .expect("flow");
        let k = log.train.len() / 10;
        println!(
            "flow: {:.3} s/step (batch {}, crop 48, {} threads); train loss first/last 10%: {:.4} -> {:.4}",
            log.secs_per_iter,
            cfg.batch,
            rayon::current_num_threads(),
            log.train[..k].iter().sum::<f64>() / k as f64,
            log.train[log.train.len() - k..].iter().sum::<f64>() / k as f64
        );
        let nt = test.len() / (2 * size * size);
        let phys: Vec<f32> = test.iter().map(|x| 0.5 * (x + 1.0)).collect();
        let r = rhs(&p, &phys, size, size);
        let cos_of = |f: &ImageFlow, batch_stats: bool| -> Vec<f64> {
            let mut v = vec![0.0; test.len()];
            if batch_stats {
                f.velocity_batch_stats(test, nt, size, size, &mut v);
            } else {
                f.velocity(test, nt, size, size, &mut v);
            }
            v.chunks(2 * size * size)
                .zip(r.chunks(2 * size * size))
                .map(|(a, b)| cosine(a, b))
                .collect()
        };
        // v -> -v leaves the loss unchanged, so a model's sign is arbitrary: |signed mean| measures a
        // consistent direction, mean |cos| the per-pattern magnitude.
        let show = |name: &str, c: &[f64]| {
            let m = c.iter().sum::<f64>() / c.len() as f64;
            let a = c.iter().map(|x| x.abs()).sum::<f64>() / c.len() as f64;
            println!("{name}: signed mean {m:+.3}, mean |cos| {a:.3}, per pattern {c:.3?}");
        };
        show("trained (running stats)", &cos_of(&flow, false));
        show("trained (batch stats)", &cos_of(&flow, true));
        for seed in 1..6 {
            let rnd = ImageFlow::init(flow.arch.clone(), 100 + seed);
            show(
                &format!("random init {seed} (batch stats)"),
                &cos_of(&rnd, true),
            );
        }
    }
}
