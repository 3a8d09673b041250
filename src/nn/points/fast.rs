//! A hand-written forward + reverse pass of the flow loss (spec §2) for training: primal and tangents
//! forward, then the reverse pass through both, on plain `Vec`s with the `gemm` crate and rayon.
//!
//! # Why not dfdx here
//!
//! The taped dfdx graph of [`super::tape`] is the reference and stays (tests compare against it), but on
//! a 2-core CPU it cost ~130-145 ms per step at batch 2048 with 10 probes (PyTorch: ~40 ms). The matmuls
//! are a small part of that: dfdx's elementwise kernels are scalar and single-threaded, its broadcasts
//! (the per-sample SiLU factor applied to `k` tangents, biases, batch-norm statistics) materialise strided
//! copies, and every op stores its operands on the tape. Here the network is small and fixed, so the
//! whole thing is written out once:
//!
//! - primal and tangents share one buffer of `R = (k + 1) n` rows (rows `0..n` the primal, row
//!   `n + j n + i` the tangent of probe `j` at sample `i`), so each layer is **one** gemm forward, one for
//!   the weight gradient (`In^T dOut`, reducing over all `R` rows: primal and tangent contributions
//!   together) and one for the input gradient; the kernel network's positional encoding is one `[R, 9d]`
//!   input, not nine blocks;
//! - SiLU, its tangent factor `silu'(h)` and the reverse-mode factor `silu''(h)` are computed once per
//!   primal element and applied to the tangent rows in tight, vectorisable loops over fixed row chunks;
//! - the output batch-norm, its tangent and the loss work on `[R, d]` (d <= 3) in f64.
//!
//! The method is exactly the one of [`super::tape`]: the same loss (`mean (div v + v.s)^2`, divergence
//! from exact forward-mode tangents, the same batch-norm tangent for [`BnTangent::Batched`] and
//! [`BnTangent::SelfOnly`]) and its exact gradient. Tests check the tangents, the loss and the leaf
//! gradients against the dfdx graph and against f64 finite differences.
//!
//! Reproducibility: every elementwise result depends on its own row only, chunks are fixed-size (not
//! thread-count dependent), reductions over samples run sequentially in a fixed order, and gemm splits
//! only the output among threads; so a step is bit-identical run to run for a given thread count.
//!
//! # The reverse pass, written out
//!
//! Hidden layer: `P = In W` (+ `b` on primal rows), `A = silu(P)` on primal rows and
//! `A_t = silu'(h) P_t` on tangent rows (`h` the primal pre-activation of the same sample). Given `dA`:
//! `dP_t = silu'(h) dA_t`, `dP_h = silu'(h) dA_h + silu''(h) sum_j dA_tj P_tj`, with
//! `silu'' = s (1 - s) (2 + h (1 - 2 s))`; then `dW = In^T dP`, `db = sum_i dP_h`, `dIn = dP W^T`.
//!
//! Batch-norm (per component; `c = o - mean o`, `inv = 1/sqrt(var + eps)`, `y = c inv`), batched tangent
//! `tv_j = inv (to_j - m_j - y q_j)`, `m_j = mean_i to_j`, `q_j = mean_i y to_j`. With `g = d tv`,
//! `u = g inv`, `U_j = sum_i u_j`, `V_j = sum_i u_j y`: `d to_j = u_j - U_j/n - y V_j/n`,
//! `dy += sum_j (-u_j q_j - V_j to_j / n)`, `d inv += sum g (to - m - y q)`. Self-only tangent
//! `tv = to f inv`, `f = 1 - (1 + y^2)/n`: `d to = g f inv`, `dy += -2 y g to inv / n`,
//! `d inv += sum g to f`. Then `d inv += sum_i dy c`, `dc = dy inv + (-inv^3 d inv) c / n`,
//! `do = dc - mean dc`.

use super::tape::{BnTangent, Real};
use super::train::DynamicsStep;
use super::{Arch, Network, BN_EPS, ENCODING_FREQUENCIES};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// The float operations the hand-written pass needs beyond [`Real`].
pub(crate) trait Fast: Real {
    fn exp_(self) -> Self;
    fn sin_(self) -> Self;
    fn cos_(self) -> Self;
}
impl Fast for f32 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn sin_(self) -> Self {
        self.sin()
    }
    fn cos_(self) -> Self {
        self.cos()
    }
}
impl Fast for f64 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn sin_(self) -> Self {
        self.sin()
    }
    fn cos_(self) -> Self {
        self.cos()
    }
}

