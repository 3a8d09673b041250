//! Convolutional image models that dfdx cannot provide on stable: circular dilated convolutions with a
//! hand-written backward pass (`layer`) and the local denoising score model built from them (`model`).
//! Plain Rust with `gemm` and rayon, so training and inference run fast on a few CPU cores.

pub mod layer;
pub mod model;

pub use model::{train_local_score, LocalScore, LocalScoreArch, LocalScoreConfig};

#[cfg(test)]
mod e2e;
