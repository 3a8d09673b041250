//! A circular (periodic-padded), dilated 3x3 convolution: forward and backward in plain Rust through
//! im2col and `gemm`, generic over f32 (training, inference) and f64 (finite-difference gradient checks).
//!
//! dfdx 0.13 has no convolution on stable (engine.md), so this is our own. One call handles one sample
//! `[c_in, h, w]`; callers parallelise over the batch with rayon, so the matrix products here run single
//! threaded unless asked otherwise. The im2col matrix is rebuilt in the backward pass rather than stored:
//! copying is far cheaper than the products and keeps training memory to one activation per layer.

use gemm::Parallelism;

/// The scalar types the convolution runs on: f32 for work, f64 for gradient checks.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::iter::Sum
{
    /// Conversion from f64.
    fn from_f64(x: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Shape of one convolution: `c_in -> c_out` channels, 3x3 taps spaced by `dilation`, periodic padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Spacing of the 3x3 taps in pixels.
    pub dilation: usize,
}

impl ConvShape {
    /// Number of weights `[c_out, c_in, 3, 3]`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in * 9
    }
    /// Number of parameters (weights then bias).
    pub fn param_len(&self) -> usize {
        self.weight_len() + self.c_out
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, all given by (row stride, column stride).
#[expect(
    clippy::too_many_arguments,
    reason = "a flat numeric kernel signature, called from two places"
)]
pub(crate) fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_s: (usize, usize),
    lhs: &[T],
    lhs_s: (usize, usize),
    rhs: &[T],
    rhs_s: (usize, usize),
    accumulate: bool,
    par: Parallelism,
) {
    let last = |r: usize, c: usize, s: (usize, usize)| {
        if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * s.0 + (c - 1) * s.1 + 1
        }
    };
    assert!(
        dst.len() >= last(m, n, dst_s)
            && lhs.len() >= last(m, k, lhs_s)
            && rhs.len() >= last(k, n, rhs_s)
    );
    // SAFETY: the asserts above keep every strided access inside the slices; T is f32 or f64 (gemm panics
    // otherwise), and dst does not alias lhs/rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_s.1 as isize,
            dst_s.0 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_s.1 as isize,
            lhs_s.0 as isize,
            rhs.as_ptr(),
            rhs_s.1 as isize,
            rhs_s.0 as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            par,
        )
    }
}

/// Builds the im2col matrix `[c_in * 9, h * w]` of one sample: row `i*9 + a*3 + b` holds channel `i`
/// shifted by `((a-1) d, (b-1) d)` with wrap-around.
pub fn im2col<T: Real>(x: &[T], c_in: usize, h: usize, w: usize, d: usize, col: &mut [T]) {
    im2col_rows(x, c_in, h, w, d, 0, h, col);
}

