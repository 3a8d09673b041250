//! The paper's score UNet (spec §7; the layout of diffusers' `UNet2DModel` with block channels
//! (16, 32, 64), 2 res-blocks per level on the way down and 3 on the way up with skip concatenation,
//! GroupNorm(8), SiLU, a sinusoidal time embedding 16 -> 64 -> 64 added in every res-block, 8-head
//! self-attention in the middle block, stride-2 convolutions down, nearest upsampling + 3x3 convolution
//! up, circular padding everywhere; 0.9 M parameters for 2 channels) as a v-prediction network
//! `v̂(x_t, t)`.
//!
//! [`Unet`] is generic over the float type and the device (Cpu; Cuda with `--features cuda`); the same
//! forward runs with or without a gradient tape. Parameters are one flat tensor each, in the order the
//! [`Builder`] records them, so the optimiser, checkpoints and random redraws handle them uniformly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use dfdx::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::blocks::{Attention, Builder, Conv, Init, Linear, Norm, Res, Slot};
use super::ops::{
    cst, from_act_layout, level_grids, silu, timestep_embedding, to_act_layout, Flat, LevelGrid,
    Mat,
};
use crate::science::rng::stream;

pub use crate::science::ddpm_schedule::{ddpm_abar, DDPM_STEPS};

/// The architecture: everything needed to rebuild the layer tree (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnetArch {
    /// Always `"unet"`: tells a UNet checkpoint from a local-score one.
    pub model: String,
    /// Image channels (2 for Gray-Scott, 3 for RGB canvases).
    pub in_channels: usize,
    /// Channels per resolution level (paper: 16, 32, 64); each level after the first halves H and W.
    pub channels: Vec<usize>,
    /// Res-blocks per level on the way down (paper 2; one more on the way up).
    pub res_blocks: usize,
    /// GroupNorm groups (paper 8).
    pub groups: usize,
    /// Attention heads in the middle block (paper 8).
    pub heads: usize,
    /// Sinusoidal embedding width (paper 16); the embedding MLP widens it 4x.
    pub time_dim: usize,
    /// The DDPM timestep the score is read at (paper 10).
    pub timestep: usize,
    /// Trained on timesteps `timestep..=timestep_max` only (an expert for the top levels of an annealed
    /// start); `None`: on all of them, as the paper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestep_max: Option<usize>,
}

impl UnetArch {
    /// The paper's UNet for `in_channels` channels.
    pub fn paper(in_channels: usize) -> Self {
        Self {
            model: "unet".into(),
            in_channels,
            channels: vec![16, 32, 64],
            res_blocks: 2,
            groups: 8,
            heads: 8,
            time_dim: 16,
            timestep: 10,
            timestep_max: None,
        }
    }

    /// The timesteps the model is trained on, and so can be read at.
    pub fn trained_timesteps(&self) -> std::ops::Range<usize> {
        match self.timestep_max {
            Some(top) => self.timestep..top + 1,
            None => 0..DDPM_STEPS,
        }
    }

    /// Checks that the numbers fit together, with a message naming the offending one.
    pub fn validate(&self) -> Result<()> {
        if self.model != "unet" {
            bail!("not a UNet architecture (model `{}`)", self.model);
        }
        if self.channels.is_empty() || self.res_blocks == 0 || self.in_channels == 0 {
            bail!("UNet needs at least one level, one res-block and one input channel");
        }
        for &c in &self.channels {
            if c % self.groups != 0 {
                bail!(
                    "UNet channels {c} not divisible by the {} GroupNorm groups",
                    self.groups
                );
            }
        }
        let mid = *self.channels.last().expect("non-empty");
        if self.heads == 0 || !mid.is_multiple_of(self.heads) {
            bail!(
                "UNet middle channels {mid} not divisible by {} heads",
                self.heads
            );
        }
        if self.time_dim < 2 || !self.time_dim.is_multiple_of(2) {
            bail!("UNet time embedding width must be even");
        }
        if self.timestep >= DDPM_STEPS {
            bail!("UNet timestep {} outside 0..{DDPM_STEPS}", self.timestep);
        }
        if let Some(top) = self.timestep_max {
            if top <= self.timestep || top >= DDPM_STEPS {
                bail!(
                    "UNet timestep_max {top} must lie above timestep {} and below {DDPM_STEPS}",
                    self.timestep
                );
            }
        }
        Ok(())
    }

