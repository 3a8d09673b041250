//! `eqflow device-check` (hidden; run by scripts/gpu-check.sh): CPU-vs-device numerics and device
//! throughput of the dfdx tensor work, as one JSON document.
//!
//! The device is dfdx's `Cuda` (GPU 0) in a CUDA build and `Cpu` otherwise, so the same sections run
//! (and are tested) on machines without a GPU; there the "device" columns equal the CPU ones. Sections:
//! - `build`, `gpu`: what the binary was built for and what the driver reports;
//! - `nvrtc`: the kernels dfdx compiles at run time (concat, stack, to_dtype) need `cuda_fp16.h` under
//!   the include path baked in at build time; compiled and run here against the CPU;
//! - `numerics`: flow network tangent pass and Hutchinson loss gradient, score MLP gradient
//!   ([`crate::nn::points::check`]), and the image score UNet ([`unet_numerics`], filled in when the UNet
//!   lands);
//! - `bench` (unless skipped): f32 matmul GFLOP/s, flow training steps/s, UNet train steps/s and SDE
//!   steps/s at 128x128 ([`unet_bench`]).
//!
//! Each numerics entry carries `ok`; the top-level `ok` is their conjunction (benchmarks are not judged).

use crate::nn::device;
use crate::nn::points::check::{
    bench_flow_step, compare_flow, compare_score, diff, judged, median_seconds,
};
use crate::nn::points::Network;
use crate::nn::unet::{batch_loss, ddpm_batch, DdpmBatch, Trainer, Unet, UnetArch};
use crate::science::ddpm_schedule::DDPM_STEPS;
use crate::science::rng::stream;
use dfdx::prelude::*;
use rand::Rng;
use serde_json::{json, Map, Value};

/// What to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Skip the benchmarks (numerics only).
    pub skip_bench: bool,
    /// Small sizes everywhere (seconds on a CPU; for tests and smoke runs).
    pub quick: bool,
}

/// The include directory dfdx gives NVRTC at run time (`$CUDA_ROOT/include` at build time).
pub fn nvrtc_include_dir() -> Option<String> {
    option_env!("CUDA_ROOT").map(|root| format!("{root}/include"))
}

/// Runs the check on the best device this build has.
pub fn run(opts: CheckOptions) -> Value {
    let mut out = Map::new();
    out.insert(
        "build".into(),
        json!({
            "eqflow": env!("CARGO_PKG_VERSION"),
            "cuda_feature": cfg!(feature = "cuda"),
            "built_for": device::built_for(),
            "nvrtc_include_dir": nvrtc_include_dir(),
        }),
    );
    out.insert(
        "gpu".into(),
        match device::gpu_info() {
            Ok(g) => json!(g),
            Err(e) => json!({"error": format!("{e:#}")}),
        },
    );
    #[cfg(feature = "cuda")]
    out.insert("nvrtc_compile".into(), nvrtc_compile());
    #[cfg(feature = "cuda")]
    match device::probe_cuda()
        .map_err(|e| format!("{e:#}"))
        .and_then(|()| {
            Cuda::try_build(0, 0)
                .map_err(|e| format!("cannot open CUDA device 0: {}", device::cuda_error(&e)))
        }) {
        Ok(dev) => sections(&dev, "cuda", opts, &mut out),
        Err(e) => {
            out.insert("error".into(), json!(e));
            out.insert("ok".into(), json!(false));
        }
    }
    #[cfg(not(feature = "cuda"))]
    sections(&Cpu::default(), "cpu", opts, &mut out);
    if out
        .get("nvrtc_compile")
        .is_some_and(|v| v["ok"] != json!(true))
    {
        out.insert("ok".into(), json!(false));
    }
    Value::Object(out)
}

