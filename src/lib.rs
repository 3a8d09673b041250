//! eqflow: declarative, cached pipelines that reproduce "Equilibrium flow: From Snapshots to Dynamics".
//!
//! A run flows `cli -> config -> plan -> cache -> exec -> stages -> science/nn -> render/report`; each of
//! those is a module here. `science` and `nn` know nothing about pipelines, and the pipeline modules know
//! nothing about the science: stage kinds (`stages/`) are the thin seam between the two.
#![warn(missing_docs)]

pub mod science;
pub mod nn;
pub mod render;
pub mod io;
