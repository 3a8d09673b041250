//! A thin layer over dfdx and plain-Rust kernels: our ops, models, training loops, checkpoints.

// --- point models (score MLP, flow kernel) ---
pub mod points;

// --- image models (convolutional score models, image flows) ---
pub mod conv;

// --- the compute device of the dfdx work, and the CPU-vs-GPU check ---
pub mod device;
pub mod device_check;

// --- the paper's UNet (dfdx, any device) ---
pub mod unet;

// --- the image score, whichever model trained it ---
pub mod denoise;
pub mod image_score;
pub use image_score::{ImageScore, UnetOn};