fn sections<D: Device<f32> + Device<f64>>(
    dev: &D,
    name: &str,
    opts: CheckOptions,
    out: &mut Map<String, Value>,
) {
    out.insert("device".into(), json!(name));
    let n = if opts.quick { 64 } else { 2048 };
    let started = std::time::Instant::now();
    let nvrtc = runtime_kernels(dev);
    let numerics = json!({
        "flow_kernel_2d": compare_flow(dev, Network::Kernel, 2, n, 10, 0),
        "flow_mlp_3d": compare_flow(dev, Network::Mlp, 3, n / 2, 4, 1),
        "score_mlp_2d": compare_score(dev, 2, n, 2),
        "unet": unet_numerics(dev, opts.quick),
    });
    let ok = [
        &nvrtc,
        &numerics["flow_kernel_2d"],
        &numerics["flow_mlp_3d"],
        &numerics["score_mlp_2d"],
    ]
    .iter()
    .all(|v| v["ok"] == json!(true))
        && numerics["unet"]["ok"] != json!(false);
    out.insert("nvrtc".into(), nvrtc);
    out.insert("numerics".into(), numerics);
    out.insert("numerics_s".into(), json!(started.elapsed().as_secs_f64()));
    if !opts.skip_bench {
        let (size, reps) = if opts.quick { (128, 2) } else { (4096, 10) };
        out.insert(
            "bench".into(),
            json!({
                "matmul_f32": bench_matmul(dev, size, reps),
                "flow_train_step": bench_flow_step(dev, n, 10, reps),
                "unet": unet_bench(dev, opts.quick),
            }),
        );
    }
    out.insert("ok".into(), json!(ok));
}

/// dfdx's run-time compiled kernels (NVRTC on CUDA): `concat_along` forward and backward, `stack`,
/// `to_dtype`, against the CPU. A missing `cuda_fp16.h` panics inside dfdx, so it is caught and reported.
fn runtime_kernels<D: Device<f32> + Device<f64>>(dev: &D) -> Value {
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let b: Vec<f32> = (0..8).map(|i| 1.0 - i as f32 * 0.25).collect();
    fn outputs<D: Device<f32> + Device<f64>>(dev: &D, a: &[f32], b: &[f32]) -> Vec<f64> {
        let ta: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(a.to_vec(), (4, 3));
        let tb: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(b.to_vec(), (4, 2));
        let cat = (ta.leaky_trace(), tb.clone()).concat_along(Axis::<1>);
        let weights: Tensor<(usize, usize), f32, D> =
            dev.tensor_from_vec((0..20).map(|i| i as f32).collect(), (4, 5));
        let loss = (cat * weights).sum::<(), _>();
        let grads = loss.backward();
        let ga = grads.get(&ta).as_vec();
        let stacked = [tb.clone(), tb.clone() * 2.0].stack();
        let wide: Tensor<(usize, usize), f64, D> = ta.clone().to_dtype::<f64>();
        let mut v: Vec<f64> = ga.iter().map(|&x| x as f64).collect();
        v.extend(stacked.as_vec().iter().map(|&x| x as f64));
        v.extend(wide.as_vec());
        v
    }
    let reference = outputs(&Cpu::default(), &a, &b);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| outputs(dev, &a, &b))) {
        Ok(v) => {
            let d = diff(&v, &reference);
            json!({"ops": ["concat_along fwd+bwd", "stack", "to_dtype"], "diff": d, "ok": d.max_abs == 0.0})
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            json!({"error": msg, "ok": false, "include_dir": nvrtc_include_dir()})
        }
    }
}

/// Compiles (without running: NVRTC needs no GPU) a kernel that includes `cuda_fp16.h` the way dfdx's
/// run-time kernels do, with the baked include path and architecture: this catches missing headers or a
/// wrong path on any machine that has libnvrtc, before a GPU is involved.
#[cfg(feature = "cuda")]
fn nvrtc_compile() -> Value {
    use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    let src = "#include \"cuda_fp16.h\"\n\
        extern \"C\" __global__ void probe(const size_t n, const __half *a, float *b) {\n\
          unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n\
          if (i < n) { b[i] += __half2float(a[i]); }\n\
        }\n";
    let opts = CompileOptions {
        arch: Some(device::built_for()),
        include_paths: nvrtc_include_dir().into_iter().collect(),
        ..Default::default()
    };
    match compile_ptx_with_opts(src, opts) {
        Ok(_) => {
            json!({"ok": true, "include_dir": nvrtc_include_dir(), "arch": device::built_for()})
        }
        Err(e) => {
            json!({"ok": false, "error": format!("{e:?}"), "include_dir": nvrtc_include_dir()})
        }
    }
}

