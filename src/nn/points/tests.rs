//! Tests of the point models: tangent pass and loss gradients against f64 finite differences, plain-Rust
//! inference against the dfdx forward, checkpoints, and short training runs.

use super::flow::init_leaves;
use super::score::score_loss_and_grads;
use super::tape::{flow_forward, leaf_tensors, tensor2, BnMode, BnTangent};
use super::train::{dynamics_loss_and_grads, tangents, Divergence, DynamicsBatch};
use super::*;
use crate::science::points::{two_peaks, PointSet, TwoPeaksParams};
use crate::science::rng::stream;
use dfdx::prelude::*;
use rand_distr::{Distribution, StandardNormal};

fn randn(n: usize, seed: u64) -> Vec<f64> {
    let mut r = stream(seed, "test");
    (0..n).map(|_| StandardNormal.sample(&mut r)).collect()
}

/// Batched forward in f64 (training-mode batch-norm) returning (v, tv) as plain vectors.
fn fwd(
    arch: &Arch,
    leaves: &[Vec<f64>],
    x: &[f64],
    t: &[f64],
    k: usize,
    bn: &BnMode,
) -> (Vec<f64>, Vec<f64>) {
    let dev = Cpu::default();
    let n = x.len() / arch.d;
    let lt = leaf_tensors::<f64, Cpu>(&dev, leaves);
    let p = flow_forward(
        arch,
        &lt,
        &tensor2(&dev, x, n, arch.d),
        &tensor2(&dev, t, k * n, arch.d),
        k,
        bn,
    );
    (p.v.as_vec(), p.tv.as_vec())
}

const NETS: [Network; 2] = [Network::Kernel, Network::Mlp];

#[test]
fn tangent_pass_matches_finite_differences() {
    for net in NETS {
        let (n, d, k) = (6, 3, 2);
        let arch = Arch {
            network: net,
            d,
            hidden: HIDDEN,
        };
        let leaves = init_leaves(&arch, 3);
        let x = randn(n * d, 1);
        let z = randn(k * n * d, 2);
        // batched map: all samples move along probe j at once
        let (_, tv) = fwd(
            &arch,
            &leaves,
            &x,
            &z,
            k,
            &BnMode::Batch(BnTangent::Batched),
        );
        let (_, tv_fast) =
            super::fast::flow_values::<f64>(&arch, &leaves, &x, &z, k, BnTangent::Batched);
        let h = 1e-5;
        let zero = vec![0.0; n * d];
        for j in 0..k {
            let dir = &z[j * n * d..(j + 1) * n * d];
            let xp: Vec<f64> = x.iter().zip(dir).map(|(a, b)| a + h * b).collect();
            let xm: Vec<f64> = x.iter().zip(dir).map(|(a, b)| a - h * b).collect();
            let (vp, _) = fwd(
                &arch,
                &leaves,
                &xp,
                &zero,
                1,
                &BnMode::Batch(BnTangent::Batched),
            );
            let (vm, _) = fwd(
                &arch,
                &leaves,
                &xm,
                &zero,
                1,
                &BnMode::Batch(BnTangent::Batched),
            );
            for e in 0..n * d {
                let fd = (vp[e] - vm[e]) / (2.0 * h);
                assert!(
                    (fd - tv[j * n * d + e]).abs() < 1e-7,
                    "{net:?} batched jvp {fd} vs {}",
                    tv[j * n * d + e]
                );
                assert!(
                    (fd - tv_fast[j * n * d + e]).abs() < 1e-7,
                    "{net:?} batched jvp (fast pass) {fd} vs {}",
                    tv_fast[j * n * d + e]
                );
            }
        }
        // self-only: basis tangents give d v_i,c / d x_i,c with only sample i perturbed
        let (_, z, _) = tangents(Divergence::Exact, 0, n, d, &mut stream(0, "x"));
        let (_, tv) = fwd(
            &arch,
            &leaves,
            &x,
            &z,
            d,
            &BnMode::Batch(BnTangent::SelfOnly),
        );
        let (_, tv_fast) =
            super::fast::flow_values::<f64>(&arch, &leaves, &x, &z, d, BnTangent::SelfOnly);
        for i in 0..n {
            for c in 0..d {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i * d + c] += h;
                xm[i * d + c] -= h;
                let (vp, _) = fwd(
                    &arch,
                    &leaves,
                    &xp,
                    &zero,
                    1,
                    &BnMode::Batch(BnTangent::SelfOnly),
                );
                let (vm, _) = fwd(
                    &arch,
                    &leaves,
                    &xm,
                    &zero,
                    1,
                    &BnMode::Batch(BnTangent::SelfOnly),
                );
                let fd = (vp[i * d + c] - vm[i * d + c]) / (2.0 * h);
                let got = tv[(c * n + i) * d + c];
                assert!(
                    (fd - got).abs() < 1e-7,
                    "{net:?} self-only diag {fd} vs {got}"
                );
                let got = tv_fast[(c * n + i) * d + c];
                assert!(
                    (fd - got).abs() < 1e-7,
                    "{net:?} self-only diag (fast pass) {fd} vs {got}"
                );
            }
        }
    }
}

