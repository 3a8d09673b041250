//! The pipeline engine end to end through the real binary: caching, reasons, forcing, dry runs, crashes,
//! corruption, concurrency, configuration errors and sweeps. Stages are real (the point-dataset generator).

mod common;

use common::Project;

const TWO: &str = r#"
[pipeline]
name = "demo"
seed = 1

[stages.ring]
kind = "dataset"
name = "ring"
n = 2000

[stages.peaks]
kind = "dataset"
name = "two_peaks"
n = 1000
"#;

#[test]
fn rerun_with_nothing_changed_recomputes_nothing() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    let first = p.run(&["run", &f]);
    first.assert_ok();
    assert_eq!(first.ran(), vec!["peaks", "ring"]);
    assert!(first.stderr.contains("not cached yet"), "{}", first.stderr);
    let second = p.run(&["run", &f]);
    second.assert_ok();
    assert!(second.ran().is_empty(), "{}", second.stdout);
    assert_eq!(second.cached(), vec!["peaks", "ring"]);
    assert_eq!(p.entries().len(), 2);
    // Stages compute on `--threads` workers (the harness sets EQFLOW_THREADS=2), not on the `--jobs` pool.
    let log = std::fs::read_to_string(p.show(&f, "ring").join("log.txt")).expect("log");
    assert!(log.contains("(2 compute threads)"), "{log}");
    // Every entry has its manifest, log and metrics.
    for e in p.entries() {
        for f in [
            "manifest.json",
            "log.txt",
            "metrics.json",
            "data.safetensors",
            "data.npy",
        ] {
            assert!(e.join(f).is_file(), "{} lacks {f}", e.display());
        }
    }
}

#[test]
fn changed_parameter_reruns_that_stage_and_says_why() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    p.run(&["run", &f]).assert_ok();
    let r = p.run(&["run", &f, "--set", "stages.ring.n=500"]);
    r.assert_ok();
    assert_eq!(r.ran(), vec!["ring"]);
    assert_eq!(r.cached(), vec!["peaks"]);
    assert!(r.stderr.contains("n: 2000 -> 500"), "{}", r.stderr);
    // Back to the file's value: the old entry is still there.
    let back = p.run(&["run", &f]);
    assert!(back.ran().is_empty(), "{}", back.stdout);
}

#[test]
fn reformatting_and_reordering_invalidate_nothing() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    p.run(&["run", &f]).assert_ok();
    let reordered = r#"
# same pipeline, written differently
[stages.peaks]
n    = 1_000
name = "two_peaks"     # a comment
kind = "dataset"
std = 0.5              # the default, spelled out

[pipeline]
seed = 1
name = "demo"

[stages.ring]
kind = "dataset"
name = "ring"
n = 2000
"#;
    p.pipeline("demo.toml", reordered);
    let r = p.run(&["run", &f]);
    r.assert_ok();
    assert!(r.ran().is_empty(), "{}", r.stdout);
}

#[test]
fn force_and_dry_run() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    let dry = p.run(&["run", &f, "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout.contains("will run") && dry.stdout.contains("not cached yet"),
        "{}",
        dry.stdout
    );
    assert!(!p.cache().exists(), "a dry run must write nothing");
    p.run(&["run", &f]).assert_ok();
    let forced = p.run(&["run", &f, "--force", "ring"]);
    forced.assert_ok();
    assert_eq!(forced.ran(), vec!["ring"]);
    assert!(forced.stdout.contains("forced"), "{}", forced.stdout);
    let all = p.run(&["run", &f, "--force-all"]);
    assert_eq!(all.ran(), vec!["peaks", "ring"]);
    let bad = p.run(&["run", &f, "--force", "rign"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("did you mean `ring`"), "{}", bad.stderr);
    // Targets run only what they need.
    let p2 = Project::new();
    let f2 = p2.pipeline("demo.toml", TWO);
    let t = p2.run(&["run", &f2, "peaks"]);
    t.assert_ok();
    assert_eq!(t.ran(), vec!["peaks"]);
    assert_eq!(p2.entries().len(), 1);
}

#[test]
fn outputs_are_bit_identical_across_runs_and_caches() {
    let a = Project::new();
    let b = Project::new();
    let fa = a.pipeline("demo.toml", TWO);
    let fb = b.pipeline("demo.toml", TWO);
    a.run(&["run", &fa]).assert_ok();
    b.run(&["run", &fb, "-j", "2"]).assert_ok();
    let names = |p: &Project| {
        p.entries()
            .iter()
            .map(|e| e.file_name().expect("name").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&a), names(&b), "same keys");
    for (ea, eb) in a.entries().iter().zip(b.entries()) {
        let ha = std::fs::read(ea.join("data.safetensors")).expect("read");
        let hb = std::fs::read(eb.join("data.safetensors")).expect("read");
        assert!(ha == hb, "outputs differ in {}", ea.display());
    }
}

#[test]
fn flipped_byte_is_detected_and_recomputed() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    p.run(&["run", &f]).assert_ok();
    let dir = p.show(&f, "ring");
    let path = dir.join("data.npy");
    let good = std::fs::read(&path).expect("read");
    let mut bad = good.clone();
    let i = bad.len() - 3;
    bad[i] ^= 0x40;
    std::fs::write(&path, &bad).expect("write");
    let r = p.run(&["run", &f]);
    r.assert_ok();
    assert_eq!(r.ran(), vec!["ring"]);
    assert!(
        r.stderr.contains("corrupt") && r.stderr.contains("data.npy"),
        "{}",
        r.stderr
    );
    assert!(
        std::fs::read(&path).expect("read") == good,
        "recomputed output equals the original"
    );
    let status = p.run(&["status", &f]);
    assert!(
        status.stdout.contains("ring") && !status.stdout.contains("stale"),
        "{}",
        status.stdout
    );
}