/// f32 `size`^3 matmul throughput on the device (median of `reps`), GFLOP/s.
fn bench_matmul<D: Device<f32>>(dev: &D, size: usize, reps: usize) -> Value {
    let a: Tensor<(usize, usize), f32, D> =
        dev.tensor_from_vec(vec![0.5; size * size], (size, size));
    let b: Tensor<(usize, usize), f32, D> =
        dev.tensor_from_vec(vec![0.25; size * size], (size, size));
    let s = crate::nn::points::check::median_seconds(reps, || {
        let c = a.clone().matmul(b.clone());
        // reading one element synchronises with the device
        let _ = c.sum::<(), _>().as_vec();
    });
    json!({"size": size, "gflops": 2.0 * (size as f64).powi(3) / s / 1e9, "median_s": s})
}

/// The UNet case of the check: its architecture, weights (drawn once in f64 on the CPU, so every
/// precision and device starts from the same numbers), and one seeded DDPM batch.
struct UnetCase {
    arch: UnetArch,
    values: Vec<Vec<f64>>,
    batch: DdpmBatch,
    h: usize,
    w: usize,
}

fn unet_case(quick: bool) -> anyhow::Result<UnetCase> {
    let (arch, b, side) = if quick {
        let mut a = UnetArch::paper(2);
        a.channels = vec![8, 16];
        a.res_blocks = 1;
        a.heads = 2;
        (a, 2, 8)
    } else {
        (UnetArch::paper(2), 2, 32)
    };
    let values = Unet::<f64, Cpu>::init(arch.clone(), &Cpu::default(), 0)?.values();
    let mut rng = stream(0, "device-check/unet");
    let data: Vec<f32> = (0..b * 2 * side * side)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let ids: Vec<usize> = (0..b).collect();
    let batch = ddpm_batch(&data, &ids, 2, side * side, 0..DDPM_STEPS, &mut rng);
    Ok(UnetCase {
        arch,
        values,
        batch,
        h: side,
        w: side,
    })
}

/// Forward output (no tape), training loss and its parameter gradient of the case's UNet in `E` on `dev`.
type UnetOutputs = (Vec<f64>, Vec<f64>, Vec<f64>);

fn unet_outputs<E: Dtype, D: Device<E>>(dev: &D, c: &UnetCase) -> anyhow::Result<UnetOutputs> {
    let m = Unet::<E, D>::with_values(c.arch.clone(), &c.values, dev)?;
    let to_f64 =
        |v: Vec<E>| -> Vec<f64> { v.into_iter().map(|x| x.to_f64().expect("float")).collect() };
    let b = c.batch.t.len();
    let x = dev.tensor_from_vec(
        c.batch
            .x
            .iter()
            .map(|&v| E::from_f64(v as f64).expect("float"))
            .collect(),
        (b * c.h * c.w, c.arch.in_channels),
    );
    let grids = m.grids(b, c.h, c.w)?;
    let forward = to_f64(m.forward(x, m.time_input(&c.batch.t), &grids).as_vec());
    let (loss, grads) = batch_loss(&m, &c.batch, c.h, c.w)?;
    let grad: Vec<f64> = m
        .params
        .iter()
        .flat_map(|p| to_f64(grads.get(p).as_vec()))
        .collect();
    Ok((forward, vec![loss], grad))
}

/// The image score UNet, device vs CPU: forward output, DDPM training loss and its parameter gradient in
/// f32 and f64 on `dev` against the CPU in f64, judged like the point networks (paper UNet at batch 2 of
/// 32x32 fields; `quick`: a two-level UNet on 8x8).
fn unet_numerics<D: Device<f32> + Device<f64>>(dev: &D, quick: bool) -> Value {
    let all = || -> anyhow::Result<Value> {
        let c = unet_case(quick)?;
        let cpu = Cpu::default();
        let reference = unet_outputs::<f64, Cpu>(&cpu, &c)?;
        let cpu32 = unet_outputs::<f32, Cpu>(&cpu, &c)?;
        let dev32 = unet_outputs::<f32, D>(dev, &c)?;
        let dev64 = unet_outputs::<f64, D>(dev, &c)?;
        let mut section = Map::new();
        let mut all_ok = true;
        type Pick = fn(&UnetOutputs) -> &Vec<f64>;
        let picks: [(&str, Pick); 3] = [
            ("forward", |o| &o.0),
            ("loss", |o| &o.1),
            ("param_grad", |o| &o.2),
        ];
        for (name, f) in picks {
            let r = f(&reference);
            let (v, ok) = judged(diff(f(&cpu32), r), diff(f(&dev32), r), diff(f(&dev64), r));
            all_ok &= ok;
            section.insert(name.into(), v);
        }
        section.insert(
            "case".into(),
            json!({"channels": c.arch.channels, "batch": c.batch.t.len(), "side": c.h,
                   "parameters": c.values.iter().map(Vec::len).sum::<usize>(), "loss_f64": reference.1[0]}),
        );
        section.insert("ok".into(), json!(all_ok));
        Ok(Value::Object(section))
    };
    all().unwrap_or_else(|e| json!({"error": format!("{e:#}"), "ok": false}))
}