/// Rows per parallel chunk of elementwise work (fixed, so results never depend on the thread count).
const CHUNK_ROWS: usize = 512;

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        t => Parallelism::Rayon(t),
    }
}

/// A row-major matrix operand, possibly viewed transposed.
#[derive(Clone, Copy)]
struct Op<'a, F> {
    data: &'a [F],
    rows: usize,
    cols: usize,
    transposed: bool,
}

fn mat<F>(data: &[F], rows: usize, cols: usize) -> Op<'_, F> {
    assert_eq!(data.len(), rows * cols, "matrix buffer size");
    Op {
        data,
        rows,
        cols,
        transposed: false,
    }
}

impl<F> Op<'_, F> {
    fn t(self) -> Self {
        Self {
            transposed: !self.transposed,
            ..self
        }
    }
    /// (logical rows, logical cols, row stride, col stride)
    fn view(&self) -> (usize, usize, isize, isize) {
        if self.transposed {
            (self.cols, self.rows, 1, self.cols as isize)
        } else {
            (self.rows, self.cols, self.cols as isize, 1)
        }
    }
}

/// `dst = a b` (dst row-major `[m, n]`, overwritten).
fn matmul<F: Real>(dst: &mut [F], a: Op<'_, F>, b: Op<'_, F>) {
    let (m, k, a_rs, a_cs) = a.view();
    let (k2, n, b_rs, b_cs) = b.view();
    assert_eq!(k, k2, "inner dimensions");
    assert_eq!(dst.len(), m * n, "output size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.iter_mut().for_each(|v| *v = F::default());
        return;
    }
    // SAFETY: the operands are live slices whose sizes were checked against the logical shapes and
    // strides above (every index (r, c) with r < rows, c < cols maps inside its slice), `dst` is an
    // exclusive borrow distinct from both operands, and with `read_dst = false` its contents are only
    // written.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            F::default(),
            F::ONE,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// One affine layer's parameters, `W` `[inp, out]` row-major (the leaf layout).
struct Layer<F> {
    w: Vec<F>,
    b: Vec<F>,
    inp: usize,
    out: usize,
}

fn to_f<F: Real>(v: &[f64]) -> Vec<F> {
    v.iter().map(|&x| F::of(x)).collect()
}

/// The layers from the training leaves; the kernel network's nine encoding blocks `[d, 64]` stack into
/// one `[9d, 64]` first-layer weight.
fn layers<F: Real>(arch: &Arch, leaves: &[Vec<f64>]) -> Vec<Layer<F>> {
    let (d, h) = (arch.d, arch.hidden);
    let l = |wi: usize, bi: usize, inp: usize, out: usize| Layer {
        w: to_f(&leaves[wi]),
        b: to_f(&leaves[bi]),
        inp,
        out,
    };
    match arch.network {
        Network::Kernel => {
            let w0: Vec<F> = leaves[..9].iter().flat_map(|v| to_f::<F>(v)).collect();
            vec![
                Layer {
                    w: w0,
                    b: to_f(&leaves[9]),
                    inp: 9 * d,
                    out: h,
                },
                l(10, 11, h, h),
                l(12, 13, h, d),
            ]
        }
        Network::Mlp => vec![
            l(0, 1, d, h),
            l(2, 3, h, h),
            l(4, 5, h, h),
            l(6, 7, h, d),
        ],
    }
}

/// The network input `[R, w]`: primal rows the encoding of `x`, tangent rows its JVP along `z`.
fn input<F: Fast>(arch: &Arch, x: &[f64], z: &[f64], n: usize, k: usize) -> (Vec<F>, usize) {
    let d = arch.d;
    match arch.network {
        Network::Mlp => {
            let mut v = Vec::with_capacity((k + 1) * n * d);
            v.extend(x.iter().map(|&a| F::of(a)));
            v.extend(z.iter().map(|&a| F::of(a)));
            (v, d)
        }
        Network::Kernel => {
            let w = 9 * d;
            let mut buf = vec![F::default(); (k + 1) * n * w];
            // per-sample derivative factors of the encoding: [1, f cos(fx), -f sin(fx), ...]
            let mut g = vec![F::default(); n * w];
            let (prim, tan) = buf.split_at_mut(n * w);
            prim.par_chunks_mut(CHUNK_ROWS * w)
                .zip(g.par_chunks_mut(CHUNK_ROWS * w))
                .enumerate()
                .for_each(|(ch, (pr, gr))| {
                    for (r, (row, grow)) in pr.chunks_exact_mut(w).zip(gr.chunks_exact_mut(w)).enumerate() {
                        let i = ch * CHUNK_ROWS + r;
                        for c in 0..d {
                            let xc = F::of(x[i * d + c]);
                            row[c] = xc;
                            grow[c] = F::ONE;
                            for (fi, &f64f) in ENCODING_FREQUENCIES.iter().enumerate() {
                                let f = F::of(f64f);
                                let fx = xc * f;
                                let (s, co) = (fx.sin_(), fx.cos_());
                                row[(1 + 2 * fi) * d + c] = s;
                                row[(2 + 2 * fi) * d + c] = co;
                                grow[(1 + 2 * fi) * d + c] = co * f;
                                grow[(2 + 2 * fi) * d + c] = s * F::of(-f64f);
                            }
                        }
                    }
                });
            tan.par_chunks_mut(CHUNK_ROWS * w)
                .enumerate()
                .for_each(|(ch, rows)| {
                    for (r, row) in rows.chunks_exact_mut(w).enumerate() {
                        let jr = ch * CHUNK_ROWS + r; // j * n + i
                        let i = jr % n;
                        let zr = &z[jr * d..(jr + 1) * d];
                        let grow = &g[i * w..(i + 1) * w];
                        for blk in 0..9 {
                            for c in 0..d {
                                row[blk * d + c] = grow[blk * d + c] * F::of(zr[c]);
                            }
                        }
                    }
                });
            (buf, w)
        }
    }
}

/// Saved state of one hidden layer for the reverse pass.
struct Hidden<F> {
    /// Pre-activations `[R, H]` (primal rows: `h`; tangent rows: `P_t`).
    pre: Vec<F>,
    /// `silu'(h)` and `silu''(h)`, `[n, H]`.
    sp: Vec<F>,
    spp: Vec<F>,
}

/// `(A, saved)` of a hidden layer applied to `inp` `[R, l.inp]`.
fn hidden_forward<F: Fast>(l: &Layer<F>, inp: &[F], n: usize, rows: usize) -> (Vec<F>, Hidden<F>) {
    let h = l.out;
    let mut pre = vec![F::default(); rows * h];
    matmul(&mut pre, mat(inp, rows, l.inp), mat(&l.w, l.inp, h));
    let mut act = vec![F::default(); rows * h];
    let mut sp = vec![F::default(); n * h];
    let mut spp = vec![F::default(); n * h];
    let (pre_p, pre_t) = pre.split_at_mut(n * h);
    let (act_p, act_t) = act.split_at_mut(n * h);
    let two = F::ONE + F::ONE;
    pre_p
        .par_chunks_mut(CHUNK_ROWS * h)
        .zip(act_p.par_chunks_mut(CHUNK_ROWS * h))
        .zip(sp.par_chunks_mut(CHUNK_ROWS * h))
        .zip(spp.par_chunks_mut(CHUNK_ROWS * h))
        .for_each(|(((p, a), s1), s2)| {
            for e in 0..p.len() {
                let hv = p[e] + l.b[e % h];
                p[e] = hv;
                let s = F::ONE / (F::ONE + (F::default() - hv).exp_());
                let oms = F::ONE - s;
                a[e] = hv * s;
                s1[e] = s * (F::ONE + hv * oms);
                s2[e] = s * oms * (two + hv * (oms - s));
            }
        });
    let sp_ref = &sp;
    pre_t
        .par_chunks(CHUNK_ROWS * h)
        .zip(act_t.par_chunks_mut(CHUNK_ROWS * h))
        .enumerate()
        .for_each(|(ch, (p, a))| {
            for (r, (pr, ar)) in p.chunks_exact(h).zip(a.chunks_exact_mut(h)).enumerate() {
                let i = (ch * CHUNK_ROWS + r) % n;
                let f = &sp_ref[i * h..(i + 1) * h];
                for c in 0..h {
                    ar[c] = f[c] * pr[c];
                }
            }
        });
    (act, Hidden { pre, sp, spp })
}

/// Turns `dA` `[R, H]` into `dP` in place (see the module docs).
fn hidden_backward<F: Fast>(da: &mut [F], s: &Hidden<F>, n: usize, h: usize) {
    let (dp, dt) = da.split_at_mut(n * h);
    let pre_t = &s.pre[n * h..];
    let k = dt.len() / (n * h);
    // primal rows first: they read the tangent rows' dA before those are overwritten
    {
        let dt_ref = &*dt;
        dp.par_chunks_mut(CHUNK_ROWS * h)
            .enumerate()
            .for_each(|(ch, rows)| {
                let mut acc = vec![F::default(); h];
                for (r, row) in rows.chunks_exact_mut(h).enumerate() {
                    let i = ch * CHUNK_ROWS + r;
                    acc.iter_mut().for_each(|v| *v = F::default());
                    for j in 0..k {
                        let o = (j * n + i) * h;
                        let (g, p) = (&dt_ref[o..o + h], &pre_t[o..o + h]);
                        for c in 0..h {
                            acc[c] += g[c] * p[c];
                        }
                    }
                    let (f1, f2) = (&s.sp[i * h..(i + 1) * h], &s.spp[i * h..(i + 1) * h]);
                    for c in 0..h {
                        row[c] = row[c] * f1[c] + acc[c] * f2[c];
                    }
                }
            });
    }
    dt.par_chunks_mut(CHUNK_ROWS * h)
        .enumerate()
        .for_each(|(ch, rows)| {
            for (r, row) in rows.chunks_exact_mut(h).enumerate() {
                let i = (ch * CHUNK_ROWS + r) % n;
                let f1 = &s.sp[i * h..(i + 1) * h];
                for c in 0..h {
                    row[c] *= f1[c];
                }
            }
        });
}

/// Column sums of the first `n` rows of `m` (`[.., w]`), sequential, in f64.
fn bias_grad<F: Real>(m: &[F], n: usize, w: usize) -> Vec<f64> {
    let mut acc = vec![F::default(); w];
    for row in m[..n * w].chunks_exact(w) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v;
        }
    }
    acc.into_iter().map(Real::f64).collect()
}

