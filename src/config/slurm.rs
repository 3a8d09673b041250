//! The `[slurm]` table: what a cluster run asks SLURM for, by default and per stage kind.
//!
//! ```toml
//! [pipeline]
//! executor = "slurm"          # or `--executor slurm`
//!
//! [slurm]                     # defaults for every job
//! partition = "cpu"
//! time = "1:00:00"
//! cpus = 4
//! mem = "8G"
//! sbatch_args = ["--account=lab"]
//!
//! [slurm.dataset]             # per stage kind; overrides the defaults key by key
//! time = "0:10:00"
//! ```
//!
//! The table is flattened into dotted keys (`partition`, `dataset.cpus`) when read, so profiles and `--set`
//! override it like any other key (`--set slurm.dataset.cpus=8`). Nothing here enters a cache key.

use std::collections::BTreeMap;

use super::source::{suggest, Diagnostic, Diagnostics, Source};
use super::value::{Located, Value};
use crate::stages::all_kinds;

/// The executors a run can use.
pub const EXECUTORS: &[&str] = &["local", "slurm"];

/// Resource requests of one job (every field optional: unset means the cluster's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmResources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (`MM`, `HH:MM:SS`, `D-HH:MM`, ...).
    pub time: Option<String>,
    /// `--cpus-per-task`; also the job's `--threads`.
    pub cpus: Option<u32>,
    /// `--mem` (`4G`, `500M`, or an integer of megabytes).
    pub mem: Option<String>,
    /// `--gpus` (`1`, `a100:2`).
    pub gpus: Option<String>,
    /// Further sbatch arguments, appended verbatim (one argument per item).
    pub sbatch_args: Vec<String>,
}

impl SlurmResources {
    /// `self` with every field that `over` sets replaced; `sbatch_args` are concatenated.
    pub fn merged(&self, over: &SlurmResources) -> SlurmResources {
        SlurmResources {
            partition: over.partition.clone().or_else(|| self.partition.clone()),
            time: over.time.clone().or_else(|| self.time.clone()),
            cpus: over.cpus.or(self.cpus),
            mem: over.mem.clone().or_else(|| self.mem.clone()),
            gpus: over.gpus.clone().or_else(|| self.gpus.clone()),
            sbatch_args: self
                .sbatch_args
                .iter()
                .chain(&over.sbatch_args)
                .cloned()
                .collect(),
        }
    }
}

/// The validated `[slurm]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmConfig {
    /// Requests for every job.
    pub defaults: SlurmResources,
    /// Stage kind -> requests that override the defaults.
    pub kinds: BTreeMap<String, SlurmResources>,
    /// The `eqflow` binary on the compute nodes (default: the path of the submitting binary).
    pub eqflow: Option<String>,
    /// Seconds between `squeue` polls.
    pub poll_s: f64,
}

impl SlurmConfig {
    /// The requests for a job of stage kind `kind`.
    pub fn resources(&self, kind: &str) -> SlurmResources {
        match self.kinds.get(kind) {
            Some(k) => self.defaults.merged(k),
            None => self.defaults.clone(),
        }
    }
}

const RESOURCE_KEYS: &[&str] = &["partition", "time", "cpus", "mem", "gpus", "sbatch_args"];
const TOP_KEYS: &[&str] = &[
    "partition",
    "time",
    "cpus",
    "mem",
    "gpus",
    "sbatch_args",
    "eqflow",
    "poll_s",
];

