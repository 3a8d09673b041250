//! The SLURM executor: plan locally, submit what is not cached as job arrays, poll `squeue`, report.
//!
//! The plan and the keys of everything that can be keyed now are computed here, exactly as a local dry run
//! does; only instances that would run are submitted. A job cannot be given its key in advance (downstream
//! keys depend on upstream *output* hashes), so each task runs `eqflow run FILE LABEL --executor local` on
//! the shared cache: by the time it starts (`afterok`), its inputs are cached, it computes its key itself,
//! and the per-key lock makes a requeued or duplicated task wait and reuse instead of computing twice.
//!
//! Scripts, the array-index -> label maps, logs and `run.json` (job ids and states, read by `eqflow status`)
//! live in `<cache>/slurm/<run-id>/` for people to read.

pub mod jobs;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use petgraph::graph::NodeIndex;

use self::jobs::{JobGroup, JobNode};
use self::record::{InstanceRecord, QueueState, RunRecord};
use super::{progress, RunOptions, RunSummary, Status};
use crate::cache::{Cache, Lookup};
use crate::plan::Plan;

/// What the jobs need to rebuild the same plan on a compute node.
#[derive(Debug, Clone, Default)]
pub struct ClusterRequest {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--set` arguments, verbatim.
    pub sets: Vec<String>,
    /// `--threads`, when given.
    pub threads: Option<usize>,
}

/// Why a cluster run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Ctrl-C (or SIGTERM): this run's jobs were cancelled.
    #[error("interrupted: cancelled this run's SLURM jobs ({0})")]
    Interrupted(String),
    /// Submission or polling failed.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Runs `selected` on the cluster. Cached instances are reported as cached and nothing is submitted for them.
pub fn run(
    plan: &Plan,
    cache: &Cache,
    selected: &[NodeIndex],
    opts: &RunOptions,
    req: &ClusterRequest,
) -> Result<RunSummary, ClusterError> {
    let dry = super::run(
        plan,
        cache,
        selected,
        &RunOptions {
            dry_run: true,
            ..opts.clone()
        },
    );
    let reasons: BTreeMap<NodeIndex, String> = selected
        .iter()
        .zip(&dry.outcomes)
        .filter_map(|(n, o)| match &o.status {
            Status::WouldRun(why) => Some((*n, why.clone())),
            _ => None,
        })
        .collect();
    if reasons.is_empty() {
        return Ok(dry);
    }
    install_signal_handlers();
    let mut sub = Submission::prepare(plan, cache, selected, opts, &reasons)?;
    sub.submit(plan, req)?;
    let states = sub.wait()?;
    Ok(sub.summarize(plan, cache, selected, opts, &dry, &reasons, &states))
}

/// One cluster run in flight.
struct Submission {
    nodes: Vec<JobNode>,
    node_index: Vec<NodeIndex>,
    groups: Vec<JobGroup>,
    job_ids: Vec<String>,
    dir: PathBuf,
    record: RunRecord,
    cache_root: PathBuf,
    poll: Duration,
}

impl Submission {
    fn prepare(
        plan: &Plan,
        cache: &Cache,
        selected: &[NodeIndex],
        opts: &RunOptions,
        reasons: &BTreeMap<NodeIndex, String>,
    ) -> anyhow::Result<Submission> {
        let to_run: Vec<NodeIndex> = selected
            .iter()
            .copied()
            .filter(|n| reasons.contains_key(n))
            .collect();
        let pos: BTreeMap<NodeIndex, usize> =
            to_run.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let nodes: Vec<JobNode> = to_run
            .iter()
            .map(|n| {
                let inst = &plan.graph[*n];
                JobNode {
                    label: inst.label.clone(),
                    stage: inst.stage.clone(),
                    kind: inst.kind.name().to_string(),
                    deps: inst
                        .inputs
                        .values()
                        .filter_map(|u| pos.get(u).copied())
                        .collect(),
                    forced: opts.force_all
                        || opts.force.contains(&inst.stage)
                        || opts.force.contains(&inst.label),
                }
            })
            .collect();
        let groups = jobs::form_groups(&nodes, jobs::MAX_ARRAY);
        let cache_root = std::path::absolute(cache.root())?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let run_id = format!(
            "{}-{}",
            super::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(now))
                .replace([':', '-'], "")
                .trim_end_matches('Z'),
            std::process::id()
        );
        let dir = cache_root.join("slurm").join(&run_id);
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let pipeline = std::fs::canonicalize(&plan.path)?;
        Ok(Submission {
            record: RunRecord {
                run_id,
                pipeline,
                pid: std::process::id(),
                host: super::hostname(),
                state: "running".into(),
                instances: Vec::new(),
            },
            job_ids: Vec::new(),
            node_index: to_run,
            nodes,
            groups,
            dir,
            cache_root,
            poll: Duration::from_secs_f64(plan.slurm.poll_s),
        })
    }

    fn submit(&mut self, plan: &Plan, req: &ClusterRequest) -> Result<(), ClusterError> {
        let eqflow = match &plan.slurm.eqflow {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find the eqflow binary: {e}"))?
                .to_string_lossy()
                .into_owned(),
        };
        let workdir = std::env::current_dir().map_err(anyhow::Error::from)?;
        let log_dir = self.dir.join("logs");
        progress::println(&format!(
            "  slurm {} instance(s) in {} job(s); scripts and logs in {}",
            self.nodes.len(),
            self.groups.len(),
            self.dir.display()
        ));
        for gi in 0..self.groups.len() {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(self.interrupt());
            }
            let group = &self.groups[gi].clone();
            let res = plan.slurm.resources(&group.kind);
            let mut args = vec![
                "--cache".to_string(),
                self.cache_root.to_string_lossy().into_owned(),
            ];
            if let Some(p) = &req.profile {
                args.extend(["--profile".to_string(), p.clone()]);
            }
            for s in &req.sets {
                args.extend(["--set".to_string(), s.clone()]);
            }
            if let Some(t) = req.threads.or(res.cpus.map(|c| c as usize)) {
                args.extend(["--threads".to_string(), t.to_string()]);
            }
            let dep = jobs::dependency(&self.nodes, &self.groups, group, &self.job_ids);
            let name = format!("eqflow-{}-{}", plan.name, group.stage)
                .chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '_' })
                .collect::<String>();
            let sbatch = jobs::sbatch_args(group, &res, &name, &log_dir, dep.as_deref());
            let ctx = jobs::ScriptContext {
                eqflow: &eqflow,
                workdir: &workdir,
                args: &args,
                pipeline: &self.record.pipeline,
            };
            let stem = group.file_stem();
            let script_path = self.dir.join(format!("{stem}.sh"));
            let text = jobs::script(&ctx, &self.nodes, group, &sbatch);
            let written = std::fs::write(&script_path, text)
                .and_then(|()| {
                    std::fs::write(
                        self.dir.join(format!("{stem}.tasks.tsv")),
                        jobs::task_map(&self.nodes, group),
                    )
                })
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", script_path.display()));
            if let Err(e) = written {
                self.cancel_all();
                return Err(e.into());
            }
            let out = Command::new(record::program("sbatch"))
                .args(&sbatch)
                .arg(&script_path)
                .output();
            let id = match out {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    // --parsable prints `ID` or `ID;CLUSTER`.
                    let id = text.trim().split(';').next().unwrap_or("").to_string();
                    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                        self.cancel_all();
                        return Err(anyhow::anyhow!("sbatch printed no job id: {text:?}").into());
                    }
                    id
                }
                Ok(o) => {
                    self.cancel_all();
                    return Err(anyhow::anyhow!(
                        "sbatch failed for stage `{}` ({}): {}\nscript: {}",
                        group.stage,
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim(),
                        script_path.display()
                    )
                    .into());
                }
                Err(e) => {
                    self.cancel_all();
                    return Err(anyhow::anyhow!(
                        "cannot run sbatch ({e}); is SLURM installed here? (EQFLOW_SBATCH overrides the path)"
                    )
                    .into());
                }
            };
            progress::println(&format!(
                "  submit {:<23} job {id}{}{}",
                group.stage,
                if group.is_array() {
                    format!(" (array of {})", group.members.len())
                } else {
                    String::new()
                },
                dep.map(|d| format!(" after {}", &d["afterok:".len()..]))
                    .unwrap_or_default()
            ));
            for &m in &group.members {
                self.record.instances.push(InstanceRecord {
                    label: self.nodes[m].label.clone(),
                    job: jobs::task_id(group, &id, m),
                    script: script_path.clone(),
                    log: jobs::log_path(group, &log_dir, &id, m),
                    state: "submitted".into(),
                });
            }
            self.job_ids.push(id);
            self.save();
        }
        Ok(())
    }

    fn save(&self) {
        if let Err(e) = self.record.save(&self.dir) {
            tracing::warn!("cannot write {}/run.json: {e:#}", self.dir.display());
        }
    }

    /// Record position of node `i`.
    fn rec(&self, i: usize) -> usize {
        self.record
            .instances
            .iter()
            .position(|r| r.label == self.nodes[i].label)
            .expect("every submitted node is recorded")
    }

    /// Cancels every job this run submitted (and nothing else).
    fn cancel_all(&self) {
        if !self.job_ids.is_empty() {
            let _ = Command::new(record::program("scancel"))
                .args(&self.job_ids)
                .status();
        }
    }

    fn interrupt(&mut self) -> ClusterError {
        self.cancel_all();
        self.record.state = "interrupted".into();
        for r in &mut self.record.instances {
            if !matches!(r.state.as_str(), "done" | "failed") {
                r.state = "cancelled".into();
            }
        }
        self.save();
        ClusterError::Interrupted(if self.job_ids.is_empty() {
            "none submitted yet".into()
        } else {
            format!("scancel {}", self.job_ids.join(" "))
        })
    }

    /// Polls until every task is finished; returns the final queue state per node.
    fn wait(&mut self) -> Result<Vec<QueueState>, ClusterError> {
        let n = self.nodes.len();
        let mut last: Vec<QueueState> = vec![
            QueueState {
                state: "PENDING".into(),
                reason: String::new(),
            };
            n
        ];
        let mut done = vec![false; n];
        let mut misses = vec![0u32; n];
        let mut squeue_errors = 0;
        let started = Instant::now();
        let mut cancelled: BTreeSet<String> = BTreeSet::new();
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(self.interrupt());
            }
            let queue = match record::squeue() {
                Ok(q) => {
                    squeue_errors = 0;
                    q
                }
                Err(e) => {
                    squeue_errors += 1;
                    if squeue_errors >= 20 {
                        self.cancel_all();
                        self.record.state = "failed".into();
                        self.save();
                        return Err(e.into());
                    }
                    tracing::warn!("{e:#}");
                    self.sleep();
                    continue;
                }
            };
            let mut changed = false;
            for i in 0..n {
                if done[i] {
                    continue;
                }
                let r = self.rec(i);
                let id = self.record.instances[r].job.clone();
                let q = match queue.get(&id) {
                    Some(q) => {
                        misses[i] = 0;
                        q.clone()
                    }
                    None => {
                        // Gone from the queue (MinJobAge passed, or never seen): the cache decides later.
                        misses[i] += 1;
                        if misses[i] < 5 || started.elapsed() < Duration::from_secs(5) {
                            continue;
                        }
                        QueueState {
                            state: "UNKNOWN".into(),
                            reason: "no longer in squeue".into(),
                        }
                    }
                };
                if q.state == "PENDING"
                    && q.reason == "DependencyNeverSatisfied"
                    && cancelled.insert(id.clone())
                {
                    // Never left pending forever: its input failed.
                    let _ = Command::new(record::program("scancel")).arg(&id).status();
                }
                if q != last[i] {
                    let shown = record::show_state(&q);
                    if shown != self.record.instances[r].state {
                        self.announce(i, &id, &q);
                        self.record.instances[r].state = shown;
                        changed = true;
                    }
                    last[i] = q.clone();
                }
                if record::is_final(&q.state) {
                    done[i] = true;
                }
            }
            if changed {
                self.save();
            }
            if done.iter().all(|d| *d) {
                return Ok(last);
            }
            self.sleep();
        }
    }

    fn sleep(&self) {
        let until = Instant::now() + self.poll;
        while Instant::now() < until && !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn announce(&self, i: usize, id: &str, q: &QueueState) {
        let label = &self.nodes[i].label;
        match q.state.as_str() {
            "RUNNING" => progress::println(&format!("  start {label:<24} job {id}")),
            "COMPLETED" => progress::println(&format!("  done  {label:<24} job {id}")),
            "PENDING" | "CONFIGURING" | "COMPLETING" => {}
            "CANCELLED" if q.reason == "DependencyNeverSatisfied" => progress::println(&format!(
                "  skip  {label:<24} job {id} cancelled: an input failed"
            )),
            other => progress::println(&format!(
                "  FAIL  {label:<24} job {id} {other} ({})",
                q.reason
            )),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the run's inputs and what was observed"
    )]
    fn summarize(
        &mut self,
        plan: &Plan,
        cache: &Cache,
        selected: &[NodeIndex],
        opts: &RunOptions,
        dry: &RunSummary,
        reasons: &BTreeMap<NodeIndex, String>,
        states: &[QueueState],
    ) -> RunSummary {
        // What the cache says now is the truth about what got computed.
        let after = super::run(
            plan,
            cache,
            selected,
            &RunOptions {
                dry_run: true,
                force: BTreeSet::new(),
                force_all: false,
                ..opts.clone()
            },
        );
        let mut bad: BTreeMap<NodeIndex, String> = BTreeMap::new();
        let mut outcomes = Vec::new();
        for ((n, before), now) in selected.iter().zip(&dry.outcomes).zip(&after.outcomes) {
            let Some(i) = self.node_index.iter().position(|x| x == n) else {
                outcomes.push(before.clone());
                continue;
            };
            let mut o = now.clone();
            let r = self.rec(i);
            let rec = self.record.instances[r].clone();
            let q = &states[i];
            let failed_input = plan.graph[*n]
                .inputs
                .values()
                .find(|u| bad.contains_key(u))
                .map(|u| plan.graph[*u].label.clone());
            if now.status == Status::Cached {
                o.status = Status::Ran(reasons[n].clone());
                o.seconds = o
                    .key
                    .as_ref()
                    .and_then(|k| match cache.lookup(k) {
                        Lookup::Valid(m) => Some(m.duration_s),
                        _ => None,
                    })
                    .unwrap_or(0.0);
                self.record.instances[r].state = "done".into();
            } else if let Some(u) = failed_input {
                o.status =
                    Status::Skipped(format!("input `{u}` failed (job {} cancelled)", rec.job));
                self.record.instances[r].state = "cancelled".into();
            } else if q.reason == "DependencyNeverSatisfied" {
                o.status = Status::Skipped(format!(
                    "job {} cancelled with its array: an input of another instance failed; rerun to compute it",
                    rec.job
                ));
                self.record.instances[r].state = "cancelled".into();
            } else {
                let what = if q.state == "COMPLETED" {
                    "completed but left no valid cache entry".to_string()
                } else {
                    format!("{} ({})", q.state, q.reason)
                };
                let msg = format!(
                    "job {} {what}; log {}:\n{}",
                    rec.job,
                    rec.log.display(),
                    log_tail(&rec.log, 12)
                );
                progress::println(&format!("  FAIL  {:<24} {msg}", o.label));
                o.status = Status::Failed(msg);
                self.record.instances[r].state = "failed".into();
            }
            if matches!(o.status, Status::Failed(_) | Status::Skipped(_)) {
                bad.insert(*n, o.label.clone());
            }
            outcomes.push(o);
        }
        self.record.state = if bad.is_empty() { "finished" } else { "failed" }.into();
        self.save();
        RunSummary { outcomes }
    }
}

/// The last `n` lines of a log (indented), or why there are none.
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (no log: {e})"),
    }
}
