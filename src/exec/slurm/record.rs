//! The record of a cluster run (`<cache>/slurm/<run-id>/run.json`) and the queue as `squeue` shows it.
//!
//! The submitting process rewrites the record whenever a job changes state, so `eqflow status` in another
//! terminal can show submitted / running / done per instance with job ids. Job states come from `squeue`
//! alone (no accounting database): `-t all` keeps finished jobs visible for the cluster's MinJobAge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One submitted instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance label.
    pub label: String,
    /// SLURM id of its task: `ARRAY_INDEX` or `JOB`.
    pub job: String,
    /// The batch script.
    pub script: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// Last state seen: submitted, running, done, failed, cancelled, ...
    pub state: String,
}

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Directory name under `<cache>/slurm/`.
    pub run_id: String,
    /// The pipeline file (absolute).
    pub pipeline: PathBuf,
    /// The submitting process and its host.
    pub pid: u32,
    /// Host of the submitting process.
    pub host: String,
    /// `running`, `finished`, `failed` or `interrupted`.
    pub state: String,
    /// Submitted instances in submission order.
    pub instances: Vec<InstanceRecord>,
}

impl RunRecord {
    /// Writes `dir/run.json` atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join(format!("run.json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::rename(&tmp, dir.join("run.json"))?;
        Ok(())
    }

    /// Whether the submitting process still runs (always assumed when it ran on another host).
    pub fn submitter_alive(&self) -> bool {
        self.host != crate::exec::hostname() || Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// The records of runs of `pipeline` still marked running, newest first.
pub fn in_flight(cache_root: &Path, pipeline: &Path) -> Vec<(PathBuf, RunRecord)> {
    let want = std::fs::canonicalize(pipeline).unwrap_or_else(|_| pipeline.to_path_buf());
    let Ok(rd) = std::fs::read_dir(cache_root.join("slurm")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, RunRecord)> = rd
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("run.json")).ok()?;
            let r: RunRecord = serde_json::from_str(&text).ok()?;
            (r.pipeline == want && r.state == "running").then(|| (e.path(), r))
        })
        .collect();
    out.sort_by(|a, b| b.1.run_id.cmp(&a.1.run_id));
    out
}

/// The program to run for a SLURM command: `$EQFLOW_SBATCH` (etc.) if set, else the name on PATH.
pub fn program(name: &str) -> String {
    std::env::var(format!("EQFLOW_{}", name.to_ascii_uppercase())).unwrap_or_else(|_| name.into())
}

/// A task's state in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...
    pub state: String,
    /// `%r`: why it is pending or how it ended (`DependencyNeverSatisfied`, `NonZeroExitCode`, ...).
    pub reason: String,
}

/// Every task of the user's jobs that `squeue` knows, by task id (`ARRAY_INDEX` or `JOB`).
pub fn squeue() -> anyhow::Result<BTreeMap<String, QueueState>> {
    let out = Command::new(program("squeue"))
        .args(["-h", "-r", "-t", "all", "--me", "-o", "%F|%K|%T|%r"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run squeue: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `squeue -h -r -o '%F|%K|%T|%r'` lines (array job id, task id or `N/A`, state, reason).
pub fn parse_squeue(text: &str) -> BTreeMap<String, QueueState> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let (job, task, state) = (f.next()?, f.next()?, f.next()?);
            let reason = f.next().unwrap_or("").to_string();
            let id = if task.is_empty() || task == "N/A" || task == "(null)" {
                job.to_string()
            } else {
                format!("{job}_{task}")
            };
            Some((
                id,
                QueueState {
                    state: state.to_string(),
                    reason,
                },
            ))
        })
        .collect()
}

/// Whether a job in `state` is finished for good.
pub fn is_final(state: &str) -> bool {
    !matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESIZING"
            | "SUSPENDED"
            | "STOPPED"
            | "SIGNALING"
            | "STAGE_OUT"
    )
}

/// The word `eqflow status` shows for a queue state.
pub fn show_state(q: &QueueState) -> String {
    match q.state.as_str() {
        "PENDING" if q.reason == "DependencyNeverSatisfied" => "doomed (input failed)".into(),
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" => "submitted".into(),
        "RUNNING" | "CONFIGURING" | "COMPLETING" => "running".into(),
        "COMPLETED" => "done".into(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_map_to_task_ids() {
        let q = parse_squeue(
            "41|N/A|COMPLETED|None\n42|0|RUNNING|None\n42|1|PENDING|Resources\n43|N/A|PENDING|DependencyNeverSatisfied\n",
        );
        assert_eq!(q["41"].state, "COMPLETED");
        assert_eq!(q["42_1"].reason, "Resources");
        assert_eq!(show_state(&q["42_0"]), "running");
        assert_eq!(show_state(&q["42_1"]), "submitted");
        assert_eq!(show_state(&q["43"]), "doomed (input failed)");
        assert!(is_final("CANCELLED") && is_final("TIMEOUT") && !is_final("COMPLETING"));
    }
}