#[test]
fn plain_rust_inference_matches_dfdx() {
    for net in NETS {
        let (n, d) = (7, 3);
        let arch = Arch {
            network: net,
            d,
            hidden: HIDDEN,
        };
        let leaves = init_leaves(&arch, 5);
        let (mean, var) = (vec![0.1, -0.2, 0.3], vec![0.5, 2.0, 1.5]);
        let model = FlowModel::from_leaves(&arch, &leaves, mean.clone(), var.clone());
        assert_eq!(model.to_leaves(), leaves);
        let x = randn(n * d, 6);
        let (_, z, _) = tangents(Divergence::Exact, 0, n, d, &mut stream(0, "x"));
        let (v, tv) = fwd(&arch, &leaves, &x, &z, d, &BnMode::Running { mean, var });
        let plain = model.velocity(&PointSet::new(n, d, x.clone()));
        for (e, ve) in v.iter().enumerate() {
            assert!(
                (plain.data[e] - ve).abs() < 1e-10,
                "{net:?} v {} vs {}",
                plain.data[e],
                ve
            );
        }
        for i in 0..n {
            let j = model.jacobian(&x[i * d..(i + 1) * d]);
            for r in 0..d {
                for c in 0..d {
                    let got = tv[(c * n + i) * d + r];
                    assert!(
                        (j[r * d + c] - got).abs() < 1e-10,
                        "{net:?} J {} vs {got}",
                        j[r * d + c]
                    );
                }
            }
        }
    }
    // score model
    let d = 2;
    let sm = ScoreModel::init(d, 4);
    let dev = Cpu::default();
    let x = randn(5 * d, 7);
    let lt = leaf_tensors::<f64, Cpu>(&dev, &sm.to_leaves());
    let tf = vec![2.0 * 0.3 - 1.0; 5];
    let out = super::tape::score_forward(
        d,
        HIDDEN,
        &lt,
        &tensor2(&dev, &x, 5, d),
        &tensor2(&dev, &tf, 5, 1),
    )
    .as_vec();
    let plain = sm.eps(&PointSet::new(5, d, x), 0.3);
    for (p, o) in plain.data.iter().zip(&out) {
        assert!((p - o).abs() < 1e-10);
    }
    assert_eq!(ScoreModel::from_leaves(d, &sm.to_leaves()), sm);
}

/// Which implementation of the dynamics loss a check runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Imp {
    /// The taped dfdx graph (reference).
    Dfdx,
    /// The hand-written training pass of [`super::fast`].
    Fast,
}

fn loss_grads_f64(imp: Imp, batch: &DynamicsBatch) -> super::train::DynamicsStep {
    match imp {
        Imp::Dfdx => dynamics_loss_and_grads::<f64, _>(&Cpu::default(), batch),
        Imp::Fast => super::fast::loss_and_grads::<f64>(batch),
    }
}

