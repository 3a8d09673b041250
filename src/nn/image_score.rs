//! One type for "the score of an image density at the flow's noise level", whichever network a
//! `train_score` stage trained: the CPU local model ([`LocalScore`], ε-prediction at one σ) or the
//! paper's UNet ([`Unet`], v-prediction over the DDPM schedule, read at its timestep). Everything
//! downstream (rollouts, alignment, image flows) sees only ε̂, σ, the signal scale and the score.
//!
//! The UNet runs on the pipeline's device: the CPU, or CUDA when eqflow is built with `--features cuda`.

use std::path::Path;

use anyhow::{bail, Result};
use dfdx::prelude::Cpu;

use super::conv::LocalScore;
use super::denoise::{eps_to_clipped_score, eps_to_score};
use super::device::ComputeDevice;
use super::unet::Unet;

/// A UNet on one of the devices this build supports.
#[derive(Clone)]
pub enum UnetOn {
    /// On the CPU.
    Cpu(Unet<f32, Cpu>),
    /// On the first CUDA GPU.
    #[cfg(feature = "cuda")]
    Cuda(Unet<f32, dfdx::prelude::Cuda>),
}

/// The score model of an image `train_score` stage.
#[derive(Clone)]
pub enum ImageScore {
    /// The local dilated-convolution model (CPU, plain Rust).
    Local(LocalScore),
    /// The paper's UNet.
    Unet(Box<UnetOn>),
}

/// Fields per UNet forward at inference (bounded memory; the paper's GPU batch is 64).
const UNET_BATCH: usize = 16;

impl UnetOn {
    /// Puts `model`'s values on `device` (`cpu` or `cuda`).
    pub fn on_device(model: &Unet<f32, Cpu>, device: ComputeDevice) -> Result<Self> {
        match device {
            ComputeDevice::Cpu => Ok(Self::Cpu(model.clone())),
            #[cfg(feature = "cuda")]
            ComputeDevice::Cuda => {
                let dev = crate::nn::device::open_cuda(0)?;
                Ok(Self::Cuda(Unet::with_values(
                    model.arch.clone(),
                    &model.values(),
                    &dev,
                )?))
            }
            #[cfg(not(feature = "cuda"))]
            ComputeDevice::Cuda => {
                bail!("this eqflow was built without CUDA support (docs/gpu.md)")
            }
        }
    }

    /// Loads a UNet checkpoint onto `device`.
    pub fn load(path: &Path, device: ComputeDevice) -> Result<Self> {
        Self::on_device(&Unet::load(path, &Cpu::default())?, device)
    }

    fn arch(&self) -> &super::unet::UnetArch {
        match self {
            Self::Cpu(m) => &m.arch,
            #[cfg(feature = "cuda")]
            Self::Cuda(m) => &m.arch,
        }
    }
}

impl ImageScore {
    /// Loads the checkpoint of an image `train_score` stage (either model, told apart by its `"arch"`
    /// metadata); a UNet goes onto `device`.
    pub fn load(path: &Path, device: ComputeDevice) -> Result<Self> {
        let (arch, _): (serde_json::Value, _) = super::conv::checkpoint::load(path, "image score")?;
        if arch.get("model").and_then(|m| m.as_str()) == Some("unet") {
            Ok(Self::Unet(Box::new(UnetOn::load(path, device)?)))
        } else {
            Ok(Self::Local(LocalScore::load(path)?))
        }
    }