    /// The factor 2^(levels-1) that H and W must be multiples of.
    pub fn size_multiple(&self) -> usize {
        1 << (self.channels.len() - 1)
    }

    /// σ of the score's noise level, sqrt(1 - ā_timestep).
    pub fn sigma(&self) -> f64 {
        (1.0 - ddpm_abar(self.timestep)).sqrt()
    }

    /// sqrt(ā_timestep): the factor on clean data at the score's noise level.
    pub fn signal_scale(&self) -> f64 {
        ddpm_abar(self.timestep).sqrt()
    }
}

/// One resolution level of the way down.
#[derive(Clone, Debug)]
struct DownLevel {
    res: Vec<Res>,
    down: Option<Conv>,
}

/// One resolution level of the way up.
#[derive(Clone, Debug)]
struct UpLevel {
    res: Vec<Res>,
    up: Option<Conv>,
}

/// The layer tree (parameter indices only).
#[derive(Clone, Debug)]
struct Net {
    time1: Linear,
    time2: Linear,
    conv_in: Conv,
    down: Vec<DownLevel>,
    mid1: Res,
    attn: Attention,
    mid2: Res,
    up: Vec<UpLevel>,
    norm_out: Norm,
    conv_out: Conv,
}

impl Net {
    fn build(a: &UnetArch) -> (Net, Vec<Slot>) {
        let mut b = Builder::default();
        let (g, temb) = (a.groups, 4 * a.time_dim);
        let time1 = b.linear("time_embedding.linear_1", a.time_dim, temb);
        let time2 = b.linear("time_embedding.linear_2", temb, temb);
        let c0 = a.channels[0];
        let conv_in = b.conv("conv_in", a.in_channels, c0);
        let levels = a.channels.len();
        // Channels of the skip stack, pushed on the way down and popped on the way up.
        let mut skips = vec![c0];
        let mut c = c0;
        let mut down = Vec::new();
        for (l, &cl) in a.channels.iter().enumerate() {
            let mut res = Vec::new();
            for r in 0..a.res_blocks {
                res.push(b.res(&format!("down.{l}.res.{r}"), c, cl, temb, g));
                c = cl;
                skips.push(c);
            }
            let down_conv = (l + 1 < levels).then(|| {
                skips.push(c);
                b.conv(&format!("down.{l}.downsample"), c, c)
            });
            down.push(DownLevel {
                res,
                down: down_conv,
            });
        }
        let mid1 = b.res("mid.res.0", c, c, temb, g);
        let attn = b.attention("mid.attention", c, a.heads, g);
        let mid2 = b.res("mid.res.1", c, c, temb, g);
        let mut up = Vec::new();
        for (u, l) in (0..levels).rev().enumerate() {
            let cl = a.channels[l];
            let mut res = Vec::new();
            for r in 0..=a.res_blocks {
                let skip = skips.pop().expect("one skip per up res-block");
                res.push(b.res(&format!("up.{u}.res.{r}"), c + skip, cl, temb, g));
                c = cl;
            }
            let up_conv = (l > 0).then(|| b.conv(&format!("up.{u}.upsample"), c, c));
            up.push(UpLevel { res, up: up_conv });
        }
        let norm_out = b.norm("conv_norm_out", c, g);
        let conv_out = b.conv("conv_out", c, a.in_channels);
        (
            Net {
                time1,
                time2,
                conv_in,
                down,
                mid1,
                attn,
                mid2,
                up,
                norm_out,
                conv_out,
            },
            b.slots,
        )
    }
}