fn check_param_grads_with(imp: Imp, div: Divergence, net: Network) {
    let (n, d) = (8, 2);
    let arch = Arch {
        network: net,
        d,
        hidden: HIDDEN,
    };
    let leaves = init_leaves(&arch, 9);
    let x = randn(n * d, 10);
    let s = randn(n * d, 11);
    let (k, z, scale) = tangents(div, 3, n, d, &mut stream(12, "probes"));
    let bt = if div == Divergence::Exact {
        BnTangent::SelfOnly
    } else {
        BnTangent::Batched
    };
    let batch = DynamicsBatch {
        arch: &arch,
        leaves: &leaves,
        x: &x,
        score: &s,
        z: &z,
        k,
        scale,
        bn_tangent: bt,
    };
    let st = loss_grads_f64(imp, &batch);
    let h = 1e-6;
    let mut checked = 0;
    let mut bad = 0;
    for (li, leaf) in leaves.iter().enumerate() {
        for j in [0, leaf.len() / 2, leaf.len() - 1] {
            let (mut lp, mut lm) = (leaves.clone(), leaves.clone());
            lp[li][j] += h;
            lm[li][j] -= h;
            let fp = loss_grads_f64(
                imp,
                &DynamicsBatch {
                    leaves: &lp,
                    ..batch
                },
            )
            .loss;
            let fm = loss_grads_f64(
                imp,
                &DynamicsBatch {
                    leaves: &lm,
                    ..batch
                },
            )
            .loss;
            let fd = (fp - fm) / (2.0 * h);
            let g = st.grads[li][j];
            if (fd - g).abs() > 1e-6 * (1.0 + g.abs()) {
                eprintln!("{imp:?} {div:?} {net:?} leaf {li}[{j}]: fd {fd} vs {g}");
                bad += 1;
            }
            checked += 1;
        }
    }
    assert!(bad == 0, "{bad} mismatches");
    assert!(checked >= 24 && st.loss > 0.0);
}

fn check_param_grads(div: Divergence, net: Network) {
    check_param_grads_with(Imp::Dfdx, div, net);
    check_param_grads_with(Imp::Fast, div, net);
}

#[test]
fn hutchinson_loss_gradient_matches_finite_differences() {
    for net in NETS {
        check_param_grads(Divergence::Hutchinson, net);
    }
}

#[test]
fn exact_loss_gradient_matches_finite_differences() {
    for net in NETS {
        check_param_grads(Divergence::Exact, net);
    }
}

#[test]
fn score_loss_gradient_matches_finite_differences() {
    let (n, d) = (6, 2);
    let leaves = ScoreModel::init(d, 1).to_leaves();
    let (x, e) = (randn(n * d, 2), randn(n * d, 3));
    let tf: Vec<f64> = (0..n).map(|i| i as f64 / n as f64 - 0.5).collect();
    let dev = Cpu::default();
    let (_, g) = score_loss_and_grads::<f64, _>(&dev, d, &leaves, &x, &tf, &e);
    let h = 1e-6;
    for (li, leaf) in leaves.iter().enumerate() {
        let j = leaf.len() / 3;
        let (mut lp, mut lm) = (leaves.clone(), leaves.clone());
        lp[li][j] += h;
        lm[li][j] -= h;
        let fd = (score_loss_and_grads::<f64, _>(&dev, d, &lp, &x, &tf, &e).0
            - score_loss_and_grads::<f64, _>(&dev, d, &lm, &x, &tf, &e).0)
            / (2.0 * h);
        assert!(
            (fd - g[li][j]).abs() < 1e-7,
            "score leaf {li}: {fd} vs {}",
            g[li][j]
        );
    }
}

