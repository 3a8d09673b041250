//! Forming SLURM jobs from the instances that must run: one job array per stage (its instances differ only
//! by sweep point), `afterok` dependencies between them, and the batch scripts and sbatch arguments.
//!
//! Everything here is pure (no processes, no files), so the array indices, dependency flags and script texts
//! are unit-tested directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::config::SlurmResources;

/// SLURM's default `MaxArraySize` is 1001: arrays hold at most this many tasks (indices 0..=999).
pub const MAX_ARRAY: usize = 1000;

/// One stage instance to run on the cluster.
#[derive(Debug, Clone)]
pub struct JobNode {
    /// Its instance label (`noisy[noisy.std=0.25,seed=1]`).
    pub label: String,
    /// Its stage name: instances of one stage form one array.
    pub stage: String,
    /// Its stage kind (selects the `[slurm.KIND]` settings).
    pub kind: String,
    /// Indices (into the node list) of the instances it reads that also run on the cluster.
    pub deps: Vec<usize>,
    /// `--force` this instance.
    pub forced: bool,
}

/// One submission: a job array (or a plain job when it has one member).
#[derive(Debug, Clone, PartialEq)]
pub struct JobGroup {
    /// The stage.
    pub stage: String,
    /// The stage kind.
    pub kind: String,
    /// Node indices; a member's array index is its position here.
    pub members: Vec<usize>,
    /// Groups that must finish first (indices into the group list; always earlier groups).
    pub after: Vec<usize>,
    /// Which chunk of a stage with more than [`MAX_ARRAY`] instances this is (0 otherwise).
    pub chunk: usize,
}

impl JobGroup {
    /// Whether it is submitted as a job array.
    pub fn is_array(&self) -> bool {
        self.members.len() > 1
    }

    /// A file-name-safe name: the stage name, plus the chunk number if the stage was split.
    pub fn file_stem(&self) -> String {
        let safe: String = self
            .stage
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.chunk > 0 {
            format!("{safe}.{}", self.chunk)
        } else {
            safe
        }
    }
}

