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
//!   the weight gradient (`In^T dOut`, reducing over all rows: primal and tangent contributions
//!   together) and one for the input gradient; the kernel network's positional encoding is one `[R, 9d]`
//!   input, not nine blocks;
//! - the batch is cut into chunks of [`SAMPLE_CHUNK`] samples, each with its `k` tangents (`11 * 64`
//!   rows for 10 probes): the whole forward and reverse pass of a chunk runs on one thread with
//!   sequential gemms on cache-resident buffers, chunks run in parallel (rayon), and only the output
//!   batch-norm (which couples the samples) is done on the whole batch between the two passes;
//! - SiLU, its tangent factor `silu'(h)` and the reverse-mode factor `silu''(h)` are computed once per
//!   primal element and applied to the tangent rows in tight, vectorisable loops;
//! - the output batch-norm, its tangent and the loss work on `[R, d]` (d <= 3) in f64; the chunks'
//!   weight gradients are summed in f64;
//! - buffers live in a [`Workspace`] reused across training steps (no per-step allocation, zeroing or
//!   page faults of the ~40 MB of activations).
//!
//! The method is exactly the one of [`super::tape`]: the same loss (`mean (div v + v.s)^2`, divergence
//! from exact forward-mode tangents, the same batch-norm tangent for [`BnTangent::Batched`] and
//! [`BnTangent::SelfOnly`]) and its exact gradient. Tests check the tangents and the leaf gradients
//! against f64 finite differences, and the values, loss, gradients and batch statistics against the dfdx
//! graph (f64 to ~1e-11, f32 at batch 2048 to f32 rounding).
//!
//! Reproducibility: the unit of parallel work is a fixed-size sample chunk, gemm runs single-threaded
//! inside it, and the batch-norm and the sum of the chunks' gradients run sequentially in a fixed order;
//! so a step is bit-identical run to run **and for any number of threads** (tested).
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
use super::train::{DynamicsBatch, DynamicsStep};
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

/// Samples per chunk: the unit of parallel work (fixed, so results never depend on the thread count).
pub(crate) const SAMPLE_CHUNK: usize = 64;

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
            Parallelism::None,
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
        Network::Mlp => vec![l(0, 1, d, h), l(2, 3, h, h), l(4, 5, h, h), l(6, 7, h, d)],
    }
}

/// `v.resize(len)`: reuses the buffer's memory; callers overwrite every element.
fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::default());
}

