//! eqflow: declarative, cached pipelines that reproduce "Equilibrium flow: From Snapshots to Dynamics".
//!
//! A run flows `cli -> config -> plan -> cache -> exec -> stages -> science/nn -> render/report`; each of
//! those is a module here. `science` and `nn` know nothing about pipelines, and the pipeline modules know
//! nothing about the science: stage kinds (`stages/`) are the thin seam between the two.
#![warn(missing_docs)]

pub mod cache;
pub mod cli;
pub mod config;
pub mod exec;
pub mod flow;
pub mod io;
pub mod logging;
pub mod nn;
pub mod plan;
pub mod render;
pub mod report;
pub mod science;
pub mod stages;