/// The output batch-norm in training mode with its tangent (f64, `o` `[R, d]`).
struct Bn {
    mean: Vec<f64>,
    var: Vec<f64>,
    inv: Vec<f64>,
    cen: Vec<f64>,
    /// `v`, `[n, d]`.
    y: Vec<f64>,
    /// batched: `m_j`, `q_j` `[k, d]`
    m: Vec<f64>,
    q: Vec<f64>,
    /// self-only: `f` `[n, d]`
    f: Vec<f64>,
    /// `J_v z`, `[k n, d]`.
    tv: Vec<f64>,
}

fn bn_forward(o: &[f64], n: usize, d: usize, k: usize, mode: BnTangent) -> Bn {
    let nf = n as f64;
    let (prim, to) = o.split_at(n * d);
    let mut mean = vec![0.0; d];
    for row in prim.chunks_exact(d) {
        for c in 0..d {
            mean[c] += row[c];
        }
    }
    mean.iter_mut().for_each(|v| *v /= nf);
    let cen: Vec<f64> = prim
        .iter()
        .enumerate()
        .map(|(e, v)| v - mean[e % d])
        .collect();
    let mut var = vec![0.0; d];
    for row in cen.chunks_exact(d) {
        for c in 0..d {
            var[c] += row[c] * row[c];
        }
    }
    var.iter_mut().for_each(|v| *v /= nf);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
    let y: Vec<f64> = cen.iter().enumerate().map(|(e, v)| v * inv[e % d]).collect();
    let mut tv = vec![0.0; k * n * d];
    let (mut m, mut q, mut f) = (vec![0.0; k * d], vec![0.0; k * d], Vec::new());
    match mode {
        BnTangent::Batched => {
            for j in 0..k {
                let tj = &to[j * n * d..(j + 1) * n * d];
                for i in 0..n {
                    for c in 0..d {
                        m[j * d + c] += tj[i * d + c];
                        q[j * d + c] += y[i * d + c] * tj[i * d + c];
                    }
                }
                for c in 0..d {
                    m[j * d + c] /= nf;
                    q[j * d + c] /= nf;
                }
                for i in 0..n {
                    for c in 0..d {
                        let e = i * d + c;
                        tv[j * n * d + e] = inv[c] * (tj[e] - m[j * d + c] - y[e] * q[j * d + c]);
                    }
                }
            }
        }
        BnTangent::SelfOnly => {
            f = y.iter().map(|v| 1.0 - (1.0 + v * v) / nf).collect();
            for (e, t) in tv.iter_mut().enumerate() {
                let ie = e % (n * d);
                *t = to[e] * f[ie] * inv[ie % d];
            }
        }
    }
    Bn {
        mean,
        var,
        inv,
        cen,
        y,
        m,
        q,
        f,
        tv,
    }
}

