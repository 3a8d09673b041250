//! Pure numerics without I/O or pipeline concerns: dynamical systems, integrators, metrics, kernels.

pub mod rng;

// --- low-dimensional systems (points, Lorenz) ---
pub mod integrators;
pub mod lorenz;
pub mod lyapunov;
pub mod mmd;
pub mod points;
pub mod skew;

// --- Turing patterns (Gray-Scott) and image flows ---
pub mod ddpm_schedule;
pub mod gray_scott;
pub mod sde;
pub mod skew_kernel;
pub mod turing_eval;

// --- artificial life ---
pub mod behaviour;
pub mod icons;
pub mod tracking;
