//! The scheduler: decides what runs and why, runs independent stages at once, commits results to the cache.
//!
//! One dispatcher (the calling thread) owns all state; stage instances run on a bounded pool (`--jobs`) and
//! report back over a channel. Each instance is keyed from its resolved parameters and its inputs' *output*
//! hashes, so an upstream stage that reruns but writes identical bytes leaves its dependents cached.

pub mod progress;
pub mod slurm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex};
use std::time::{Instant, SystemTime};

use petgraph::graph::NodeIndex;

use crate::cache::{Cache, Engine, KeyMaterial, Lookup, Manifest, SCHEMA_VERSION};
use crate::config::{ParamType, Value};
use crate::plan::{Instance, Plan};
use crate::stages::{InputArtifact, ProgressFactory, StageContext};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stage instances to run at once.
    pub jobs: usize,
    /// Stage names (or labels) to recompute even if cached.
    pub force: BTreeSet<String>,
    /// Recompute everything.
    pub force_all: bool,
    /// Only say what would happen.
    pub dry_run: bool,
    /// Compute threads per stage (recorded in manifests).
    pub threads: usize,
    /// No progress output.
    pub quiet: bool,
}

/// What happened (or would happen) to one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Reused from the cache.
    Cached,
    /// Computed now, with the reason.
    Ran(String),
    /// Would run (dry run), with the reason.
    WouldRun(String),
    /// Failed, with the error.
    Failed(String),
    /// Not run because an input failed.
    Skipped(String),
}

/// The outcome for one instance.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its label.
    pub label: String,
    /// Its kind.
    pub kind: String,
    /// Status.
    pub status: Status,
    /// Its cache key, when known.
    pub key: Option<String>,
    /// Its entry directory, when committed.
    pub dir: Option<PathBuf>,
    /// Seconds spent (0 when cached).
    pub seconds: f64,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// In execution order.
    pub outcomes: Vec<Outcome>,
}

impl RunSummary {
    /// Whether any instance failed (or was skipped because of a failure).
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o.status, Status::Failed(_) | Status::Skipped(_)))
    }
}

/// The key material of `inst` given its inputs' output hashes.
pub fn key_material(
    plan: &Plan,
    inst: &Instance,
    input_hashes: &BTreeMap<String, String>,
) -> anyhow::Result<KeyMaterial> {
    let specs = inst.kind.params();
    let mut params = BTreeMap::new();
    for spec in &specs {
        let Some(v) = inst.params.0.get(spec.name) else {
            continue;
        };
        match spec.ty {
            ParamType::Input | ParamType::InputList => continue,
            ParamType::Path => {
                let Value::Str(p) = v else { continue };
                let path = plan.dir.join(p);
                let hash = crate::cache::hash_file(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: cannot read `{}` = {}: {e}",
                        inst.label,
                        spec.name,
                        path.display()
                    )
                })?;
                params.insert(
                    spec.name.to_string(),
                    serde_json::json!(format!("blake3:{hash}")),
                );
            }
            _ => {
                params.insert(
                    spec.name.to_string(),
                    serde_json::to_value(v).expect("values serialise"),
                );
            }
        }
    }
    Ok(KeyMaterial {
        schema: SCHEMA_VERSION,
        kind: inst.kind.name().to_string(),
        kind_version: inst.kind.version(),
        params,
        inputs: input_hashes.clone(),
        engine: Engine::for_device(&plan.device),
    })
}

/// Why `inst` must be computed, or `None` if its entry can be reused.
fn miss_reason(
    cache: &Cache,
    plan: &Plan,
    inst: &Instance,
    material: &KeyMaterial,
    key: &str,
    forced: bool,
) -> Option<String> {
    if forced {
        return Some("forced".into());
    }
    match cache.lookup(key) {
        Lookup::Valid(_) => None,
        Lookup::Corrupt(why) => Some(format!("cache entry corrupt: {why}")),
        Lookup::Missing => Some(match cache.last_run(&plan.name, &inst.label) {
            Some(old) => {
                let diffs = material.differences(&old);
                if diffs.is_empty() {
                    "cache entry was removed".into()
                } else {
                    diffs.join("; ")
                }
            }
            None => "not cached yet".into(),
        }),
    }
}

enum Msg {
    Done(NodeIndex, Outcome, Option<String>),
}