/// Groups `nodes` (given in a topological order) into one array per stage, in order of first appearance.
pub fn form_groups(nodes: &[JobNode], max_array: usize) -> Vec<JobGroup> {
    let mut groups: Vec<JobGroup> = Vec::new();
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut group_of = vec![0usize; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let g = match open.get(n.stage.as_str()) {
            Some(&g) if groups[g].members.len() < max_array.max(1) => g,
            prev => {
                let chunk = prev.map_or(0, |&g| groups[g].chunk + 1);
                groups.push(JobGroup {
                    stage: n.stage.clone(),
                    kind: n.kind.clone(),
                    members: Vec::new(),
                    after: Vec::new(),
                    chunk,
                });
                open.insert(&n.stage, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[g].members.push(i);
        group_of[i] = g;
    }
    for g in &mut groups {
        let after: BTreeSet<usize> = g
            .members
            .iter()
            .flat_map(|&m| nodes[m].deps.iter().map(|&d| group_of[d]))
            .collect();
        g.after = after.into_iter().collect();
    }
    groups
}

/// The SLURM job id of node `member` of a submitted group: `ARRAY_INDEX` for arrays, `JOB` otherwise.
pub fn task_id(group: &JobGroup, job_id: &str, member: usize) -> String {
    if group.is_array() {
        let idx = group
            .members
            .iter()
            .position(|&m| m == member)
            .expect("member of its group");
        format!("{job_id}_{idx}")
    } else {
        job_id.to_string()
    }
}

/// The `--dependency` value for `group`: `afterok` on exactly the upstream tasks its members read (a whole
/// upstream array when every one of its tasks is needed). `None` without upstream jobs.
pub fn dependency(
    nodes: &[JobNode],
    groups: &[JobGroup],
    group: &JobGroup,
    job_ids: &[String],
) -> Option<String> {
    let needed: BTreeSet<usize> = group
        .members
        .iter()
        .flat_map(|&m| nodes[m].deps.iter().copied())
        .collect();
    if needed.is_empty() {
        return None;
    }
    let mut ids = Vec::new();
    for &g in &group.after {
        let up = &groups[g];
        if up.members.iter().all(|m| needed.contains(m)) {
            ids.push(job_ids[g].clone());
        } else {
            ids.extend(
                up.members
                    .iter()
                    .filter(|m| needed.contains(m))
                    .map(|&m| task_id(up, &job_ids[g], m)),
            );
        }
    }
    Some(format!("afterok:{}", ids.join(":")))
}

/// Quotes `s` for a POSIX shell (single quotes; a `'` becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What every job script of a run shares.
#[derive(Debug, Clone)]
pub struct ScriptContext<'a> {
    /// The eqflow binary on the compute nodes.
    pub eqflow: &'a str,
    /// The directory the job runs in (the submitting directory).
    pub workdir: &'a Path,
    /// Arguments after `eqflow run FILE LABEL` (cache, profile, sets, threads).
    pub args: &'a [String],
    /// The pipeline file (absolute).
    pub pipeline: &'a Path,
}

/// The batch script of `group`: picks the instance by `$SLURM_ARRAY_TASK_ID` and runs `eqflow` on it.
pub fn script(
    ctx: &ScriptContext<'_>,
    nodes: &[JobNode],
    group: &JobGroup,
    sbatch: &[String],
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(
        s,
        "# eqflow job for stage `{}` ({} instance(s)); one array task per instance.",
        group.stage,
        group.members.len()
    );
    let _ = writeln!(
        s,
        "# submitted as: sbatch {}",
        sbatch
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    s.push_str("set -euo pipefail\n");
    let _ = writeln!(s, "cd {}", sh_quote(&ctx.workdir.to_string_lossy()));
    s.push_str("force=()\n");
    s.push_str("case \"${SLURM_ARRAY_TASK_ID:-0}\" in\n");
    for (idx, &m) in group.members.iter().enumerate() {
        let label = sh_quote(&nodes[m].label);
        if nodes[m].forced {
            let _ = writeln!(s, "  {idx}) label={label}; force=(--force {label}) ;;");
        } else {
            let _ = writeln!(s, "  {idx}) label={label} ;;");
        }
    }
    s.push_str(
        "  *) echo \"eqflow: no stage instance for array index ${SLURM_ARRAY_TASK_ID:-0}\" >&2; exit 2 ;;\nesac\n",
    );
    s.push_str("echo \"eqflow: $label on $(hostname) (job ${SLURM_JOB_ID:-?})\" >&2\n");
    let _ = writeln!(
        s,
        "exec {} run {} \"$label\" --executor local {} ${{force[@]+\"${{force[@]}}\"}}",
        sh_quote(ctx.eqflow),
        sh_quote(&ctx.pipeline.to_string_lossy()),
        ctx.args
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    s
}

/// The tab-separated `index<TAB>label` map written beside each script for people.
pub fn task_map(nodes: &[JobNode], group: &JobGroup) -> String {
    group
        .members
        .iter()
        .enumerate()
        .map(|(i, &m)| format!("{i}\t{}\n", nodes[m].label))
        .collect()
}

/// The sbatch arguments of `group` (before the script path).
pub fn sbatch_args(
    group: &JobGroup,
    res: &SlurmResources,
    job_name: &str,
    log_dir: &Path,
    dependency: Option<&str>,
) -> Vec<String> {
    let mut a = vec!["--parsable".to_string(), format!("--job-name={job_name}")];
    let stem = group.file_stem();
    if group.is_array() {
        a.push(format!("--array=0-{}", group.members.len() - 1));
        a.push(format!("--output={}/{stem}-%A_%a.log", log_dir.display()));
    } else {
        a.push(format!("--output={}/{stem}-%j.log", log_dir.display()));
    }
    if let Some(d) = dependency {
        a.push(format!("--dependency={d}"));
        a.push("--kill-on-invalid-dep=yes".into());
    }
    if let Some(p) = &res.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(t) = &res.time {
        a.push(format!("--time={t}"));
    }
    if let Some(c) = res.cpus {
        a.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &res.mem {
        a.push(format!("--mem={m}"));
    }
    if let Some(g) = &res.gpus {
        a.push(format!("--gpus={g}"));
    }
    a.extend(res.sbatch_args.iter().cloned());
    a
}

/// The log file of one task (the `--output` pattern above, filled in).
pub fn log_path(
    group: &JobGroup,
    log_dir: &Path,
    job_id: &str,
    member: usize,
) -> std::path::PathBuf {
    let stem = group.file_stem();
    if group.is_array() {
        let idx = group
            .members
            .iter()
            .position(|&m| m == member)
            .expect("member");
        log_dir.join(format!("{stem}-{job_id}_{idx}.log"))
    } else {
        log_dir.join(format!("{stem}-{job_id}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(label: &str, stage: &str, deps: &[usize]) -> JobNode {
        JobNode {
            label: label.into(),
            stage: stage.into(),
            kind: "dataset".into(),
            deps: deps.to_vec(),
            forced: false,
        }
    }

    /// data (1) -> train[seed=0..2] (3) -> eval[seed=0..2] (3), plus a report reading every eval.
    fn sweep() -> Vec<JobNode> {
        vec![
            node("data", "data", &[]),
            node("train[seed=0]", "train", &[0]),
            node("train[seed=1]", "train", &[0]),
            node("train[seed=2]", "train", &[0]),
            node("eval[seed=0]", "eval", &[1]),
            node("eval[seed=1]", "eval", &[2]),
            node("eval[seed=2]", "eval", &[3]),
            node("report", "report", &[4, 5, 6]),
        ]
    }

    #[test]
    fn one_array_per_stage_with_afterok_on_what_it_reads() {
        let nodes = sweep();
        let groups = form_groups(&nodes, MAX_ARRAY);
        let summary: Vec<(&str, Vec<usize>, Vec<usize>)> = groups
            .iter()
            .map(|g| (g.stage.as_str(), g.members.clone(), g.after.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("data", vec![0], vec![]),
                ("train", vec![1, 2, 3], vec![0]),
                ("eval", vec![4, 5, 6], vec![1]),
                ("report", vec![7], vec![2]),
            ]
        );
        let ids: Vec<String> = ["10", "11", "12", "13"].map(String::from).to_vec();
        assert_eq!(dependency(&nodes, &groups, &groups[0], &ids), None);
        assert_eq!(
            dependency(&nodes, &groups, &groups[1], &ids).as_deref(),
            Some("afterok:10")
        );
        assert_eq!(
            dependency(&nodes, &groups, &groups[2], &ids).as_deref(),
            Some("afterok:11")
        );
        assert_eq!(
            dependency(&nodes, &groups, &groups[3], &ids).as_deref(),
            Some("afterok:12")
        );
        assert_eq!(task_id(&groups[1], "11", 3), "11_2");
        assert_eq!(task_id(&groups[0], "10", 0), "10");
    }

    #[test]
    fn partial_upstream_arrays_are_named_task_by_task() {
        let mut nodes = sweep();
        // Only the first two evals run (the third is cached): they need train tasks 0 and 1 only.
        nodes.truncate(6);
        nodes.push(node("summary", "summary", &[4]));
        let mut only_some = nodes.clone();
        only_some[4].deps = vec![1];
        only_some[5].deps = vec![2];
        let groups = form_groups(&only_some, MAX_ARRAY);
        let ids: Vec<String> = ["20", "21", "22", "23"].map(String::from).to_vec();
        assert_eq!(
            dependency(&only_some, &groups, &groups[2], &ids).as_deref(),
            Some("afterok:21_0:21_1")
        );
        assert_eq!(
            dependency(&only_some, &groups, &groups[3], &ids).as_deref(),
            Some("afterok:22_0")
        );
    }

    #[test]
    fn big_stages_are_split_into_arrays_of_at_most_max() {
        let nodes: Vec<JobNode> = (0..5)
            .map(|i| node(&format!("s[i={i}]"), "s", &[]))
            .collect();
        let groups = form_groups(&nodes, 2);
        let sizes: Vec<(usize, usize)> =
            groups.iter().map(|g| (g.members.len(), g.chunk)).collect();
        assert_eq!(sizes, vec![(2, 0), (2, 1), (1, 2)]);
        assert_eq!(groups[1].file_stem(), "s.1");
    }

    #[test]
    fn sbatch_arguments_carry_array_dependency_and_resources() {
        let nodes = sweep();
        let groups = form_groups(&nodes, MAX_ARRAY);
        let res = SlurmResources {
            partition: Some("gpu".into()),
            time: Some("0:10:00".into()),
            cpus: Some(4),
            mem: Some("8G".into()),
            gpus: Some("1".into()),
            sbatch_args: vec!["--account=lab".into()],
        };
        let a = sbatch_args(
            &groups[1],
            &res,
            "eqflow-demo-train",
            Path::new("/c/slurm/r/logs"),
            Some("afterok:10"),
        );
        assert_eq!(
            a,
            [
                "--parsable",
                "--job-name=eqflow-demo-train",
                "--array=0-2",
                "--output=/c/slurm/r/logs/train-%A_%a.log",
                "--dependency=afterok:10",
                "--kill-on-invalid-dep=yes",
                "--partition=gpu",
                "--time=0:10:00",
                "--cpus-per-task=4",
                "--mem=8G",
                "--gpus=1",
                "--account=lab",
            ]
        );
        let single = sbatch_args(
            &groups[0],
            &SlurmResources::default(),
            "j",
            Path::new("/l"),
            None,
        );
        assert_eq!(
            single,
            ["--parsable", "--job-name=j", "--output=/l/data-%j.log"]
        );
        assert_eq!(
            log_path(&groups[1], Path::new("/l"), "11", 2),
            Path::new("/l/train-11_1.log")
        );
    }

    #[test]
    fn scripts_quote_labels_and_pick_them_by_array_index() {
        let mut nodes = vec![
            node("noisy[noisy.std=0.25,seed=1]", "noisy", &[]),
            node("noisy[name=it's]", "noisy", &[]),
        ];
        nodes[1].forced = true;
        let groups = form_groups(&nodes, MAX_ARRAY);
        let args = vec!["--cache".to_string(), "/shared/my cache".to_string()];
        let ctx = ScriptContext {
            eqflow: "/opt/eqflow",
            workdir: Path::new("/home/u/proj"),
            args: &args,
            pipeline: Path::new("/home/u/proj/pipelines/s.toml"),
        };
        let text = script(&ctx, &nodes, &groups[0], &["--array=0-1".into()]);
        assert!(text.starts_with("#!/bin/bash\n"), "{text}");
        assert!(
            text.contains("  0) label='noisy[noisy.std=0.25,seed=1]' ;;\n"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"  1) label='noisy[name=it'\''s]'; force=(--force 'noisy[name=it'\''s]') ;;"#
            ),
            "{text}"
        );
        assert!(
            text.contains("exec /opt/eqflow run /home/u/proj/pipelines/s.toml \"$label\" --executor local --cache '/shared/my cache'"),
            "{text}"
        );
        assert_eq!(
            task_map(&nodes, &groups[0]),
            "0\tnoisy[noisy.std=0.25,seed=1]\n1\tnoisy[name=it's]\n"
        );
        // The script really selects the label (bash parses it).
        let probe = text.replace("exec /opt/eqflow", "printf '%s|' /opt/eqflow");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(probe.replace("cd /home/u/proj\n", ""))
            .env("SLURM_ARRAY_TASK_ID", "1")
            .output()
            .expect("bash");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/opt/eqflow|run|/home/u/proj/pipelines/s.toml|noisy[name=it's]|--executor|local|--cache|/shared/my cache|--force|noisy[name=it's]|"
        );
    }
}
