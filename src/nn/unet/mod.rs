//! The paper's score UNet (spec §7) on dfdx 0.13, generic over the device: the ops dfdx lacks on
//! stable, written on its public API (`ops`: circular convolution and upsampling as gathers, GroupNorm,
//! SiLU), the layers (`blocks`), the network (`model`) and DDPM v-prediction training (`train`).
//! It runs on the CPU (slowly: dfdx's elementwise kernels are scalar) and on CUDA with `--features cuda`;
//! the CPU default score model stays [`crate::nn::conv::LocalScore`].

pub mod blocks;
pub mod model;
pub mod ops;
pub mod train;

pub use model::{ddpm_abar, Unet, UnetArch};
pub use train::{
    batch_loss, ddpm_batch, train_unet, DdpmBatch, Trainer, UnetTrainConfig, UnetTrainLog,
};

#[cfg(test)]
pub(crate) mod tests;