/// Writes the network input `[R, w]` into `buf`: primal rows the encoding of `x`, tangent rows its JVP
/// along `z` (`g` is scratch for the per-sample encoding derivative).
fn input<F: Fast>(arch: &Arch, x: &[f64], z: &[f64], k: usize, buf: &mut Vec<F>, g: &mut Vec<F>) {
    let d = arch.d;
    let n = x.len() / d;
    match arch.network {
        Network::Mlp => {
            buf.clear();
            buf.extend(x.iter().chain(z).map(|&a| F::of(a)));
        }
        Network::Kernel => {
            let w = 9 * d;
            fit(buf, (k + 1) * n * w);
            // per-sample derivative factors of the encoding: [1, f cos(fx), -f sin(fx), ...]
            fit(g, n * w);
            let (prim, tan) = buf.split_at_mut(n * w);
            for (i, (row, grow)) in prim
                .chunks_exact_mut(w)
                .zip(g.chunks_exact_mut(w))
                .enumerate()
            {
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
            for (jr, (row, zr)) in tan.chunks_exact_mut(w).zip(z.chunks_exact(d)).enumerate() {
                let i = jr % n; // row jr = j n + i
                let grow = &g[i * w..(i + 1) * w];
                for (rb, gb) in row.chunks_exact_mut(d).zip(grow.chunks_exact(d)) {
                    for c in 0..d {
                        rb[c] = gb[c] * F::of(zr[c]);
                    }
                }
            }
        }
    }
}

/// Saved state of one hidden layer for the reverse pass.
#[derive(Default)]
struct Hidden<F> {
    /// Pre-activations `[R, H]` (primal rows: `h`; tangent rows: `P_t`).
    pre: Vec<F>,
    /// `silu'(h)` and `silu''(h)`, `[n, H]`.
    sp: Vec<F>,
    spp: Vec<F>,
}

/// A hidden layer applied to `inp` `[R, l.inp]`: its output into `act`, its saved state into `s`.
fn hidden_forward<F: Fast>(
    l: &Layer<F>,
    inp: &[F],
    n: usize,
    rows: usize,
    act: &mut Vec<F>,
    s: &mut Hidden<F>,
) {
    let h = l.out;
    fit(&mut s.pre, rows * h);
    fit(act, rows * h);
    fit(&mut s.sp, n * h);
    fit(&mut s.spp, n * h);
    matmul(&mut s.pre, mat(inp, rows, l.inp), mat(&l.w, l.inp, h));
    let (pre_p, pre_t) = s.pre.split_at_mut(n * h);
    let (act_p, act_t) = act.split_at_mut(n * h);
    let two = F::ONE + F::ONE;
    for (((p, a), s1), s2) in pre_p
        .chunks_exact_mut(h)
        .zip(act_p.chunks_exact_mut(h))
        .zip(s.sp.chunks_exact_mut(h))
        .zip(s.spp.chunks_exact_mut(h))
    {
        for c in 0..h {
            let hv = p[c] + l.b[c];
            p[c] = hv;
            let sg = F::ONE / (F::ONE + (F::default() - hv).exp_());
            let oms = F::ONE - sg;
            a[c] = hv * sg;
            s1[c] = sg * (F::ONE + hv * oms);
            s2[c] = sg * oms * (two + hv * (oms - sg));
        }
    }
    for (r, (pr, ar)) in pre_t
        .chunks_exact(h)
        .zip(act_t.chunks_exact_mut(h))
        .enumerate()
    {
        let i = r % n;
        let f = &s.sp[i * h..(i + 1) * h];
        for c in 0..h {
            ar[c] = f[c] * pr[c];
        }
    }
}

/// Turns `dA` `[R, H]` into `dP` in place (see the module docs).
fn hidden_backward<F: Fast>(da: &mut [F], s: &Hidden<F>, n: usize, h: usize) {
    let (dp, dt) = da.split_at_mut(n * h);
    let pre_t = &s.pre[n * h..];
    let k = dt.len() / (n * h);
    // primal rows first: they read the tangent rows' dA before those are overwritten
    let mut acc = vec![F::default(); h];
    for (i, row) in dp.chunks_exact_mut(h).enumerate() {
        acc.iter_mut().for_each(|v| *v = F::default());
        for j in 0..k {
            let o = (j * n + i) * h;
            let (g, p) = (&dt[o..o + h], &pre_t[o..o + h]);
            for c in 0..h {
                acc[c] += g[c] * p[c];
            }
        }
        let (f1, f2) = (&s.sp[i * h..(i + 1) * h], &s.spp[i * h..(i + 1) * h]);
        for c in 0..h {
            row[c] = row[c] * f1[c] + acc[c] * f2[c];
        }
    }
    for (r, row) in dt.chunks_exact_mut(h).enumerate() {
        let i = r % n;
        let f1 = &s.sp[i * h..(i + 1) * h];
        for c in 0..h {
            row[c] *= f1[c];
        }
    }
}

/// Column sums of the first `n` rows of `m` (`[.., w]`) into `acc`, sequential.
fn bias_grad<F: Real>(m: &[F], n: usize, w: usize, acc: &mut Vec<F>) {
    acc.clear();
    acc.resize(w, F::default());
    for row in m[..n * w].chunks_exact(w) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v;
        }
    }
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
    let y: Vec<f64> = cen
        .iter()
        .enumerate()
        .map(|(e, v)| v * inv[e % d])
        .collect();
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
                for (c, dinv_c) in dinv.iter_mut().enumerate() {
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
                    *dinv_c += sg;
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
    let dvar: Vec<f64> = (0..d).map(|c| dinv[c] * -0.5 * bn.inv[c].powi(3)).collect();
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

/// Forward state of the network on one chunk of samples (rows in the chunk's own `[(k+1) n_c]` order),
/// and the chunk's scratch for the reverse pass; kept in a [`Workspace`] so that steps reuse memory.
#[derive(Default)]
struct Chunk<F> {
    /// Input of every layer, `[R_c, inp]`.
    inputs: Vec<Vec<F>>,
    hidden: Vec<Hidden<F>>,
    /// Pre-norm output `[R_c, d]`.
    out: Vec<F>,
    /// The chunk's points and tangents (gathered from the batch), encoding-derivative scratch.
    x: Vec<f64>,
    z: Vec<f64>,
    g: Vec<F>,
    /// Reverse pass: the running gradient and the previous layer's input gradient.
    dcur: Vec<F>,
    din: Vec<F>,
    /// Per layer `(dW, db)` of this chunk.
    grads: Vec<(Vec<F>, Vec<F>)>,
}

/// Reusable buffers of [`loss_and_grads_in`] (one set per sample chunk).
pub(crate) struct Workspace<F> {
    chunks: Vec<Chunk<F>>,
}

impl<F> Default for Workspace<F> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<F: Fast> Chunk<F> {
    fn forward(&mut self, arch: &Arch, layers: &[Layer<F>], k: usize) {
        let d = arch.d;
        let n = self.x.len() / d;
        let rows = (k + 1) * n;
        let nh = layers.len() - 1;
        self.inputs.resize_with(layers.len(), Vec::new);
        self.hidden.resize_with(nh, Hidden::default);
        input::<F>(arch, &self.x, &self.z, k, &mut self.inputs[0], &mut self.g);
        for (li, l) in layers[..nh].iter().enumerate() {
            let (done, rest) = self.inputs.split_at_mut(li + 1);
            hidden_forward(l, &done[li], n, rows, &mut rest[0], &mut self.hidden[li]);
        }
        let last = &layers[nh];
        fit(&mut self.out, rows * d);
        matmul(
            &mut self.out,
            mat(&self.inputs[nh], rows, last.inp),
            mat(&last.w, last.inp, d),
        );
        for row in self.out[..n * d].chunks_exact_mut(d) {
            row.iter_mut().zip(&last.b).for_each(|(v, b)| *v += *b);
        }
    }

    /// The reverse pass from `d loss / d o` already in `dcur` (`[R_c, d]`): per layer `(dW, db)`.
    fn backward(&mut self, layers: &[Layer<F>], k: usize) {
        let nl = layers.len();
        let n = self.x.len() / layers[nl - 1].out;
        let rows = (k + 1) * n;
        self.grads.resize_with(nl, Default::default);
        for li in (0..nl).rev() {
            let l = &layers[li];
            if li < nl - 1 {
                hidden_backward(&mut self.dcur, &self.hidden[li], n, l.out);
            }
            let (dw, db) = &mut self.grads[li];
            fit(dw, l.inp * l.out);
            matmul(
                dw,
                mat(&self.inputs[li], rows, l.inp).t(),
                mat(&self.dcur, rows, l.out),
            );
            bias_grad(&self.dcur, n, l.out, db);
            if li > 0 {
                fit(&mut self.din, rows * l.inp);
                matmul(
                    &mut self.din,
                    mat(&self.dcur, rows, l.out),
                    mat(&l.w, l.inp, l.out).t(),
                );
                std::mem::swap(&mut self.dcur, &mut self.din);
            }
        }
    }
}

/// Sample ranges of the chunks of a batch of `n`.
fn chunk_ranges(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(SAMPLE_CHUNK)
        .map(|i0| (i0, (i0 + SAMPLE_CHUNK).min(n)))
        .collect()
}

/// Rows `[i0, i1)` of every block of `n` rows (`blocks` of them, rows `w` wide) into `out`: a chunk's
/// slice of a primal-and-tangents buffer.
fn gather_rows<T: Copy, U>(
    v: &[T],
    n: usize,
    w: usize,
    blocks: usize,
    (i0, i1): (usize, usize),
    out: &mut Vec<U>,
    conv: impl Fn(T) -> U,
) {
    out.clear();
    for b in 0..blocks {
        out.extend(
            v[(b * n + i0) * w..(b * n + i1) * w]
                .iter()
                .map(|&a| conv(a)),
        );
    }
}

/// The forward pass on every chunk in parallel; returns the pre-norm output of the batch `[(k+1) n, d]`.
fn forward_chunks<F: Fast>(
    ws: &mut Workspace<F>,
    arch: &Arch,
    layers: &[Layer<F>],
    x: &[f64],
    z: &[f64],
    k: usize,
) -> Vec<f64> {
    let d = arch.d;
    let n = x.len() / d;
    assert_eq!(z.len(), k * n * d, "tangent buffer size");
    let ranges = chunk_ranges(n);
    ws.chunks.resize_with(ranges.len(), Chunk::default);
    ws.chunks.par_iter_mut().zip(&ranges).for_each(|(ch, &r)| {
        gather_rows(x, n, d, 1, r, &mut ch.x, |a| a);
        gather_rows(z, n, d, k, r, &mut ch.z, |a| a);
        ch.forward(arch, layers, k);
    });
    let mut out = vec![0.0; (k + 1) * n * d];
    for (&(i0, i1), ch) in ranges.iter().zip(&ws.chunks) {
        let nc = i1 - i0;
        for b in 0..=k {
            out[(b * n + i0) * d..(b * n + i1) * d]
                .iter_mut()
                .zip(&ch.out[b * nc * d..(b + 1) * nc * d])
                .for_each(|(o, v)| *o = v.f64());
        }
    }
    out
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
    let layers = layers::<F>(arch, leaves);
    let out = forward_chunks::<F>(&mut Workspace::default(), arch, &layers, x, z, k);
    let bn = bn_forward(&out, x.len() / arch.d, arch.d, k, mode);
    (bn.y, bn.tv)
}

/// [`loss_and_grads_in`] with fresh buffers.
#[cfg(test)]
pub(crate) fn loss_and_grads<F: Fast>(batch: &DynamicsBatch) -> DynamicsStep {
    loss_and_grads_in::<F>(&mut Workspace::default(), batch)
}

/// The dynamics loss and its leaf gradients on one batch, computed in `F` (f64 for the batch-norm, the
/// loss and the sum of the chunks' gradients) with the buffers of `ws`; same contract as
/// [`super::train::dynamics_loss_and_grads`].
pub(crate) fn loss_and_grads_in<F: Fast>(
    ws: &mut Workspace<F>,
    batch: &DynamicsBatch,
) -> DynamicsStep {
    let (arch, z, k, mode) = (batch.arch, batch.z, batch.k, batch.bn_tangent);
    let d = arch.d;
    let n = batch.x.len() / d;
    let layers = layers::<F>(arch, batch.leaves);
    let out = forward_chunks(ws, arch, &layers, batch.x, z, k);
    let bn = bn_forward(&out, n, d, k, mode);
    let (loss, d_o) = bn_loss_backward(&out, &bn, n, d, k, z, batch.score, batch.scale, mode);
    let ranges = chunk_ranges(n);
    ws.chunks.par_iter_mut().zip(&ranges).for_each(|(ch, &r)| {
        gather_rows(&d_o, n, d, k + 1, r, &mut ch.dcur, F::of);
        ch.backward(&layers, k);
    });
    // sum the chunks in order, in f64
    let mut grads: Vec<(Vec<f64>, Vec<f64>)> = layers
        .iter()
        .map(|l| (vec![0.0; l.inp * l.out], vec![0.0; l.out]))
        .collect();
    for ch in &ws.chunks {
        for ((gw, gb), (pw, pb)) in grads.iter_mut().zip(&ch.grads) {
            gw.iter_mut().zip(pw).for_each(|(a, b)| *a += b.f64());
            gb.iter_mut().zip(pb).for_each(|(a, b)| *a += b.f64());
        }
    }
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
