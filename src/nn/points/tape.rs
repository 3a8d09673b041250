//! The taped dfdx forward passes used for training: the score MLP, and the flow networks with an exact
//! forward-mode tangent pass beside the primal (engine.md: dfdx has no forward mode and no higher-order
//! gradients, so `J_v z` is built from ordinary taped ops and the divergence loss becomes an ordinary
//! first-order function of the weights).
//!
//! Parameters enter as 1-D leaf tensors (one per [`super::Leaf`]) reshaped where used; every leaf and
//! input is traced with its own leaky tape and dfdx merges the tapes, so gradients reach every leaf
//! through both the primal and the tangent branches. No `slice` is used anywhere (its CPU backward
//! overwrites instead of accumulating), and no binary op sees the same tensor id twice.
//!
//! Shapes: primal `[n, w]`; `k` tangents stacked `[k*n, w]` for the matmuls and viewed `[k, n, w]` for the
//! elementwise factors (broadcast over the first axis).

use super::{Arch, Network};
use dfdx::prelude::*;

/// A float dtype the trainers run in (f32 for speed, f64 for gradient checks).
pub trait Real: Dtype {
    /// From f64 (rounding for f32).
    fn of(x: f64) -> Self;
    /// To f64.
    fn f64(self) -> f64;
}
impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}
impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
}

pub(crate) type T2<E, D> = Tensor<(usize, usize), E, D, OwnedTape<E, D>>;
pub(crate) type T3<E, D> = Tensor<(usize, usize, usize), E, D, OwnedTape<E, D>>;

/// A 2-D untaped tensor from f64 values.
pub(crate) fn tensor2<E: Real, D: Device<E>>(
    dev: &D,
    v: &[f64],
    r: usize,
    c: usize,
) -> Tensor<(usize, usize), E, D> {
    dev.tensor_from_vec(v.iter().map(|&x| E::of(x)).collect(), (r, c))
}

/// The leaves as untaped 1-D tensors (read their gradients with these ids).
pub(crate) fn leaf_tensors<E: Real, D: Device<E>>(
    dev: &D,
    leaves: &[Vec<f64>],
) -> Vec<Tensor<(usize,), E, D>> {
    leaves
        .iter()
        .map(|v| dev.tensor_from_vec(v.iter().map(|&x| E::of(x)).collect(), (v.len(),)))
        .collect()
}

fn weight<E: Real, D: Device<E>>(
    leaf: &Tensor<(usize,), E, D>,
    inp: usize,
    out: usize,
) -> T2<E, D> {
    leaf.leaky_trace().reshape_like(&(inp, out))
}

fn bias<E: Real, D: Device<E>>(leaf: &Tensor<(usize,), E, D>, n: usize) -> T2<E, D> {
    let out = leaf.shape().0;
    leaf.leaky_trace().broadcast_like::<_, Axis<0>>(&(n, out))
}

/// Multiplies `k` stacked tangents `[k*n, w]` by a per-sample factor `[n, w]` (broadcast over `k`).
fn scale_tangent<E: Real, D: Device<E>>(t: T2<E, D>, factor: T2<E, D>, k: usize) -> T2<E, D> {
    let (kn, w) = *t.shape();
    let n = kn / k;
    let t3: T3<E, D> = t.reshape_like(&(k, n, w));
    (t3 * factor.broadcast_like::<_, Axis<0>>(&(k, n, w))).reshape_like(&(kn, w))
}

/// SiLU on the primal and on the tangents: returns `(silu(h), silu'(h) * t)`.
fn silu_pair<E: Real, D: Device<E>>(h: T2<E, D>, t: T2<E, D>, k: usize) -> (T2<E, D>, T2<E, D>) {
    let s = h.with_empty_tape().sigmoid();
    let a = h.with_empty_tape() * s.with_empty_tape();
    // silu'(h) = s (1 + h (1 - s))
    let one_minus_s = s.with_empty_tape().negate() + E::ONE;
    let dsilu = s * ((h * one_minus_s) + E::ONE);
    (a, scale_tangent(t, dsilu, k))
}

/// How the output batch-norm is differentiated in the tangent pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BnTangent {
    /// The batched map, all terms: each sample's tangent moves the batch mean and variance too.
    Batched,
    /// Only the per-sample diagonal block `d y_i / d x_i` (used with shared basis-vector tangents).
    SelfOnly,
}

/// How the output batch-norm normalises.
#[derive(Clone, Debug)]
pub(crate) enum BnMode {
    /// Training: batch statistics (biased variance), tangent handled as given.
    Batch(BnTangent),
    /// Evaluation: fixed running mean and variance.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "training never evaluates; tests compare against it"
        )
    )]
    Running { mean: Vec<f64>, var: Vec<f64> },
}

