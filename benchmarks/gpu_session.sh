#!/usr/bin/env bash
# Everything one short GPU session measures and trains, in one command, within DEADLINE seconds:
#   1. the foundation issue's training-throughput table, then the host-device syncs per training step
#      (benchmarks/device_checks.sh)
#   2. energy-model throughput (log_prob at 64x64x3 fp32; dual score matching vs denoiser training step, bf16),
#      then log_prob again with cuDNN autotuning, channels_last, and a compiled forward
#   3. batched sampling at 64x64 (benchmarks/sampling_throughput.py, bundled bf-unet-small-color)
#   4. training for the time that is left, TRAIN=
#      bf-dncnn-gray (default): configs/bf_dncnn_bsd400_gray.yaml with a schedule compressed to 13 epochs
#        (5.2 M patches; halvings at epochs 6, 8, 10, 12), BSD400 / Set12 from DATA (folder with bsd400/, set12/);
#        with BFDNCNN_INIT=PATH it starts from those weights; then its BSD68 PSNR at 7 noise levels (no BM3D)
#      dsm: dsm-energy-fashion-mnist (configs/dsm_energy_fashion_mnist_gpu.yaml), starting from the weights of
#        DSM_INIT (default: the shipped dsm-energy-fashion-mnist; empty: from scratch), Fashion-MNIST from FMNIST
#      s10: the pair bf-dncnn-gray-s10 / dncnn-gray-s10-biased (BF-DnCNN and its biased twin, BSD400, sigma in
#        [0, 10]/255, the same compressed schedule), half of the time each; then both on BSD68 up to sigma 100
#      bf-dncnn-color: configs/bf_dncnn_photos_color.yaml (built-in color photos + DATA/mate if present), the
#        schedule compressed to 13 epochs; then Set5 / Set14 color from DATA (set5_color/, set14_color/)
# SKIP_THROUGHPUT=1, SKIP_ENERGY=1, SKIP_SAMPLING=1 skip steps 1-3 (a session that only trains); TRAIN=none skips 4.
# Steps 1-3 took 338 s on an H200 (2026-11-27, with 4 of the 6 throughput rows now run; about 420 s with 6), so
# within one 555-s command either measure (TRAIN=none) or train (SKIP_THROUGHPUT=1 SKIP_ENERGY=1 SKIP_SAMPLING=1): each step's timeout is cut to end before DEADLINE
# (a step with under 20 s left is skipped), and
# training is skipped (with a message) when less than MIN_FIT (150) seconds would be left for it. The compressed
# schedule sizes its epochs to the time it gets (RATE patches/s; default 14,000 with CUDA graphs, 9,000 when the
# probe falls back to the default compile mode: the H100's compiled Lightning rate), so
# the learning-rate halvings happen; a run started from BFDNCNN_INIT restarts the schedule at 1e-3 (a warm restart).
# Data travels in .gpu/ (ignored by git; carry it): cp -r ../shared/data/{bsd400,set12,bsd68} .gpu/ and/or
# cp /usr/share/datasets/fashion-mnist/*images* .gpu/fmnist/ (the working tree that travels must stay < 64 MiB).
# Results under $OUT: JSON + logs, and each trained model as a slim checkpoint train_<name>.ckpt (EMA weights
# [+ C], no optimizer state), ready for `priorlab export`. Run from the repository root, without installing priorlab:
#   OUT=/tmp/out FMNIST=/usr/share/datasets/fashion-mnist bash benchmarks/gpu_session.sh      # GPU machine
# Wheels for packages missing on the machine may be put in .whl/ (installed into /tmp/site first).
# CPU smoke test (tiny models, a few steps; see the SMOKE settings below):
#   OUT=/tmp/out SMOKE=1 bash benchmarks/gpu_session.sh
set -uo pipefail
START=$(date +%s)
OUT=${OUT:?set OUT to an output folder}
DEADLINE=${DEADLINE:-555}      # seconds from the start by which everything must be written
FMNIST=${FMNIST:-.gpu/fmnist}  # folder with the Fashion-MNIST IDX files
DATA=${DATA:-.gpu}             # folder with bsd400/ and set12/
TRAIN=${TRAIN:-bf-dncnn-gray}
BFDNCNN_INIT=${BFDNCNN_INIT:-}
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
DSM_INIT=${DSM_INIT-dsm-energy-fashion-mnist}
WORK=$(mktemp -d)              # intermediate files; only a few files come back from $OUT
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
elapsed() { echo $(( $(date +%s) - START )); }
budget() {  # budget SECONDS: the timeout a step may use (at most SECONDS, ending 15 s before DEADLINE); 0: skip it
  local left=$(( DEADLINE - $(elapsed) - 15 ))
  if [ "$left" -lt 20 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
run_step() {  # run_step SECONDS CMD...: the command under its budget, or a message that there was no time left
  local t
  t=$(budget "$1"); shift
  if [ "$t" -eq 0 ]; then echo "skipped (no time left before DEADLINE $DEADLINE s): $*"; return 0; fi
  timeout "$t" "$@"
}
merge_json() {  # merge_json OUT.json IN.json...: one JSON object {input file name: its content}
  $PY - "$@" <<'PYEOF'
import json, sys
runs = {p.rsplit("/", 1)[-1]: json.load(open(p)) for p in sys.argv[2:]}
json.dump(runs, open(sys.argv[1], "w"), indent=2)
PYEOF
}
if [ "$SMOKE" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY -c "import priorlab.cli.lightning, jsonargparse, torch; print('imports ok; cuda', torch.cuda.is_available())" \
  || exit 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; date -u

if [ "$SMOKE" = 1 ]; then
  ET=(--arch test_energy_unet --in-chans 1 --size 16 --batch 4 --steps 2 --warmup 1 --device cpu)
  ST=(--prior bf-dncnn-small-gray --size 16 --batches 1 2 --max-steps 5 --device cpu)
  BF=(--model.arch=test_bf_dncnn --model.compile=false --trainer.accelerator=cpu --trainer.precision=32-true
      --trainer.max_epochs=1 --data.patches_per_epoch=64 --data.batch_size=16 --data.num_workers=0
      --trainer.limit_val_batches=2)
  DQ=(--max-images 2 --device cpu)
  BIASED=(--model.arch=test_bf_dncnn --model.arch_args="{bias: true}")  # the tiny biased counterpart
  export DEVICE=cpu STEPS=2 WARMUP=1 BATCH=4 ARCH_DNCNN=test_bf_dncnn ARCH_UNET=test_bf_unet
  MIN_FIT=0
  MIN_RUN=5  # the tiny smoke runs take seconds
  DSM_INIT=
  FIT=(--model.arch=test_energy_unet --trainer.accelerator=cpu --trainer.max_steps=4 --trainer.val_check_interval=2
       --data.batch_size=8 --data.val_size=16 --data.train_limit=64 --data.eval_batch_size=8 --data.num_workers=0)
else
  ET=()
  ST=()
  BF=()
  DQ=()
  BIASED=(--model.arch=dncnn)
  export STEPS=${STEPS:-100} WARMUP=${WARMUP:-20}
  MIN_FIT=${MIN_FIT:-150}
  MIN_RUN=60  # a DnCNN run needs about this for start-up, compilation and validation alone
  FIT=()
fi
RATE=${RATE:-}  # training patches/s assumed when sizing the compressed schedule's epochs (default: see fit_bf)

if [ -z "${SKIP_THROUGHPUT:-}" ]; then
echo "== [$(elapsed) s] 1. training throughput (device_checks.sh)"
# The whole step under one budget (8 runs of up to RUN_TIMEOUT each would outlast DEADLINE); the rows it finished
# are kept.
RUN_TIMEOUT=${RUN_TIMEOUT:-110} OUT="$WORK/throughput" PY=$PY run_step 420 bash benchmarks/device_checks.sh
compgen -G "$WORK/throughput/*.json" >/dev/null && merge_json "$OUT/throughput.json" "$WORK"/throughput/*.json

fi

if [ -z "${SKIP_ENERGY:-}" ]; then
echo "== [$(elapsed) s] 2. energy throughput"
run_step 150 $PY benchmarks/energy_throughput.py "${ET[@]}" --json "$WORK/energy_default.json"
run_step 60 $PY benchmarks/energy_throughput.py "${ET[@]}" --skip-training --cudnn-benchmark \
  --json "$WORK/energy_cudnn_benchmark.json"
run_step 60 $PY benchmarks/energy_throughput.py "${ET[@]}" --skip-training --cudnn-benchmark --channels-last \
  --json "$WORK/energy_cudnn_benchmark_channels_last.json"
run_step 150 $PY benchmarks/energy_throughput.py "${ET[@]}" --compile --cudnn-benchmark \
  --json "$WORK/energy_compiled_cudnn_benchmark.json"
compgen -G "$WORK/energy_*.json" >/dev/null && merge_json "$OUT/energy_throughput.json" "$WORK"/energy_*.json

fi

if [ -z "${SKIP_SAMPLING:-}" ]; then
echo "== [$(elapsed) s] 3. sampling throughput"
# No cuDNN autotuning: the batch shrinks as samples converge, and each new size would be tuned inside the timing.
run_step 120 $PY benchmarks/sampling_throughput.py "${ST[@]}" --no-cudnn-benchmark --json "$OUT/sampling_throughput.json"
fi

slim() {  # slim RUN_DIR NAME: last checkpoint without optimizer state -> $OUT/train_NAME.ckpt; its metrics.csv
  # rows -> $OUT/train_metrics.csv with a first column "run" (one file for all runs: few files come back)
  local ckpt
  ckpt=$(ls -t "$1"/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
  [ -z "$ckpt" ] && { echo "no checkpoint under $1"; return 1; }
  awk -v run="$2" -v head="$([ -f "$OUT/train_metrics.csv" ] && echo 0 || echo 1)" \
    'NR == 1 { if (head) print "run," $0; next } { print run "," $0 }' \
    "$(dirname "$(dirname "$ckpt")")/metrics.csv" >> "$OUT/train_metrics.csv"
  $PY - "$ckpt" "$OUT/train_$2.ckpt" <<'PYEOF'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
for key in ("optimizer_states", "lr_schedulers", "callbacks", "loops"):
    ck.pop(key, None)
torch.save(ck, sys.argv[2])
print("slim checkpoint:", sys.argv[2], "step", ck.get("global_step"), "calibration", ck.get("priorlab", {}).get("calibration"))
PYEOF
}
quality() {  # quality "DATASETS" "SIGMAS" NAME...: PSNR of $OUT/train_NAME.ckpt on the GPU -> $OUT/quality.json
  # (BM3D comes from the CPU cache later)
  local sets=$1 sigmas=$2 name args=()
  shift 2
  for name in "$@"; do [ -f "$OUT/train_$name.ckpt" ] && args+=(--ckpt "$OUT/train_$name.ckpt" --name "$name"); done
  [ ${#args[@]} -eq 0 ] && return 0
  for d in $sets; do [ -d "$DATA/$d" ] || { echo "no $DATA/$d: no quality figures"; return 0; }; done
  echo "== [$(elapsed) s] 5. PSNR of $* on $sets"
  run_step 120 $PY benchmarks/denoise_quality.py "${args[@]}" --datasets $sets --sigmas $sigmas --no-bm3d \
    --data-root "$DATA" "${DQ[@]}" --out "$WORK/quality.md" --json "$OUT/quality.json"
}
fit_bf() {  # fit_bf NAME SECONDS CONFIG ARGS...: one compressed-schedule DnCNN run, slimmed to $OUT/train_NAME.ckpt
  local name=$1 secs=$2 config=$3 runs t0 mode=() rate=${RATE:-14000}
  shift 3
  runs=$(mktemp -d)
  # The GPU configs compile with CUDA graphs (compile_mode: reduce-overhead), measured in the throughput benchmark
  # but not yet in a whole fit with validation: a short fit tries it first, and a failure falls back to the default
  # compile mode for the real run. The probe is a real fit, only short: the sanity validation first (as in the real
  # run), 3.5 batches (the last one partial: a new shape), then a whole validation, its files in a temp folder.
  t0=$(elapsed)
  local probe_time=$(( secs / 3 < 150 ? secs / 3 : 150 ))
  echo "== [$(elapsed) s] 4. $name: probe of the config's compile settings (3.5 batches + validation, ${probe_time} s at most)"
  if ! timeout "$probe_time" $PY -m priorlab fit --config "$config" --trainer.max_epochs=1 --trainer.max_time=null \
      --data.patches_per_epoch=448 --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$WORK/probe" \
      "${BF[@]}" "$@" > "$WORK/probe_$name.log" 2>&1; then
    tail -25 "$WORK/probe_$name.log"; cp "$WORK/probe_$name.log" "$OUT/probe_$name.log"
    echo "probe failed: training with --model.compile_mode=default"
    mode=(--model.compile_mode=default)
    rate=${RATE:-9000}
  fi
  secs=$(( secs - ($(elapsed) - t0) ))
  if [ "$secs" -lt "$MIN_RUN" ]; then
    echo "== [$(elapsed) s] 4. $name: ${secs} s left after the probe, too little to train; nothing trained"
    return 0
  fi
  # 13 epochs sized to the time (minus ~60 s of start-up, compilation and validation), so the halvings happen
  # (CUDA graphs: 20,000 img/s in the H200 benchmark without data loading or validation; one loader worker makes
  # about 8,500 BSD400 patches/s on a 2-core Xeon, and the configs use 8)
  local per_epoch=$(( (secs - 60) * rate / 13 / 128 * 128 )); [ "$per_epoch" -lt 2048 ] && per_epoch=2048  # whole batches
  echo "== [$(elapsed) s] 4. $name, max_time $secs s, 13 epochs of $per_epoch patches"
  timeout $(( secs + 45 )) $PY -m priorlab fit --config "$config" --model.milestones="[6, 8, 10, 12]" \
    --trainer.max_epochs=13 --data.patches_per_epoch="$per_epoch" \
    --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$runs" \
    --trainer.max_time="$(printf '00:00:%02d:%02d' $(( secs / 60 )) $(( secs % 60 )))" "${BF[@]}" "$@" "${mode[@]}" 2>&1 \
    | grep -v "^INFO\|Tip"
  slim "$runs" "$name"
}
left=$(( DEADLINE - $(elapsed) - 60 ))
[ "$left" -lt 60 ] && left=60
fit_time=$(( left - 100 )); [ "$fit_time" -lt 30 ] && fit_time=30  # what one run leaves its evaluation
if [ "$TRAIN" != none ] && [ "$(( DEADLINE - $(elapsed) - 160 ))" -lt "$MIN_FIT" ]; then
  echo "== [$(elapsed) s] 4. $TRAIN: $(( DEADLINE - $(elapsed) )) s left before DEADLINE, under MIN_FIT $MIN_FIT s" \
       "of training plus start-up and evaluation; nothing trained (train in a session with SKIP_THROUGHPUT=1" \
       "SKIP_ENERGY=1 SKIP_SAMPLING=1)"
  TRAIN=none
fi
GRAY=(--data.train_dirs="[$DATA/bsd400]" --data.val_dirs="[$DATA/set12]" --data.test_dirs="[$DATA/set12]")
case "$TRAIN" in
none)
  echo "== [$(elapsed) s] 4. no training (TRAIN=none)" ;;
dsm)
  echo "== [$(elapsed) s] 4. dsm-energy-fashion-mnist, max_time ${left} s"
  [ -n "$DSM_INIT" ] && FIT+=(--model.init_from="$DSM_INIT")
  RUNS=$(mktemp -d)
  timeout $(( left + 45 )) $PY -m priorlab fit --config configs/dsm_energy_fashion_mnist_gpu.yaml \
    --data.root="$FMNIST" --trainer.logger.init_args.save_dir="$RUNS" \
    --trainer.max_time="$(printf '00:00:%02d:%02d' $(( left / 60 )) $(( left % 60 )))" "${FIT[@]}" 2>&1 \
    | grep -v "^INFO\|Tip"
  slim "$RUNS" dsm-energy-fashion-mnist ;;
s10)  # the two runs share the time that their start-up (45 s each) and evaluation (120 s) leave
  half=$(( (left - 210) / 2 ))
  if [ "$half" -lt 30 ]; then
    echo "== [$(elapsed) s] 4. s10: ${left} s left, too little for two runs and their evaluation; nothing trained"
  else
    S10=("${GRAY[@]}" --model.sigma_range_255="[0, 10]" --model.val_sigmas_255="[5, 10]")
    fit_bf bf-dncnn-gray-s10 "$half" configs/bf_dncnn_bsd400_gray.yaml "${S10[@]}"
    fit_bf dncnn-gray-s10-biased "$half" configs/bf_dncnn_bsd400_gray.yaml "${S10[@]}" "${BIASED[@]}"
    quality bsd68 "5 10 15 25 50 75 90 100" bf-dncnn-gray-s10 dncnn-gray-s10-biased
  fi ;;
bf-dncnn-color)
  COLOR=(--data.train_dirs="[builtin:photos$([ -d "$DATA/mate" ] && echo ", $DATA/mate")]")
  [ -n "$BFDNCNN_INIT" ] && COLOR+=(--model.init_from="$BFDNCNN_INIT")
  fit_bf bf-dncnn-color "$fit_time" configs/bf_dncnn_photos_color.yaml "${COLOR[@]}"
  quality "set5_color set14_color" "5 10 15 25 50 75 100" bf-dncnn-color ;;
*)
  [ -n "$BFDNCNN_INIT" ] && GRAY+=(--model.init_from="$BFDNCNN_INIT")
  fit_bf bf-dncnn-gray "$fit_time" configs/bf_dncnn_bsd400_gray.yaml "${GRAY[@]}"
  quality bsd68 "5 10 15 25 50 75 100" bf-dncnn-gray ;;
esac
echo "== [$(elapsed) s] done"