/// Loss and `d loss / d o` (`[R, d]`) through the batch-norm.
#[allow(clippy::too_many_arguments)]
fn bn_loss_backward(
    o: &[f64],
    bn: &Bn,
    n: usize,
    d: usize,
    k: usize,
    z: &[f64],
    score: &[f64],
    scale: f64,
    mode: BnTangent,
) -> (f64, Vec<f64>) {
    let nf = n as f64;
    let to = &o[n * d..];
    let nd = n * d;
    // residuals r_i = div_i + v_i . s_i
    let mut r = vec![0.0; n];
    for (i, ri) in r.iter_mut().enumerate() {
        let mut div = 0.0;
        for j in 0..k {
            for c in 0..d {
                let e = j * nd + i * d + c;
                div += z[e] * bn.tv[e];
            }
        }
        let mut vs = 0.0;
        for c in 0..d {
            vs += bn.y[i * d + c] * score[i * d + c];
        }
        *ri = div * scale + vs;
    }
    let loss = r.iter().map(|v| v * v).sum::<f64>() / nf;
    let dr: Vec<f64> = r.iter().map(|v| 2.0 * v / nf).collect();
    let g = |e: usize| dr[(e % nd) / d] * scale * z[e];
    let mut dy: Vec<f64> = (0..nd).map(|e| dr[e / d] * score[e]).collect();
    let mut dinv = vec![0.0; d];
    let mut d_o = vec![0.0; o.len()];
    let (dprim, dto) = d_o.split_at_mut(nd);
    match mode {
        BnTangent::Batched => {
            for j in 0..k {
                for c in 0..d {
                    let (mj, qj, inv) = (bn.m[j * d + c], bn.q[j * d + c], bn.inv[c]);
                    let (mut su, mut sv, mut sg) = (0.0, 0.0, 0.0);
                    for i in 0..n {
                        let (e, ie) = (j * nd + i * d + c, i * d + c);
                        let gv = g(e);
                        let u = gv * inv;
                        su += u;
                        sv += u * bn.y[ie];
                        sg += gv * (to[e] - mj - bn.y[ie] * qj);
                    }
                    dinv[c] += sg;
                    for i in 0..n {
                        let (e, ie) = (j * nd + i * d + c, i * d + c);
                        let u = g(e) * inv;
                        dto[e] = u - su / nf - bn.y[ie] * sv / nf;
                        dy[ie] += -u * qj - sv * to[e] / nf;
                    }
                }
            }
        }
        BnTangent::SelfOnly => {
            for e in 0..k * nd {
                let ie = e % nd;
                let c = ie % d;
                let gv = g(e);
                dto[e] = gv * bn.f[ie] * bn.inv[c];
                dy[ie] += -2.0 * bn.y[ie] * gv * to[e] * bn.inv[c] / nf;
                dinv[c] += gv * to[e] * bn.f[ie];
            }
        }
    }
    for ie in 0..nd {
        dinv[ie % d] += dy[ie] * bn.cen[ie];
    }
    let dvar: Vec<f64> = (0..d)
        .map(|c| dinv[c] * -0.5 * bn.inv[c].powi(3))
        .collect();
    let mut mdc = vec![0.0; d];
    for ie in 0..nd {
        let c = ie % d;
        dprim[ie] = dy[ie] * bn.inv[c] + dvar[c] * 2.0 * bn.cen[ie] / nf;
        mdc[c] += dprim[ie];
    }
    for ie in 0..nd {
        dprim[ie] -= mdc[ie % d] / nf;
    }
    (loss, d_o)
}

