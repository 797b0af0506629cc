#!/usr/bin/env bash
# Issue 10, item 7, on a lent GPU (one NVIDIA H200 here): import -> LoRA on ReDial in bf16 -> test evaluation, an FSDP
# smoke test, then as much of the pretrained memorization sweep as the time cap allows. Nothing can be fetched there and
# one call carries at most 64 MiB, so first, here: `python bench/gpu_stage.py` (writes .gpu/a, .gpu/b, .gpu/c). Then
# three device calls, each within 30 s of the last (the machine stays warm 30 s; parts wait in /tmp/gpu-stage):
#   run(command="bash bench/gpu_run.sh", carry=[".gpu/a"], timeout_s=120)   # model part 1: staged, exits
#   run(command="bash bench/gpu_run.sh", carry=[".gpu/b"], timeout_s=120)   # model part 2: staged, exits
#   run(command="bash bench/gpu_run.sh", carry=[".gpu/c"], timeout_s=540)   # part 3, wheels, sweep points: the run
# The run stops starting steps at BUDGET_S seconds (default 450: 7.5 min, inside the issue's 8) and returns
# $OUT/gpu_results.tar.gz (logs, results JSON, the sweep's tables) and $OUT/summary.txt. A CPU dry run of the same
# steps (tiny, in this machine's environment): OUT=/tmp/gpu-out BUDGET_S=900 STEPS_CAP=4 SKIP_WHEELS=1 bash bench/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/gpu-stage
mkdir -p "$STAGE"
for d in .gpu/a .gpu/b .gpu/c; do [ -d "$d" ] && cp -r "$d"/. "$STAGE"/; done
for i in 0 1 2; do
  [ -f "$STAGE/model.gguf.part$i" ] || { echo "staged: $(ls "$STAGE" | tr '\n' ' ')(waiting for model.gguf.part$i)"; exit 0; }
done
[ -f "$STAGE/model.gguf.sha256" ] || { echo "staged parts, no .gpu/c yet"; exit 0; }

OUT=${OUT:-/tmp/gpu-out}
RES=/tmp/gpu-res
BUDGET_S=${BUDGET_S:-450}
STEPS_CAP=${STEPS_CAP:-0}   # >0: every training run stops after this many steps (the CPU dry run)
mkdir -p "$OUT" "$RES"
LOG="$RES/summary.txt"
START=$SECONDS
finish() {
  cp "$LOG" "$OUT/summary.txt" 2>/dev/null
  tar -czf "$OUT/gpu_results.tar.gz" -C "$RES" . 2>/dev/null
}
trap finish EXIT
say() { echo "[$((SECONDS - START)) s] $*" | tee -a "$LOG"; }
# step NAME CMD...: run CMD with what is left of the budget as its timeout, its output in $RES/NAME.log
step() {
  local name=$1; shift
  local left=$((BUDGET_S - (SECONDS - START)))
  if [ "$left" -lt 15 ]; then say "skip $name: the ${BUDGET_S} s budget is spent"; return 1; fi
  say "start $name (at most $left s): $*"
  timeout "$left" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  say "end $name: rc $rc"
  tail -n 3 "$RES/$name.log" | cut -c1-300 | sed 's/^/    /' >> "$LOG"
  return $rc
}

cat "$STAGE"/model.gguf.part0 "$STAGE"/model.gguf.part1 "$STAGE"/model.gguf.part2 > "$STAGE/model.gguf"
echo "$(cat "$STAGE/model.gguf.sha256")  $STAGE/model.gguf" | sha256sum -c --quiet || { say "model.gguf: sha256 mismatch"; exit 1; }
if [ "${SKIP_WHEELS:-0}" = 1 ]; then  # the CPU dry run: this machine's environment already has everything
  say "wheels not installed (SKIP_WHEELS=1)"
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STAGE"/whl/*.whl \
    || { say "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DL="python3 -m dlsearch"
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
python3 -c "import torch, transformers, peft, trl, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$LOG"
CAP=() TEST=()
[ "$STEPS_CAP" -gt 0 ] && CAP=(--set "stages.conversation.train.max_steps=$STEPS_CAP") && TEST=(--n-test 8)

# 1. import the GGUF to the dir the recipes name (runs/smollm2-135m)
step import $DL model import "$STAGE/model.gguf" --out runs/smollm2-135m || exit 1

# 2. LoRA on ReDial, the CPU recipe's two epochs (batch 8, 896 steps), bf16 on the GPU
step redial_train $DL finetune --config configs/finetune-redial-pretrained.yaml --set model.pretrained=runs/smollm2-135m \
  --set output_dir=runs/redial_gpu --set stages.conversation.train.epochs=2 --set stages.conversation.train.save_steps=448 \
  --set stages.conversation.train.bf16=true "${CAP[@]}"
cp runs/redial_gpu/run_summary.json "$RES/redial_run_summary.json" 2>/dev/null

# 3. direct search vs popularity on every ReDial test turn, 20 beams (the product default), already-mentioned excluded
step redial_test python3 bench/redial_pretrained_curve.py test --run runs/redial_gpu --data runs/redial_gpu/data --beams 20 \
  --out "$RES/redial" "${TEST[@]}"

# 4. FSDP smoke test: the shipped accelerate config, full fine-tuning for a few steps (one process: one GPU)
step fsdp_smoke accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 -m dlsearch.finetune \
  --config configs/finetune-redial-pretrained.yaml --set model.pretrained=runs/smollm2-135m --set output_dir=runs/fsdp_smoke \
  --set stages.conversation.method=full --set stages.conversation.train.lr=1e-5 --set stages.conversation.train.max_steps=10 \
  --set stages.conversation.train.bf16=true
cp runs/fsdp_smoke/run_summary.json "$RES/fsdp_run_summary.json" 2>/dev/null \
  && python3 -c "import json; s = json.load(open('runs/fsdp_smoke/run_summary.json'))[0]; print('fsdp smoke: distributed_type', s['distributed_type'], 'device', s['device'], 'steps', s['steps'], 'loss', s['train_loss'])" | tee -a "$LOG"

# 5. the pretrained memorization sweep, points prepared by gpu_stage.py, in size order while time is left
SWEEP_OUT=runs/sweep-movielens-pretrained-gpu
mkdir -p "$SWEEP_OUT" && cp -r "$STAGE/sweep/." "$SWEEP_OUT/"
SWEEP_CAP=()
[ "$STEPS_CAP" -gt 0 ] && SWEEP_CAP=(--set "epochs_per_item=0.05" --set "sizes=[1000]" --set "memorization_sample=20" --set "n_requests=20")
step sweep $DL sweep --config configs/sweep-movielens-pretrained-gpu.yaml "${SWEEP_CAP[@]}"
mkdir -p "$RES/sweep"
cp "$SWEEP_OUT"/sweep.* "$SWEEP_OUT"/config.json "$RES/sweep/" 2>/dev/null
for p in "$SWEEP_OUT"/points/*/; do  # finished stages of every point, also of one the time cap cut
  mkdir -p "$RES/sweep/$(basename "$p")" && cp "$p"stage-*.json "$RES/sweep/$(basename "$p")/" 2>/dev/null
done
say "done"
