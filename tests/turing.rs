//! Integration tests of the Turing (Gray-Scott) stage kinds: a tiny version of the shipped
//! `turing_spirals` pipeline (waves at 48x48, a few steps of everything, via `--set`) through the real
//! binary, asserting real outputs, bit-identical reruns, the NaN guard and config errors.

mod common;

use common::{assert_spread, metrics, Project};

/// Shrinks turing_spirals to seconds: waves at 48x48 (spirals die at this size), 1,500 steps.
const TINY: &[&str] = &[
    "--set",
    "stages.data.preset=waves",
    "--set",
    "stages.data.size=48",
    "--set",
    "stages.data.steps=1500",
    "--set",
    "stages.data.samples=12",
    "--set",
    "stages.data.test_samples=4",
    "--set",
    "stages.score.iterations=15",
    "--set",
    "stages.score.crop=32",
    "--set",
    "stages.score.width=8",
    "--set",
    "stages.rollout.steps=12",
    "--set",
    "stages.rollout.every=3",
    "--set",
    "stages.rollout.gs_steps=6",
    "--set",
    "stages.alignment.steps=8",
    "--set",
    "stages.alignment.patterns=3",
];

fn args<'a>(first: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    common::with_overrides(first, TINY, extra)
}

fn show(p: &Project, file: &str, stage: &str, extra: &[&str]) -> std::path::PathBuf {
    p.show_with(file, stage, &args(&[], extra))
}

#[test]
fn tiny_turing_pipeline_produces_every_output_and_reruns_bit_identically() {
    let p = Project::new();
    let f = p.copy_shipped("turing_spirals.toml");
    p.run(&args(&["run", &f], &[])).assert_ok();

    let data = show(&p, &f, "data", &[]);
    let file = eqflow::io::read_tensors(&data.join("data.safetensors")).expect("dataset decodes");
    let (shape, x) = file.f32_view("x", 4).expect("x");
    assert_eq!(&shape[1..], &[2, 48, 48]);
    assert!(
        x.iter().all(|v| (-1.0..=1.0).contains(v)),
        "fields in [-1, 1]"
    );
    assert!(data.join("samples.png").is_file());
    assert_spread(&metrics(&data)["flat_share"], "flat_share");

    let score = show(&p, &f, "score", &[]);
    let m = metrics(&score);
    assert_spread(&m["loss_last"], "loss_last");
    assert_spread(&m["denoise_rmse"], "denoise_rmse");
    assert!(score.join("training.png").is_file() && score.join("losses.json").is_file());

    let flow = show(&p, &f, "flow", &[]);
    for file in ["kernel.json", "kernel.png", "flow_map.png"] {
        assert!(flow.join(file).is_file(), "{file}");
    }
    assert_eq!(metrics(&flow)["skew_defect"], 0.0);

    let rollout = show(&p, &f, "rollout", &[]);
    let png = std::fs::read(rollout.join("figure3.png")).expect("figure3");
    let (w, h) = png_size(&png);
    assert!(w >= 600 && h >= 600, "figure3 is {w}x{h}");
    let gif = std::fs::read(rollout.join("rollout.gif")).expect("gif");
    assert!(gif.starts_with(b"GIF89a"));
    let frames = eqflow::io::read_tensors(&rollout.join("frames.safetensors")).expect("frames");
    assert_eq!(
        frames.f32_view("ema", 5).expect("ema").0,
        vec![5, 3, 2, 48, 48]
    );
    assert_spread(&metrics(&rollout)["spectrum_distance"], "spectrum_distance");

    let al = show(&p, &f, "alignment", &[]);
    let m = metrics(&al);
    for key in [
        "alignment/flow",
        "alignment/random_non_skew_kernel",
        "alignment/score_with_random_weights",
        "direct_cosine/flow",
    ] {
        assert_spread(&m[key], key);
        assert_eq!(m[key]["n"], 3, "{key}");
    }
    let md = std::fs::read_to_string(al.join("alignment.md")).expect("table");
    assert!(
        md.contains("random non-skew kernel") && md.contains("±"),
        "{md}"
    );
    assert!(al.join("alignment.csv").is_file());

    // A second cache: same seed and thread count -> the same bytes.
    let again = p
        .cmd(&args(&["run", &f, "--cache", "cache2"], &[]))
        .output()
        .expect("spawn");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let r = p.run(&args(&["show", &f, "alignment", "--cache", "cache2"], &[]));
    let al2 = std::path::PathBuf::from(r.stdout.trim());
    let rollout2 = al2
        .parent()
        .expect("entries")
        .join(rollout.file_name().expect("name"));
    for (a, b) in [
        (al.join("alignment.json"), al2.join("alignment.json")),
        (
            rollout.join("frames.safetensors"),
            rollout2.join("frames.safetensors"),
        ),
    ] {
        assert_eq!(
            std::fs::read(&a).expect("a"),
            std::fs::read(&b).expect("b"),
            "{}",
            a.display()
        );
    }
}