#[test]
fn short_training_on_two_peaks_reduces_losses_and_checkpoints_roundtrip() {
    let data = two_peaks(
        &TwoPeaksParams {
            n: 2048,
            ..Default::default()
        },
        1,
    );
    let scfg = ScoreTrainConfig {
        epochs: 40,
        batch: 512,
        ..Default::default()
    };
    let (score, sl) = train_score(&data, &scfg, &mut |_, _| {}).expect("score trains");
    let first = sl[..3].iter().sum::<f64>() / 3.0;
    let last = sl[sl.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.8 * first, "score loss {first} -> {last}");
    // reproducible
    let (score2, sl2) = train_score(&data, &scfg, &mut |_, _| {}).expect("score trains");
    assert_eq!(sl, sl2);
    assert_eq!(score, score2);
    let dcfg = DynamicsTrainConfig {
        epochs: 30,
        batch: 512,
        probes: 4,
        ..Default::default()
    };
    let mut seen = 0;
    let (flow, dl) =
        train_dynamics(&data, &score, &dcfg, &mut |_, _| seen += 1).expect("flow trains");
    assert_eq!(seen, 30);
    let first = dl[..3].iter().sum::<f64>() / 3.0;
    let last = dl[dl.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.7 * first, "dynamics loss {first} -> {last}");
    // checkpoints
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("flow.safetensors");
    flow.save(&p, serde_json::json!({"note": 1})).expect("save");
    let (back, extra) = FlowModel::load(&p).expect("load");
    assert_eq!(back, flow);
    assert_eq!(extra["note"], 1);
    let p = dir.path().join("score.safetensors");
    score.save(&p, serde_json::Value::Null).expect("save");
    assert_eq!(ScoreModel::load(&p).expect("load").0, score);
    // sampling lands near the peaks
    let samples = score.sample(500, 3);
    let m = samples.moments();
    assert!(
        m.mean[0].abs() < 0.3 && (m.std[0] - 1.25f64.sqrt()).abs() < 0.3,
        "{m:?}"
    );
    let rnd = FlowModel::random(Network::Kernel, 2, 1, Some(&data));
    let v = rnd.velocity(&data).moments();
    assert!(
        (v.std[0] - 1.0).abs() < 0.01 && v.mean[1].abs() < 1e-6,
        "{v:?}"
    );
}

/// The hand-written training pass against the dfdx graph: tangents, loss, every leaf gradient and the
/// batch statistics, in f64 (to rounding) and in f32 at the training batch size (to f32 rounding).
#[test]
fn fast_pass_matches_dfdx_graph() {
    for net in NETS {
        for (div, d) in [
            (Divergence::Hutchinson, 2),
            (Divergence::Hutchinson, 3),
            (Divergence::Exact, 2),
            (Divergence::Exact, 3),
        ] {
            let arch = Arch {
                network: net,
                d,
                hidden: HIDDEN,
            };
            let bt = if div == Divergence::Exact {
                BnTangent::SelfOnly
            } else {
                BnTangent::Batched
            };
            // f64, odd sizes (chunk boundaries inside the probe blocks)
            let n = 1031;
            let leaves = init_leaves(&arch, 21);
            let x = randn(n * d, 22);
            let s = randn(n * d, 23);
            let (k, z, scale) = tangents(div, 5, n, d, &mut stream(24, "probes"));
            let (v0, tv0) = fwd(&arch, &leaves, &x, &z, k, &BnMode::Batch(bt));
            let (v1, tv1) = super::fast::flow_values::<f64>(&arch, &leaves, &x, &z, k, bt);
            let maxabs = |a: &[f64]| a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            // relative to the largest entry of `a`, or `floor` where `a` is (nearly) zero, e.g. the
            // output bias, whose gradient the batch-norm cancels
            let close_floor = |a: &[f64], b: &[f64], tol: f64, floor: f64, what: &str| {
                assert_eq!(a.len(), b.len(), "{what} length");
                let scale = maxabs(a).max(floor).max(1e-30);
                for (e, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (p - q).abs() <= tol * scale,
                        "{net:?} {div:?} d={d} {what}[{e}]: {p} vs {q} (scale {scale})"
                    );
                }
            };
            let close =
                |a: &[f64], b: &[f64], tol: f64, what: &str| close_floor(a, b, tol, 0.0, what);
            let gmax = |g: &[Vec<f64>]| g.iter().fold(0.0f64, |m, v| m.max(maxabs(v)));
            close(&v0, &v1, 1e-11, "v");
            close(&tv0, &tv1, 1e-11, "tv");
            let batch = DynamicsBatch {
                arch: &arch,
                leaves: &leaves,
                x: &x,
                score: &s,
                z: &z,
                k,
                scale,
                bn_tangent: bt,
            };
            let a = loss_grads_f64(Imp::Dfdx, &batch);
            let b = loss_grads_f64(Imp::Fast, &batch);
            assert!(
                (a.loss - b.loss).abs() < 1e-11 * a.loss,
                "{} vs {}",
                a.loss,
                b.loss
            );
            assert_eq!(a.grads.len(), b.grads.len());
            let floor = gmax(&a.grads);
            for (li, (ga, gb)) in a.grads.iter().zip(&b.grads).enumerate() {
                close_floor(ga, gb, 1e-10, 1e-3 * floor, &format!("grad leaf {li}"));
            }
            close(&a.batch_mean, &b.batch_mean, 1e-12, "batch mean");
            close(&a.batch_var, &b.batch_var, 1e-12, "batch var");
            // f32 at the training size: agree to f32 rounding
            let n = 2048;
            let x = randn(n * d, 25);
            let s = randn(n * d, 26);
            let (k, z, scale) = tangents(div, 10, n, d, &mut stream(27, "probes"));
            let batch = DynamicsBatch {
                x: &x,
                score: &s,
                z: &z,
                k,
                scale,
                ..batch
            };
            let a = dynamics_loss_and_grads::<f32, _>(&Cpu::default(), &batch);
            let b = super::fast::loss_and_grads::<f32>(&batch);
            assert!(
                (a.loss - b.loss).abs() < 1e-4 * a.loss,
                "f32 loss {} vs {}",
                a.loss,
                b.loss
            );
            let floor = gmax(&a.grads);
            for (li, (ga, gb)) in a.grads.iter().zip(&b.grads).enumerate() {
                close_floor(ga, gb, 2e-3, 1e-2 * floor, &format!("f32 grad leaf {li}"));
            }
        }
    }
}

