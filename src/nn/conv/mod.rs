//! Convolutional image models that dfdx cannot provide on stable: circular dilated convolutions with a
//! hand-written backward pass (`layer`), the local denoising score model built from them (`model`) and
//! the trained local image flow with exact tangents for its divergence (`flow`).
//! Plain Rust with `gemm` and rayon, so training and inference run fast on a few CPU cores.

pub mod checkpoint;
pub mod flow;
pub mod layer;
pub mod model;

pub use flow::{
    train_image_flow, train_image_flow_observed, ImageFlow, ImageFlowArch, ImageFlowConfig,
    TrainLog,
};
pub use model::{train_local_score, LocalScore, LocalScoreArch, LocalScoreConfig};

#[cfg(test)]
mod e2e;
