//! Tests of the UNet: f64 finite-difference gradient checks of every op and block and of a whole tiny
//! UNet (they also prove that the gather backward accumulates: every input position is read by 9 taps,
//! by 4 upsampled positions, or by a skip and a block), the convolution's forward against a naive loop,
//! training, and the checkpoint round trip.

use dfdx::prelude::*;
use rand::Rng;

use super::blocks::Builder;
use super::model::{ddpm_abar, Unet, UnetArch};
use super::ops::*;
use super::train::{ddpm_batch, lr_at, train_unet, UnetTrainConfig};
use crate::science::rng::stream;

type Taped = OwnedTape<f64, Cpu>;
type Loss = Tensor<(), f64, Cpu, Taped>;
/// A scalar function of a traced first input and all inputs (untaped), for [`gradcheck`].
type Objective<'a> = &'a dyn Fn(Tensor<(usize,), f64, Cpu, Taped>, &[Flat<f64, Cpu>]) -> Loss;

fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = stream(seed, "unet-test");
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn flat(dev: &Cpu, v: &[f64]) -> Flat<f64, Cpu> {
    dev.tensor_from_vec(v.to_vec(), (v.len(),))
}

/// `Σ y ⊙ r` for a fixed random `r`: a scalar whose gradient is `r` pushed back through the op.
fn weighted_sum<S: Shape>(y: Tensor<S, f64, Cpu, Taped>, seed: u64) -> Loss {
    let shape = *y.shape();
    let n = shape.num_elements();
    let r = Cpu::default().tensor_from_vec(random(n, seed), shape);
    (y * r).sum()
}

/// Compares the taped gradient of `f` with respect to every input with central differences (step 1e-5)
/// at up to `probes` coordinates per input. `f` gets the first input traced and all inputs untaped.
fn gradcheck(what: &str, inputs: Vec<Vec<f64>>, probes: usize, f: Objective<'_>) {
    let dev = Cpu::default();
    let tensors: Vec<_> = inputs.iter().map(|v| flat(&dev, v)).collect();
    let loss = f(tensors[0].clone().leaky_traced(), &tensors);
    let grads = loss.backward();
    let analytic: Vec<Vec<f64>> = tensors.iter().map(|t| grads.get(t).as_vec()).collect();
    let value = |vals: &[Vec<f64>]| -> f64 {
        let ts: Vec<_> = vals.iter().map(|v| flat(&dev, v)).collect();
        f(ts[0].clone().leaky_traced(), &ts).as_vec()[0]
    };
    let h = 1e-5;
    let mut worst = 0.0f64;
    for (i, input) in inputs.iter().enumerate() {
        let n = input.len();
        let step = (n / probes).max(1);
        for j in (0..n).step_by(step).chain([n - 1]) {
            let mut plus = inputs.clone();
            plus[i][j] += h;
            let mut minus = inputs.clone();
            minus[i][j] -= h;
            let fd = (value(&plus) - value(&minus)) / (2.0 * h);
            let err = (fd - analytic[i][j]).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
            assert!(
                err < 1e-6,
                "{what}: input {i} coordinate {j}: finite difference {fd}, taped gradient {}",
                analytic[i][j]
            );
        }
    }
    assert!(worst.is_finite(), "{what}");
}