/// Flow training is bit-reproducible for a seed (the hand-written pass, gemm and rayon included).
#[test]
fn flow_training_is_reproducible() {
    let data = two_peaks(
        &TwoPeaksParams {
            n: 1500,
            ..Default::default()
        },
        3,
    );
    let score = ScoreModel::init(2, 1);
    for network in NETS {
        let cfg = DynamicsTrainConfig {
            network,
            epochs: 3,
            batch: 512,
            ..Default::default()
        };
        let (m1, l1) = train_dynamics(&data, &score, &cfg, &mut |_, _| {}).expect("trains");
        let (m2, l2) = train_dynamics(&data, &score, &cfg, &mut |_, _| {}).expect("trains");
        assert_eq!(l1, l2);
        assert_eq!(m1, m2);
    }
}

/// The fast pass gives bit-identical results on 1 and 2 threads (the parallel unit is a fixed sample
/// chunk, gemm runs sequentially inside it, and the chunks' gradients are summed in order).
#[test]
fn fast_pass_is_thread_count_independent() {
    for net in NETS {
        let (n, d) = (700, 3);
        let arch = Arch {
            network: net,
            d,
            hidden: HIDDEN,
        };
        let leaves = init_leaves(&arch, 31);
        let (x, s) = (randn(n * d, 32), randn(n * d, 33));
        let (k, z, scale) = tangents(Divergence::Hutchinson, 10, n, d, &mut stream(34, "probes"));
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
                .install(|| {
                    super::fast::loss_and_grads::<f32>(&DynamicsBatch {
                        arch: &arch,
                        leaves: &leaves,
                        x: &x,
                        score: &s,
                        z: &z,
                        k,
                        scale,
                        bn_tangent: BnTangent::Batched,
                    })
                })
        };
        let (a, b) = (run(1), run(2));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits());
        assert_eq!(a.grads, b.grads);
        assert_eq!((a.batch_mean, a.batch_var), (b.batch_mean, b.batch_var));
    }
}

