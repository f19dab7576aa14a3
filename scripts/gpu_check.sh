#!/usr/bin/env bash
# The ONE prepared GPU check (issues 9 and 3): train throughput / MFU, parity, xla-vs-cudnn, sampling.
#
# Budget: < 8 min wall on one H200/H100 including compiles (GPU_CHECK_BUDGET_S, default 450 s). Steps
# run in priority order, each under `timeout`; a step that no longer fits the remaining budget is
# skipped (and says so). $OUT gets 3 files (the device tool returns at most 8):
#   steps.log (every step's full output, appended as each step ends), summary.json (versions,
#   flags, each step's rc/wall/JSON result, the 76 GB max-batch estimate), ucf101_b8_trace.tgz
#   (jax.profiler trace of 2 UCF101 steps; TensorBoard/XProf); and a short table is printed last.
# Steps, in priority order: UCF101 train batch 8 (+trace), parity batch 8, model_check (xla vs
# cudnn + fwd/bwd at 16x64x64 bf16), sampling 25/50 steps with CFG (T2V small), UCF101 batch 16,
# UCF101 batch 8 with remat=none (the config uses dots), UCF101 --find_max_batch.
#
# Needs on the device: jax[cuda], numpy, absl-py (in the image). Carried as wheels in .whl/ (all
# pure-python, ~1 MB; made here, in the repo root, once):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     ml-collections==1.1.0 flax==0.12.8 optax==0.2.8
# (ml-collections is missing there; flax/optax pin the versions tested here.) No grain, tfds,
# array-record or tensorflow is needed: the benchmarks use synthetic batches.
#
# Device tool call (from the repo root):
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], kind="nvidia-h200", timeout_s=560)
# CPU dry run with tiny configs (what the lead can check here; ~10 min on the 2-core box):
#   GPU_CHECK_TINY=1 PY=.venv/bin/python OUT=/tmp/gpu_check bash scripts/gpu_check.sh
set -u
START=$(date +%s)
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
TINY=${GPU_CHECK_TINY:-0}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
REC=$(mktemp /tmp/gpu_check_steps.XXXXXX)
LOGS=$(mktemp -d /tmp/gpu_check_logs.XXXXXX)
SCALE=1  # step time limits are multiplied by this (tiny mode on a slow shared CPU needs more)
: > "$OUT/steps.log"

