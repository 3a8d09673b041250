//! Integration tests of the trained Turing flow (issue 8): a tiny version of the shipped
//! `turing_trained_waves` pipeline (waves at 48x48, a few steps of everything, via `--set`) through the real
//! binary, asserting that the trained flow and its untrained baseline appear in the alignment table with
//! their spreads, that the checkpoint and the training curves exist, that reruns are bit-identical, and that
//! a parameter of the other kind of input is rejected before anything runs.

mod common;

use common::{assert_spread, metrics, Project};

/// Shrinks turing_trained_waves to seconds: 48x48, 1,500 Gray-Scott steps, narrow networks, few steps.
const TINY: &[&str] = &[
    "--set",
    "stages.data.size=48",
    "--set",
    "stages.data.steps=1500",
    "--set",
    "stages.data.samples=10",
    "--set",
    "stages.data.test_samples=3",
    "--set",
    "stages.score.iterations=10",
    "--set",
    "stages.score.crop=32",
    "--set",
    "stages.score.width=8",
    "--set",
    "stages.dynamics.iterations=6",
    "--set",
    "stages.dynamics.crop=24",
    "--set",
    "stages.dynamics.hidden=8",
    "--set",
    "stages.dynamics.val_every=3",
    "--set",
    "stages.dynamics.curve_patterns=2",
    "--set",
    "stages.alignment.steps=6",
    "--set",
    "stages.alignment.gs_steps=4",
    "--set",
    "stages.alignment.patterns=2",
    "--set",
    "stages.alignment.direct_patterns=3",
    "--set",
    "stages.alignment.untrained_draws=2",
];

fn args<'a>(first: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    common::with_overrides(first, TINY, extra)
}

fn show(p: &Project, file: &str, stage: &str, extra: &[&str]) -> std::path::PathBuf {
    p.show_with(file, stage, &args(&[], extra))
}

#[test]
fn tiny_trained_pipeline_tables_the_trained_flow_and_reruns_bit_identically() {
    let p = Project::new();
    let f = p.copy_shipped("turing_trained_waves.toml");
    p.run(&args(&["run", &f], &[])).assert_ok();

    // Every seed of the sweep trained a flow with its checkpoint and curves.
    let mut dyn_dirs = Vec::new();
    for seed in 0..3 {
        let d = show(&p, &f, &format!("dynamics[seed={seed}]"), &[]);
        for file in [
            "flow.safetensors",
            "flow.safetensors.json",
            "training.json",
            "curves.png",
            "flow_map.png",
        ] {
            assert!(d.join(file).is_file(), "{file} in {}", d.display());
        }
        let flow = eqflow::nn::conv::ImageFlow::load(&d.join("flow.safetensors"))
            .expect("checkpoint loads");
        assert_eq!(flow.arch.hidden, 8);
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("training.json")).expect("json"))
                .expect("training.json");
        assert_eq!(t["train_loss"].as_array().expect("losses").len(), 6);
        assert_eq!(t["cosine_curve"].as_array().expect("curve").len(), 2);
        let m = metrics(&d);
        assert_spread(&m["direct_cosine"], "direct_cosine");
        assert_spread(&m["direct_cosine_abs"], "direct_cosine_abs");
        dyn_dirs.push(d);
    }
    assert_ne!(
        std::fs::read(dyn_dirs[0].join("flow.safetensors")).expect("a"),
        std::fs::read(dyn_dirs[1].join("flow.safetensors")).expect("b"),
        "seeds must differ"
    );

    let al = show(&p, &f, "alignment", &[]);
    let m = metrics(&al);
    // 2 patterns x 1 noise seed (direct cosine: 3 patterns), pooled over 3 trained seeds / 2 untrained
    // draws.
    for (key, n) in [
        ("alignment/trained_flow", 6),
        ("alignment/untrained_network", 4),
        ("alignment/flow", 2),
        ("alignment/training_free_spatial", 2),
        ("direct_cosine/trained_flow", 9),
        ("direct_cosine_abs/trained_flow", 9),
        ("direct_cosine_abs/untrained_network", 6),
        ("direct_cosine_model_sign/trained_flow", 9),
        ("paired_flow_minus/trained_flow_vs_untrained_network", 2),
        (
            "paired_direct_abs_flow_minus/trained_flow_vs_untrained_network",
            3,
        ),
    ] {
        assert_spread(&m[key], key);
        assert_eq!(m[key]["n"], n, "{key}");
    }
    let md = std::fs::read_to_string(al.join("alignment.md")).expect("table");
    for row in [
        "trained flow (3 seeds",
        "untrained network",
        "`spatial`",
        "±",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }

    // A second cache: same seed and thread count -> the same bytes.
    p.run(&args(&["run", &f, "--cache", "cache2"], &[]))
        .assert_ok();
    let al2 = show(&p, &f, "alignment", &["--cache", "cache2"]);
    let d2 = show(&p, &f, "dynamics[seed=1]", &["--cache", "cache2"]);
    for (a, b) in [
        (al.join("alignment.json"), al2.join("alignment.json")),
        (
            dyn_dirs[1].join("flow.safetensors"),
            d2.join("flow.safetensors"),
        ),
        (dyn_dirs[1].join("training.json"), d2.join("training.json")),
    ] {
        assert_eq!(
            std::fs::read(&a).expect("a"),
            std::fs::read(&b).expect("b"),
            "{}",
            a.display()
        );
    }
}

#[test]
fn a_points_parameter_on_an_image_input_is_rejected_before_running() {
    let p = Project::new();
    let f = p.copy_shipped("turing_trained_waves.toml");
    let r = p.run(&["plan", &f, "--set", "stages.dynamics.epochs=3"]);
    assert!(!r.ok());
    assert!(r.stderr.contains("only applies to points"), "{}", r.stderr);
    assert!(r.stderr.contains("epochs"), "{}", r.stderr);
    // And an images parameter on a points input.
    let text = "[pipeline]\nname = \"pts\"\n[stages.data]\nkind = \"dataset\"\nname = \"two_peaks\"\n\
                [stages.score]\nkind = \"train_score\"\ndata = \"data\"\n\
                [stages.dynamics]\nkind = \"train_dynamics\"\ndata = \"data\"\nscore = \"score\"\ncrop = 32\n";
    let g = p.pipeline("pts.toml", text);
    let r = p.run(&["plan", &g]);
    assert!(!r.ok());
    assert!(r.stderr.contains("only applies to images"), "{}", r.stderr);
    assert!(r.stderr.contains("crop"), "{}", r.stderr);
    assert!(p.entries().is_empty(), "nothing ran");
}
