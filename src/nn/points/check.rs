//! The point models' part of `eqflow device-check` ([`crate::nn::device_check`]): the flow network's
//! tangent (JVP) pass and Hutchinson loss gradient, and the score MLP's loss gradient, on a device `D`
//! against the CPU in f64.
//!
//! Every comparison is reported three ways against the CPU-f64 reference: CPU f32 (the rounding noise
//! any f32 device has), device f32 (what training uses) and device f64 (which must agree to ~1e-12: a
//! larger gap is a kernel bug, not rounding). Inputs are seeded, so reruns compare like with like.

use super::fast::{loss_and_grads_in, Workspace};
use super::flow::init_leaves;
use super::score::score_loss_and_grads;
use super::tape::{flow_forward, leaf_tensors, tensor2, BnMode, BnTangent, Real};
use super::train::{dynamics_loss_and_grads, tangents, Divergence, DynamicsBatch};
use super::{Arch, Network, ScoreModel, HIDDEN};
use crate::science::rng::stream;
use dfdx::prelude::*;
use rand_distr::{Distribution, StandardNormal};
use serde_json::{json, Value};
use std::time::Instant;

/// How far `a` is from `reference`: the largest absolute difference, and that over the largest
/// reference magnitude (a relative error that does not blow up at entries near zero).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Diff {
    /// `max |a - ref|`.
    pub max_abs: f64,
    /// `max |a - ref| / max |ref|`.
    pub max_rel: f64,
}

/// [`Diff`] of two equally long slices (NaN anywhere gives NaN).
pub fn diff(a: &[f64], reference: &[f64]) -> Diff {
    assert_eq!(
        a.len(),
        reference.len(),
        "compared outputs differ in length"
    );
    let mut max_abs = 0.0f64;
    let mut scale = 0.0f64;
    for (x, r) in a.iter().zip(reference) {
        let e = (x - r).abs();
        max_abs = if e.is_nan() { f64::NAN } else { max_abs.max(e) };
        scale = scale.max(r.abs());
    }
    Diff {
        max_abs,
        max_rel: max_abs / scale.max(f64::MIN_POSITIVE),
    }
}

/// One flow-network case: initial weights, noised-looking points, a score field and Hutchinson probes.
struct FlowCase {
    arch: Arch,
    leaves: Vec<Vec<f64>>,
    x: Vec<f64>,
    score: Vec<f64>,
    z: Vec<f64>,
    k: usize,
    scale: f64,
}

fn flow_case(network: Network, d: usize, n: usize, probes: usize, seed: u64) -> FlowCase {
    let arch = Arch {
        network,
        d,
        hidden: HIDDEN,
    };
    let mut rng = stream(seed, "device-check/flow");
    let mut normal =
        |len: usize| -> Vec<f64> { (0..len).map(|_| StandardNormal.sample(&mut rng)).collect() };
    let x = normal(n * d);
    let score: Vec<f64> = normal(n * d).iter().zip(&x).map(|(e, x)| e - x).collect();
    let mut prng = stream(seed, "device-check/probes");
    let (k, z, scale) = tangents(Divergence::Hutchinson, probes, n, d, &mut prng);
    FlowCase {
        leaves: init_leaves(&arch, seed),
        arch,
        x,
        score,
        z,
        k,
        scale,
    }
}

impl FlowCase {
    /// The case as one batch of the dynamics loss (batch-norm tangent: batched, as in training).
    fn batch(&self) -> DynamicsBatch<'_> {
        DynamicsBatch {
            arch: &self.arch,
            leaves: &self.leaves,
            x: &self.x,
            score: &self.score,
            z: &self.z,
            k: self.k,
            scale: self.scale,
            bn_tangent: BnTangent::Batched,
        }
    }
}

/// Everything compared for one flow case on one device and dtype.
struct FlowOutputs {
    v: Vec<f64>,
    tangent: Vec<f64>,
    loss: f64,
    grads: Vec<f64>,
}

fn flow_outputs<E: Real, D: Device<E>>(dev: &D, c: &FlowCase) -> FlowOutputs {
    let d = c.arch.d;
    let n = c.x.len() / d;
    let lt = leaf_tensors::<E, D>(dev, &c.leaves);
    let x = tensor2::<E, D>(dev, &c.x, n, d);
    let t = tensor2::<E, D>(dev, &c.z, c.k * n, d);
    let pass = flow_forward(
        &c.arch,
        &lt,
        &x,
        &t,
        c.k,
        &BnMode::Batch(BnTangent::Batched),
    );
    let v = pass.v.as_vec().iter().map(|e| e.f64()).collect();
    let tangent = pass.tv.as_vec().iter().map(|e| e.f64()).collect();
    let step = dynamics_loss_and_grads::<E, D>(dev, &c.batch());
    FlowOutputs {
        v,
        tangent,
        loss: step.loss,
        grads: step.grads.concat(),
    }
}