/// The block evaluation for the Lyapunov code gives the bits of the per-point evaluation, and so does
/// the whole two-trajectory protocol built on it (blocks, thread split).
#[test]
fn batched_flow_is_bit_identical_to_per_point() {
    use crate::science::lyapunov::{
        bounded_starts, bounded_starts_of, largest_exponents, largest_exponents_of, BatchField,
        StartSearch, TwoTrajectoryConfig,
    };
    for net in NETS {
        let d = 3;
        let calib = PointSet::new(64, d, randn(64 * d, 7));
        let model = FlowModel::random(net, d, 5, Some(&calib));
        let x = randn(37 * d, 8);
        let mut block = vec![0.0; x.len()];
        model.batched().eval_block(&x, &mut block);
        for (p, b) in x.chunks(d).zip(block.chunks(d)) {
            let mut one = [0.0; 3];
            model.velocity_one(p, &mut one);
            assert_eq!(
                one.map(f64::to_bits).to_vec(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{net:?}"
            );
        }
    }
    let calib = PointSet::new(64, 3, randn(64 * 3, 7));
    let model = FlowModel::random(Network::Kernel, 3, 5, Some(&calib));
    let one = |x: &[f64], o: &mut [f64]| model.velocity_one(x, o);
    let cfg = TwoTrajectoryConfig {
        dt: 0.1,
        perturbation: 1e-5,
        tau: 30,
        segments: 2,
    };
    // 20 starts: one full block of 16 and a partial one
    let starts = bounded_starts(
        &one,
        3,
        &StartSearch {
            count: 20,
            steps: 40,
            dt: 0.1,
            bound: 4.0,
            max_candidates: 400,
        },
        3,
    );
    assert_eq!(starts.len(), 20);
    let pool = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .expect("pool")
    };
    for threads in [1, 2] {
        let (s2, l2) = pool(threads).install(|| {
            let s = bounded_starts_of(
                &model.batched(),
                &StartSearch {
                    count: 20,
                    steps: 40,
                    dt: 0.1,
                    bound: 4.0,
                    max_candidates: 400,
                },
                3,
            );
            let l = largest_exponents_of(&model.batched(), &s, &cfg, 9);
            (s, l)
        });
        assert_eq!(s2, starts);
        assert_eq!(l2, largest_exponents(&one, &starts, &cfg, 9));
    }
}

/// Wall time of the full Lyapunov protocol of `evaluate_chaos` for one Lorenz model (spec §5: 64 bounded
/// trajectories of 5,000 RK4 steps of 0.1, the two-trajectory exponent over tau 2,500, the QR spectrum
/// from 4 starts x 2,000 steps), per-point evaluation against block evaluation, checking they agree bit
/// for bit. The reference implementation takes about 11 s on this machine.
/// `RAYON_NUM_THREADS=2 cargo test --release --lib lyapunov_protocol_timing -- --ignored --nocapture`;
/// `EQFLOW_FLOW=path/flow.safetensors` times a trained model instead of an untrained one.
#[test]
#[ignore]
fn lyapunov_protocol_timing() {
    use crate::science::lyapunov::{
        bounded_starts_of, largest_exponents_of, spectrum_of, BatchField, Pointwise,
        SpectrumConfig, StartSearch, TwoTrajectoryConfig,
    };
    use crate::science::points::{lorenz, standardize, LorenzDataParams};
    use rayon::prelude::*;
    use std::time::Instant;
    let model = match std::env::var("EQFLOW_FLOW") {
        Ok(p) => {
            FlowModel::load(std::path::Path::new(&p))
                .expect("load flow")
                .0
        }
        Err(_) => {
            let mut lz = lorenz(&LorenzDataParams::default(), 0);
            standardize(&mut lz);
            FlowModel::random(Network::Kernel, 3, 0, Some(&lz.head(4096)))
        }
    };
    let two = TwoTrajectoryConfig::default();
    let spec = SpectrumConfig {
        dt: 0.1,
        transient: 0,
        steps: 2000,
    };
    // process CPU seconds (user + system), to see through a machine shared with other jobs
    fn cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    }
    type Out = (Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>);
    fn protocol<B: BatchField>(f: &B, two: &TwoTrajectoryConfig, spec: &SpectrumConfig) -> Out {
        let (t, c) = (Instant::now(), cpu());
        let starts = bounded_starts_of(
            f,
            &StartSearch {
                count: 64,
                steps: 5000,
                dt: 0.1,
                bound: 4.0,
                max_candidates: 64 * 16,
            },
            0,
        );
        let (t1, c1) = (Instant::now(), cpu());
        let l = largest_exponents_of(f, &starts, two, 0);
        let (t2, c2) = (Instant::now(), cpu());
        let sp = starts
            .par_iter()
            .take(4)
            .map(|x0| spectrum_of(f, x0, spec))
            .collect();
        eprintln!(
            "  wall / cpu s: starts {:.2} / {:.2}, two-trajectory {:.2} / {:.2}, spectrum {:.2} / {:.2}",
            (t1 - t).as_secs_f64(),
            c1 - c,
            (t2 - t1).as_secs_f64(),
            c2 - c1,
            t2.elapsed().as_secs_f64(),
            cpu() - c2
        );
        (starts, l.iter().map(|e| e.per_time).collect(), sp)
    }
    let per_point = Pointwise {
        d: 3,
        f: |x: &[f64], o: &mut [f64]| model.velocity_one(x, o),
        jac: |x: &[f64], o: &mut [f64]| model.jacobian_into(x, o),
    };
    let t = Instant::now();
    let a = if std::env::var("EQFLOW_SKIP_POINT").is_ok() {
        protocol(&model.batched(), &two, &spec)
    } else {
        protocol(&per_point, &two, &spec)
    };
    let t_point = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let b = protocol(&model.batched(), &two, &spec);
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(a, b, "block evaluation changed the results");
    }
    times.sort_by(f64::total_cmp);
    let med = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    eprintln!(
        "lyapunov protocol, one model, {} threads: {} bounded starts, median lambda_1 {:.4}; per-point {t_point:.2} s, \
         blocks {:.2} s (min {:.2} s of 3); reference ~11 s: {:.1}x",
        rayon::current_num_threads(),
        a.0.len(),
        med(&a.1),
        times[1],
        times[0],
        11.0 / times[1]
    );
}

