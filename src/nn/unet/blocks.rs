//! The UNet's layers: each holds the indices of its parameters in the model's flat parameter list
//! (so the optimiser, the checkpoint and the random-weights baseline treat all parameters alike) and
//! knows how to apply itself with the ops of [`super::ops`].
//!
//! The structure is rebuilt from the architecture by [`Builder`], which also records each parameter's
//! name, shape and initialisation; a checkpoint therefore only needs the architecture and the values.

use dfdx::prelude::*;

use super::ops::{conv3x3, group_norm, linear, silu, Flat, Index, Mat};

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform ±1/sqrt(fan_in) (PyTorch's default for Conv2d and Linear weights and biases).
    Uniform {
        /// Inputs per output.
        fan_in: usize,
    },
    /// All ones (GroupNorm scale).
    Ones,
    /// All zeros (GroupNorm shift).
    Zeros,
}

/// One parameter: checkpoint name, logical shape, initialisation.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Dotted name (`down.0.res.1.conv1.weight`).
    pub name: String,
    /// Logical shape (conv weights `[9, C_in, C_out]`, linear `[C_in, C_out]`).
    pub shape: Vec<usize>,
    /// Initialisation.
    pub init: Init,
}

impl Slot {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Records parameters in order while the layer tree is built.
#[derive(Default)]
pub struct Builder {
    /// The parameters so far.
    pub slots: Vec<Slot>,
}

impl Builder {
    fn add(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        self.slots.push(Slot { name, shape, init });
        self.slots.len() - 1
    }

    /// A circular 3x3 convolution `c_in -> c_out`.
    pub fn conv(&mut self, name: &str, cin: usize, cout: usize) -> Conv {
        let init = Init::Uniform { fan_in: 9 * cin };
        Conv {
            w: self.add(format!("{name}.weight"), vec![9, cin, cout], init),
            b: self.add(format!("{name}.bias"), vec![cout], init),
        }
    }

    /// A linear layer `c_in -> c_out`.
    pub fn linear(&mut self, name: &str, cin: usize, cout: usize) -> Linear {
        let init = Init::Uniform { fan_in: cin };
        Linear {
            w: self.add(format!("{name}.weight"), vec![cin, cout], init),
            b: self.add(format!("{name}.bias"), vec![cout], init),
        }
    }

    /// A GroupNorm over `c` channels.
    pub fn norm(&mut self, name: &str, c: usize, groups: usize) -> Norm {
        Norm {
            g: self.add(format!("{name}.weight"), vec![c], Init::Ones),
            b: self.add(format!("{name}.bias"), vec![c], Init::Zeros),
            groups,
        }
    }

    /// A residual block `c_in -> c_out` taking a `temb`-dimensional time embedding.
    pub fn res(&mut self, name: &str, cin: usize, cout: usize, temb: usize, groups: usize) -> Res {
        Res {
            norm1: self.norm(&format!("{name}.norm1"), cin, groups),
            conv1: self.conv(&format!("{name}.conv1"), cin, cout),
            temb: self.linear(&format!("{name}.time_emb_proj"), temb, cout),
            norm2: self.norm(&format!("{name}.norm2"), cout, groups),
            conv2: self.conv(&format!("{name}.conv2"), cout, cout),
            skip: (cin != cout).then(|| self.linear(&format!("{name}.conv_shortcut"), cin, cout)),
        }
    }

    /// A multi-head self-attention block over `c` channels.
    pub fn attention(&mut self, name: &str, c: usize, heads: usize, groups: usize) -> Attention {
        Attention {
            norm: self.norm(&format!("{name}.group_norm"), c, groups),
            q: self.linear(&format!("{name}.to_q"), c, c),
            k: self.linear(&format!("{name}.to_k"), c, c),
            v: self.linear(&format!("{name}.to_v"), c, c),
            out: self.linear(&format!("{name}.to_out"), c, c),
            heads,
        }
    }
}

/// Circular 3x3 convolution parameters.
#[derive(Clone, Debug)]
pub struct Conv {
    w: usize,
    b: usize,
}

impl Conv {
    /// Applies the convolution with taps `idx` (stride 1 or 2).
    pub fn apply<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
        idx: &Index<D>,
    ) -> Mat<E, D, T> {
        conv3x3(x, idx, &p[self.w], &p[self.b])
    }
}