/// Forward state of the whole network.
struct Forward<F> {
    layers: Vec<Layer<F>>,
    /// Input of every layer, `[R, inp]`.
    inputs: Vec<Vec<F>>,
    hidden: Vec<Hidden<F>>,
    /// Pre-norm output `[R, d]` in f64.
    out: Vec<f64>,
}

fn forward<F: Fast>(arch: &Arch, leaves: &[Vec<f64>], x: &[f64], z: &[f64], k: usize) -> Forward<F> {
    let d = arch.d;
    let n = x.len() / d;
    assert_eq!(z.len(), k * n * d, "tangent buffer size");
    let rows = (k + 1) * n;
    let layers = layers::<F>(arch, leaves);
    let (inp, _) = input::<F>(arch, x, z, n, k);
    let mut inputs = vec![inp];
    let mut hidden = Vec::new();
    for l in &layers[..layers.len() - 1] {
        let (a, s) = hidden_forward(l, inputs.last().expect("an input"), n, rows);
        inputs.push(a);
        hidden.push(s);
    }
    let last = layers.last().expect("an output layer");
    let mut o = vec![F::default(); rows * d];
    matmul(
        &mut o,
        mat(inputs.last().expect("an input"), rows, last.inp),
        mat(&last.w, last.inp, d),
    );
    let mut out: Vec<f64> = o.into_iter().map(Real::f64).collect();
    for (e, v) in out[..n * d].iter_mut().enumerate() {
        *v += last.b[e % d].f64();
    }
    Forward {
        layers,
        inputs,
        hidden,
        out,
    }
}