/// Host-side initial values of every slot, PyTorch-style, from `seed`.
fn init_values(slots: &[Slot], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = stream(seed, "unet/init");
    slots
        .iter()
        .map(|s| match s.init {
            Init::Uniform { fan_in } => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..s.numel())
                    .map(|_| rng.gen_range(-bound..bound))
                    .collect()
            }
            Init::Ones => vec![1.0; s.numel()],
            Init::Zeros => vec![0.0; s.numel()],
        })
        .collect()
}

/// The index grids built so far, by field size.
type GridCache<D> = Mutex<HashMap<(usize, usize, usize), Arc<Vec<LevelGrid<D>>>>>;

/// The UNet on device `D` in float type `E`.
pub struct Unet<E: Dtype, D: Device<E>> {
    /// The architecture.
    pub arch: UnetArch,
    net: Net,
    /// Parameter names, shapes and initialisations, in order.
    pub slots: Vec<Slot>,
    /// Parameter values (flat), in the order of `slots`.
    pub params: Vec<Flat<E, D>>,
    dev: D,
    grids: GridCache<D>,
}

impl<E: Dtype, D: Device<E>> Clone for Unet<E, D> {
    fn clone(&self) -> Self {
        Self {
            arch: self.arch.clone(),
            net: self.net.clone(),
            slots: self.slots.clone(),
            params: self.params.clone(),
            dev: self.dev.clone(),
            grids: Mutex::new(HashMap::new()),
        }
    }
}

impl<E: Dtype, D: Device<E>> Unet<E, D> {
    /// A freshly initialised UNet (uniform ±1/sqrt(fan_in) weights and biases, GroupNorm 1 and 0),
    /// drawn on the host from `seed` so every device starts from the same values.
    pub fn init(arch: UnetArch, dev: &D, seed: u64) -> Result<Self> {
        arch.validate()?;
        let (net, slots) = Net::build(&arch);
        let values = init_values(&slots, seed);
        Ok(Self::from_values(arch, net, slots, &values, dev))
    }

    fn from_values(
        arch: UnetArch,
        net: Net,
        slots: Vec<Slot>,
        values: &[Vec<f64>],
        dev: &D,
    ) -> Self {
        let params = values
            .iter()
            .map(|v| dev.tensor_from_vec(v.iter().map(|&x| cst::<E>(x)).collect(), (v.len(),)))
            .collect();
        Self {
            arch,
            net,
            slots,
            params,
            dev: dev.clone(),
            grids: Mutex::new(HashMap::new()),
        }
    }

    /// Builds the model from host values (one `Vec` per slot, checked against the slot sizes).
    pub fn with_values(arch: UnetArch, values: &[Vec<f64>], dev: &D) -> Result<Self> {
        arch.validate()?;
        let (net, slots) = Net::build(&arch);
        if values.len() != slots.len() {
            bail!(
                "{} parameter tensors for a UNet with {}",
                values.len(),
                slots.len()
            );
        }
        for (v, s) in values.iter().zip(&slots) {
            if v.len() != s.numel() {
                bail!(
                    "parameter {} has {} values, expected {:?}",
                    s.name,
                    v.len(),
                    s.shape
                );
            }
        }
        Ok(Self::from_values(arch, net, slots, values, dev))
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.slots.iter().map(Slot::numel).sum()
    }

    /// The parameter values on the host, one `Vec` per slot.
    pub fn values(&self) -> Vec<Vec<f64>> {
        self.params
            .iter()
            .map(|t| {
                t.as_vec()
                    .into_iter()
                    .map(|x| x.to_f64().expect("finite float"))
                    .collect()
            })
            .collect()
    }

    /// The same architecture with every weight redrawn from `seed` (the paper's random-weights baseline).
    pub fn randomized(&self, seed: u64) -> Self {
        let values = init_values(&self.slots, seed);
        Self::from_values(
            self.arch.clone(),
            self.net.clone(),
            self.slots.clone(),
            &values,
            &self.dev,
        )
    }

