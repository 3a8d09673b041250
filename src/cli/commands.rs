//! Subcommand implementations: turn a parsed command line into plan/exec/cache calls and print the results.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Cli, Command, PipelineArgs};
use crate::cache::{collect_garbage, Cache};
use crate::config::{Diagnostics, Override};
use crate::exec::{self, RunOptions, RunSummary, Status};
use crate::plan::{Plan, PlanRequest};
use crate::report::{results_table, ResultsFormat};
use crate::stages::all_kinds;

/// Why a command failed; each maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The pipeline is invalid (exit 2).
    #[error("{0}")]
    Config(Diagnostics),
    /// Bad usage, e.g. an unknown stage name (exit 2).
    #[error("error: {0}")]
    Usage(String),
    /// One or more stages failed (exit 1).
    #[error("error: {0} stage(s) failed")]
    Stages(usize),
    /// Ctrl-C during a cluster run, after cancelling its jobs (exit 130).
    #[error("error: interrupted; cancelled this run's SLURM jobs ({0})")]
    Interrupted(String),
    /// Anything else: I/O, a broken cache (exit 3).
    #[error("error: {0:#}")]
    Other(anyhow::Error),
}

/// The exit code of a failure: 1 stage failure, 2 invalid pipeline or usage, 3 other errors.
pub fn exit_code(f: &Failure) -> i32 {
    match f {
        Failure::Stages(_) => 1,
        Failure::Config(_) | Failure::Usage(_) => 2,
        Failure::Other(_) => 3,
        Failure::Interrupted(_) => 130,
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::Config(d)
    }
}

