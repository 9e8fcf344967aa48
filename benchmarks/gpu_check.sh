#!/usr/bin/env bash
# The GPU check of issue 26, prepared as one script that fits in 8 minutes on one H100 from a
# fresh GPU box set up as the README says (the code, the data, `bash scripts/setup_env.sh`):
#
#   1. the environment: Python, torch, CUDA, cuDNN, timm, kornia, the GPU (env.json);
#   2. training images/s of the trainer against a bare loop, EfficientNet-Lite0 at 224 px in
#      bfloat16, batched augmentation on the GPU, at two batch sizes eagerly and at the
#      largest with torch.compile + CUDA graphs (compile_mode reduce-overhead), and the
#      host-device syncs of a training epoch (benchmarks/bench_train.py);
#   3. the gpu profile's 01-05 on HAM10000 when the run folder lacks them (or a run folder
#      prepared on another machine and copied to runs/$RUN);
#   4. the gpu profile's 07-08: the five lesion-grouped fold models with max_minutes sized to
#      what is left of the budget (eagerly: five compilations would not fit), 08 to the end
#      so that its predictions are saved;
#   5. what came out copied to $GPU_CHECK_OUT: the figures, run.json, metrics.json, the test
#      predictions of the single model and of the ensemble, the histories and the logs.
#
#   bash benchmarks/gpu_check.sh                                  # on the GPU box
#   PY=python3 DATA_DIR=/data bash benchmarks/gpu_check.sh        # the box's own Python
#
# Settings (environment variables): PY, DATA_DIR, DATASET (ham10000 | demo), RUN,
# GPU_CHECK_OUT, BUDGET_S (480), RESERVE_08_S (120: kept for 08), MODEL_OVERHEAD_S (10:
# per fold model, beside its training), MAX_MINUTES (instead of the sized budget),
# IMAGE_SIZE (224), BATCH_SIZES (64,256), COMPILE_MODE (reduce-overhead; off: none),
# STEPS (30), REPEATS (3), N_CACHE (2048), PREP_P and RUN_P (more "-p NAME VALUE" pairs for
# 01-05 and for 07-08, space-separated: the tests shrink everything with them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T0=$(date +%s)
PY=${PY:-$(bash scripts/setup_env.sh)}
DATA_DIR=${DATA_DIR:-../shared/data}
DATASET=${DATASET:-ham10000}
RUN=${RUN:-gpu-check}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu_check}
BUDGET_S=${BUDGET_S:-480}
RESERVE_08_S=${RESERVE_08_S:-120}
MODEL_OVERHEAD_S=${MODEL_OVERHEAD_S:-10}
IMAGE_SIZE=${IMAGE_SIZE:-224}
BATCH_SIZES=${BATCH_SIZES:-64,256}
COMPILE_MODE=${COMPILE_MODE:-reduce-overhead}
STEPS=${STEPS:-30}
REPEATS=${REPEATS:-3}
N_CACHE=${N_CACHE:-2048}
read -r -a PREP_P <<< "${PREP_P:-}"
read -r -a RUN_P <<< "${RUN_P:-}"
export SKINHELPERS_PROGRESS=plain PYTHONUNBUFFERED=1
mkdir -p "$OUT"
case $RUN in /*) RUN_DIR=$RUN ;; *) RUN_DIR=runs/$RUN ;; esac  # as run_all.sh's --run
since() { echo $(( $(date +%s) - T0 )); }
step() { echo; echo "=== gpu_check $1 (at ${2}s)"; }

step "1/5 environment" "$(since)"
"$PY" - "$OUT/env.json" <<'EOF'
import json, platform, subprocess, sys
import kornia, numpy, timm, torch, torchvision
env = {"python": platform.python_version(), "torch": torch.__version__,
       "torchvision": torchvision.__version__, "timm": timm.__version__,
       "kornia": kornia.__version__, "numpy": numpy.__version__,
       "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
       "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
       "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
       "cpu_threads": torch.get_num_threads()}
try:
    env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env, indent=1))
EOF

step "2/5 trainer vs bare loop: Lite0, ${IMAGE_SIZE} px, batches ${BATCH_SIZES}" "$(since)"
BENCH=(benchmarks/bench_train.py --profile gpu --arch efficientnet_lite0 --image-size "$IMAGE_SIZE"
       --workers device --steps "$STEPS" --repeats "$REPEATS" --n-cache "$N_CACHE"
       --dataset "$DATASET")
if [ "$DATASET" = ham10000 ]; then BENCH+=(--data-dir "$DATA_DIR"); fi
SKINLAB_BENCH_RESULTS="$OUT/eager" "$PY" "${BENCH[@]}" --batch-sizes "$BATCH_SIZES" \
  --compile-modes off
if [ "$COMPILE_MODE" != off ]; then
  step "2/5 the same, compiled (${COMPILE_MODE}) at the largest batch" "$(since)"
  SKINLAB_BENCH_RESULTS="$OUT/compiled" "$PY" "${BENCH[@]}" \
    --batch-sizes "${BATCH_SIZES##*,}" --compile-modes "$COMPILE_MODE"
fi

PIPE=(-m skinhelpers.run.pipeline --dataset "$DATASET" --profile gpu --run "$RUN" --no-html)
if [ "$DATASET" != demo ]; then PIPE+=(--data-dir "$DATA_DIR"); fi
if [ ! -f "$RUN_DIR/split.csv" ]; then
  step "3/5 the gpu profile's 01-05 (no prepared run folder $RUN_DIR)" "$(since)"
  "$PY" "${PIPE[@]}" --only 01-05 -p image_size "$IMAGE_SIZE" "${PREP_P[@]}"
else
  step "3/5 01-05: $RUN_DIR has them" "$(since)"
fi

# the fold models 07 trains (kfold_ensemble: one per fold of 04's split), the budget left
MODELS=$("$PY" -c "import pandas as pd; s = pd.read_csv('$RUN_DIR/split.csv'); \
print(int(s['fold'].max()) + 1 if 'fold' in s and s['fold'].notna().any() else 1)")
LEFT=$(( BUDGET_S - $(since) - RESERVE_08_S ))
MAX_MINUTES=${MAX_MINUTES:-$("$PY" -c "print(round(max(0.1, ($LEFT / $MODELS - $MODEL_OVERHEAD_S) / 60), 2))")}
step "4/5 07-08: ${MODELS} model(s), max_minutes ${MAX_MINUTES} each (${LEFT}s left for 07)" "$(since)"
T07=$(date +%s)
"$PY" "${PIPE[@]}" --only 07-08 -p arch efficientnet_lite0 -p image_size "$IMAGE_SIZE" \
  -p max_minutes "$MAX_MINUTES" -p torch_compile False "${RUN_P[@]}"

step "5/5 results to $OUT" "$(since)"
mkdir -p "$OUT/run"
for f in run.json metrics.json history.csv train_result.json split.csv \
         predictions_test.csv predictions_test_ensemble.csv; do
  if [ -f "$RUN_DIR/$f" ]; then cp "$RUN_DIR/$f" "$OUT/run/"; fi
done
if [ -d "$RUN_DIR/folds" ]; then
  for d in "$RUN_DIR"/folds/fold*; do
    mkdir -p "$OUT/run/folds/$(basename "$d")"
    cp "$d"/history.csv "$d"/train_result.json "$OUT/run/folds/$(basename "$d")/" 2>/dev/null || true
  done
fi
cp -r "$RUN_DIR/logs" "$OUT/run/" 2>/dev/null || true
"$PY" - "$OUT" "$(since)" "$(( $(date +%s) - T07 ))" "$MAX_MINUTES" "$MODELS" <<'EOF'
import json, sys
from pathlib import Path
out, total, s0708, mm, models = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
summary = {"seconds": total, "seconds_07_08": s0708, "max_minutes": mm, "models": models}
for kind in ("eager", "compiled"):
    p = out / kind / "train_overhead.json"
    if p.exists():
        d = json.loads(p.read_text())
        summary[kind] = [{k: r[k] for k in ("batch_size", "compile_mode", "loop", "median", "ratio")}
                         for r in d["rows"]]
        summary[kind + "_syncs_per_epoch"] = {k: v["syncs_per_epoch"] for k, v in d["measured"].items()}
m = out / "run" / "metrics.json"
if m.exists():
    d = json.loads(m.read_text())
    keep = ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy")
    summary["test"] = {n: {k: v for k, v in r.get("headline", {}).items() if k in keep}
                       for n, r in d.get("models", {}).items()}
    if isinstance(d.get("ensemble"), dict):
        summary["ensemble"] = {k: d["ensemble"].get(k) for k in ("members", "headline", "vs_primary")}
    summary["primary"] = d.get("primary")
summary["predictions_saved"] = sorted(p.name for p in (out / "run").glob("predictions_test*.csv"))
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
print(json.dumps(summary, indent=1, default=str))
EOF
echo "gpu_check done in $(since) s (budget ${BUDGET_S} s)"