/// The three diffs of one quantity, and whether they are acceptable: device f64 within `1e-9` of the CPU
/// (relative), device f32 no worse than 20x the CPU's own f32 rounding (floor `1e-5`).
pub fn judged(cpu32: Diff, dev32: Diff, dev64: Diff) -> (Value, bool) {
    let ok = dev64.max_rel <= 1e-9 && dev32.max_rel <= (20.0 * cpu32.max_rel).max(1e-5);
    (
        json!({"cpu_f32": cpu32, "device_f32": dev32, "device_f64": dev64, "ok": ok}),
        ok,
    )
}

/// Flow network (`network`, `d`-dimensional, batch `n`, `probes` Hutchinson probes, batch-norm in
/// training mode): tangent pass `J_v z`, `v`, the loss and its gradient on `dev` vs the CPU in f64.
pub fn compare_flow<D: Device<f32> + Device<f64>>(
    dev: &D,
    network: Network,
    d: usize,
    n: usize,
    probes: usize,
    seed: u64,
) -> Value {
    let c = flow_case(network, d, n, probes, seed);
    let cpu = Cpu::default();
    let reference = flow_outputs::<f64, Cpu>(&cpu, &c);
    let cpu32 = flow_outputs::<f32, Cpu>(&cpu, &c);
    let dev32 = flow_outputs::<f32, D>(dev, &c);
    let dev64 = flow_outputs::<f64, D>(dev, &c);
    let mut all_ok = true;
    let mut section = serde_json::Map::new();
    type Pick = fn(&FlowOutputs) -> Vec<f64>;
    let pick: [(&str, Pick); 4] = [
        ("v", |o| o.v.clone()),
        ("tangent", |o| o.tangent.clone()),
        ("loss", |o| vec![o.loss]),
        ("loss_grad", |o| o.grads.clone()),
    ];
    for (name, f) in pick {
        let r = f(&reference);
        let (v, ok) = judged(
            diff(&f(&cpu32), &r),
            diff(&f(&dev32), &r),
            diff(&f(&dev64), &r),
        );
        all_ok &= ok;
        section.insert(name.to_string(), v);
    }
    section.insert(
        "case".into(),
        json!({"network": network.name(), "d": d, "batch": n, "probes": probes, "loss_f64": reference.loss}),
    );
    section.insert("ok".into(), json!(all_ok));
    Value::Object(section)
}

/// The score MLP's denoising loss and gradient (batch `n`, `d`-dimensional) on `dev` vs the CPU in f64.
pub fn compare_score<D: Device<f32> + Device<f64>>(
    dev: &D,
    d: usize,
    n: usize,
    seed: u64,
) -> Value {
    let leaves = ScoreModel::init(d, seed).to_leaves();
    let mut rng = stream(seed, "device-check/score");
    let mut normal =
        |len: usize| -> Vec<f64> { (0..len).map(|_| StandardNormal.sample(&mut rng)).collect() };
    let (x, e) = (normal(n * d), normal(n * d));
    let tf: Vec<f64> = normal(n).iter().map(|v| v.tanh()).collect();
    let cpu = Cpu::default();
    let run32 = |l: (f64, Vec<Vec<f64>>)| (vec![l.0], l.1.concat());
    let reference = run32(score_loss_and_grads::<f64, Cpu>(
        &cpu, d, &leaves, &x, &tf, &e,
    ));
    let cpu32 = run32(score_loss_and_grads::<f32, Cpu>(
        &cpu, d, &leaves, &x, &tf, &e,
    ));
    let dev32 = run32(score_loss_and_grads::<f32, D>(dev, d, &leaves, &x, &tf, &e));
    let dev64 = run32(score_loss_and_grads::<f64, D>(dev, d, &leaves, &x, &tf, &e));
    let (loss, ok1) = judged(
        diff(&cpu32.0, &reference.0),
        diff(&dev32.0, &reference.0),
        diff(&dev64.0, &reference.0),
    );
    let (grad, ok2) = judged(
        diff(&cpu32.1, &reference.1),
        diff(&dev32.1, &reference.1),
        diff(&dev64.1, &reference.1),
    );
    json!({"loss": loss, "loss_grad": grad, "case": {"d": d, "batch": n}, "ok": ok1 && ok2})
}

/// Median seconds of `reps` calls of `f` after one warm-up call.
pub(crate) fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Flow-network training steps per second (loss + gradient of the kernel network, 2-D, Hutchinson) on
/// the taped dfdx graph on `dev`, and on the CPU's hand-written training path for comparison.
pub fn bench_flow_step<D: Device<f32>>(dev: &D, n: usize, probes: usize, reps: usize) -> Value {
    let c = flow_case(Network::Kernel, 2, n, probes, 0);
    let dfdx_s = median_seconds(reps, || {
        dynamics_loss_and_grads::<f32, D>(dev, &c.batch());
    });
    let mut ws = Workspace::default();
    let cpu_fast_s = median_seconds(reps, || {
        loss_and_grads_in::<f32>(&mut ws, &c.batch());
    });
    json!({
        "case": {"network": "kernel", "d": 2, "batch": n, "probes": probes, "reps": reps},
        "device_dfdx_steps_per_s": 1.0 / dfdx_s,
        "cpu_hand_written_steps_per_s": 1.0 / cpu_fast_s,
    })
}