/// Output of [`flow_forward`].
pub(crate) struct FlowPass<E: Real, D: Device<E>> {
    /// `v`, `[n, d]`.
    pub v: T2<E, D>,
    /// `J_v t` for the `k` stacked tangents, `[k*n, d]`.
    pub tv: T2<E, D>,
    /// Batch mean and biased variance of the pre-norm output (for running statistics), when in batch mode.
    pub batch_stats: Option<(Vec<f64>, Vec<f64>)>,
}

/// The flow network with `k` stacked tangents `t` (`[k*n, d]`) propagated beside the primal `x` (`[n, d]`).
pub(crate) fn flow_forward<E: Real, D: Device<E>>(
    arch: &Arch,
    leaves: &[Tensor<(usize,), E, D>],
    x: &Tensor<(usize, usize), E, D>,
    t: &Tensor<(usize, usize), E, D>,
    k: usize,
    bn: &BnMode,
) -> FlowPass<E, D> {
    let (n, d) = *x.shape();
    let hw = arch.hidden;
    let kn = k * n;
    let mut li = 0usize;
    let (mut h, mut th): (T2<E, D>, T2<E, D>);
    match arch.network {
        Network::Kernel => {
            // first layer over the positional encoding, block by block: h = sum_b enc_b(x) W_b + b0
            let xt = x.leaky_trace();
            let tt = t.leaky_trace();
            h = xt.with_empty_tape().matmul(weight(&leaves[0], d, hw));
            th = tt.with_empty_tape().matmul(weight(&leaves[0], d, hw));
            for (i, f64f) in super::ENCODING_FREQUENCIES.iter().enumerate() {
                let f = E::of(*f64f);
                let neg_f = E::of(-*f64f);
                let fx = xt.with_empty_tape() * f;
                let (sin, cos) = (fx.with_empty_tape().sin(), fx.cos());
                let ws = weight(&leaves[1 + 2 * i], d, hw);
                let wc = weight(&leaves[2 + 2 * i], d, hw);
                // d sin(fx) = f cos(fx) t ; d cos(fx) = -f sin(fx) t
                let dsin = scale_tangent(tt.with_empty_tape(), cos.with_empty_tape() * f, k);
                let dcos = scale_tangent(tt.with_empty_tape(), sin.with_empty_tape() * neg_f, k);
                h = h + sin.matmul(ws.with_empty_tape()) + cos.matmul(wc.with_empty_tape());
                th = th + dsin.matmul(ws) + dcos.matmul(wc);
            }
            h = h + bias(&leaves[9], n);
            li = 10;
            let (a, ta) = silu_pair(h, th, k);
            h = a;
            th = ta;
            // second hidden layer
            let z = h.matmul(weight(&leaves[li], hw, hw)) + bias(&leaves[li + 1], n);
            let tz = th.matmul(weight(&leaves[li], hw, hw));
            li += 2;
            let (a, ta) = silu_pair(z, tz, k);
            h = a;
            th = ta;
        }
        Network::Mlp => {
            let xt = x.leaky_trace();
            let tt = t.leaky_trace();
            h = xt;
            th = tt;
            let mut inp = d;
            for _ in 0..3 {
                let z = h.matmul(weight(&leaves[li], inp, hw)) + bias(&leaves[li + 1], n);
                let tz = th.matmul(weight(&leaves[li], inp, hw));
                li += 2;
                let (a, ta) = silu_pair(z, tz, k);
                h = a;
                th = ta;
                inp = hw;
            }
        }
    }
    // output layer (pre-norm)
    let o = h.matmul(weight(&leaves[li], hw, d)) + bias(&leaves[li + 1], n);
    let to = th.matmul(weight(&leaves[li], hw, d));
    let eps = E::of(super::BN_EPS);
    match bn {
        BnMode::Running { mean, var } => {
            let dev = x.device().clone();
            let m: Tensor<(usize,), E, D> =
                dev.tensor_from_vec(mean.iter().map(|&v| E::of(v)).collect(), (d,));
            let inv: Vec<E> = var
                .iter()
                .map(|&v| E::of(1.0 / (v + super::BN_EPS).sqrt()))
                .collect();
            let inv: Tensor<(usize,), E, D> = dev.tensor_from_vec(inv, (d,));
            let v = (o - m.broadcast_like::<_, Axis<0>>(&(n, d)))
                * inv.clone().broadcast_like::<_, Axis<0>>(&(n, d));
            let tv = to * inv.broadcast_like::<_, Axis<0>>(&(kn, d));
            FlowPass {
                v,
                tv,
                batch_stats: None,
            }
        }
        BnMode::Batch(mode) => {
            // every tensor whose tape holds an op must itself be consumed on the way to the loss (an
            // empty-tape copy does not carry the op), hence mu is read first and then moved
            let mu = o.with_empty_tape().mean::<(usize,), Axis<0>>();
            let mu_vals: Vec<f64> = mu.as_vec().iter().map(|v| v.f64()).collect();
            let c = o - mu.broadcast_like::<_, Axis<0>>(&(n, d));
            let var = c.with_empty_tape().square().mean::<(usize,), Axis<0>>();
            let stats = (mu_vals, var.as_vec().iter().map(|v| v.f64()).collect());
            let inv = (var + eps).sqrt().recip();
            let y = c * inv.with_empty_tape().broadcast_like::<_, Axis<0>>(&(n, d));
            let inv2 = inv.broadcast_like::<_, Axis<0>>(&(n, d));
            let tv = match mode {
                BnTangent::Batched => {
                    // dy_i = (dh_i - mean_j dh_j) / s - y_i * mean_j(y_j dh_j) / s   (per probe, per component)
                    let to3: T3<E, D> = to.reshape_like(&(k, n, d));
                    let mdh = to3.with_empty_tape().mean::<(usize, usize), Axis<1>>();
                    let y3 = y.with_empty_tape().broadcast_like::<_, Axis<0>>(&(k, n, d));
                    let mydh = (y3.with_empty_tape() * to3.with_empty_tape())
                        .mean::<(usize, usize), Axis<1>>();
                    let centered = to3 - mdh.broadcast_like::<_, Axis<1>>(&(k, n, d));
                    let dy = centered - y3 * mydh.broadcast_like::<_, Axis<1>>(&(k, n, d));
                    scale_tangent(dy.reshape_like(&(kn, d)), inv2, k)
                }
                BnTangent::SelfOnly => {
                    // d y_i / d h_i = (1 - (1 + y_i^2) / n) / s   (diagonal per component)
                    let nn = E::of(n as f64);
                    let f = ((y.with_empty_tape().square() + E::ONE) / nn).negate() + E::ONE;
                    scale_tangent(to, f * inv2, k)
                }
            };
            FlowPass {
                v: y,
                tv,
                batch_stats: Some(stats),
            }
        }
    }
}

