//! One type for "the score of an image density at the flow's noise level", whichever network a
//! `train_score` stage trained: the CPU local model ([`LocalScore`], ε-prediction at one σ) or the
//! paper's UNet ([`Unet`], v-prediction over the DDPM schedule, read at its timestep, or at any other
//! timestep of the schedule for an annealed start from noise). Everything downstream (rollouts, alignment,
//! image flows) sees only ε̂, σ, the signal scale and the score.
//!
//! The UNet runs on the pipeline's device: the CPU, or CUDA when eqflow is built with `--features cuda`.

use std::path::Path;

use anyhow::{bail, Result};
use dfdx::prelude::Cpu;

use super::conv::LocalScore;
use super::denoise::{eps_to_clipped_score, eps_to_score};
use super::device::ComputeDevice;
use super::unet::Unet;
use crate::science::ddpm_schedule::{ddpm_sigma, DDPM_STEPS};

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

/// The DDPM timestep whose σ is `sigma` (to f32 rounding), if any.
fn unet_timestep(sigma: f32) -> Option<usize> {
    (0..DDPM_STEPS).find(|&t| (ddpm_sigma(t) - sigma).abs() <= 1e-5)
}

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

    /// ε̂ at DDPM timestep `t` on whichever device the model is ([`Unet::predict_eps_at`]).
    fn predict_eps_at(&self, x: &[f32], n: usize, h: usize, w: usize, t: usize, out: &mut [f32]) {
        let done = |r: Result<()>| r.expect("field size checked when the score was loaded");
        match self {
            Self::Cpu(m) => done(m.predict_eps_at(x, n, h, w, t, UNET_BATCH, out)),
            #[cfg(feature = "cuda")]
            Self::Cuda(m) => done(m.predict_eps_at(x, n, h, w, t, UNET_BATCH, out)),
        }
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

    /// The highest noise level the score knows: a noise-conditional local score's `sigma_max`, the UNet's
    /// last trained timestep (the paper's: all of them); `None` for a single-level local score.
    pub fn sigma_max(&self) -> Option<f32> {
        match self {
            Self::Local(m) => m.arch.sigma_max,
            Self::Unet(m) => Some(ddpm_sigma(m.arch().trained_timesteps().end - 1)),
        }
    }

    /// Whether the score can be read at noise level `sigma`: a noise-conditional local score anywhere in
    /// [σ, `sigma_max`], a single-level one at σ only, the UNet at the levels of the DDPM timesteps it was
    /// trained on (its time embedding saw no others).
    pub fn reads_level(&self, sigma: f32) -> bool {
        match self {
            Self::Local(m) => {
                let top = m.arch.sigma_max.unwrap_or(m.sigma());
                sigma >= m.sigma() - 1e-6 && sigma <= top + 1e-6
            }
            Self::Unet(m) => {
                unet_timestep(sigma).is_some_and(|t| m.arch().trained_timesteps().contains(&t))
            }
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

    /// [`ImageScore::score_with`] at noise level `sigma`, one the model reads (panics otherwise; stages
    /// check [`ImageScore::reads_level`] first).
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
            Self::Unet(_) if sigma == self.sigma() => self.score_with(x, n, h, w, clip_x0, out),
            Self::Unet(m) => {
                let t = unet_timestep(sigma).unwrap_or_else(|| {
                    panic!("the UNet is read at DDPM timesteps only, and σ {sigma} is none")
                });
                m.predict_eps_at(x, n, h, w, t, out);
                if clip_x0 {
                    eps_to_clipped_score(x, sigma, self.signal_scale_at(sigma), out);
                } else {
                    eps_to_score(sigma, out);
                }
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
        match self {
            Self::Local(m) => m.predict_eps(x, n, h, w, out),
            Self::Unet(m) => m.predict_eps_at(x, n, h, w, m.arch().timestep, out),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_unet() -> Unet<f32, Cpu> {
        let arch = crate::nn::unet::tests::tiny_arch();
        Unet::<f32, Cpu>::init(arch, &Cpu::default(), 7).expect("valid arch")
    }

    /// The UNet serves every DDPM timestep: at σ_t its score is -ε̂_t/σ_t with ε̂_t = σ_t x + sqrt(ā_t) v̂(x, t)
    /// (v̂ read straight from the network), at its own level exactly the old single-level score, and it
    /// refuses levels between timesteps.
    #[test]
    fn unet_reads_the_levels_of_its_timesteps() {
        let net = tiny_unet();
        let s = ImageScore::Unet(Box::new(UnetOn::Cpu(net.clone())));
        let (h, w) = (4, 4);
        let x: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 37 % 11) as f32 / 5.5) - 1.0)
            .collect();
        for t in [10, 37, 99] {
            let sigma = ddpm_sigma(t);
            assert!(s.reads_level(sigma), "timestep {t}");
            let mut v = vec![0.0f32; x.len()];
            net.predict_v(&x, h, w, t, 4, &mut v).expect("forward");
            let abar = crate::science::ddpm_schedule::ddpm_abar(t);
            let (sig, a) = ((1.0 - abar).sqrt() as f32, abar.sqrt() as f32);
            let mut got = vec![0.0f32; x.len()];
            s.score_at_with(&x, 1, h, w, sigma, false, &mut got);
            for i in 0..x.len() {
                let want = -(sig * x[i] + a * v[i]) / sigma;
                assert!(
                    (got[i] - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "t {t}, {i}: {} vs {want}",
                    got[i]
                );
            }
        }
        let mut own = vec![0.0f32; x.len()];
        let mut at = vec![0.0f32; x.len()];
        s.score_with(&x, 1, h, w, true, &mut own);
        s.score_at_with(&x, 1, h, w, s.sigma(), true, &mut at);
        assert_eq!(own, at, "the own level reads as before");
        assert_eq!(s.sigma_max(), Some(ddpm_sigma(99)));
        let between = 0.5 * (ddpm_sigma(50) + ddpm_sigma(51));
        assert!(!s.reads_level(between) && !s.reads_level(1.0));
    }

    /// An expert trained on timesteps 30-99 only knows those levels, and its top is the schedule's top.
    #[test]
    fn unet_expert_reads_only_its_trained_timesteps() {
        let mut net = tiny_unet();
        net.arch.timestep = 30;
        net.arch.timestep_max = Some(99);
        net.arch.validate().expect("valid range");
        let s = ImageScore::Unet(Box::new(UnetOn::Cpu(net)));
        assert_eq!(s.sigma_max(), Some(ddpm_sigma(99)));
        assert!(s.reads_level(ddpm_sigma(30)) && s.reads_level(ddpm_sigma(99)));
        assert!(!s.reads_level(ddpm_sigma(29)) && !s.reads_level(ddpm_sigma(10)));
        let mut arch = tiny_unet().arch;
        arch.timestep_max = Some(10);
        let err = arch.validate().expect_err("a range ending at its start");
        assert!(format!("{err}").contains("timestep_max 10"), "{err}");
    }
}