/// What the Lorenz flow's training loss is made of, on noised data at t = 0.2 (evaluation-mode
/// batch-norm): the exact residual mean (div v + v·s)^2 and the variance that k Hutchinson probes add to
/// it, 2 |J_sym|_F^2 / k (so the probe count is also a penalty on the symmetric part of J), and the mean
/// divergence. `EQFLOW_FLOW=.. EQFLOW_SCORE=.. EQFLOW_DATA=data.npy cargo test --release --lib
/// lorenz_loss_decomposition -- --ignored --nocapture`.
#[test]
#[ignore]
fn lorenz_loss_decomposition() {
    use crate::io::points_file::read_points;
    use std::path::Path;
    let var = |k: &str| std::env::var(k).expect("set EQFLOW_FLOW, EQFLOW_SCORE, EQFLOW_DATA");
    let flow = FlowModel::load(Path::new(&var("EQFLOW_FLOW")))
        .expect("flow")
        .0;
    let score = ScoreModel::load(Path::new(&var("EQFLOW_SCORE")))
        .expect("score")
        .0;
    let file = read_points(Path::new(&var("EQFLOW_DATA"))).expect("data");
    let data = PointSet::new(file.n, file.d, file.data);
    let (t, n, d) = (0.2, 4096, data.d);
    let ab = schedule::abar(t);
    let mut rng = stream(0, "decomposition");
    let (mut res, mut sym, mut div_sum, mut vs_sum) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let x0 = data.row((i * 7919) % data.n);
        let x: Vec<f64> = x0
            .iter()
            .map(|v| {
                let e: f64 = StandardNormal.sample(&mut rng);
                ab.sqrt() * v + (1.0 - ab).sqrt() * e
            })
            .collect();
        let mut v = vec![0.0; d];
        flow.velocity_one(&x, &mut v);
        let mut s = vec![0.0; d];
        score.score_one(&x, t, &mut s);
        let j = flow.jacobian(&x);
        let div: f64 = (0..d).map(|k| j[k * d + k]).sum();
        let vs: f64 = v.iter().zip(&s).map(|(a, b)| a * b).sum();
        res += (div + vs).powi(2);
        div_sum += div;
        vs_sum += vs;
        for r in 0..d {
            for c in 0..d {
                sym += (0.5 * (j[r * d + c] + j[c * d + r])).powi(2);
            }
        }
    }
    let nf = n as f64;
    eprintln!(
        "residual mean (div v + v.s)^2 {:.4}; Hutchinson variance 2|J_sym|^2/k: k=4 {:.4}, k=10 {:.4}; mean div v {:.4}, mean v.s {:.4}",
        res / nf,
        2.0 * sym / nf / 4.0,
        2.0 * sym / nf / 10.0,
        div_sum / nf,
        vs_sum / nf
    );
}