/// Runs the command.
pub fn dispatch(cli: &Cli) -> Result<(), Failure> {
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match &cli.command {
        Command::Run {
            pipeline,
            targets,
            force,
            force_all,
            dry_run,
            jobs,
            executor,
        } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            for f in force {
                plan.select(std::slice::from_ref(f))
                    .map_err(Failure::Usage)?;
            }
            let selected = plan.select(targets).map_err(Failure::Usage)?;
            let opts = RunOptions {
                jobs: *jobs,
                force: force.iter().cloned().collect(),
                force_all: *force_all,
                dry_run: *dry_run,
                threads,
                quiet: cli.quiet,
            };
            if !cli.quiet && !dry_run {
                exec::progress::println(&format!(
                    "eqflow: {} ({} stage instance(s), cache {})",
                    plan.name,
                    selected.len(),
                    cache.root().display()
                ));
            }
            let started = std::time::Instant::now();
            let executor = executor.as_deref().unwrap_or(plan.executor.as_str());
            let summary = if executor == "slurm" && !dry_run {
                let req = exec::slurm::ClusterRequest {
                    profile: pipeline.profile.clone(),
                    sets: pipeline.sets.clone(),
                    threads: cli.threads,
                };
                match exec::slurm::run(&plan, &cache, &selected, &opts, &req) {
                    Ok(s) => s,
                    Err(exec::slurm::ClusterError::Interrupted(m)) => {
                        // `m` is the scancel command that was run.
                        return Err(Failure::Interrupted(m));
                    }
                    Err(exec::slurm::ClusterError::Other(e)) => return Err(Failure::Other(e)),
                }
            } else {
                exec::run(&plan, &cache, &selected, &opts)
            };
            print!("{}", summary_table(&summary, *dry_run));
            if !dry_run {
                let ran = summary
                    .outcomes
                    .iter()
                    .filter(|o| matches!(o.status, Status::Ran(_)))
                    .count();
                let cached = summary
                    .outcomes
                    .iter()
                    .filter(|o| o.status == Status::Cached)
                    .count();
                println!(
                    "{ran} ran, {cached} cached, {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            let failed = summary
                .outcomes
                .iter()
                .filter(|o| matches!(o.status, Status::Failed(_)))
                .count();
            if failed > 0 || summary.failed() {
                return Err(Failure::Stages(failed.max(1)));
            }
            Ok(())
        }
        Command::Plan { pipeline, targets } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            let selected = plan.select(targets).map_err(Failure::Usage)?;
            let summary = exec::run(
                &plan,
                &cache,
                &selected,
                &RunOptions {
                    dry_run: true,
                    jobs: 1,
                    threads,
                    ..RunOptions::default()
                },
            );
            print!("{}", dag_text(&plan, &selected));
            println!();
            print!("{}", summary_table(&summary, true));
            Ok(())
        }
        Command::Status { pipeline } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            let summary = exec::run(
                &plan,
                &cache,
                &plan.order,
                &RunOptions {
                    dry_run: true,
                    jobs: 1,
                    threads,
                    ..RunOptions::default()
                },
            );
            print!("{}", status_table(&plan, &cache, &summary));
            print!("{}", cluster_status(&cache, &plan.path));
            Ok(())
        }
        Command::Dag {
            pipeline,
            dot,
            mermaid,
        } => {
            let plan = build_plan(pipeline)?;
            let text = if *dot {
                dag_graph(&plan, &DOT)
            } else if *mermaid {
                dag_graph(&plan, &MERMAID)
            } else {
                dag_text(&plan, &plan.order)
            };
            print!("{text}");
            Ok(())
        }
        Command::Show { pipeline, stage } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            let selected = plan
                .select(std::slice::from_ref(stage))
                .map_err(Failure::Usage)?;
            let summary = exec::run(
                &plan,
                &cache,
                &selected,
                &RunOptions {
                    dry_run: true,
                    jobs: 1,
                    threads,
                    ..RunOptions::default()
                },
            );
            let mut found = false;
            for o in summary
                .outcomes
                .iter()
                .filter(|o| o.label == *stage || o.label.starts_with(&format!("{stage}[")))
            {
                match &o.dir {
                    Some(d) => {
                        found = true;
                        println!(
                            "{}",
                            std::fs::canonicalize(d)
                                .unwrap_or_else(|_| d.clone())
                                .display()
                        );
                    }
                    None => {
                        return Err(Failure::Usage(format!(
                            "stage `{}` is not cached yet; run `eqflow run {} {stage}` first",
                            o.label,
                            plan.path.display()
                        )))
                    }
                }
            }
            if !found {
                return Err(Failure::Usage(format!(
                    "stage `{stage}` has no outputs yet"
                )));
            }
            Ok(())
        }
        Command::Results {
            pipeline,
            json,
            csv,
        } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            let format = if *json {
                ResultsFormat::Json
            } else if *csv {
                ResultsFormat::Csv
            } else {
                ResultsFormat::Table
            };
            print!(
                "{}",
                results_table(&plan, &cache, format).map_err(Failure::Other)?
            );
            Ok(())
        }
        Command::Report { pipeline, out } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            let r = crate::report::write_report(&plan, &cache, out.as_deref())
                .map_err(Failure::Other)?;
            println!("{}", r.path.display());
            eprintln!(
                "report: {} instance(s) with results, {} figure(s){}",
                r.instances,
                r.figures,
                if r.missing > 0 {
                    format!(
                        ", {} stage instance(s) not cached yet (run the pipeline first)",
                        r.missing
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Command::Flow {
            pipeline,
            stage,
            points,
            out,
            trajectory,
            steps,
            dt,
            model_units,
        } => {
            let plan = build_plan(pipeline)?;
            let cache = cache_for(cli, &plan.path);
            flow_command(
                &plan,
                &cache,
                stage,
                points,
                out.as_deref(),
                trajectory.then_some((*steps, *dt)),
                *model_units,
                threads,
            )
        }
        Command::Gc { keep, dry_run } => gc(cli, keep, *dry_run, threads),
        Command::DeviceCheck {
            out,
            skip_bench,
            quick,
        } => {
            let report = crate::nn::device_check::run(crate::nn::device_check::CheckOptions {
                skip_bench: *skip_bench,
                quick: *quick,
            });
            let text = serde_json::to_string_pretty(&report).expect("JSON values serialise");
            if let Some(path) = out {
                std::fs::write(path, format!("{text}\n")).map_err(|e| {
                    Failure::Other(anyhow::anyhow!("cannot write {}: {e}", path.display()))
                })?;
            }
            println!("{text}");
            if report["ok"] == serde_json::json!(true) {
                Ok(())
            } else {
                Err(Failure::Stages(1))
            }
        }
        Command::Kinds { markdown } => {
            print!(
                "{}",
                if *markdown {
                    kinds_markdown()
                } else {
                    kinds_text()
                }
            );
            Ok(())
        }
    }
}

fn build_plan(args: &PipelineArgs) -> Result<Plan, Failure> {
    let mut sets = args
        .sets
        .iter()
        .map(|s| Override::parse_cli(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    if let Some(device) = &args.device {
        // `--device` is shorthand for `--set pipeline.device=...`.
        sets.push(Override {
            path: "pipeline.device".into(),
            value: crate::config::Located {
                value: crate::config::Value::Str(device.clone()),
                source: crate::config::Source::Cli(format!("--device {device}")),
            },
        });
    }
    Ok(Plan::build(&PlanRequest {
        path: args.file.clone(),
        profile: args.profile.clone(),
        sets,
    })?)
}

/// The cache for a pipeline file: `--cache`/`EQFLOW_CACHE`, else `cache/` beside the `pipelines/` folder.
pub fn default_cache_dir(pipeline: &Path) -> PathBuf {
    let dir = pipeline
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|n| n == "pipelines") {
        dir.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("cache")
    } else {
        dir.join("cache")
    }
}

fn cache_for(cli: &Cli, pipeline: &Path) -> Cache {
    Cache::new(
        cli.cache
            .clone()
            .unwrap_or_else(|| default_cache_dir(pipeline)),
    )
}

fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    }
}