/// `(v, J_v z)` of the training-mode network (batch-norm with batch statistics), for tests.
#[cfg(test)]
pub(crate) fn flow_values<F: Fast>(
    arch: &Arch,
    leaves: &[Vec<f64>],
    x: &[f64],
    z: &[f64],
    k: usize,
    mode: BnTangent,
) -> (Vec<f64>, Vec<f64>) {
    let fw = forward::<F>(arch, leaves, x, z, k);
    let bn = bn_forward(&fw.out, x.len() / arch.d, arch.d, k, mode);
    (bn.y, bn.tv)
}

/// The dynamics loss and its leaf gradients on one batch, computed in `F` (f64 for the batch-norm and
/// the loss); same contract as [`super::train::dynamics_loss_and_grads`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_and_grads<F: Fast>(
    arch: &Arch,
    leaves: &[Vec<f64>],
    x: &[f64],
    score: &[f64],
    z: &[f64],
    k: usize,
    scale: f64,
    mode: BnTangent,
) -> DynamicsStep {
    let d = arch.d;
    let n = x.len() / d;
    let rows = (k + 1) * n;
    let fw = forward::<F>(arch, leaves, x, z, k);
    let bn = bn_forward(&fw.out, n, d, k, mode);
    let (loss, d_o) = bn_loss_backward(&fw.out, &bn, n, d, k, z, score, scale, mode);
    let nl = fw.layers.len();
    // per layer (W grad [inp, out] in f64, b grad)
    let mut grads: Vec<(Vec<f64>, Vec<f64>)> = Vec::with_capacity(nl);
    let mut dcur: Vec<F> = d_o.iter().map(|&v| F::of(v)).collect();
    for li in (0..nl).rev() {
        let l = &fw.layers[li];
        if li < nl - 1 {
            hidden_backward(&mut dcur, &fw.hidden[li], n, l.out);
        }
        let mut dw = vec![F::default(); l.inp * l.out];
        matmul(
            &mut dw,
            mat(&fw.inputs[li], rows, l.inp).t(),
            mat(&dcur, rows, l.out),
        );
        let db = bias_grad(&dcur, n, l.out);
        grads.push((dw.into_iter().map(Real::f64).collect(), db));
        if li > 0 {
            let mut din = vec![F::default(); rows * l.inp];
            matmul(&mut din, mat(&dcur, rows, l.out), mat(&l.w, l.inp, l.out).t());
            dcur = din;
        }
    }
    grads.reverse();
    let mut out = Vec::new();
    for (li, (dw, db)) in grads.into_iter().enumerate() {
        if li == 0 && arch.network == Network::Kernel {
            out.extend(dw.chunks_exact(d * arch.hidden).map(<[f64]>::to_vec));
        } else {
            out.push(dw);
        }
        out.push(db);
    }
    DynamicsStep {
        loss,
        grads: out,
        batch_mean: bn.mean,
        batch_var: bn.var,
    }
}