    /// `"local"` or `"unet"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Unet(_) => "unet",
        }
    }

    /// Image channels the model takes.
    pub fn channels(&self) -> usize {
        match self {
            Self::Local(m) => m.arch.channels,
            Self::Unet(m) => m.arch().in_channels,
        }
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        match self {
            Self::Local(m) => m.params.len(),
            Self::Unet(m) => match &**m {
                UnetOn::Cpu(m) => m.param_count(),
                #[cfg(feature = "cuda")]
                UnetOn::Cuda(m) => m.param_count(),
            },
        }
    }

    /// Checks that fields of `h x w` fit the model (the UNet halves them once per level).
    pub fn check_size(&self, h: usize, w: usize) -> Result<()> {
        if let Self::Unet(m) = self {
            let k = m.arch().size_multiple();
            if !h.is_multiple_of(k) || !w.is_multiple_of(k) {
                bail!(
                    "the UNet score ({} levels) needs fields whose sides are multiples of {k}; these are {h}x{w}",
                    m.arch().channels.len()
                );
            }
        }
        Ok(())
    }

    /// The noise level σ the score is read at.
    pub fn sigma(&self) -> f32 {
        match self {
            Self::Local(m) => m.sigma(),
            Self::Unet(m) => m.arch().sigma() as f32,
        }
    }

    /// The factor on clean data at that level (sqrt(ā)); Tweedie: x̂0 = (x + σ² s(x)) / signal_scale.
    pub fn signal_scale(&self) -> f32 {
        match self {
            Self::Local(m) => m.signal_scale(),
            Self::Unet(m) => m.arch().signal_scale() as f32,
        }
    }

    /// The highest noise level the score knows: a noise-conditional local score's `sigma_max`; `None` for
    /// a single-level local score and for the UNet, which the stages read at its one timestep (annealed
    /// starts need the local model's continuous levels).
    pub fn sigma_max(&self) -> Option<f32> {
        match self {
            Self::Local(m) => m.arch.sigma_max,
            Self::Unet(_) => None,
        }
    }

    /// The factor on clean data at noise level `sigma` (sqrt(1 - σ²) under VP scaling).
    pub fn signal_scale_at(&self, sigma: f32) -> f32 {
        match self {
            Self::Local(m) => m.arch.signal_scale_at(sigma),
            Self::Unet(_) if sigma == self.sigma() => self.signal_scale(),
            Self::Unet(_) => (1.0 - sigma * sigma).sqrt(),
        }
    }

    /// [`ImageScore::score_with`] at noise level `sigma`: any level in [σ, `sigma_max`] for a
    /// noise-conditional local score, else only the model's own level (panics otherwise; stages check
    /// [`ImageScore::sigma_max`] first).
    #[expect(
        clippy::too_many_arguments,
        reason = "batch shape, level and option of one call"
    )]
    pub fn score_at_with(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        sigma: f32,
        clip_x0: bool,
        out: &mut [f32],
    ) {
        match self {
            Self::Local(m) => m.score_at_with(x, n, h, w, sigma, clip_x0, out),
            Self::Unet(_) => {
                assert!(
                    sigma == self.sigma(),
                    "the UNet score is read at σ {} only, not {sigma}",
                    self.sigma()
                );
                self.score_with(x, n, h, w, clip_x0, out)
            }
        }
    }

    /// The same architecture with all weights redrawn from `seed` (the paper's random-weights baseline).
    pub fn randomized(&self, seed: u64) -> Self {
        match self {
            Self::Local(m) => Self::Local(m.randomized(seed)),
            Self::Unet(m) => Self::Unet(Box::new(match &**m {
                UnetOn::Cpu(m) => UnetOn::Cpu(m.randomized(seed)),
                #[cfg(feature = "cuda")]
                UnetOn::Cuda(m) => UnetOn::Cuda(m.randomized(seed)),
            })),
        }
    }

    /// The predicted noise ε̂ for a batch `[n, c, h, w]` (the UNet: ε̂ = sqrt(1 - ā) x + sqrt(ā) v̂).
    /// Panics if the size does not fit; stages call [`ImageScore::check_size`] first.
    pub fn predict_eps(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let done = |r: Result<()>| r.expect("field size checked when the score was loaded");
        match self {
            Self::Local(m) => m.predict_eps(x, n, h, w, out),
            Self::Unet(m) => match &**m {
                UnetOn::Cpu(m) => done(m.predict_eps(x, n, h, w, UNET_BATCH, out)),
                #[cfg(feature = "cuda")]
                UnetOn::Cuda(m) => done(m.predict_eps(x, n, h, w, UNET_BATCH, out)),
            },
        }
    }

    /// The score s(x) = -ε̂(x)/σ for a batch `[n, c, h, w]`, written to `out`.
    pub fn score(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        self.predict_eps(x, n, h, w, out);
        eps_to_score(self.sigma(), out);
    }

    /// The score like [`ImageScore::score`], optionally with the reference's clipping of the denoised
    /// estimate to [-1, 1] ([`eps_to_clipped_score`]; identical to `score` when nothing clips).
    pub fn score_with(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        clip_x0: bool,
        out: &mut [f32],
    ) {
        if !clip_x0 {
            return self.score(x, n, h, w, out);
        }
        self.predict_eps(x, n, h, w, out);
        eps_to_clipped_score(x, self.sigma(), self.signal_scale(), out);
    }
}
