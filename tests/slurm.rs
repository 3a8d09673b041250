//! The SLURM executor end to end: first against stand-in `sbatch` / `squeue` / `scancel` scripts on PATH
//! (fast, checks the submitted arguments, scripts and array indices), then against a real one-node SLURM
//! cluster (`../shared/slurm/start-slurm.sh`): a sweep, one job killed midway, a rerun, results bit-identical
//! to a local run and no key computed twice.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Project;

const SWEEP: &str = r#"
[pipeline]
name = "sw"

[stages.fixed]
kind = "dataset"
name = "ring"
n = 300

[stages.noisy]
kind = "dataset"
name = "two_peaks"
n = 200

[sweep]
seeds = 2
seed_key = "stages.noisy.seed"

[sweep.grid]
"stages.noisy.std" = [0.25, 0.5]

[slurm]
time = "0:10:00"
sbatch_args = ["--comment=eqflow test"]

[slurm.dataset]
cpus = 2
"#;

/// Stand-ins: `sbatch` runs each task at once (recording its arguments, script and log) and appends its final
/// state to `queue`, which `squeue` prints; `$FAKE_FAIL` names a task id that "fails" instead of running.
const FAKE_SBATCH: &str = r#"#!/bin/bash
set -u
F="$FAKE_SLURM"
id=$(( $(cat "$F/next" 2>/dev/null || echo 100) + 1 )); echo $id > "$F/next"
printf '%s\n' "$@" > "$F/sbatch.$id.args"
array=""; out=""
for a in "$@"; do case "$a" in --array=*) array=${a#--array=};; --output=*) out=${a#--output=};; esac; done
script="${@: -1}"
run_task() {
  local idx=$1 log tid st r
  if [ -n "$idx" ]; then log=${out//%A/$id}; log=${log//%a/$idx}; tid="${id}_$idx"; else log=${out//%j/$id}; tid=$id; fi
  if [ "${FAKE_FAIL:-}" = "$tid" ]; then
    echo "slurmstepd: *** JOB $tid CANCELLED (stand-in) ***" > "$log"
    echo "$id|${idx:-N/A}|FAILED|NonZeroExitCode" >> "$F/queue"; return
  fi
  if SLURM_ARRAY_TASK_ID=$idx SLURM_JOB_ID=$id bash "$script" > "$log" 2>&1; then st=COMPLETED; r=None; else st=FAILED; r=NonZeroExitCode; fi
  echo "$id|${idx:-N/A}|$st|$r" >> "$F/queue"
}
if [ -n "$array" ]; then
  for i in $(seq "${array%-*}" "${array#*-}"); do run_task "$i"; done
else
  run_task ""
fi
echo "$id"
"#;

fn stand_in(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let write = |name: &str, text: &str| {
        let p = bin.join(name);
        std::fs::write(&p, text).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write("sbatch", FAKE_SBATCH);
    write(
        "squeue",
        "#!/bin/bash\ncat \"$FAKE_SLURM/queue\" 2>/dev/null; true\n",
    );
    write(
        "scancel",
        "#!/bin/bash\necho \"$@\" >> \"$FAKE_SLURM/scancel.log\"\n",
    );
    bin
}

fn with_path(cmd: &mut std::process::Command, bin: &Path, fake: &Path) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .env("FAKE_SLURM", fake)
        .env_remove("EQFLOW_SBATCH")
        .env_remove("EQFLOW_SQUEUE")
        .env_remove("EQFLOW_SCANCEL");
}

/// Output files of every instance (name -> bytes), by label, via `eqflow show`.
fn outputs(
    p: &Project,
    file: &str,
    labels: &[String],
) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    labels
        .iter()
        .map(|l| {
            let dir = p.show(file, l);
            let files = std::fs::read_dir(&dir)
                .expect("entry dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "manifest.json" && n != "log.txt")
                .map(|n| {
                    let bytes = std::fs::read(dir.join(&n)).expect("read output");
                    (n, bytes)
                })
                .collect();
            (l.clone(), files)
        })
        .collect()
}

fn labels(run: &common::Run) -> Vec<String> {
    let mut v = run.ran();
    v.extend(run.cached());
    v.sort();
    v
}

#[test]
fn stand_in_sbatch_gets_one_array_per_stage_and_results_match_local() {
    let local = Project::new();
    let f = local.pipeline("s.toml", SWEEP);
    let l = local.run(&["run", &f, "--threads", "2"]);
    l.assert_ok();

    let p = Project::new();
    let f = p.pipeline("s.toml", SWEEP);
    let fake = p.path().join("fake");
    std::fs::create_dir_all(&fake).expect("mkdir");
    let bin = stand_in(&fake);
    let run = |args: &[&str], fail: Option<&str>| {
        let mut c = p.cmd(args);
        with_path(&mut c, &bin, &fake);
        if let Some(t) = fail {
            c.env("FAKE_FAIL", t);
        }
        common::Run::from(c.output().expect("spawn"))
    };

    // Task 102_1 (the second noisy instance) "fails": the stage fails with the job id and its log tail.
    let r = run(
        &["run", &f, "--executor", "slurm", "--threads", "2"],
        Some("102_1"),
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("FAILED"), "{}", r.stdout);
    assert!(r.stderr.contains("job 102_1 FAILED"), "{}", r.stderr);
    assert!(
        r.stderr.contains("| slurmstepd: *** JOB 102_1 CANCELLED"),
        "log tail: {}",
        r.stderr
    );
    assert_eq!(r.ran().len(), 4, "{}", r.stdout);

    let args = |id: u32| -> Vec<String> {
        std::fs::read_to_string(fake.join(format!("sbatch.{id}.args")))
            .expect("sbatch args")
            .lines()
            .map(String::from)
            .collect()
    };
    let fixed = args(101);
    assert!(
        fixed.contains(&"--parsable".into())
            && fixed.contains(&"--job-name=eqflow-sw-fixed".into()),
        "{fixed:?}"
    );
    assert!(
        !fixed.iter().any(|a| a.starts_with("--array")),
        "one instance: a plain job {fixed:?}"
    );
    let noisy = args(102);
    for want in [
        "--array=0-3",
        "--time=0:10:00",
        "--cpus-per-task=2",
        "--comment=eqflow test",
    ] {
        assert!(
            noisy.contains(&want.to_string()),
            "{want} missing from {noisy:?}"
        );
    }
    assert!(
        !noisy.iter().any(|a| a.starts_with("--dependency")),
        "no inputs, no dependency: {noisy:?}"
    );
    let script = std::fs::read_to_string(noisy.last().expect("script path")).expect("script");
    assert!(
        script.contains("  1) label='noisy[noisy.std=0.5,seed=0]' ;;"),
        "{script}"
    );
    assert!(script.contains("--executor local --cache"), "{script}");
    assert!(script.contains("--threads 2"), "{script}");
    let tsv = Path::new(noisy.last().expect("script")).with_extension("tasks.tsv");
    assert!(std::fs::read_to_string(tsv)
        .expect("tasks.tsv")
        .starts_with("0\tnoisy[noisy.std=0.25,seed=0]\n"));

    // The rerun submits only the failed instance, as a one-task job.
    let r = run(&["run", &f, "--executor", "slurm", "--threads", "2"], None);
    r.assert_ok();
    assert_eq!(r.ran(), vec!["noisy[noisy.std=0.5,seed=0]"], "{}", r.stdout);
    assert!(args(103).iter().all(|a| !a.starts_with("--array")));
    // Everything cached: nothing is submitted at all; the executor can come from the file.
    let text = SWEEP.replace("name = \"sw\"", "name = \"sw\"\nexecutor = \"slurm\"");
    p.pipeline("s.toml", &text);
    let r = run(&["run", &f, "--threads", "2"], None);
    r.assert_ok();
    assert!(r.ran().is_empty(), "{}", r.stdout);
    assert!(!fake.join("sbatch.104.args").exists());

    let all = labels(&r);
    assert_eq!(all.len(), 5);
    assert_eq!(
        outputs(&local, &f, &all),
        outputs(&p, &f, &all),
        "cluster and local outputs differ"
    );
}

#[test]
fn slurm_settings_are_validated_with_file_line_and_key() {
    let p = Project::new();
    let f = p.pipeline(
        "bad.toml",
        "[pipeline]\nexecutor = \"k8s\"\n[stages.a]\nkind = \"dataset\"\n[slurm]\ncpus = 0\ntiem = \"1:00\"\n[slurm.datset]\ncpus = 2\n[slurm.dataset]\nmem = \"lots\"\n",
    );
    let r = p.run(&["run", &f]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for needle in [
        "pipelines/bad.toml:2:",
        "pipeline.executor",
        "pipelines/bad.toml:6:",
        "slurm.cpus",
        "unknown key `tiem`",
        "did you mean `time`?",
        "did you mean `slurm.dataset`?",
        "slurm.dataset.mem",
    ] {
        assert!(
            r.stderr.contains(needle),
            "missing {needle:?} in\n{}",
            r.stderr
        );
    }
    // --set reaches the table too.
    let ok = p.pipeline("ok.toml", "[stages.a]\nkind = \"dataset\"\nn = 10\n");
    let r = p.run(&["run", &ok, "--set", "slurm.dataset.cpus=-1", "-n"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("slurm.dataset.cpus"), "{}", r.stderr);
}

// ---------------------------------------------------------------- the real cluster

fn slurm_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/slurm")
}

/// Starts the one-node cluster (a second or so when `.ci/run` already did), or says why the test is skipped.
fn cluster() -> Option<()> {
    let ci = std::env::var_os("CI").is_some();
    let start = slurm_scripts().join("start-slurm.sh");
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root || !start.is_file() {
        let why = if is_root {
            format!("{} not found", start.display())
        } else {
            "not root".to_string()
        };
        assert!(!ci, "CI is set, so the SLURM test must run, but: {why}");
        eprintln!(
            "SKIPPED: the real-SLURM test needs root and {}: {why}",
            start.display()
        );
        return None;
    }
    let out = std::process::Command::new("bash")
        .arg(&start)
        .env("SLURM_SMOKE", "0")
        .output()
        .expect("run start-slurm.sh");
    assert!(
        out.status.success(),
        "start-slurm.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

const BIG: &str = r#"
[pipeline]
name = "big"

[stages.fixed]
kind = "dataset"
name = "ring"
n = 1000

[stages.noisy]
kind = "dataset"
name = "two_peaks"
n = 200

[sweep]
seeds = 2
seed_key = "stages.noisy.seed"

[sweep.grid]
"stages.noisy.n" = [200, 6000000]
"#;

const VICTIM: &str = "noisy[noisy.n=6000000,seed=1]";

/// `(label, times its computation started)` over every job log of every run in the cache.
fn computations(cache: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for run in std::fs::read_dir(cache.join("slurm"))
        .expect("slurm dir")
        .flatten()
    {
        for log in std::fs::read_dir(run.path().join("logs"))
            .expect("logs")
            .flatten()
        {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix("  run   ") {
                    let label = rest.split_whitespace().next().unwrap_or("").to_string();
                    *counts.entry(label).or_insert(0) += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn real_slurm_sweep_survives_a_killed_job_and_matches_the_local_run() {
    if cluster().is_none() {
        return;
    }
    let t0 = Instant::now();
    let local = Project::new();
    let lf = local.pipeline("s.toml", BIG);
    local.run(&["run", &lf, "--threads", "2"]).assert_ok();

    let p = Project::new();
    let f = p.pipeline("s.toml", BIG);
    let child = p
        .cmd(&["run", &f, "--executor", "slurm", "--threads", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the victim is computing, check `eqflow status` from "another terminal", then kill its job.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (job, status) = loop {
        assert!(Instant::now() < deadline, "the victim never started");
        let record = std::fs::read_dir(p.cache().join("slurm"))
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("run.json")).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let victim = record.as_ref().and_then(|r| {
            r["instances"]
                .as_array()?
                .iter()
                .find(|i| i["label"] == VICTIM)
                .cloned()
        });
        if let Some(v) = victim {
            let log = std::fs::read_to_string(v["log"].as_str().expect("log")).unwrap_or_default();
            if log.contains(&format!("  run   {VICTIM}")) {
                let status = p.run(&["status", &f]);
                let job = v["job"].as_str().expect("job").to_string();
                let out = std::process::Command::new("scancel")
                    .arg(&job)
                    .output()
                    .expect("scancel");
                assert!(out.status.success());
                break (job, status);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    status.assert_ok();
    assert!(status.stdout.contains("slurm run"), "{}", status.stdout);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with(VICTIM) && l.contains(&job))
        .unwrap_or_else(|| panic!("status shows no job for the victim:\n{}", status.stdout));
    assert!(line.ends_with("running"), "{line}");

    let first = common::Run::from(child.wait_with_output().expect("wait"));
    assert_eq!(
        first.code, 1,
        "the killed job fails the run\n{}\n{}",
        first.stdout, first.stderr
    );
    assert!(
        first.stderr.contains(&format!("job {job} CANCELLED")),
        "{}",
        first.stderr
    );
    assert_eq!(first.ran().len(), 4, "{}", first.stdout);
    assert!(
        p.run(&["status", &f]).stdout.find("slurm run").is_none(),
        "no run in flight any more"
    );

    let second = p.run(&["run", &f, "--executor", "slurm", "--threads", "2"]);
    second.assert_ok();
    assert_eq!(second.ran(), vec![VICTIM], "{}", second.stdout);
    assert_eq!(second.cached().len(), 4, "{}", second.stdout);

    let all = labels(&second);
    assert_eq!(
        outputs(&local, &lf, &all),
        outputs(&p, &f, &all),
        "cluster and local outputs differ"
    );
    let counts = computations(&p.cache());
    for l in &all {
        let want = if l == VICTIM { 2 } else { 1 };
        assert_eq!(
            counts.get(l),
            Some(&want),
            "{l} computed {:?} times: {counts:?}",
            counts.get(l)
        );
    }
    assert_eq!(p.entries().len(), all.len());
    eprintln!("real SLURM test: {:.1} s", t0.elapsed().as_secs_f64());
}