if [ "$TINY" = "1" ]; then
  BUDGET_S=${GPU_CHECK_BUDGET_S:-2400}
  SCALE=4
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
elif ls .whl/*.whl >/dev/null 2>&1; then
  BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || { echo "wheel install failed"; exit 1; }
else
  BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
  echo "note: no .whl/ carried; assuming ml_collections/flax/optax are importable"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}  # a rerun on a warm machine

# --- preflight: versions, GPU, and the default XLA GPU flags (fall back to none if XLA rejects one)
nvidia-smi -L 2>/dev/null | head -2
FLAGS=$($PY -c "import os; from vdm_jax import xla_flags as x; \
print(x.merge_flags(os.environ.get('XLA_FLAGS', ''), x.DEFAULT_GPU_FLAGS)[0])")
PRE='import jax, flax, optax, ml_collections, json; jax.numpy.zeros(8).sum().block_until_ready(); \
print(json.dumps({"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__, \
"ml_collections": ml_collections.__version__, "device": jax.devices()[0].device_kind, \
"num_devices": jax.device_count()}))'
if VERSIONS=$(XLA_FLAGS="$FLAGS" timeout 120 $PY -c "$PRE" 2>/tmp/gpu_check_pre.err); then
  export XLA_FLAGS="$FLAGS"
else
  echo "XLA rejected the default flags; running without them: $(tail -2 /tmp/gpu_check_pre.err)"
  export VDM_DEFAULT_XLA_FLAGS=0
  VERSIONS=$(timeout 120 $PY -c "$PRE") || { echo "jax does not start"; exit 1; }
fi
echo "preflight: $VERSIONS"
echo "XLA_FLAGS=${XLA_FLAGS:-}"

# step NAME MIN_S MAX_S CMD... : run CMD under timeout if at least MIN_S of the budget is left.
step() {
  local name=$1 min=$2 max=$3
  shift 3
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if (( left < min )); then
    echo "SKIP $name: ${left}s of the budget left, needs >= ${min}s"
    printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$REC"
    return
  fi
  max=$(( max * SCALE ))
  local limit=$(( max < left ? max : left )) t0
  t0=$(date +%s)
  echo "RUN  $name (limit ${limit}s): $*"
  timeout -k 5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "     $name: rc=$rc in $(( $(date +%s) - t0 ))s"
  { echo "===== $name rc=$rc: $*"; cat "$LOGS/$name.log"; echo; } >> "$OUT/steps.log"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$REC"
}

TT="$PY -m benchmarks.train_throughput"
if [ "$TINY" = "1" ]; then
  UCF=configs/moving_digits.py:smoke; PAR=configs/parity.py:smoke; T2V=configs/moving_digits.py:smoke
  FAST="--steps=2 --warmup=1"; B1=8; B2=16
  MC="--preset=tiny --batch=2 --frames=4 --res=16 --dtype=float32 --steps=2 --warmup=1"
  SMP="--steps=2,4 --batch=2 --repeats=1"; MAXB="--memory_budget_gb=0.3 --max_batch_probes=3"
else
  UCF=configs/vdm_ucf101.py; PAR=configs/parity.py; T2V=configs/vdm_t2v_small.py
  FAST="--steps=10 --warmup=3"; B1=8; B2=16
  MC="--preset=ucf101 --batch=8 --steps=5 --warmup=1"
  SMP="--steps=25,50 --batch=4 --repeats=3"; MAXB="--max_batch_probes=4"
fi
TRACE=/tmp/gpu_check_trace
rm -rf "$TRACE"

step ucf101_b8 60 270 $TT --config=$UCF --batch=$B1 $FAST --profile_dir=$TRACE --profile_steps=2
step parity_b8 40 150 $TT --config=$PAR --batch=$B1 $FAST
step model_check 60 180 $PY -m benchmarks.model_check $MC
step sampler_speed 40 150 $PY -m benchmarks.sampler_speed --config=$T2V $SMP
step ucf101_b16 60 170 $TT --config=$UCF --batch=$B2 $FAST
step ucf101_b8_remat_none 60 170 $TT --config=$UCF --batch=$B1 $FAST --config.model.remat=none
step ucf101_maxbatch 150 400 $TT --config=$UCF --batch=$(( 2 * B2 )) --steps=0 --find_max_batch $MAXB
if [ -d "$TRACE" ]; then tar -czf "$OUT/ucf101_b8_trace.tgz" -C "$TRACE" . 2>/dev/null; fi

# --- summary.json + table
VERSIONS="$VERSIONS" $PY - "$REC" "$LOGS" "$OUT" "$(( $(date +%s) - START ))" <<'EOF'
import json, os, sys
rec, logs, out, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def last_json(name):
    try:
        lines = [ln for ln in open(os.path.join(logs, name + ".log")) if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
steps = {}
for line in open(rec):
    name, rc, wall = line.rstrip("\n").split("\t")
    steps[name] = {"rc": rc, "wall_s": int(wall), "result": last_json(name)}
summary = {"versions": json.loads(os.environ.get("VERSIONS") or "null"), "total_wall_s": total,
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "steps": steps}
r8, r16 = (steps.get(k, {}).get("result") for k in ("ucf101_b8", "ucf101_b16"))
if r8 and r16 and r16["batch"] > r8["batch"]:  # linear memory model from the two runs: batch for 80 GB
    for key in ("xla_peak_bytes", "peak_memory_bytes"):
        if r8.get(key) and r16.get(key):
            per = (r16[key] - r8[key]) / (r16["batch"] - r8["batch"])
            fixed = r8[key] - per * r8["batch"]
            summary[f"max_batch_76GB_from_{key}"] = int((76e9 - fixed) // per) if per > 0 else None
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("\n==== summary (%d s total) ====" % total)
print("versions:", summary["versions"])
for name, s in steps.items():
    r = s["result"] or {}
    head = f"{name:21s} rc={s['rc']:>7s} {s['wall_s']:4d}s"
    if "clips_per_s" in r:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_memory_bytes'] / 1e9:.1f}GB" if r.get("peak_memory_bytes") else "n/a"
        print(f"{head} batch {r['batch']}: {1e3 * r['step_time_s']:.1f} ms/step {r['clips_per_s']:.1f} clips/s "
              f"MFU {mfu} compile {r['compile_s']:.0f}s peak {mem} remat {r['remat']}")
    elif "backends" in r:
        b = {k: round(v["fwd_bwd_ms"], 1) if "fwd_bwd_ms" in v else "skipped" for k, v in r["backends"].items()}
        print(f"{head} fwd+bwd ms {b} xla_vs_cudnn {r.get('xla_vs_cudnn')}")
    elif "steps" in r and "forward_ms" in r:
        st = {k: (round(v["ms_per_step"], 1), round(v["step_over_forward"], 2)) for k, v in r["steps"].items()}
        print(f"{head} forward {r['forward_ms']:.1f} ms; steps: (ms/step, step/forward) {st} "
              f"marginal step/forward {r.get('marginal_step_over_forward')}")
    elif "find_max_batch" in r:
        f = r["find_max_batch"]
        print(f"{head} max batch {f['max_batch']} (predicted {f['max_batch_predicted']}, "
              f"76 GB estimate {f.get('max_batch_estimate')}) run {f.get('max_batch_run')}")
    else:
        print(head)
for k, v in summary.items():
    if k.startswith("max_batch_76GB"):
        print(f"{k}: {v}")
p = (steps.get("parity_b8") or {}).get("result") or {}
if p.get("clips_per_s"):
    print(f"parity: {p['clips_per_s']:.1f} clips/s = {p['clips_per_s'] / 57.8:.2f}x the peer's 57.8 (target 3x)")
rn = (steps.get("ucf101_b8_remat_none") or {}).get("result") or {}
if r8 and rn.get("step_time_s"):
    print(f"ucf101 batch {r8['batch']}: remat {r8['remat']} {1e3 * r8['step_time_s']:.1f} ms vs remat none "
          f"{1e3 * rn['step_time_s']:.1f} ms")
if r8 and r8.get("mfu") is not None:
    print(f"ucf101 MFU at batch {r8['batch']}: {100 * r8['mfu']:.1f}% (target 35%, stretch 45%)")
EOF
rm -rf "$REC" "$LOGS"
