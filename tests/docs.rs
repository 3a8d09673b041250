//! The documentation stays true: the stage-kind reference in docs/pipeline-reference.md is generated from
//! the kinds' schemas, and the README shows the two commands CI relies on.

mod common;

const BEGIN: &str = "<!-- BEGIN GENERATED: kinds -->\n";
const END: &str = "<!-- END GENERATED: kinds -->";

#[test]
fn pipeline_reference_lists_every_kind_and_parameter() {
    let p = common::Project::new();
    let generated = p.run(&["kinds", "--markdown"]);
    generated.assert_ok();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pipeline-reference.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/pipeline-reference.md");
    let (head, rest) = doc.split_once(BEGIN).expect("begin marker");
    let (_, tail) = rest.split_once(END).expect("end marker");
    let want = format!("{head}{BEGIN}{}{END}{tail}", generated.stdout);
    if std::env::var_os("EQFLOW_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write");
    }
    assert!(doc == want, "docs/pipeline-reference.md is out of date: run EQFLOW_BLESS=1 cargo test --release --test docs");
    assert!(generated.stdout.contains("### `dataset`"));
}

#[test]
fn readme_shows_the_two_commands_and_ci_runs_the_test_command() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(readme.contains("cargo run --release -- run pipelines/turing_spirals.toml"));
    assert!(readme.contains("cargo test --release"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --release"),
        ".ci/run must run the README's test command"
    );
}

/// The GPU scripts are never run in CI (no GPU, and the CUDA build downloads ~600 MB), so at least they
/// must parse, and pass shellcheck where it is installed; docs/gpu.md is linked from the README.
#[test]
fn gpu_scripts_parse_and_are_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = [
        "scripts/build-cuda.sh",
        "scripts/gpu-check.sh",
        "scripts/cuda-env.sh",
    ];
    for s in scripts {
        let out = std::process::Command::new("bash")
            .arg("-n")
            .arg(root.join(s))
            .output()
            .expect("run bash -n");
        assert!(
            out.status.success(),
            "{s} does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let shellcheck = std::process::Command::new("shellcheck")
        .args(["--severity=warning", "--shell=bash"])
        .args(scripts.map(|s| root.join(s)))
        .output();
    if let Ok(out) = shellcheck {
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(
        readme.contains("docs/gpu.md"),
        "README must link docs/gpu.md"
    );
    let doc = std::fs::read_to_string(root.join("docs/gpu.md")).expect("docs/gpu.md");
    for s in scripts {
        assert!(doc.contains(s), "docs/gpu.md must mention {s}");
    }
}