/// [`im2col`] restricted to output rows `y0..y1`: `col` is `[c_in * 9, (y1 - y0) * w]`.
#[expect(clippy::too_many_arguments, reason = "a flat numeric kernel signature")]
fn im2col_rows<T: Real>(
    x: &[T],
    c_in: usize,
    h: usize,
    w: usize,
    d: usize,
    y0: usize,
    y1: usize,
    col: &mut [T],
) {
    let hw = h * w;
    let bl = (y1 - y0) * w;
    for i in 0..c_in {
        let xc = &x[i * hw..(i + 1) * hw];
        for a in 0..3 {
            for b in 0..3 {
                let r = &mut col[(i * 9 + a * 3 + b) * bl..][..bl];
                let dy = (a as isize - 1) * d as isize;
                let dx = ((b as isize - 1) * d as isize).rem_euclid(w as isize) as usize;
                for y in y0..y1 {
                    let sy = (y as isize + dy).rem_euclid(h as isize) as usize;
                    let src = &xc[sy * w..(sy + 1) * w];
                    let dst = &mut r[(y - y0) * w..(y - y0 + 1) * w];
                    dst[..w - dx].copy_from_slice(&src[dx..]);
                    dst[w - dx..].copy_from_slice(&src[..dx]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: scatter-adds `col` back into `dx` `[c_in, h, w]`.
pub fn col2im<T: Real>(col: &[T], c_in: usize, h: usize, w: usize, d: usize, dx: &mut [T]) {
    let hw = h * w;
    for i in 0..c_in {
        let xc = &mut dx[i * hw..(i + 1) * hw];
        for a in 0..3 {
            for b in 0..3 {
                let r = &col[(i * 9 + a * 3 + b) * hw..][..hw];
                let dy = (a as isize - 1) * d as isize;
                let sx = ((b as isize - 1) * d as isize).rem_euclid(w as isize) as usize;
                for y in 0..h {
                    let sy = (y as isize + dy).rem_euclid(h as isize) as usize;
                    let src = &r[y * w..(y + 1) * w];
                    let dst = &mut xc[sy * w..(sy + 1) * w];
                    dst[sx..]
                        .iter_mut()
                        .zip(&src[..w - sx])
                        .for_each(|(d, v)| *d += *v);
                    dst[..sx]
                        .iter_mut()
                        .zip(&src[w - sx..])
                        .for_each(|(d, v)| *d += *v);
                }
            }
        }
    }
}

/// Forward pass of one sample: `out [c_out, h*w] = W · im2col(x) + b`; `params` is weights then bias;
/// `col` is scratch of at least `c_in * 9 * h * w`.
#[expect(
    clippy::too_many_arguments,
    reason = "a flat numeric kernel signature, called from two places"
)]
pub fn conv_forward<T: Real>(
    s: &ConvShape,
    params: &[T],
    x: &[T],
    h: usize,
    w: usize,
    out: &mut [T],
    col: &mut [T],
    par: Parallelism,
) {
    let hw = h * w;
    let k = s.c_in * 9;
    let (wt, bias) = params[..s.param_len()].split_at(s.weight_len());
    for (o, row) in out[..s.c_out * hw].chunks_mut(hw).enumerate() {
        row.fill(bias[o]);
    }
    // Blocks of rows keep the im2col matrix in cache (about 1 MB); the product writes the block's columns
    // of every output channel (row stride h*w).
    let rows = (256 * 1024 / (k * w).max(1)).clamp(1, h);
    let mut y0 = 0;
    while y0 < h {
        let y1 = (y0 + rows).min(h);
        let bl = (y1 - y0) * w;
        let col = &mut col[..k * bl];
        im2col_rows(x, s.c_in, h, w, s.dilation, y0, y1, col);
        matmul(
            s.c_out,
            bl,
            k,
            &mut out[y0 * w..],
            (hw, 1),
            wt,
            (k, 1),
            col,
            (bl, 1),
            true,
            par,
        );
        y0 = y1;
    }
}

/// Backward pass of one sample: accumulates the parameter gradient into `dparams` (weights then bias)
/// and, when `dx` is given, **adds** the input gradient to it. `col` is scratch as in [`conv_forward`].
#[expect(
    clippy::too_many_arguments,
    reason = "a flat numeric kernel signature, called from two places"
)]
pub fn conv_backward<T: Real>(
    s: &ConvShape,
    params: &[T],
    x: &[T],
    h: usize,
    w: usize,
    dout: &[T],
    dparams: &mut [T],
    dx: Option<&mut [T]>,
    col: &mut [T],
    par: Parallelism,
) {
    let hw = h * w;
    let k = s.c_in * 9;
    let col = &mut col[..k * hw];
    im2col(x, s.c_in, h, w, s.dilation, col);
    let (dw, db) = dparams[..s.param_len()].split_at_mut(s.weight_len());
    // dW [c_out, k] += dout [c_out, hw] · col^T [hw, k]
    matmul(
        s.c_out,
        k,
        hw,
        dw,
        (k, 1),
        dout,
        (hw, 1),
        col,
        (1, hw),
        true,
        par,
    );
    for (o, row) in dout[..s.c_out * hw].chunks(hw).enumerate() {
        db[o] += row.iter().copied().sum::<T>();
    }
    if let Some(dx) = dx {
        // dcol [k, hw] = W^T [k, c_out] · dout [c_out, hw]; reuse col as dcol.
        let wt = &params[..s.weight_len()];
        matmul(
            k,
            hw,
            s.c_out,
            col,
            (hw, 1),
            wt,
            (1, k),
            dout,
            (hw, 1),
            false,
            par,
        );
        col2im(col, s.c_in, h, w, s.dilation, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::science::rng::stream;
    use rand::Rng as _;

    /// f64 central differences of L = Σ out·R against the analytic gradient, for weights, bias and input,
    /// with a dilation that wraps more than once around a small non-square grid.
    #[test]
    fn conv_gradient_matches_finite_differences() {
        for (dil, h, w) in [(1, 5, 6), (2, 5, 7), (4, 6, 5)] {
            let s = ConvShape {
                c_in: 2,
                c_out: 3,
                dilation: dil,
            };
            let mut rng = stream(1, "gradcheck");
            let mut rnd =
                |n: usize| -> Vec<f64> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
            let p = rnd(s.param_len());
            let x = rnd(2 * h * w);
            let r = rnd(3 * h * w);
            let mut col = vec![0.0; 18 * h * w];
            let loss = |p: &[f64], x: &[f64], col: &mut Vec<f64>| {
                let mut out = vec![0.0; 3 * h * w];
                conv_forward(&s, p, x, h, w, &mut out, col, Parallelism::None);
                out.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut dp = vec![0.0; p.len()];
            let mut dx = vec![0.0; x.len()];
            conv_backward(
                &s,
                &p,
                &x,
                h,
                w,
                &r,
                &mut dp,
                Some(&mut dx),
                &mut col,
                Parallelism::None,
            );
            let e = 1e-6;
            for j in 0..p.len() {
                let (mut a, mut b) = (p.clone(), p.clone());
                a[j] += e;
                b[j] -= e;
                let fd = (loss(&a, &x, &mut col) - loss(&b, &x, &mut col)) / (2.0 * e);
                assert!((fd - dp[j]).abs() < 1e-7, "param {j}: fd {fd} vs {}", dp[j]);
            }
            for j in 0..x.len() {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[j] += e;
                b[j] -= e;
                let fd = (loss(&p, &a, &mut col) - loss(&p, &b, &mut col)) / (2.0 * e);
                assert!((fd - dx[j]).abs() < 1e-7, "input {j}: fd {fd} vs {}", dx[j]);
            }
        }
    }

    /// A direct-loop reference for the circular dilated correlation.
    #[test]
    fn forward_matches_direct_loops() {
        let (h, w, d) = (6, 7, 2);
        let s = ConvShape {
            c_in: 2,
            c_out: 2,
            dilation: d,
        };
        let mut rng = stream(2, "direct");
        let p: Vec<f64> = (0..s.param_len())
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let x: Vec<f64> = (0..2 * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut out = vec![0.0; 2 * h * w];
        let mut col = vec![0.0; 18 * h * w];
        conv_forward(&s, &p, &x, h, w, &mut out, &mut col, Parallelism::None);
        for o in 0..2 {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = p[s.weight_len() + o];
                    for i in 0..2 {
                        for a in 0..3 {
                            for b in 0..3 {
                                let sy = (y as isize + (a as isize - 1) * d as isize)
                                    .rem_euclid(h as isize)
                                    as usize;
                                let sx = (xx as isize + (b as isize - 1) * d as isize)
                                    .rem_euclid(w as isize)
                                    as usize;
                                acc +=
                                    p[((o * 2 + i) * 3 + a) * 3 + b] * x[i * h * w + sy * w + sx];
                            }
                        }
                    }
                    assert!((acc - out[o * h * w + y * w + xx]).abs() < 1e-12);
                }
            }
        }
    }
}