/// `(div_i + v_i . s_i)^2` averaged over the batch. `z3` (`[k, n, d]`, untaped) are the tangents fed in
/// (probes or basis vectors); `div_i = scale * sum_{j,c} z3[j,i,c] tv[j,i,c]` (`scale = 1/k` for
/// Hutchinson, 1 for the exact trace with basis vectors).
pub(crate) fn divergence_loss<E: Real, D: Device<E>>(
    pass: FlowPass<E, D>,
    z3: &Tensor<(usize, usize, usize), E, D>,
    score: &Tensor<(usize, usize), E, D>,
    scale: f64,
) -> Tensor<(), E, D, OwnedTape<E, D>> {
    let (k, n, d) = *z3.shape();
    let tv3: T3<E, D> = pass.tv.reshape_like(&(k, n, d));
    let div = (tv3 * z3.clone())
        .sum::<(usize, usize), Axis<2>>()
        .sum::<(usize,), Axis<0>>()
        * E::of(scale);
    let vs = (pass.v * score.clone()).sum::<(usize,), Axis<1>>();
    (div + vs).square().mean()
}

/// The score MLP's eps prediction `MLP([x, 2t-1]) + x` (ReLU), `x` `[n, d]`, `tfeat` `[n, 1]` = `2t - 1`.
pub(crate) fn score_forward<E: Real, D: Device<E>>(
    d: usize,
    hidden: usize,
    leaves: &[Tensor<(usize,), E, D>],
    x: &Tensor<(usize, usize), E, D>,
    tfeat: &Tensor<(usize, usize), E, D>,
) -> T2<E, D> {
    let n = x.shape().0;
    let xt = x.leaky_trace();
    let h = xt.with_empty_tape().matmul(weight(&leaves[0], d, hidden))
        + tfeat.leaky_trace().matmul(weight(&leaves[1], 1, hidden))
        + bias(&leaves[2], n);
    let h = h.relu();
    let h = (h.matmul(weight(&leaves[3], hidden, hidden)) + bias(&leaves[4], n)).relu();
    h.matmul(weight(&leaves[5], hidden, d)) + bias(&leaves[6], n) + xt
}