/// Runs (or with `dry_run`, plans) the instances in `selected`, in dependency order.
pub fn run(plan: &Plan, cache: &Cache, selected: &[NodeIndex], opts: &RunOptions) -> RunSummary {
    let display = progress::Display { quiet: opts.quiet };
    let wanted: BTreeSet<NodeIndex> = selected.iter().copied().collect();
    let mut outcomes: BTreeMap<NodeIndex, Outcome> = BTreeMap::new();
    // Output hashes and entry dirs of finished instances.
    let mut done: BTreeMap<NodeIndex, (String, PathBuf)> = BTreeMap::new();
    let is_forced = |inst: &Instance| {
        opts.force_all || opts.force.contains(&inst.stage) || opts.force.contains(&inst.label)
    };

    if opts.dry_run {
        let mut will_run: BTreeSet<NodeIndex> = BTreeSet::new();
        for &n in selected {
            let inst = &plan.graph[n];
            let kind = inst.kind.name().to_string();
            let blocked: Vec<&str> = inst
                .inputs
                .values()
                .filter(|u| will_run.contains(u))
                .map(|u| plan.graph[*u].label.as_str())
                .collect();
            let outcome = if !blocked.is_empty() {
                will_run.insert(n);
                Outcome {
                    label: inst.label.clone(),
                    kind,
                    status: Status::WouldRun(if blocked.len() <= 4 {
                        format!("input {} will run", blocked.join(", "))
                    } else {
                        format!(
                            "{} inputs will run ({}, ...)",
                            blocked.len(),
                            blocked[..3].join(", ")
                        )
                    }),
                    key: None,
                    dir: None,
                    seconds: 0.0,
                }
            } else {
                let hashes: BTreeMap<String, String> = inst
                    .inputs
                    .iter()
                    .map(|(p, u)| (p.clone(), done[u].0.clone()))
                    .collect();
                match key_material(plan, inst, &hashes) {
                    Err(e) => Outcome {
                        label: inst.label.clone(),
                        kind,
                        status: Status::Failed(e.to_string()),
                        key: None,
                        dir: None,
                        seconds: 0.0,
                    },
                    Ok(material) => {
                        let key = material.key();
                        match miss_reason(cache, plan, inst, &material, &key, is_forced(inst)) {
                            Some(reason) => {
                                will_run.insert(n);
                                Outcome {
                                    label: inst.label.clone(),
                                    kind,
                                    status: Status::WouldRun(reason),
                                    key: Some(key),
                                    dir: None,
                                    seconds: 0.0,
                                }
                            }
                            None => {
                                let Lookup::Valid(m) = cache.lookup(&key) else {
                                    unreachable!("checked valid above")
                                };
                                done.insert(n, (m.output_hash.clone(), cache.entry_dir(&key)));
                                Outcome {
                                    label: inst.label.clone(),
                                    kind,
                                    status: Status::Cached,
                                    key: Some(key.clone()),
                                    dir: Some(cache.entry_dir(&key)),
                                    seconds: 0.0,
                                }
                            }
                        }
                    }
                }
            };
            outcomes.insert(n, outcome);
        }
        return RunSummary {
            outcomes: selected
                .iter()
                .map(|n| outcomes.remove(n).expect("every node planned"))
                .collect(),
        };
    }

    let jobs = opts.jobs.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("eqflow-stage-{i}"))
        .build()
        .expect("cannot start the stage thread pool");
    // The numerics inside a stage run on their own pool of `--threads` workers: rayon code called from a
    // stage-pool thread would otherwise use the stage pool, i.e. `--jobs` threads (one by default).
    let compute = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .thread_name(|i| format!("eqflow-compute-{i}"))
        .build()
        .expect("cannot start the compute thread pool");
    let compute = &compute;
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut pending: Vec<NodeIndex> = selected.to_vec();
    let mut running = 0usize;
    pool.in_place_scope(|scope| {
        loop {
            // Settle instances whose inputs failed, then start every ready instance while there is room.
            let mut i = 0;
            while i < pending.len() {
                let n = pending[i];
                let inst = &plan.graph[n];
                let failed_input = inst.inputs.values().find(|u| {
                    outcomes
                        .get(u)
                        .is_some_and(|o| matches!(o.status, Status::Failed(_) | Status::Skipped(_)))
                });
                if let Some(u) = failed_input {
                    let why = format!("input `{}` failed", plan.graph[*u].label);
                    progress::println(&format!("  skip  {:<24} {}", inst.label, why));
                    outcomes.insert(
                        n,
                        Outcome {
                            label: inst.label.clone(),
                            kind: inst.kind.name().into(),
                            status: Status::Skipped(why),
                            key: None,
                            dir: None,
                            seconds: 0.0,
                        },
                    );
                    pending.remove(i);
                    continue;
                }
                let ready = inst
                    .inputs
                    .values()
                    .all(|u| done.contains_key(u) || !wanted.contains(u));
                if ready && running < jobs {
                    pending.remove(i);
                    running += 1;
                    let inputs: BTreeMap<String, InputArtifact> = inst
                        .inputs
                        .iter()
                        .map(|(p, u)| {
                            let up = &plan.graph[*u];
                            (
                                p.clone(),
                                InputArtifact {
                                    stage: up.label.clone(),
                                    kind: up.kind.name().into(),
                                    dir: done[u].1.clone(),
                                },
                            )
                        })
                        .collect();
                    let hashes: BTreeMap<String, String> = inst
                        .inputs
                        .iter()
                        .map(|(p, u)| (p.clone(), done[u].0.clone()))
                        .collect();
                    let tx = tx.clone();
                    let forced = is_forced(inst);
                    let display = &display;
                    scope.spawn(move |_| {
                        let (outcome, hash) = execute(
                            plan, cache, n, inputs, &hashes, forced, opts, display, compute,
                        );
                        let _ = tx.send(Msg::Done(n, outcome, hash));
                    });
                    continue;
                }
                i += 1;
            }
            if running == 0 {
                break;
            }
            let Ok(Msg::Done(n, outcome, hash)) = rx.recv() else {
                break;
            };
            running -= 1;
            if let (Some(h), Some(d)) = (hash, outcome.dir.clone()) {
                done.insert(n, (h, d));
            }
            outcomes.insert(n, outcome);
        }
    });
    RunSummary {
        outcomes: selected.iter().filter_map(|n| outcomes.remove(n)).collect(),
    }
}