    /// The index grids for batches of `b` fields of `h x w` (built once per size).
    pub fn grids(&self, b: usize, h: usize, w: usize) -> Result<Arc<Vec<LevelGrid<D>>>> {
        let m = self.arch.size_multiple();
        if !h.is_multiple_of(m) || !w.is_multiple_of(m) || h == 0 || w == 0 {
            bail!(
                "the UNet with {} levels needs fields whose sides are multiples of {m}, got {h}x{w}",
                self.arch.channels.len()
            );
        }
        let mut cache = self.grids.lock().expect("grid cache lock");
        Ok(cache
            .entry((b, h, w))
            .or_insert_with(|| {
                Arc::new(level_grids::<E, D>(
                    &self.dev,
                    b,
                    h,
                    w,
                    self.arch.channels.len(),
                ))
            })
            .clone())
    }

    /// The time-embedding input `[B, time_dim]` for timesteps `ts`.
    pub fn time_input(&self, ts: &[usize]) -> Tensor<(usize, usize), E, D> {
        let v = timestep_embedding(ts, self.arch.time_dim);
        self.dev.tensor_from_vec(
            v.into_iter().map(cst::<E>).collect(),
            (ts.len(), self.arch.time_dim),
        )
    }

    /// v̂(x, t) for `x` `[B*H*W, C]` (taped or not), time input from [`Unet::time_input`], grids from
    /// [`Unet::grids`] for the batch and field size; returns `[B*H*W, C]`.
    pub fn forward<T: Tape<E, D>>(
        &self,
        x: Mat<E, D, T>,
        time: Tensor<(usize, usize), E, D>,
        grids: &[LevelGrid<D>],
    ) -> Mat<E, D, T> {
        self.forward_with(&self.params, x, time, grids)
    }

    /// [`Unet::forward`] with the parameter values `p` in place of the model's own.
    pub fn forward_with<T: Tape<E, D>>(
        &self,
        p: &[Flat<E, D>],
        x: Mat<E, D, T>,
        time: Tensor<(usize, usize), E, D>,
        grids: &[LevelGrid<D>],
    ) -> Mat<E, D, T> {
        let n = &self.net;
        // The time MLP's ops ride on their own tape, merged into the output's at the end, so each
        // res-block can take an (untaped-history) copy of the same activated embedding.
        let temb = n
            .time2
            .apply(p, silu(n.time1.apply(p, time.retaped::<T>())));
        let (temb, temb_tape) = silu(temb).split_tape();
        let t = || temb.retaped::<T>();

        let mut h = n.conv_in.apply(p, x, &grids[0].same);
        let mut skips = vec![h.retaped::<T>()];
        for (l, level) in n.down.iter().enumerate() {
            for r in &level.res {
                h = r.apply(p, h, t(), grids[l].p, &grids[l].same);
                skips.push(h.retaped::<T>());
            }
            if let Some(d) = &level.down {
                h = d.apply(p, h, grids[l].down.as_ref().expect("grid below"));
                skips.push(h.retaped::<T>());
            }
        }
        let last = grids.len() - 1;
        let pl = grids[last].p;
        h = n.mid1.apply(p, h, t(), pl, &grids[last].same);
        h = n.attn.apply(p, h, pl);
        h = n.mid2.apply(p, h, t(), pl, &grids[last].same);
        for (u, level) in n.up.iter().enumerate() {
            let l = last - u;
            for r in &level.res {
                let skip = skips.pop().expect("one skip per up res-block");
                h = r.apply(
                    p,
                    (h, skip).concat_along(Axis::<1>),
                    t(),
                    grids[l].p,
                    &grids[l].same,
                );
            }
            if let Some(c) = &level.up {
                let g = &grids[l - 1];
                h = super::ops::upsample(h, g.up.as_ref().expect("grid above"));
                h = c.apply(p, h, &g.same);
            }
        }
        let h = silu(n.norm_out.apply(p, h, grids[0].p));
        let out = n.conv_out.apply(p, h, &grids[0].same);
        let (out, tape) = out.split_tape();
        out.put_tape(tape.merge(temb_tape))
    }

