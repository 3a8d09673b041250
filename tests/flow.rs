//! Learned dynamics as a reusable artifact: `eqflow flow` evaluates and integrates a stage's flow on a
//! user's points, its errors say what to fix, and the documented Python snippet (docs/python.md) gives
//! the same numbers.

mod common;

use common::Project;

const PIPE: &str = r#"
[stages.data]
kind = "dataset"
name = "two_moons"
n = 500

[stages.score]
kind = "train_score"
data = "data"
epochs = 3

[stages.dynamics]
kind = "train_dynamics"
data = "data"
score = "score"
epochs = 2
batch = 256

[stages.free]
kind = "training_free"
data = "data"
score = "score"
"#;

fn csv_rows(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| {
            !l.trim().is_empty()
                && l.chars()
                    .next()
                    .is_some_and(|c| c == '-' || c.is_ascii_digit())
        })
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f64>().expect("number"))
                .collect()
        })
        .collect()
}

#[test]
fn flow_command_evaluates_integrates_and_explains_errors() {
    let p = Project::new();
    let f = p.pipeline("m.toml", PIPE);
    std::fs::write(
        p.path().join("pts.csv"),
        "x,y\n0.5,-0.2\n1.0,1.0\n-1.5,0.3\n",
    )
    .expect("write");
    std::fs::write(p.path().join("bad.csv"), "1,2,3\n4,5,6\n").expect("write");

    let early = p.run(&["flow", &f, "dynamics", "--points", "pts.csv"]);
    assert_eq!(early.code, 2);
    assert!(
        early
            .stderr
            .contains("not cached yet; run `eqflow run pipelines/m.toml dynamics` first"),
        "{}",
        early.stderr
    );

    p.run(&["run", &f]).assert_ok();
    let v = p.run(&["flow", &f, "dynamics", "--points", "pts.csv"]);
    v.assert_ok();
    let rows = csv_rows(&v.stdout);
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.len() == 2 && r.iter().all(|x| x.is_finite())));
    assert!(
        rows.iter().any(|r| r[0].abs() + r[1].abs() > 1e-3),
        "a trained flow is not zero"
    );

    let free = p.run(&["flow", &f, "free", "--points", "pts.csv"]);
    free.assert_ok();
    assert_eq!(csv_rows(&free.stdout).len(), 3);

    let t = p.run(&[
        "flow",
        &f,
        "dynamics",
        "--points",
        "pts.csv",
        "--trajectory",
        "--steps",
        "7",
        "--dt",
        "0.05",
        "-o",
        "t.npy",
    ]);
    t.assert_ok();
    let bytes = std::fs::read(p.path().join("t.npy")).expect("npy");
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("'shape': (8, 3, 2)"));

    let bad = p.run(&["flow", &f, "dynamics", "--points", "bad.csv"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("bad.csv has 3 column(s) but the flow of stage `dynamics` is 2-D"),
        "{}",
        bad.stderr
    );
    let notflow = p.run(&["flow", &f, "score", "--points", "pts.csv"]);
    assert!(
        notflow
            .stderr
            .contains("is a `train_score` stage, not a flow"),
        "{}",
        notflow.stderr
    );
}

#[test]
fn python_snippet_in_the_docs_matches_eqflow() {
    let have_numpy = std::process::Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_numpy {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install numpy and safetensors (.ci/run does)"
        );
        eprintln!(
            "numpy/safetensors not installed: Python check skipped (pip install numpy safetensors)"
        );
        return;
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/python.md"))
        .expect("docs/python.md");
    let code = doc
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a python block");
    assert!(
        code.trim().lines().count() < 40,
        "the snippet stays under 40 lines"
    );
    let p = Project::new();
    let f = p.pipeline("m.toml", PIPE);
    p.run(&["run", &f]).assert_ok();
    std::fs::write(p.path().join("flow.py"), code).expect("write");
    std::fs::write(
        p.path().join("pts.csv"),
        "0.5,-0.2\n1.0,1.0\n-1.5,0.3\n2.0,-1.0\n",
    )
    .expect("write");
    let entry = p.show(&f, "dynamics");
    let py = std::process::Command::new("python3")
        .current_dir(p.path())
        .arg("flow.py")
        .arg(entry.join("flow.safetensors"))
        .arg("pts.csv")
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let ours = p.run(&["flow", &f, "dynamics", "--points", "pts.csv"]);
    ours.assert_ok();
    let a = csv_rows(&String::from_utf8_lossy(&py.stdout));
    let b = csv_rows(&ours.stdout);
    assert_eq!(a.len(), 4);
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "python {x} vs eqflow {y}"
            );
        }
    }
}