/// UNet throughput on `dev`: DDPM training steps/s of the paper UNet at 128x128, batch 64 (the paper
/// profile), and rollout SDE steps/s for a batch of 16 128x128 patterns — each stochastic Heun step costs
/// two score evaluations (one per drift), so it is timed as two forwards. `quick`: 32x32, batch 4 / 2.
fn unet_bench<D: Device<f32>>(dev: &D, quick: bool) -> Value {
    let all = || -> anyhow::Result<Value> {
        let (side, train_b, sde_b, reps) = if quick {
            (32, 4, 2, 2)
        } else {
            (128, 64, 16, 5)
        };
        let arch = UnetArch::paper(2);
        let model = Unet::<f32, D>::init(arch, dev, 0)?;
        let mut rng = stream(0, "device-check/unet-bench");
        let data: Vec<f32> = (0..train_b * 2 * side * side)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let ids: Vec<usize> = (0..train_b).collect();
        let batch = ddpm_batch(&data, &ids, 2, side * side, 0..DDPM_STEPS, &mut rng);
        let mut trainer = Trainer::new(model.clone(), 0.01, Some(1.0));
        let mut step = 0;
        let train_s = median_seconds(reps, || {
            trainer
                .step(&batch, side, side, 1e-3, step)
                .expect("UNet train step");
            step += 1;
        });
        let x = &data[..sde_b * 2 * side * side];
        let mut out = vec![0.0f32; x.len()];
        let forward_s = median_seconds(reps, || {
            model
                .predict_eps(x, sde_b, side, side, sde_b, &mut out)
                .expect("UNet forward");
        });
        Ok(json!({
            "side": side,
            "train": {"batch": train_b, "median_s": train_s, "steps_per_s": 1.0 / train_s},
            "sde": {"patterns": sde_b, "forward_median_s": forward_s, "steps_per_s": 1.0 / (2.0 * forward_s)},
        }))
    };
    all().unwrap_or_else(|e| json!({"error": format!("{e:#}")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU build the device is the CPU: device f32 equals CPU f32 exactly, device f64 equals the
    /// reference, and CPU f32 rounding is small but not zero; every section reports ok.
    #[test]
    fn cpu_device_check_agrees_with_itself() {
        let v = run(CheckOptions {
            skip_bench: true,
            quick: true,
        });
        if cfg!(feature = "cuda") {
            return; // a CUDA build compares against a real GPU; this test is for the CPU path
        }
        assert_eq!(v["device"], "cpu");
        assert_eq!(v["ok"], true, "{v:#}");
        assert_eq!(v["nvrtc"]["diff"]["max_abs"], 0.0);
        let t = &v["numerics"]["flow_kernel_2d"]["tangent"];
        assert_eq!(t["device_f32"], t["cpu_f32"]);
        assert_eq!(t["device_f64"]["max_abs"], 0.0);
        let r = t["cpu_f32"]["max_rel"].as_f64().unwrap();
        assert!(r > 0.0 && r < 1e-5, "f32 tangent rounding {r}");
        let g = &v["numerics"]["flow_mlp_3d"]["loss_grad"]["cpu_f32"]["max_rel"];
        assert!(g.as_f64().unwrap() < 1e-4, "{g}");
        let u = &v["numerics"]["unet"];
        assert_eq!(u["ok"], true, "{u:#}");
        assert_eq!(u["param_grad"]["device_f64"]["max_abs"], 0.0);
        let r = u["param_grad"]["cpu_f32"]["max_rel"].as_f64().unwrap();
        assert!(r > 0.0 && r < 1e-4, "UNet f32 gradient rounding {r}");
        assert!(v.get("bench").is_none());
    }
}
