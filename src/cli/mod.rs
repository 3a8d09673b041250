//! The command line: clap types, and their translation into requests for the engine. Nothing else in
//! eqflow knows about clap.

mod commands;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::{dispatch, exit_code, Failure};

/// eqflow: declarative, cached pipelines that turn snapshots of a stationary distribution into dynamics.
#[derive(Debug, Parser)]
#[command(name = "eqflow", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Cache directory (default: `cache/` beside the `pipelines/` folder of the pipeline file).
    #[arg(long, global = true, env = "EQFLOW_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final table.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Compute threads for the numerics (default: all cores). Outputs are bit-identical for a given count.
    #[arg(long, global = true, env = "EQFLOW_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that select and shape a pipeline.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub file: PathBuf,
    /// Override a key, type-checked like the file: `--set stages.score.epochs=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Apply `[profiles.NAME]` (e.g. `paper` for the paper's full scale).
    #[arg(long)]
    pub profile: Option<String>,
    /// Compute device, overriding `[pipeline] device` (`cpu` or `cuda`; part of every cache key).
    #[arg(long, value_parser = ["cpu", "cuda"])]
    pub device: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline (or only what the given stages need).
    Run {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stages to run (with everything they need); default: all.
        #[arg(value_name = "STAGE")]
        targets: Vec<String>,
        /// Recompute this stage even if cached (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Recompute every stage.
        #[arg(long)]
        force_all: bool,
        /// Show the plan (cached / will run and why) and write nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Stage instances to run at once.
        #[arg(long, short = 'j', default_value_t = 1, value_name = "N")]
        jobs: usize,
        /// Where stages run: `local`, or `slurm` (one job array per stage on a shared cache; see
        /// docs/cluster.md). Default: `[pipeline] executor`, else local.
        #[arg(long, value_name = "EXECUTOR", value_parser = ["local", "slurm"])]
        executor: Option<String>,
    },
    /// The plan of a run: what is cached, what would run and why (same as `run --dry-run`).
    Plan {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Stages to plan for; default: all.
        #[arg(value_name = "STAGE")]
        targets: Vec<String>,
    },
    /// Per stage: cached, stale (and why), or never run.
    Status {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Draw the DAG (terminal text, or Graphviz / Mermaid).
    Dag {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Graphviz dot output.
        #[arg(long, conflicts_with = "mermaid")]
        dot: bool,
        /// Mermaid output.
        #[arg(long)]
        mermaid: bool,
    },
    /// Print the directory holding a stage's outputs (to find figures and files).
    Show {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// The stage (name or instance label).
        stage: String,
    },
    /// Parameters and metrics of every cached stage; across sweep seeds as mean ± std.
    Results {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Machine-readable JSON (stable; see docs/pipeline-reference.md).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV.
        #[arg(long)]
        csv: bool,
    },
    /// Write a static, self-contained HTML report (figures, metrics, parameters, keys, timings, the DAG).
    Report {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Output file (default: `<cache>/reports/<pipeline>.html`).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Evaluate a stage's flow v(x) = dx/dt at your points, or integrate trajectories from them (RK4).
    Flow {
        /// The pipeline.
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// A `train_dynamics` or `training_free` stage (name or instance label).
        stage: String,
        /// Points: CSV (header optional) or .npy [N, d], in the units of the original snapshots.
        #[arg(long, value_name = "FILE")]
        points: PathBuf,
        /// Output file (.csv or .npy); default: CSV on standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
        /// Integrate trajectories from the points instead of evaluating v.
        #[arg(long)]
        trajectory: bool,
        /// Trajectory steps.
        #[arg(long, default_value_t = 100, requires = "trajectory")]
        steps: usize,
        /// Trajectory time step.
        #[arg(long, default_value_t = 0.1, requires = "trajectory")]
        dt: f64,
        /// Points and velocities in the model's standardised units rather than the data's.
        #[arg(long)]
        model_units: bool,
    },
    /// Remove cache entries that no given pipeline reaches.
    Gc {
        /// Pipelines whose entries are kept (default: every `pipelines/*.toml` under the current directory).
        #[arg(long, value_name = "FILE", num_args = 1..)]
        keep: Vec<PathBuf>,
        /// Only list what would be removed.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// CPU-vs-GPU numerics and GPU throughput of the tensor work, as JSON (run by scripts/gpu-check.sh;
    /// see docs/gpu.md). Exit code 1 when a numerics check fails.
    #[command(hide = true)]
    DeviceCheck {
        /// Also write the JSON to this file.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
        /// Numerics only.
        #[arg(long)]
        skip_bench: bool,
        /// Small sizes (a smoke test).
        #[arg(long)]
        quick: bool,
    },
    /// List stage kinds with their parameters (`--markdown` for docs/pipeline-reference.md).
    Kinds {
        /// Markdown output.
        #[arg(long)]
        markdown: bool,
    },
}