#[test]
fn killed_run_leaves_no_complete_looking_entry() {
    let p = Project::new();
    // Big enough that the stage is still writing when we kill it.
    let f = p.pipeline(
        "big.toml",
        "[stages.big]\nkind = \"dataset\"\nname = \"ring\"\nn = 4000000\n",
    );
    let mut child = p
        .cmd(&["run", &f])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let tmp = p.cache().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&tmp)
        .map(|rd| rd.count() == 0)
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(
        p.entries().is_empty(),
        "an interrupted stage must not leave an entry: {:?}",
        p.entries()
    );
    let r = p.run(&["run", &f]);
    r.assert_ok();
    assert_eq!(r.ran(), vec!["big"]);
    assert_eq!(p.entries().len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").collect();
    assert!(
        leftovers.is_empty(),
        "debris of the killed run is cleaned up: {leftovers:?}"
    );
}

#[test]
fn concurrent_runs_compute_each_key_once() {
    let p = Project::new();
    let f = p.pipeline(
        "c.toml",
        "[stages.a]\nkind = \"dataset\"\nname = \"ring\"\nn = 1500000\n[stages.b]\nkind = \"dataset\"\nname = \"two_peaks\"\nn = 1500000\n",
    );
    let spawn = || {
        p.cmd(&["run", &f])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (c1, c2) = (spawn(), spawn());
    let r1 = common::Run::from(c1.wait_with_output().expect("wait"));
    let r2 = common::Run::from(c2.wait_with_output().expect("wait"));
    r1.assert_ok();
    r2.assert_ok();
    let mut ran = r1.ran();
    ran.extend(r2.ran());
    ran.sort();
    assert_eq!(
        ran,
        vec!["a", "b"],
        "each key computed exactly once\n{}\n{}",
        r1.stdout,
        r2.stdout
    );
    assert_eq!(p.entries().len(), 2);
    let again = p.run(&["run", &f]);
    assert!(again.ran().is_empty());
}

fn assert_config_error(p: &Project, file: &str, needles: &[&str]) {
    let r = p.run(&["run", file]);
    assert_eq!(r.code, 2, "invalid pipelines exit with 2\n{}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "expected `{n}` in:\n{}", r.stderr);
    }
    assert!(
        !p.cache().exists(),
        "nothing may be written to the cache for an invalid pipeline"
    );
}

#[test]
fn configuration_errors_name_file_line_and_key() {
    let p = Project::new();
    let f = p.pipeline("m.toml", "[stages.a\nkind = \"dataset\"\n");
    assert_config_error(&p, &f, &["pipelines/m.toml:1:", "malformed TOML"]);
    let f = p.pipeline(
        "u.toml",
        "[stages.a]\nkind = \"dataset\"\nname = \"ring\"\nsdt = 0.3\n",
    );
    assert_config_error(
        &p,
        &f,
        &[
            "pipelines/u.toml:4:1",
            "key `stages.a.sdt`",
            "unknown key `sdt`",
            "did you mean `std`?",
            "4 | sdt = 0.3",
        ],
    );
    let f = p.pipeline("t.toml", "[stages.a]\nkind = \"dataset\"\nn = \"many\"\n");
    assert_config_error(
        &p,
        &f,
        &[
            "pipelines/t.toml:3:5",
            "key `stages.a.n`",
            "expected an integer",
        ],
    );
    let f = p.pipeline("r.toml", "[stages.a]\nkind = \"dataset\"\nnoise = -1.0\n");
    assert_config_error(
        &p,
        &f,
        &[
            "pipelines/r.toml:3:9",
            "key `stages.a.noise`",
            "must be >= 0",
        ],
    );
    let f = p.pipeline("k.toml", "[stages.a]\nkind = \"datset\"\n");
    assert_config_error(
        &p,
        &f,
        &[
            "pipelines/k.toml:2:8",
            "unknown stage kind \"datset\"",
            "did you mean \"dataset\"?",
        ],
    );
    let f = p.pipeline(
        "s.toml",
        "[stages.a]\nkind = \"dataset\"\n[pipeline]\nseed = 1\n",
    );
    let r = p.run(&["run", &f, "--set", "stages.a.n=-3"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--set stages.a.n=-3") && r.stderr.contains("must be >= 0"),
        "{}",
        r.stderr
    );
    let r = p.run(&["run", &f, "--profile", "paper"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no profile `paper`"), "{}", r.stderr);
    // All problems are reported at once.
    let f = p.pipeline(
        "many.toml",
        "[stages.a]\nkind = \"dataset\"\nn = -1\nstd = 0\n[stages.b]\nkind = \"nope\"\n",
    );
    let r = p.run(&["run", &f]);
    assert!(
        r.stderr.contains("3 errors in the pipeline"),
        "{}",
        r.stderr
    );
    assert!(!p.cache().exists());
}

#[test]
fn profiles_and_sets_override_keys() {
    let p = Project::new();
    let f = p.pipeline(
        "p.toml",
        "[stages.a]\nkind = \"dataset\"\nname = \"ring\"\nn = 100\n[profiles.big.stages.a]\nn = 300\n[profiles.huge]\nstages.a.n = 900\n",
    );
    p.run(&["run", &f, "--profile", "big"]).assert_ok();
    let res = p.run(&["results", &f, "--profile", "big", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&res.stdout).expect("json");
    assert_eq!(v["instances"][0]["metrics"]["n"], 300.0);
    let r = p.run(&[
        "run",
        &f,
        "--profile",
        "huge",
        "--set",
        "stages.a.n=50",
        "--dry-run",
    ]);
    assert!(
        r.stdout.contains("n: 300 -> 50"),
        "--set wins over the profile: {}",
        r.stdout
    );
}

#[test]
fn sweeps_multiply_only_swept_stages_and_aggregate_over_seeds() {
    let p = Project::new();
    let f = p.pipeline(
        "s.toml",
        r#"
[stages.fixed]
kind = "dataset"
name = "ring"
n = 100

[stages.noisy]
kind = "dataset"
name = "two_peaks"
n = 200

[sweep]
seeds = 3
seed_key = "stages.noisy.seed"

[sweep.grid]
"stages.noisy.std" = [0.25, 0.5]
"#,
    );
    let r = p.run(&["run", &f]);
    r.assert_ok();
    assert_eq!(r.ran().len(), 1 + 6, "{}", r.stdout);
    assert!(
        r.stdout.contains("noisy[noisy.std=0.25,seed=2]"),
        "{}",
        r.stdout
    );
    let res = p.run(&["results", &f, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&res.stdout).expect("json");
    let aggs = v["aggregates"].as_array().expect("aggregates");
    assert_eq!(aggs.len(), 2, "{aggs:?}");
    assert_eq!(aggs[0]["n"], 3);
    assert_eq!(aggs[0]["metrics"]["n"]["mean"], 200.0);
    // Growing the sweep reuses every existing point.
    let f2 = p.pipeline(
        "s.toml",
        &std::fs::read_to_string(p.path().join(&f))
            .expect("read")
            .replace("seeds = 3", "seeds = 4"),
    );
    let r = p.run(&["run", &f2]);
    assert_eq!(r.ran().len(), 2, "{}", r.stdout);
    // Profiles and --set reshape the sweep too.
    let r = p.run(&["run", &f2, "--set", "sweep.seeds=1", "--dry-run"]);
    assert_eq!(r.cached().len(), 1 + 2, "{}", r.stdout);
    let r = p.run(&[
        "run",
        &f2,
        "--set",
        "sweep.grid.stages.noisy.std=[0.25]",
        "--dry-run",
    ]);
    assert_eq!(r.cached().len(), 1 + 4, "{}", r.stdout);
    // A malformed sweep is an error with line and key.
    let p = Project::new();
    let bad = p.pipeline("bad.toml", "[stages.a]\nkind = \"dataset\"\n[sweep.zip]\n\"stages.a.n\" = [1, 2]\n\"stages.a.std\" = [0.1]\n");
    assert_config_error(
        &p,
        &bad,
        &["pipelines/bad.toml:5:", "zip axes must have equal lengths"],
    );
    let empty = p.pipeline(
        "empty.toml",
        "[stages.a]\nkind = \"dataset\"\n[sweep.grid]\n\"stages.a.n\" = []\n",
    );
    assert_config_error(&p, &empty, &["pipelines/empty.toml:4:", "empty axis"]);
    let unknown = p.pipeline(
        "unk.toml",
        "[stages.a]\nkind = \"dataset\"\n[sweep.grid]\n\"stages.a.nn\" = [1, 2]\n",
    );
    assert_config_error(
        &p,
        &unknown,
        &[
            "pipelines/unk.toml:4:",
            "unknown key `nn`",
            "did you mean `n`?",
        ],
    );
}

#[test]
fn gc_removes_only_unreachable_entries() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    p.run(&["run", &f]).assert_ok();
    p.run(&["run", &f, "--set", "stages.ring.n=10"]).assert_ok();
    assert_eq!(p.entries().len(), 3);
    let dry = p.run(&["gc", "--keep", &f, "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout.contains("would remove 1 unreachable entry"),
        "{}",
        dry.stdout
    );
    assert_eq!(p.entries().len(), 3);
    p.run(&["gc", "--keep", &f]).assert_ok();
    assert_eq!(p.entries().len(), 2);
    assert!(p.run(&["run", &f]).ran().is_empty());
}

#[test]
fn dag_status_and_show() {
    let p = Project::new();
    let f = p.pipeline("demo.toml", TWO);
    let st = p.run(&["status", &f]);
    assert!(st.stdout.contains("never run"), "{}", st.stdout);
    let show = p.run(&["show", &f, "ring"]);
    assert_eq!(show.code, 2);
    assert!(
        show.stderr
            .contains("not cached yet; run `eqflow run pipelines/demo.toml ring` first"),
        "{}",
        show.stderr
    );
    p.run(&["run", &f]).assert_ok();
    assert!(p.show(&f, "ring").join("data.safetensors").is_file());
    let dot = p.run(&["dag", &f, "--dot"]);
    assert!(dot.stdout.starts_with("digraph"), "{}", dot.stdout);
    let mm = p.run(&["dag", &f, "--mermaid"]);
    assert!(mm.stdout.starts_with("flowchart LR"), "{}", mm.stdout);
}

#[test]
fn a_failed_stage_stops_its_dependents_and_independent_branches_finish() {
    let p = Project::new();
    std::fs::write(p.path().join("pipelines/bad.csv"), "1,2\n3,oops\n").expect("write");
    let f = p.pipeline(
        "fail.toml",
        "[stages.user]\nkind = \"dataset\"\nname = \"points\"\npath = \"bad.csv\"\n\
         [stages.score]\nkind = \"train_score\"\ndata = \"user\"\nepochs = 1\n\
         [stages.other]\nkind = \"dataset\"\nname = \"ring\"\nn = 100\n",
    );
    let r = p.run(&["run", &f]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("FAILED")
            && r.stdout
                .contains("bad.csv: row 2, column 2: `oops` is not a number"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("skipped") && r.stdout.contains("input `user` failed"),
        "{}",
        r.stdout
    );
    assert_eq!(r.ran(), vec!["other"]);
    assert_eq!(
        p.entries().len(),
        1,
        "only the independent branch is cached"
    );
    // A missing path parameter is caught before anything runs, with its line.
    let g = p.pipeline(
        "missing.toml",
        "[stages.user]\nkind = \"dataset\"\nname = \"points\"\npath = \"nope.csv\"\n",
    );
    let r = p.run(&["run", &g]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("pipelines/missing.toml:4:8") && r.stderr.contains("file not found"),
        "{}",
        r.stderr
    );
}
