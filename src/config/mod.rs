//! Pipeline configuration: raw TOML with source positions (`load`), then a validated model per sweep point
//! (`resolve`), typed by each stage kind's schema (`schema`).

mod load;
mod resolve;
mod schema;
mod slurm;
mod source;
mod value;

pub use load::{Override, PipelineFile, RawStage, RawSweep};
pub use resolve::{profile_overrides, resolve, Config, StageConfig, DEVICES};
pub use schema::{list_input_key, split_list_input_key, DefaultValue, ParamSpec, ParamType};
pub use slurm::{resolve_slurm, SlurmConfig, SlurmResources, EXECUTORS};
pub use source::{suggest, Diagnostic, Diagnostics, Source, SourceFile};
pub use value::{Located, Params, Value};