/// Computes or reuses one instance. Returns its outcome and output hash.
#[allow(clippy::too_many_arguments)]
fn execute(
    plan: &Plan,
    cache: &Cache,
    n: NodeIndex,
    inputs: BTreeMap<String, InputArtifact>,
    hashes: &BTreeMap<String, String>,
    forced: bool,
    opts: &RunOptions,
    display: &dyn ProgressFactory,
    compute: &rayon::ThreadPool,
) -> (Outcome, Option<String>) {
    let inst = &plan.graph[n];
    let started = Instant::now();
    let mut outcome = Outcome {
        label: inst.label.clone(),
        kind: inst.kind.name().into(),
        status: Status::Cached,
        key: None,
        dir: None,
        seconds: 0.0,
    };
    let fail = |mut o: Outcome, msg: String| {
        progress::println(&format!("  FAIL  {:<24} {msg}", o.label));
        o.status = Status::Failed(msg);
        o.seconds = started.elapsed().as_secs_f64();
        (o, None)
    };
    let material = match key_material(plan, inst, hashes) {
        Ok(m) => m,
        Err(e) => return fail(outcome, e.to_string()),
    };
    let key = material.key();
    outcome.key = Some(key.clone());
    let reason = miss_reason(cache, plan, inst, &material, &key, forced);
    let Some(reason) = reason else {
        let Lookup::Valid(m) = cache.lookup(&key) else {
            return fail(outcome, "cache entry vanished".into());
        };
        let _ = cache.record_run(&plan.name, &inst.label, &material);
        outcome.dir = Some(cache.entry_dir(&key));
        return (outcome, Some(m.output_hash));
    };
    let (lock, waited) = match cache.lock(&key) {
        Ok(l) => l,
        Err(e) => return fail(outcome, format!("{e:#}")),
    };
    if waited && !forced {
        // Another eqflow computed this key while we waited: reuse it.
        if let Lookup::Valid(m) = cache.lookup(&key) {
            progress::println(&format!(
                "  reuse {:<24} computed by another eqflow process",
                inst.label
            ));
            let _ = cache.record_run(&plan.name, &inst.label, &material);
            outcome.dir = Some(cache.entry_dir(&key));
            return (outcome, Some(m.output_hash));
        }
    }
    progress::println(&format!("  run   {:<24} {reason}", inst.label));
    let staging = match cache.stage(&key, &lock) {
        Ok(s) => s,
        Err(e) => return fail(outcome, format!("{e:#}")),
    };
    let log_lines = Mutex::new(Vec::new());
    let started_at = SystemTime::now();
    let mut ctx = StageContext {
        label: &inst.label,
        params: &inst.params,
        inputs: &inputs,
        out_dir: staging.dir(),
        pipeline_dir: &plan.dir,
        kind: inst.kind.name(),
        device: &plan.device,
        log_lines: &log_lines,
        progress: display,
        metrics: serde_json::Map::new(),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compute.install(|| inst.kind.run(&mut ctx))
    }));
    let metrics = std::mem::take(&mut ctx.metrics);
    let log_text = log_lines.into_inner().expect("log lock").join("\n");
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(panic) => Some(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    if let Some(e) = error {
        // The staging directory is dropped (deleted) here: nothing half-written reaches the cache.
        return fail(outcome, e);
    }
    let write_extras = || -> anyhow::Result<()> {
        if !metrics.is_empty() {
            crate::io::write_json(&staging.dir().join("metrics.json"), &metrics)?;
        }
        std::fs::write(staging.dir().join("log.txt"), log_text + "\n")?;
        Ok(())
    };
    if let Err(e) = write_extras() {
        return fail(outcome, format!("{e:#}"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut manifest = Manifest {
        key: key.clone(),
        stage: inst.label.clone(),
        pipeline: plan.name.clone(),
        material: material.clone(),
        outputs: BTreeMap::new(),
        output_hash: String::new(),
        started: rfc3339(started_at),
        finished: rfc3339(SystemTime::now()),
        duration_s: seconds,
        host: hostname(),
        threads: opts.threads,
    };
    match cache.commit(staging, &mut manifest) {
        Ok(dir) => {
            drop(lock);
            let _ = cache.record_run(&plan.name, &inst.label, &material);
            progress::println(&format!("  done  {:<24} {:.1} s", inst.label, seconds));
            outcome.status = Status::Ran(reason);
            outcome.dir = Some(dir);
            outcome.seconds = seconds;
            (outcome, Some(manifest.output_hash))
        }
        Err(e) => fail(outcome, format!("{e:#}")),
    }
}

/// The machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// RFC 3339 UTC time stamp (seconds precision), without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