/// Validates the flattened `[slurm]` entries (`partition`, `dataset.cpus`, ...), collecting every problem.
pub fn resolve_slurm(
    entries: &BTreeMap<String, Located<Value>>,
    diags: &mut Diagnostics,
) -> SlurmConfig {
    let mut cfg = SlurmConfig {
        poll_s: 0.5,
        ..SlurmConfig::default()
    };
    let kind_names: Vec<&str> = all_kinds().iter().map(|k| k.name()).collect();
    for (key, v) in entries {
        let full = format!("slurm.{key}");
        let err = |msg: String| Diagnostic::new(v.source.clone(), Some(full.clone()), msg);
        match key.split_once('.') {
            None => match key.as_str() {
                "eqflow" => match &v.value {
                    Value::Str(s) if !s.is_empty() => cfg.eqflow = Some(s.clone()),
                    other => diags.push(err(format!(
                        "must be the path of eqflow on the compute nodes, got {other}"
                    ))),
                },
                "poll_s" => match &v.value {
                    Value::Float(x) if (0.05..=60.0).contains(x) => cfg.poll_s = *x,
                    Value::Int(i) if (1..=60).contains(i) => cfg.poll_s = *i as f64,
                    other => diags.push(err(format!(
                        "must be a number of seconds between 0.05 and 60, got {other}"
                    ))),
                },
                k if RESOURCE_KEYS.contains(&k) => {
                    if let Err(msg) = set_resource(&mut cfg.defaults, k, &v.value) {
                        diags.push(err(msg));
                    }
                }
                k if kind_names.contains(&k) => diags.push(
                    err(format!(
                        "`{k}` is a stage kind: write its settings as a table"
                    ))
                    .with_help(format!(
                        "[slurm.{k}] with keys {}",
                        RESOURCE_KEYS.join(", ")
                    )),
                ),
                k => diags.push(unknown(
                    &v.source,
                    &full,
                    k,
                    &TOP_KEYS
                        .iter()
                        .copied()
                        .chain(kind_names.iter().copied())
                        .collect::<Vec<_>>(),
                )),
            },
            Some((kind, k)) => {
                if !kind_names.contains(&kind) {
                    let mut d = err(format!("`{kind}` is not a stage kind"));
                    d = match suggest(kind, kind_names.iter().copied()) {
                        Some(near) => d.with_help(format!("did you mean `slurm.{near}`?")),
                        None => d.with_help(format!(
                            "per-kind tables are [slurm.KIND]; kinds: {}",
                            kind_names.join(", ")
                        )),
                    };
                    diags.push(d);
                    continue;
                }
                if !RESOURCE_KEYS.contains(&k) {
                    diags.push(unknown(&v.source, &full, k, RESOURCE_KEYS));
                    continue;
                }
                let res = cfg.kinds.entry(kind.to_string()).or_default();
                if let Err(msg) = set_resource(res, k, &v.value) {
                    diags.push(err(msg));
                }
            }
        }
    }
    cfg
}

fn unknown(src: &Source, full: &str, key: &str, valid: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(
        src.clone(),
        Some(full.into()),
        format!("unknown key `{key}`"),
    );
    match suggest(key, valid.iter().copied()) {
        Some(near) => d.with_help(format!("did you mean `{near}`?")),
        None => d.with_help(format!("valid keys: {}", valid.join(", "))),
    }
}

/// A value that goes into one sbatch argument: non-empty, no whitespace.
fn word(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::Str(s) if !s.is_empty() && !s.chars().any(char::is_whitespace) => Ok(s.clone()),
        other => Err(format!("must be {what}, got {other}")),
    }
}

fn set_resource(res: &mut SlurmResources, key: &str, v: &Value) -> Result<(), String> {
    match key {
        "partition" => res.partition = Some(word(v, "a partition name")?),
        "time" => {
            let t = word(v, "a time limit such as \"30\", \"1:00:00\" or \"2-00:00\"")?;
            if !t.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '-') {
                return Err(format!(
                    "must be a time limit such as \"30\", \"1:00:00\" or \"2-00:00\", got \"{t}\""
                ));
            }
            res.time = Some(t);
        }
        "cpus" => match v {
            Value::Int(i) if (1..=4096).contains(i) => res.cpus = Some(*i as u32),
            other => return Err(format!("must be an integer from 1 to 4096, got {other}")),
        },
        "mem" => match v {
            Value::Int(i) if *i > 0 => res.mem = Some(i.to_string()),
            Value::Str(s)
                if s.len() > 1
                    && s[..s.len() - 1].chars().all(|c| c.is_ascii_digit())
                    && "KMGTkmgt".contains(&s[s.len() - 1..]) =>
            {
                res.mem = Some(s.clone())
            }
            other => {
                return Err(format!(
                    "must be a memory size such as \"4G\" or \"500M\" (or megabytes as an integer), got {other}"
                ))
            }
        },
        "gpus" => match v {
            Value::Int(i) if *i >= 0 => res.gpus = Some(i.to_string()),
            Value::Str(_) => res.gpus = Some(word(v, "a GPU count such as 1 or \"a100:2\"")?),
            other => return Err(format!("must be a GPU count such as 1 or \"a100:2\", got {other}")),
        },
        "sbatch_args" => match v {
            Value::List(items) => {
                let mut args = Vec::new();
                for it in items {
                    match it {
                        Value::Str(s) if s.starts_with('-') => args.push(s.clone()),
                        other => {
                            return Err(format!(
                                "must be a list of sbatch options such as [\"--account=lab\"], got item {other}"
                            ))
                        }
                    }
                }
                res.sbatch_args = args;
            }
            other => {
                return Err(format!(
                    "must be a list of sbatch options such as [\"--account=lab\"], got {other}"
                ))
            }
        },
        _ => unreachable!("caller checks RESOURCE_KEYS"),
    }
    Ok(())
}
