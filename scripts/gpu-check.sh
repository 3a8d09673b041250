#!/usr/bin/env bash
# GPU check of a CUDA-built eqflow (docs/gpu.md), run ON the GPU machine, from the bundle
# (`bash dist/eqflow-cuda/gpu-check.sh`) or from a repository root holding dist/eqflow-cuda
# (`bash scripts/gpu-check.sh`). Finishes within GPU_CHECK_LIMIT_S seconds (default 420) whatever happens:
# every step runs under `timeout` with what is left of that budget.
#
# Steps, each with its log in the output directory:
#   env        the real nvidia-smi, the libraries cuda-env.sh chose, `ldd`, and every dynamic symbol bound
#              at start (LD_BIND_NOW=1): an entry point missing from the CUDA 13 libraries fails here;
#   check      `eqflow device-check`: CPU vs GPU numerics (flow tangent pass + Hutchinson loss gradient,
#              score MLP gradient, UNet when built in) and benchmarks (matmul, flow train step, UNet train
#              step at 128x128 batch 64 and SDE steps when built in) -> device-check.json;
#   points     a short two_moons run with device = cuda (the score MLP trains on the GPU);
#   turing     a short `--profile paper` run of turing_spirals (reduced sizes via --set): the UNet trains
#              and scores on the GPU (a build whose paper profile does not validate falls back to the
#              local score model, and says so).
# Output: $OUT (the device tool's output folder) if set, else the first argument, else ./gpu-check-out:
# summary.json, summary.txt, device-check.json, results-*.json and one log per step.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -x "$HERE/bin/eqflow" ]; then
  BUNDLE=$HERE
elif [ -x "$HERE/../dist/eqflow-cuda/bin/eqflow" ]; then
  BUNDLE=$(cd "$HERE/../dist/eqflow-cuda" && pwd)
else
  echo "gpu-check: no bundle (bin/eqflow) beside this script or in dist/eqflow-cuda; run scripts/build-cuda.sh" >&2
  exit 3
fi
OUTDIR=${OUT:-${1:-$PWD/gpu-check-out}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LIMIT=${GPU_CHECK_LIMIT_S:-420}
START=$(date +%s)
WORK=$(mktemp -d /tmp/eqflow-gpu-check.XXXXXX)
export EQFLOW_CACHE=$WORK/cache
STEPS=$OUTDIR/steps.jsonl
: >"$STEPS"

left() { echo $(( LIMIT - ($(date +%s) - START) )); }

# step NAME LIMIT_S COMMAND...: runs COMMAND under the smaller of LIMIT_S and what is left, logs to NAME.log
step() {
  local name=$1 want=$2; shift 2
  local budget rc t0
  budget=$(left)
  [ "$want" -lt "$budget" ] && budget=$want
  if [ "$budget" -lt 10 ]; then
    echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": \"time limit\"}" >>"$STEPS"
    echo "gpu-check: $name skipped (time limit)" >&2
    return 124
  fi
  echo "gpu-check: $name (at most ${budget} s)" >&2
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$budget" "$@" >"$OUTDIR/$name.log" 2>&1
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}"), \"limit_s\": $budget}" >>"$STEPS"
  echo "gpu-check: $name rc=$rc" >&2
  return $rc
}

EQ=$BUNDLE/bin/eqflow
PIPES=$BUNDLE/pipelines
[ -d "$PIPES" ] || PIPES=$HERE/../pipelines

env_step() {
  echo "== nvidia-smi"; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv || true
  echo "== build"; cat "$BUNDLE/build-info.json"
  echo "== cuda-env"; source "$BUNDLE/cuda-env.sh" || return 1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  python3 -c 'import importlib.metadata as m
for p in ("nvidia-cuda-nvrtc", "nvidia-cublas", "nvidia-cuda-runtime", "torch"):
    try: print(p, m.version(p))
    except Exception: print(p, "not installed")' 2>/dev/null || true
  echo "== needed"; readelf -d "$EQ" | grep NEEDED
  echo "== ldd"; ldd "$EQ"
  echo "== bind now"; LD_BIND_NOW=1 "$EQ" --version
}
# `timeout` runs programs, not shell functions: export it to a child bash
export -f env_step
export BUNDLE EQ
step env 60 bash -c env_step