/// The paper's score model, tiny: a 2-level UNet trained a few DDPM steps on 48x48 waves, then the
/// training-free flow and the alignment protocol on it (random-weights baseline included), twice.
#[test]
fn tiny_unet_score_drives_the_flow_and_alignment_bit_identically() {
    let p = Project::new();
    let f = p.copy_shipped("turing_spirals.toml");
    let unet = [
        "--set",
        "stages.score.model=unet",
        "--set",
        "stages.score.unet_channels=[8, 16]",
        "--set",
        "stages.score.res_blocks=1",
        "--set",
        "stages.score.heads=2",
        "--set",
        "stages.score.iterations=8",
        "--set",
        "stages.score.batch=4",
        "--set",
        "stages.alignment.patterns=2",
    ];
    p.run(&args(&["run", &f, "alignment"], &unet)).assert_ok();
    let score = show(&p, &f, "score", &unet);
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(score.join("score.json")).expect("score.json"),
    )
    .expect("json");
    assert_eq!(sidecar["model"], "unet");
    // 12 fields minus flat ones, 10 % held out for validation.
    assert!(sidecar["validation_fields"].as_u64().expect("count") >= 1);
    let m = metrics(&score);
    assert_eq!(m["iterations"], 8);
    assert!(m["validation_loss"]
        .as_f64()
        .expect("validated")
        .is_finite());
    assert_spread(&m["denoise_rmse"], "denoise_rmse");
    let loaded = eqflow::nn::ImageScore::load(
        &score.join("score.safetensors"),
        eqflow::nn::device::ComputeDevice::Cpu,
    )
    .expect("loads");
    assert_eq!(loaded.kind(), "unet");
    assert!((loaded.sigma() - 0.2350).abs() < 1e-4, "timestep 10");

    let al = show(&p, &f, "alignment", &unet);
    let am = metrics(&al);
    for key in ["alignment/flow", "alignment/score_with_random_weights"] {
        assert_spread(&am[key], key);
        assert_eq!(am[key]["n"], 2, "{key}");
    }

    let again = p
        .cmd(&args(&["run", &f, "alignment", "--cache", "cache2"], &unet))
        .output()
        .expect("spawn");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mut extra = unet.to_vec();
    extra.extend(["--cache", "cache2"]);
    let score2 = show(&p, &f, "score", &extra);
    let al2 = show(&p, &f, "alignment", &extra);
    for (a, b) in [
        (
            score.join("score.safetensors"),
            score2.join("score.safetensors"),
        ),
        (al.join("alignment.json"), al2.join("alignment.json")),
    ] {
        assert_eq!(
            std::fs::read(&a).expect("a"),
            std::fs::read(&b).expect("b"),
            "{}",
            a.display()
        );
    }
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[test]
fn a_diverging_score_training_fails_the_stage_and_caches_nothing() {
    let p = Project::new();
    let f = p.copy_shipped("turing_spirals.toml");
    let r = p.run(&args(
        &["run", &f, "score"],
        &["--set", "stages.score.lr=1e30"],
    ));
    assert!(!r.ok(), "training with lr 1e30 should fail");
    assert!(r.stderr.contains("diverged"), "{}", r.stderr);
    // Only the dataset was committed.
    assert_eq!(p.entries().len(), 1, "{:?}", p.entries());
}

#[test]
fn config_errors_name_the_key_and_suggest() {
    let p = Project::new();
    let f = p.copy_shipped("turing_spirals.toml");
    let r = p.run(&["plan", &f, "--set", "stages.data.preset=spiral"]);
    assert!(!r.ok());
    assert!(r.stderr.contains("spirals"), "{}", r.stderr);
    // The UNet's channels must split into its 8 GroupNorm groups.
    let r = p.run(&[
        "plan",
        &f,
        "--set",
        "stages.score.model=unet",
        "--set",
        "stages.score.unet_channels=[12, 24]",
    ]);
    assert!(!r.ok());
    assert!(
        r.stderr.contains("unet_channels")
            && r.stderr.contains("not divisible by the 8 GroupNorm groups"),
        "{}",
        r.stderr
    );
    // A points-only parameter on an image input.
    let r = p.run(&["plan", &f, "--set", "stages.score.epochs=3"]);
    assert!(!r.ok());
    assert!(r.stderr.contains("only applies to points"), "{}", r.stderr);
}