/// Linear layer parameters.
#[derive(Clone, Debug)]
pub struct Linear {
    w: usize,
    b: usize,
}

impl Linear {
    /// Applies the layer to rows `[N, C_in]` (at every position of an activation: a 1x1 convolution).
    pub fn apply<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
    ) -> Mat<E, D, T> {
        linear(x, &p[self.w], &p[self.b])
    }
}

/// GroupNorm parameters.
#[derive(Clone, Debug)]
pub struct Norm {
    g: usize,
    b: usize,
    groups: usize,
}

impl Norm {
    /// Applies the normalisation (statistics over each sample's `positions` rows) and its affine map.
    pub fn apply<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
        positions: usize,
    ) -> Mat<E, D, T> {
        group_norm(x, positions, self.groups, &p[self.g], &p[self.b])
    }
}

/// A residual block (diffusers' `ResnetBlock2D`): `x + conv2(SiLU(GN(conv1(SiLU(GN(x))) + W t)))`, the
/// skip a 1x1 convolution where the channel count changes.
#[derive(Clone, Debug)]
pub struct Res {
    norm1: Norm,
    conv1: Conv,
    temb: Linear,
    norm2: Norm,
    conv2: Conv,
    skip: Option<Linear>,
}

impl Res {
    /// Applies the block to `x` `[B*P, C_in]` (P = `positions`) with the activated time embedding `temb`
    /// `[B, T]` and the level's conv taps `idx`.
    pub fn apply<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
        temb: Mat<E, D, T>,
        positions: usize,
        idx: &Index<D>,
    ) -> Mat<E, D, T> {
        let h = self.norm1.apply(p, x.retaped::<T>(), positions);
        let h = self.conv1.apply(p, silu(h), idx);
        let (rows, c) = *h.shape();
        let shape = (rows / positions, positions, c);
        let t = self
            .temb
            .apply(p, temb)
            .broadcast_like::<_, Axis<1>>(&shape);
        let h = (h.reshape_like(&shape) + t).reshape_like(&(rows, c));
        let h = self.norm2.apply(p, h, positions);
        let h = self.conv2.apply(p, silu(h), idx);
        match &self.skip {
            Some(skip) => h + skip.apply(p, x),
            None => h + x,
        }
    }
}

/// Multi-head self-attention over positions (diffusers' `Attention` in the middle block): GroupNorm,
/// separate q, k, v projections (no slicing of a fused one: CPU `slice` backward is wrong), softmax of
/// `q k^T / sqrt(d)`, output projection, residual.
#[derive(Clone, Debug)]
pub struct Attention {
    norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// Applies the block to `x` `[B*P, C]` (P = `positions`).
    pub fn apply<E: Dtype, D: Device<E>, T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
        positions: usize,
    ) -> Mat<E, D, T> {
        let (rows, c) = *x.shape();
        let (b, n) = (rows / positions, positions);
        let (heads, d) = (self.heads, c / self.heads);
        let h = self.norm.apply(p, x.retaped::<T>(), positions);
        // [B*P, C] -> [B, P, heads, d] -> per (batch, head): [B, heads, P, d].
        let split = |t: Mat<E, D, T>| t.reshape_like(&(b, n, heads, d));
        let q = split(self.q.apply(p, h.retaped::<T>())).permute::<_, Axes4<0, 2, 1, 3>>();
        let k = split(self.k.apply(p, h.retaped::<T>())).permute::<_, Axes4<0, 2, 3, 1>>();
        let v = split(self.v.apply(p, h)).permute::<_, Axes4<0, 2, 1, 3>>();
        let scale = super::ops::cst::<E>(1.0 / (d as f64).sqrt());
        let scores = (q.matmul(k) * scale).softmax::<Axis<3>>();
        let o = scores
            .matmul(v)
            .permute::<_, Axes4<0, 2, 1, 3>>()
            .reshape_like(&(rows, c));
        self.out.apply(p, o) + x
    }
}