fn summary_table(summary: &RunSummary, dry_run: bool) -> String {
    let mut rows = vec![vec![
        "stage".to_string(),
        "kind".into(),
        "status".into(),
        if dry_run { "why".into() } else { "time".into() },
    ]];
    for o in &summary.outcomes {
        let (status, detail) = match &o.status {
            Status::Cached => (
                "cached".to_string(),
                if dry_run { String::new() } else { "-".into() },
            ),
            Status::Ran(why) => ("ran".into(), format!("{}  ({why})", fmt_secs(o.seconds))),
            Status::WouldRun(why) => ("will run".into(), why.clone()),
            Status::Failed(e) => ("FAILED".into(), e.lines().next().unwrap_or("").to_string()),
            Status::Skipped(why) => ("skipped".into(), why.clone()),
        };
        rows.push(vec![o.label.clone(), o.kind.clone(), status, detail]);
    }
    render_rows(&rows)
}

fn render_rows(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c + 1 == r.len() {
                    s.clone()
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    out
}

fn status_table(plan: &Plan, cache: &Cache, summary: &RunSummary) -> String {
    let mut rows = vec![vec![
        "stage".to_string(),
        "kind".into(),
        "state".into(),
        "key".into(),
    ]];
    for o in &summary.outcomes {
        let state = match &o.status {
            Status::Cached => "cached".to_string(),
            Status::WouldRun(why) if why == "not cached yet" => "never run".into(),
            Status::WouldRun(why) => format!("stale: {why}"),
            Status::Failed(e) => format!("error: {e}"),
            Status::Ran(_) | Status::Skipped(_) => "?".into(),
        };
        rows.push(vec![
            o.label.clone(),
            o.kind.clone(),
            state,
            o.key
                .clone()
                .map(|k| k[..12].to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let _ = (plan, cache);
    render_rows(&rows)
}

/// The cluster runs of this pipeline still in flight: per instance its job id and state (live from squeue
/// when it answers, else as the submitting process last recorded it).
fn cluster_status(cache: &Cache, pipeline: &Path) -> String {
    use exec::slurm::record;
    let mut out = String::new();
    let runs = record::in_flight(cache.root(), pipeline);
    if runs.is_empty() {
        return out;
    }
    let queue = record::squeue().ok();
    for (dir, run) in runs {
        let alive = run.submitter_alive();
        let _ = writeln!(
            out,
            "\nslurm run {} (eqflow pid {} on {}{}), {}",
            run.run_id,
            run.pid,
            run.host,
            if alive { "" } else { ", no longer running" },
            dir.display()
        );
        let mut rows = vec![vec!["stage".to_string(), "job".into(), "state".into()]];
        for i in &run.instances {
            let state = queue
                .as_ref()
                .and_then(|q| q.get(&i.job))
                .map(record::show_state)
                .unwrap_or_else(|| i.state.clone());
            rows.push(vec![i.label.clone(), i.job.clone(), state]);
        }
        out.push_str(&render_rows(&rows));
    }
    out
}

fn dag_text(plan: &Plan, nodes: &[petgraph::graph::NodeIndex]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", plan.name, plan.path.display());
    for &n in nodes {
        let inst = &plan.graph[n];
        let inputs: Vec<String> = inst
            .inputs
            .iter()
            .map(|(p, u)| {
                if *p == plan.graph[*u].label {
                    p.clone()
                } else {
                    format!("{} <- {}", p, plan.graph[*u].label)
                }
            })
            .collect();
        if inputs.is_empty() {
            let _ = writeln!(out, "  {} ({})", inst.label, inst.kind.name());
        } else {
            let _ = writeln!(
                out,
                "  {} ({})  <- {}",
                inst.label,
                inst.kind.name(),
                inputs.join(", ")
            );
        }
    }
    out
}

/// How one graph language writes a header, a node and an edge; `dag --dot` and `dag --mermaid` differ
/// only in these, so both share one walk over the plan (nodes in run order, then edges).
struct GraphSyntax {
    header: fn(&str) -> String,
    node: fn(usize, &str, &str) -> String,
    edge: fn(usize, usize, &str) -> String,
    footer: &'static str,
}

const DOT: GraphSyntax = GraphSyntax {
    header: |name| {
        format!("digraph \"{name}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n")
    },
    node: |id, label, kind| format!("  n{id} [label=\"{label}\\n({kind})\"];"),
    edge: |a, b, port| format!("  n{a} -> n{b} [label=\"{port}\"];"),
    footer: "}\n",
};

const MERMAID: GraphSyntax = GraphSyntax {
    header: |_| "flowchart LR\n".to_string(),
    node: |id, label, kind| format!("  n{id}[\"{label}<br/>({kind})\"]"),
    edge: |a, b, port| format!("  n{a} -->|{port}| n{b}"),
    footer: "",
};

fn dag_graph(plan: &Plan, syntax: &GraphSyntax) -> String {
    let mut out = (syntax.header)(&plan.name);
    for &n in &plan.order {
        let i = &plan.graph[n];
        let _ = writeln!(out, "{}", (syntax.node)(n.index(), &i.label, i.kind.name()));
    }
    for e in plan.graph.edge_indices() {
        let (a, b) = plan.graph.edge_endpoints(e).expect("edge exists");
        let port = plan.graph[e].to_string();
        let _ = writeln!(out, "{}", (syntax.edge)(a.index(), b.index(), &port));
    }
    out.push_str(syntax.footer);
    out
}

fn gc(cli: &Cli, keep: &[PathBuf], dry_run: bool, threads: usize) -> Result<(), Failure> {
    let files: Vec<PathBuf> = if keep.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir("pipelines")
            .map_err(|e| Failure::Usage(format!("no --keep given and ./pipelines cannot be read ({e}); name the pipelines to keep")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    } else {
        keep.to_vec()
    };
    let cache_root = cli.cache.clone().unwrap_or_else(|| {
        files
            .first()
            .map(|f| default_cache_dir(f))
            .unwrap_or_else(|| PathBuf::from("cache"))
    });
    let cache = Cache::new(cache_root);
    let mut reachable = BTreeSet::new();
    for f in &files {
        let plan = build_plan(&PipelineArgs {
            file: f.clone(),
            sets: Vec::new(),
            profile: None,
            device: None,
        })?;
        // Every profile's instances are reachable too.
        let mut plans = vec![plan];
        let file = crate::config::PipelineFile::load(f)?;
        for p in file.profiles.keys() {
            if let Ok(pl) = Plan::build(&PlanRequest {
                path: f.clone(),
                profile: Some(p.clone()),
                sets: Vec::new(),
            }) {
                plans.push(pl);
            }
        }
        for plan in &plans {
            let s = exec::run(
                plan,
                &cache,
                &plan.order,
                &RunOptions {
                    dry_run: true,
                    jobs: 1,
                    threads,
                    ..RunOptions::default()
                },
            );
            reachable.extend(
                s.outcomes
                    .iter()
                    .filter(|o| o.status == Status::Cached)
                    .filter_map(|o| o.key.clone()),
            );
        }
    }
    let entries = collect_garbage(&cache, &reachable, !dry_run).map_err(Failure::Other)?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    for e in &entries {
        println!("{}  {:>10}  {}", e.key, human_size(e.size), e.stage);
    }
    println!(
        "{} {} unreachable entr{} ({}); kept {} reachable from {} pipeline(s)",
        if dry_run { "would remove" } else { "removed" },
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        human_size(total),
        reachable.len(),
        files.len()
    );
    if !dry_run {
        let tmp = cache.root().join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                // Debris of killed runs; a running stage's directory is protected by its key lock.
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.split('.').next().unwrap_or("").to_string();
                if let Ok((lock, false)) = cache.lock(&key) {
                    let _ = std::fs::remove_dir_all(e.path());
                    drop(lock);
                }
            }
        }
    }
    Ok(())
}

/// Bytes in human units.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn kinds_text() -> String {
    let mut out = String::new();
    for k in all_kinds() {
        let _ = writeln!(out, "{} (v{}): {}", k.name(), k.version(), k.about());
        for p in k.params() {
            let _ = writeln!(
                out,
                "    {:<14} {:<28} default {:<12} {}",
                p.name,
                p.type_doc(),
                p.default_doc(),
                p.doc
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// The stage-kind reference in markdown (the generated part of docs/pipeline-reference.md).
pub fn kinds_markdown() -> String {
    let mut out = String::new();
    for k in all_kinds() {
        let _ = writeln!(out, "### `{}`\n\n{}\n", k.name(), k.about());
        let _ = writeln!(out, "| key | type | default | meaning |\n|---|---|---|---|");
        for p in k.params() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                p.name,
                p.type_doc().replace('|', "\\|"),
                p.default_doc(),
                p.doc
            );
        }
        let _ = writeln!(out, "\nOutputs:\n");
        for (f, d) in k.outputs() {
            let _ = writeln!(out, "- `{f}`: {d}");
        }
        let _ = writeln!(out);
    }
    let _ = BTreeMap::<(), ()>::new();
    out
}

#[allow(clippy::too_many_arguments)]
fn flow_command(
    plan: &Plan,
    cache: &Cache,
    stage: &str,
    points: &Path,
    out: Option<&Path>,
    trajectory: Option<(usize, f64)>,
    model_units: bool,
    threads: usize,
) -> Result<(), Failure> {
    use crate::flow::{PointFlow, Units};
    let nodes: Vec<_> = plan
        .order
        .iter()
        .copied()
        .filter(|n| plan.graph[*n].label == stage || plan.graph[*n].stage == stage)
        .collect();
    let node = match nodes.as_slice() {
        [] => {
            return Err(Failure::Usage(
                plan.select(&[stage.to_string()])
                    .err()
                    .unwrap_or_else(|| format!("no stage `{stage}`")),
            ))
        }
        [one] => *one,
        many => {
            let labels: Vec<&str> = many.iter().map(|n| plan.graph[*n].label.as_str()).collect();
            return Err(Failure::Usage(format!(
                "stage `{stage}` has {} instances; name one: {}",
                many.len(),
                labels.join(", ")
            )));
        }
    };
    let inst = &plan.graph[node];
    let kind = inst.kind.name();
    if kind != "train_dynamics" && kind != "training_free" {
        return Err(Failure::Usage(format!(
            "stage `{}` is a `{kind}` stage, not a flow; use a `train_dynamics` or `training_free` stage",
            inst.label
        )));
    }
    let selected = plan
        .select(std::slice::from_ref(&inst.label))
        .map_err(Failure::Usage)?;
    let summary = exec::run(
        plan,
        cache,
        &selected,
        &RunOptions {
            dry_run: true,
            jobs: 1,
            threads,
            ..RunOptions::default()
        },
    );
    let dir_of = |label: &str| {
        summary
            .outcomes
            .iter()
            .find(|o| o.label == label)
            .and_then(|o| o.dir.clone())
    };
    let entry = dir_of(&inst.label).ok_or_else(|| {
        Failure::Usage(format!(
            "stage `{}` is not cached yet; run `eqflow run {} {}` first",
            inst.label,
            plan.path.display(),
            inst.label
        ))
    })?;
    let score_entry = inst
        .inputs
        .get("score")
        .and_then(|u| dir_of(&plan.graph[*u].label));
    let flow =
        PointFlow::from_entry(kind, &entry, score_entry.as_deref()).map_err(Failure::Other)?;
    let pts = crate::io::read_points(points).map_err(|e| Failure::Usage(format!("{e:#}")))?;
    if pts.d != flow.dim() {
        return Err(Failure::Usage(format!(
            "{} has {} column(s) but the flow of stage `{}` is {}-D",
            points.display(),
            pts.d,
            inst.label,
            flow.dim()
        )));
    }
    let units = if model_units {
        Units::Model
    } else {
        Units::Data
    };
    let d = pts.d;
    let (shape, data, header) = match trajectory {
        None => {
            let v = flow.velocity(&pts.data, units).map_err(Failure::Other)?;
            (
                vec![pts.n, d],
                v,
                (0..d).map(|k| format!("v{}", k + 1)).collect::<Vec<_>>(),
            )
        }
        Some((steps, dt)) => {
            let t = flow
                .trajectory(&pts.data, steps, dt, units)
                .map_err(Failure::Other)?;
            (
                vec![steps + 1, pts.n, d],
                t,
                (0..d).map(|k| format!("x{}", k + 1)).collect(),
            )
        }
    };
    let is_npy = out.is_some_and(|p| p.extension().is_some_and(|e| e == "npy"));
    if is_npy {
        let path = out.expect("checked above");
        crate::io::write_npy(path, &crate::io::Tensor::F64 { shape, data })
            .map_err(Failure::Other)?;
        return Ok(());
    }
    let mut text = String::new();
    let traj = shape.len() == 3;
    let _ = writeln!(
        text,
        "{}{}",
        if traj { "step,point," } else { "" },
        header.join(",")
    );
    for (r, row) in data.chunks(d).enumerate() {
        let vals: Vec<String> = row.iter().map(|v| format!("{v:.17e}")).collect();
        if traj {
            let _ = writeln!(text, "{},{},{}", r / pts.n, r % pts.n, vals.join(","));
        } else {
            let _ = writeln!(text, "{}", vals.join(","));
        }
    }
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::Other(anyhow::anyhow!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(())
}