    /// v̂ for host fields `x` `[n, c, h, w]` (n from its length) at timestep `t`, in batches of `batch`,
    /// written to `out` (same layout). No tape.
    pub fn predict_v(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        t: usize,
        batch: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let c = self.arch.in_channels;
        let len = c * h * w;
        let n = x.len() / len;
        assert_eq!(x.len(), n * len, "x must be [n, c, h, w]");
        assert_eq!(out.len(), n * len, "out must be [n, c, h, w]");
        self.grids(1, h, w)?;
        for (xs, os) in x
            .chunks(batch.max(1) * len)
            .zip(out.chunks_mut(batch.max(1) * len))
        {
            let b = xs.len() / len;
            let host: Vec<E> = to_act_layout(xs, b, c, h * w)
                .into_iter()
                .map(|v| cst::<E>(v as f64))
                .collect();
            let xt = self.dev.tensor_from_vec(host, (b * h * w, c));
            let grids = self.grids(b, h, w)?;
            let y = self
                .forward(xt, self.time_input(&vec![t; b]), &grids)
                .as_vec();
            let y: Vec<f32> = y.into_iter().map(|v| v.to_f32().expect("float")).collect();
            from_act_layout(&y, b, c, h * w, os);
        }
        Ok(())
    }

    /// ε̂ at the score's timestep: ε̂ = sqrt(1 - ā) x + sqrt(ā) v̂ (v-prediction), for `[n, c, h, w]`
    /// fields, `batch` per forward.
    pub fn predict_eps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        batch: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.predict_eps_at(x, n, h, w, self.arch.timestep, batch, out)
    }

    /// [`Unet::predict_eps`] at DDPM timestep `t` instead of the score's own: the UNet is trained on every
    /// timestep, so it serves annealed starts from noise at the levels of the schedule.
    #[expect(
        clippy::too_many_arguments,
        reason = "batch shape, timestep and chunking of one call"
    )]
    pub fn predict_eps_at(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        t: usize,
        batch: usize,
        out: &mut [f32],
    ) -> Result<()> {
        assert_eq!(
            x.len(),
            n * self.arch.in_channels * h * w,
            "x must be [n, c, h, w]"
        );
        if !self.arch.trained_timesteps().contains(&t) {
            bail!(
                "UNet timestep {t} outside the timesteps it was trained on ({:?})",
                self.arch.trained_timesteps()
            );
        }
        self.predict_v(x, h, w, t, batch, out)?;
        let abar = ddpm_abar(t);
        let (sig, a) = ((1.0 - abar).sqrt() as f32, abar.sqrt() as f32);
        out.iter_mut()
            .zip(x)
            .for_each(|(o, &x)| *o = sig * x + a * *o);
        Ok(())
    }

    /// Saves to safetensors: one f32 tensor per parameter under its dotted name, in our layout (conv
    /// weights `[9, C_in, C_out]` with tap `k = 3 (dy + 1) + (dx + 1)`, linear `[C_in, C_out]`), and the
    /// [`UnetArch`] as JSON under the only metadata key `"arch"` (deterministic bytes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<_> = self
            .slots
            .iter()
            .zip(self.values())
            .map(|(s, v)| {
                (
                    s.name.clone(),
                    s.shape.clone(),
                    v.into_iter().map(|x| x as f32).collect(),
                )
            })
            .collect();
        crate::nn::conv::checkpoint::save(path, &tensors, &self.arch, "UNet score")
    }

    /// Loads a checkpoint written by [`Unet::save`] onto `dev`, checking names, dtypes and shapes
    /// (read through the safetensors crate, never dfdx's loader, which panics on a dtype mismatch).
    pub fn load(path: &Path, dev: &D) -> Result<Self> {
        let (arch, file): (UnetArch, _) = crate::nn::conv::checkpoint::load(path, "UNet score")?;
        arch.validate()
            .with_context(|| format!("{}: invalid UNet architecture", path.display()))?;
        let (_, slots) = Net::build(&arch);
        let values = slots
            .iter()
            .map(|s| {
                Ok(file
                    .tensor(&s.name, &s.shape)?
                    .into_iter()
                    .map(f64::from)
                    .collect())
            })
            .collect::<Result<Vec<Vec<f64>>>>()?;
        Self::with_values(arch, &values, dev)
    }
}