# the remaining steps run the binary through cuda-env.sh (the bundle's wrapper); they run even when env
# failed, since its log says why and a partial check is still informative
{
  step check 240 "$BUNDLE/eqflow" device-check -o "$OUTDIR/device-check.json"
  step points 60 "$BUNDLE/eqflow" run "$PIPES/two_moons.toml" --device cuda --threads 8 \
    --set stages.score.epochs=20 --set stages.dynamics.epochs=5 score dynamics
  "$BUNDLE/eqflow" results "$PIPES/two_moons.toml" --device cuda --json >"$OUTDIR/results-two_moons.json" 2>/dev/null
  TURING_SETS=(--set stages.data.samples=64 --set stages.data.test_samples=4
    --set stages.score.iterations=20 --set stages.rollout.patterns=1 --set stages.rollout.steps=50
    --set stages.alignment.patterns=2 --set stages.alignment.seeds=1
    --set stages.alignment.nonskew_draws=1 --set stages.alignment.random_weight_draws=1)
  # without the UNet the paper profile does not validate (exit 2): then the same run with the local model
  if ! "$BUNDLE/eqflow" plan "$PIPES/turing_spirals.toml" --profile paper --device cuda "${TURING_SETS[@]}" \
      >"$OUTDIR/turing-plan.log" 2>&1; then
    # (on crops, as the CPU default: whole 128x128 fields at batch 64 take ~14 s a step on 2 cores)
    TURING_SETS+=(--set stages.score.model=local --set stages.score.crop=48 --set stages.score.batch=16)
    echo "gpu-check: no UNet in this build; turing runs with the local score model" >&2
  fi
  step turing 150 "$BUNDLE/eqflow" run "$PIPES/turing_spirals.toml" --profile paper --device cuda --threads 16 \
    "${TURING_SETS[@]}"
  "$BUNDLE/eqflow" results "$PIPES/turing_spirals.toml" --profile paper --device cuda "${TURING_SETS[@]}" --json \
    >"$OUTDIR/results-turing_spirals.json" 2>/dev/null
}

# summary: steps, the judged numerics and the throughputs (python3 if there, else the raw files)
python3 - "$OUTDIR" "$LIMIT" "$(( $(date +%s) - START ))" <<'PY' || cat "$STEPS" >"$OUTDIR/summary.txt"
import json, sys, os
out, limit, took = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [json.loads(l) for l in open(os.path.join(out, "steps.jsonl")) if l.strip()]
dc = {}
try:
    dc = json.load(open(os.path.join(out, "device-check.json")))
except Exception as e:
    dc = {"error": f"no device-check.json: {e}"}
lines = [f"gpu-check: {took} s of {limit} s", ""]
for s in steps:
    lines.append(f"  step {s['step']:<8} rc {s.get('rc')}  {s.get('wall_s', '')}s {s.get('skipped', '')}")
lines += ["", f"gpu: {dc.get('gpu')}", f"device: {dc.get('device')}  overall ok: {dc.get('ok')}", ""]
lines.append(f"{'numerics':<28}{'cpu f32 rel':>14}{'gpu f32 rel':>14}{'gpu f64 rel':>14}  ok")
for case, body in (dc.get("numerics") or {}).items():
    if not isinstance(body, dict):
        continue
    for q, v in body.items():
        if isinstance(v, dict) and "device_f32" in v:
            lines.append(f"{case + '.' + q:<28}{v['cpu_f32']['max_rel']:>14.2e}{v['device_f32']['max_rel']:>14.2e}"
                         f"{v['device_f64']['max_rel']:>14.2e}  {v['ok']}")
    if "status" in body:
        lines.append(f"{case:<28}{body['status']}")
if dc.get("error"):
    lines.append(f"error: {dc['error']}")
nc = dc.get("nvrtc_compile", {})
lines.append(f"{'nvrtc compile (no GPU)':<28}{nc.get('include_dir')} {nc.get('arch')} {nc.get('error', '')}  {nc.get('ok')}")
nv = dc.get("nvrtc", {})
lines.append(f"{'nvrtc run-time kernels':<28}{nv.get('diff', nv.get('error'))}  {nv.get('ok')}")
b = dc.get("bench") or {}
if b:
    lines.append("")
    mm = b.get("matmul_f32", {})
    lines.append(f"matmul f32 {mm.get('size')}^3: {mm.get('gflops', 0):.0f} GFLOP/s")
    fs = b.get("flow_train_step", {})
    lines.append(f"flow train step (batch {fs.get('case', {}).get('batch')}, 10 probes): "
                 f"GPU dfdx {fs.get('device_dfdx_steps_per_s', 0):.1f}/s, CPU hand-written {fs.get('cpu_hand_written_steps_per_s', 0):.1f}/s")
    lines.append(f"unet: {json.dumps(b.get('unet'))}")
summary = {"took_s": took, "limit_s": limit, "steps": steps, "device_check": dc}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
open(os.path.join(out, "summary.txt"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -rf "$WORK"