/// The naive circular 3x3 convolution (PyTorch `padding_mode="circular"` alignment), layout `[B*P, C]`.
fn naive_conv(
    x: &[f64],
    (h, w, b, cin): (usize, usize, usize, usize),
    weight: &[f64],
    bias: &[f64],
    stride: usize,
) -> Vec<f64> {
    let cout = bias.len();
    let (ho, wo) = (h / stride, w / stride);
    let mut y = vec![0.0; ho * wo * b * cout];
    for i in 0..ho {
        for j in 0..wo {
            for bi in 0..b {
                for o in 0..cout {
                    let mut acc = bias[o];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let yy = (stride * i + h + ky - 1) % h;
                            let xx = (stride * j + w + kx - 1) % w;
                            for c in 0..cin {
                                acc += x[(bi * h * w + yy * w + xx) * cin + c]
                                    * weight[((ky * 3 + kx) * cin + c) * cout + o];
                            }
                        }
                    }
                    y[(bi * ho * wo + i * wo + j) * cout + o] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn circular_conv_matches_a_naive_loop_and_its_gradients_check() {
    let dev = Cpu::default();
    for (stride, h, w) in [(1, 5, 6), (2, 6, 4)] {
        let (b, cin, cout) = (2, 3, 4);
        let x = random(h * w * b * cin, 1);
        let weight = random(9 * cin * cout, 2);
        let bias = random(cout, 3);
        let idx = dev.tensor_from_vec(
            conv_indices(b, h, w, stride),
            (9 * b * h * w / (stride * stride),),
        );
        let xt = dev.tensor_from_vec(x.clone(), (b * h * w, cin));
        let y = conv3x3(xt, &idx, &flat(&dev, &weight), &flat(&dev, &bias)).as_vec();
        let want = naive_conv(&x, (h, w, b, cin), &weight, &bias, stride);
        assert_eq!(y.len(), want.len());
        for (a, e) in y.iter().zip(&want) {
            assert!((a - e).abs() < 1e-12, "stride {stride}: {a} vs naive {e}");
        }
        gradcheck(
            &format!("conv stride {stride}"),
            vec![x, weight, bias],
            40,
            &|x, p| {
                let x = x.reshape_like(&(b * h * w, cin));
                weighted_sum(conv3x3(x, &idx, &p[1], &p[2]), 9)
            },
        );
    }
}

#[test]
fn upsample_repeats_each_pixel_2x2_and_its_gradient_sums_them() {
    let dev = Cpu::default();
    let (h, w, b, c) = (3, 2, 2, 2);
    let idx = dev.tensor_from_vec(upsample_indices(b, h, w), (4 * b * h * w,));
    let x = random(h * w * b * c, 4);
    let y = upsample(dev.tensor_from_vec(x.clone(), (b * h * w, c)), &idx).as_vec();
    // Sample 1's output pixel (3, 1) of the 6x4 grid comes from its input pixel (1, 0).
    let (p_out, p_in) = (24 + 3 * 4 + 1, 6 + 2);
    assert_eq!(y[p_out * c..(p_out + 1) * c], x[p_in * c..(p_in + 1) * c]);
    gradcheck("upsample", vec![x], 100, &|x, _| {
        weighted_sum(upsample(x.reshape_like(&(b * h * w, c)), &idx), 5)
    });
}

#[test]
fn group_norm_normalises_each_group_and_its_gradients_check() {
    let dev = Cpu::default();
    let (p, b, c, g) = (5, 2, 6, 3);
    let x: Vec<f64> = random(p * b * c, 6).iter().map(|v| 3.0 * v + 1.0).collect();
    let ones = flat(&dev, &vec![1.0; c]);
    let zeros = flat(&dev, &vec![0.0; c]);
    let y = group_norm(
        dev.tensor_from_vec(x.clone(), (b * p, c)),
        p,
        g,
        &ones,
        &zeros,
    )
    .as_vec();
    // Sample 1, group 2 (channels 4, 5): mean 0, variance 1 - eps/var over its 10 values.
    let vals: Vec<f64> = (0..p)
        .flat_map(|q| (4..6).map(move |ch| (p + q) * c + ch))
        .map(|i| y[i])
        .collect();
    let mean = vals.iter().sum::<f64>() / 10.0;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10.0;
    assert!(
        mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-4,
        "mean {mean}, var {var}"
    );
    gradcheck(
        "group norm",
        vec![x, random(c, 7), random(c, 8)],
        60,
        &|x, prm| {
            weighted_sum(
                group_norm(x.reshape_like(&(b * p, c)), p, g, &prm[1], &prm[2]),
                9,
            )
        },
    );
}

#[test]
fn silu_is_x_sigmoid_x_and_its_gradient_checks() {
    let dev = Cpu::default();
    let x = random(12, 10);
    let y = silu(flat(&dev, &x)).as_vec();
    for (a, v) in y.iter().zip(&x) {
        assert!((a - v / (1.0 + (-v).exp())).abs() < 1e-14);
    }
    gradcheck("silu", vec![x], 12, &|x, _| weighted_sum(silu(x), 11));
}

/// Host values for every slot a [`Builder`] recorded.
fn slot_values(b: &Builder, seed: u64) -> Vec<Vec<f64>> {
    b.slots
        .iter()
        .enumerate()
        .map(|(i, s)| random(s.numel(), seed + i as u64))
        .collect()
}

#[test]
fn attention_gradients_check() {
    let (p, bsz, c, heads) = (6, 2, 8, 2);
    let mut b = Builder::default();
    let attn = b.attention("attn", c, heads, 2);
    let mut inputs = vec![random(p * bsz * c, 12)];
    inputs.extend(slot_values(&b, 100));
    gradcheck("attention", inputs, 25, &|x, prm| {
        weighted_sum(attn.apply(&prm[1..], x.reshape_like(&(bsz * p, c)), p), 13)
    });
}

#[test]
fn res_block_gradients_check() {
    let dev = Cpu::default();
    let (h, w, bsz, cin, cout, temb) = (3, 4, 2, 4, 6, 5);
    let mut b = Builder::default();
    let res = b.res("res", cin, cout, temb, 2);
    let idx = dev.tensor_from_vec(conv_indices(bsz, h, w, 1), (9 * bsz * h * w,));
    let mut inputs = vec![random(h * w * bsz * cin, 14), random(bsz * temb, 15)];
    inputs.extend(slot_values(&b, 200));
    gradcheck("res block", inputs, 20, &|x, prm| {
        let t = prm[1].clone().reshape_like(&(bsz, temb)).retaped::<Taped>();
        let y = res.apply(
            &prm[2..],
            x.reshape_like(&(bsz * h * w, cin)),
            t,
            h * w,
            &idx,
        );
        weighted_sum(y, 16)
    });
}

/// A 2-level, 2-channel UNet small enough for f64 gradient checks (also used by `nn::image_score`'s tests).
pub(crate) fn tiny_arch() -> UnetArch {
    UnetArch {
        model: "unet".into(),
        in_channels: 2,
        channels: vec![4, 8],
        res_blocks: 1,
        groups: 2,
        heads: 2,
        time_dim: 4,
        timestep: 10,
        timestep_max: None,
    }
}

#[test]
fn whole_tiny_unet_gradients_check_for_input_and_every_parameter() {
    let dev = Cpu::default();
    let (h, w, bsz) = (4, 4, 2);
    let model = Unet::<f64, Cpu>::init(tiny_arch(), &dev, 3).expect("valid arch");
    let grids = model.grids(bsz, h, w).expect("4x4 fits");
    let mut inputs = vec![random(h * w * bsz * 2, 17)];
    // Random (not initial) GroupNorm affines, so no gradient is checked only at a symmetric point.
    inputs.extend((0..model.slots.len()).map(|i| random(model.slots[i].numel(), 300 + i as u64)));
    gradcheck("tiny UNet", inputs, 3, &|x, prm| {
        let y = model.forward_with(
            &prm[1..],
            x.reshape_like(&(bsz * h * w, 2)),
            model.time_input(&[3, 60]),
            &grids,
        );
        weighted_sum(y, 18)
    });
}

#[test]
fn paper_unet_has_the_papers_size() {
    let model = Unet::<f32, Cpu>::init(UnetArch::paper(2), &Cpu::default(), 0).expect("paper arch");
    let n = model.param_count();
    // diffusers' UNet2DModel(block_out_channels=(16, 32, 64), norm_num_groups=8, 2 channels) counts
    // the same layers; the paper quotes ≈ 0.9 M.
    assert!((850_000..950_000).contains(&n), "{n} parameters");
    assert!((ddpm_abar(10) - 0.94478).abs() < 1e-5);
    assert!((UnetArch::paper(2).sigma() - 0.2350).abs() < 1e-4);
}

#[test]
fn learning_rate_warms_up_then_decays_to_zero() {
    assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
    assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
    assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
    assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
    assert!(lr_at(99, 100, 10, 1.0) < 1e-3);
}

/// `n` young (150-step) waves fields of 32x32: the initial discs growing into waves (at this size the
/// pattern dies to the flat state within a few hundred steps).
fn tiny_gray_scott(n: usize) -> Vec<f32> {
    let p = crate::science::gray_scott::preset("waves").expect("preset");
    let mut x = crate::science::gray_scott::generate(&p, 32, 150, n, 5);
    crate::science::gray_scott::to_model_space(&mut x);
    for f in x.chunks(2 * 32 * 32) {
        let v = &f[32 * 32..];
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(var > 1e-3, "a flat field (v variance {var})");
    }
    x
}

fn tiny_config(iterations: usize) -> UnetTrainConfig {
    UnetTrainConfig {
        iterations,
        batch: 8,
        lr: 3e-3,
        weight_decay: 0.01,
        warmup: 0.1,
        grad_clip: Some(1.0),
        validation: 0.1,
        seed: 1,
    }
}

#[test]
fn tiny_unet_trains_on_gray_scott_and_its_loss_falls() {
    let data = tiny_gray_scott(20);
    let arch = UnetArch {
        channels: vec![8, 16],
        ..tiny_arch()
    };
    let (model, log) = train_unet::<f32, Cpu>(
        &data,
        32,
        32,
        arch,
        &tiny_config(60),
        &Cpu::default(),
        &mut |_, _| {},
    )
    .expect("trains");
    assert_eq!((log.train_fields, log.validation_fields), (18, 2));
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&log.losses[..10]), mean(&log.losses[50..]));
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    let (v0, v1) = (
        log.validation[0].1,
        log.validation.last().expect("validated").1,
    );
    assert!(v1 < v0, "validation loss {v0} -> {v1}");
    // The score at timestep 10 denoises better than returning the noisy field.
    let (n, len) = (4, 2 * 1024);
    let clean = &data[..n * len];
    let mut rng = stream(2, "unet-test/denoise");
    let (a, s) = (model.arch.signal_scale() as f32, model.arch.sigma() as f32);
    let noisy: Vec<f32> = clean
        .iter()
        .map(|&x| a * x + s * rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    let mut eps = vec![0.0; noisy.len()];
    model
        .predict_eps(&noisy, n, 32, 32, 3, &mut eps)
        .expect("predicts");
    let err = |f: &dyn Fn(usize) -> f32| {
        (0..clean.len())
            .map(|i| (f(i) - clean[i]).powi(2))
            .sum::<f32>()
    };
    let denoised = err(&|i| (noisy[i] - s * eps[i]) / a);
    let raw = err(&|i| noisy[i] / a);
    assert!(
        denoised < 0.8 * raw,
        "denoised error {denoised} vs raw {raw}"
    );
}

#[test]
fn training_is_bit_identical_for_a_seed_and_the_checkpoint_round_trips() {
    let data = tiny_gray_scott(6);
    let dev = Cpu::default();
    let run = || {
        train_unet::<f32, Cpu>(
            &data,
            32,
            32,
            tiny_arch(),
            &tiny_config(3),
            &dev,
            &mut |_, _| {},
        )
    };
    let (a, log_a) = run().expect("trains");
    let (b, log_b) = run().expect("trains");
    assert_eq!(log_a.losses, log_b.losses);
    assert_eq!(a.values(), b.values());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("score.safetensors");
    a.save(&path).expect("saves");
    let loaded = Unet::<f32, Cpu>::load(&path, &dev).expect("loads");
    assert_eq!(loaded.arch, a.arch);
    let x = &data[..2 * 2048];
    let (mut ya, mut yb) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    a.predict_eps(x, 2, 32, 32, 2, &mut ya).expect("predicts");
    loaded
        .predict_eps(x, 2, 32, 32, 2, &mut yb)
        .expect("predicts");
    assert_eq!(ya, yb);
    let bytes = std::fs::read(&path).expect("written");
    loaded.save(&path).expect("saves again");
    assert_eq!(
        std::fs::read(&path).expect("written"),
        bytes,
        "identical bytes"
    );
    // Randomised weights differ from the trained ones but keep the architecture.
    let r = a.randomized(9);
    assert_eq!(r.param_count(), a.param_count());
    assert_ne!(r.values(), a.values());
    // A local-score checkpoint is refused with a clear error.
    let local = crate::nn::conv::LocalScore::init(
        crate::nn::conv::LocalScoreArch {
            channels: 2,
            width: 4,
            dilations: vec![1],
            sigma: 0.235,
            signal_scale: 0.97,
            sigma_max: None,
            v_prediction: false,
            film_knots: 0,
        },
        0,
    );
    local.save(&path).expect("saves");
    let err = Unet::<f32, Cpu>::load(&path, &dev)
        .err()
        .expect("not a UNet");
    assert!(format!("{err:#}").contains("arch"), "{err:#}");
}

#[test]
fn a_checkpoint_of_the_wrong_dtype_is_a_clear_error_not_a_panic() {
    let dev = Cpu::default();
    let model = Unet::<f32, Cpu>::init(tiny_arch(), &dev, 0).expect("valid arch");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("score.safetensors");
    // Every tensor as F64 (what dfdx's own loader would panic on), with a valid UNet architecture.
    let bytes: Vec<Vec<u8>> = model
        .values()
        .iter()
        .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<_> = model
        .slots
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            let view = ::safetensors::tensor::TensorView::new(
                ::safetensors::Dtype::F64,
                s.shape.clone(),
                b,
            );
            (s.name.clone(), view.expect("consistent view"))
        })
        .collect();
    let meta = std::collections::HashMap::from([(
        "arch".to_string(),
        serde_json::to_string(&model.arch).expect("json"),
    )]);
    ::safetensors::serialize_to_file(views, &Some(meta), &path).expect("written");
    let err = Unet::<f32, Cpu>::load(&path, &dev)
        .err()
        .expect("F64 refused");
    assert!(format!("{err:#}").contains("expected F32"), "{err:#}");
}