/// Timings for the report (`cargo test --release --lib nn::points::tests::timings -- --ignored --nocapture`,
/// with `RAYON_NUM_THREADS=2`).
#[test]
#[ignore]
fn timings() {
    use crate::science::lyapunov::{
        bounded_starts, largest_exponents, StartSearch, TwoTrajectoryConfig,
    };
    use crate::science::points::{lorenz, standardize, LorenzDataParams};
    use std::time::Instant;
    // median and minimum (the minimum is the better estimate on a machine shared with other jobs)
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        format!("median {:.2} ms (min {:.2} ms)", v[v.len() / 2], v[0])
    };
    let t0 = Instant::now();
    let mut lz = lorenz(&LorenzDataParams::default(), 0);
    eprintln!(
        "lorenz dataset (50k points): {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    standardize(&mut lz);
    let dev = Cpu::default();
    for d in [2usize, 3] {
        let n = 2048;
        let x = randn(n * d, 1);
        let e = randn(n * d, 2);
        let tf: Vec<f64> = (0..n).map(|i| (i as f64 / n as f64) * 2.0 - 1.0).collect();
        let sm = ScoreModel::init(d, 0);
        let mut leaves = sm.to_leaves();
        let mut adam = super::train::Adam::new(&leaves, 1e-2, 1e-5);
        let ts: Vec<f64> = (0..15)
            .map(|_| {
                let t = Instant::now();
                let (_, g) = score_loss_and_grads::<f32, _>(&dev, d, &leaves, &x, &tf, &e);
                adam.step(&mut leaves, &g);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        eprintln!("score train step d={d} batch 2048: {}", median(ts));
        for network in NETS {
            let arch = Arch {
                network,
                d,
                hidden: HIDDEN,
            };
            for imp in [Imp::Fast, Imp::Dfdx] {
                let mut fl = init_leaves(&arch, 0);
                let mut ws = super::fast::Workspace::default();
                let mut adam = super::train::Adam::new(&fl, 1e-2, 1e-5);
                let ts: Vec<f64> = (0..if imp == Imp::Fast { 30 } else { 10 })
                    .map(|i| {
                        let t = Instant::now();
                        let s = sm.score(&PointSet::new(n, d, x.clone()), 0.1);
                        let (k, z, sc) =
                            tangents(Divergence::Hutchinson, 10, n, d, &mut stream(i, "p"));
                        let batch = DynamicsBatch {
                            arch: &arch,
                            leaves: &fl,
                            x: &x,
                            score: &s.data,
                            z: &z,
                            k,
                            scale: sc,
                            bn_tangent: BnTangent::Batched,
                        };
                        let st = match imp {
                            Imp::Fast => super::fast::loss_and_grads_in::<f32>(&mut ws, &batch),
                            Imp::Dfdx => dynamics_loss_and_grads::<f32, _>(&dev, &batch),
                        };
                        adam.step(&mut fl, &st.grads);
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                eprintln!(
                    "dynamics train step ({}, {imp:?}) d={d} batch 2048, 10 probes, {} threads: {}",
                    network.name(),
                    rayon::current_num_threads(),
                    median(ts)
                );
            }
        }
    }
    let model = FlowModel::random(Network::Kernel, 3, 0, Some(&lz.head(4096)));
    let f = |x: &[f64], o: &mut [f64]| model.velocity_one(x, o);
    let t = Instant::now();
    let starts = bounded_starts(
        &f,
        3,
        &StartSearch {
            count: 64,
            steps: 5000,
            dt: 0.1,
            bound: 4.0,
            max_candidates: 512,
        },
        0,
    );
    let t_starts = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let cfg = TwoTrajectoryConfig {
        dt: 0.1,
        perturbation: 1e-5,
        tau: 2500,
        segments: 1,
    };
    let _ = largest_exponents(&f, &starts, &cfg, 0);
    eprintln!(
        "lyapunov protocol (random kernel model): {} bounded starts in {:.2} s, exponents {:.2} s",
        starts.len(),
        t_starts,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut o = [0.0; 3];
    for i in 0..100_000 {
        model.velocity_one(lz.row(i % lz.n), &mut o);
    }
    eprintln!(
        "plain velocity_one: {:.2} us/point",
        t.elapsed().as_secs_f64() * 10.0
    );
}