#[test]
fn a_diverging_training_fails_with_the_step_and_the_loss() {
    let data = tiny_gray_scott(4);
    let cfg = UnetTrainConfig {
        lr: 1e30,
        warmup: 0.0,
        grad_clip: None,
        ..tiny_config(4)
    };
    let err = train_unet::<f32, Cpu>(
        &data,
        32,
        32,
        tiny_arch(),
        &cfg,
        &Cpu::default(),
        &mut |_, _| {},
    )
    .err()
    .expect("diverges");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("diverged: loss") && msg.contains("at step 1"),
        "{msg}"
    );
}

/// The DDPM batch draws its timesteps uniformly from the range it is given (an expert's 30-99, both ends
/// reached) and nowhere else; the targets follow each item's own timestep.
#[test]
fn ddpm_batch_draws_timesteps_from_its_range() {
    let data: Vec<f32> = (0..4 * 2 * 4 * 4)
        .map(|i| (i % 7) as f32 / 3.5 - 1.0)
        .collect();
    let mut rng = crate::science::rng::stream(5, "test/ddpm-batch");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let b = ddpm_batch(&data, &[0, 1, 2, 3], 2, 16, 30..100, &mut rng);
        seen.extend(b.t.iter().copied());
    }
    assert_eq!(seen.first(), Some(&30));
    assert_eq!(seen.last(), Some(&99));
    assert_eq!(seen.len(), 70, "every timestep of the range drawn");
}
