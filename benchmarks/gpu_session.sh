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
# SKIP_THROUGHPUT=1, SKIP_ENERGY=1, SKIP_SAMPLING=1 skip steps 1-3 (a session that only trains); TRAIN=none skips 4.
# Data travels in .gpu/ (ignored by git; carry it): cp -r ../shared/data/{bsd400,set12,bsd68} .gpu/ and/or
# cp /usr/share/datasets/fashion-mnist/*images* .gpu/fmnist/ (the working tree that travels must stay < 64 MiB).
# Results under $OUT: JSON + logs, and the trained model as a slim checkpoint (EMA weights [+ C], no
# optimizer state), ready for `priorlab export`. Run from the repository root, without installing priorlab:
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
  export DEVICE=cpu STEPS=2 WARMUP=1 BATCH=4 ARCH_DNCNN=test_bf_dncnn ARCH_UNET=test_bf_unet
  DSM_INIT=
  FIT=(--model.arch=test_energy_unet --trainer.accelerator=cpu --trainer.max_steps=4 --trainer.val_check_interval=2
       --data.batch_size=8 --data.val_size=16 --data.train_limit=64 --data.eval_batch_size=8 --data.num_workers=0)
else
  ET=()
  ST=()
  BF=()
  DQ=()
  export STEPS=${STEPS:-100} WARMUP=${WARMUP:-20}
  FIT=()
fi

if [ -z "${SKIP_THROUGHPUT:-}" ]; then
echo "== [$(elapsed) s] 1. training throughput (device_checks.sh)"
RUN_TIMEOUT=${RUN_TIMEOUT:-110} OUT="$WORK/throughput" PY=$PY bash benchmarks/device_checks.sh
merge_json "$OUT/throughput.json" "$WORK"/throughput/*.json

fi

if [ -z "${SKIP_ENERGY:-}" ]; then
echo "== [$(elapsed) s] 2. energy throughput"
timeout 150 $PY benchmarks/energy_throughput.py "${ET[@]}" --json "$WORK/energy_default.json"
timeout 60 $PY benchmarks/energy_throughput.py "${ET[@]}" --skip-training --cudnn-benchmark \
  --json "$WORK/energy_cudnn_benchmark.json"
timeout 60 $PY benchmarks/energy_throughput.py "${ET[@]}" --skip-training --cudnn-benchmark --channels-last \
  --json "$WORK/energy_cudnn_benchmark_channels_last.json"
timeout 150 $PY benchmarks/energy_throughput.py "${ET[@]}" --compile --cudnn-benchmark \
  --json "$WORK/energy_compiled_cudnn_benchmark.json"
merge_json "$OUT/energy_throughput.json" "$WORK"/energy_*.json

fi

if [ -z "${SKIP_SAMPLING:-}" ]; then
echo "== [$(elapsed) s] 3. sampling throughput"
timeout 120 $PY benchmarks/sampling_throughput.py "${ST[@]}" --json "$OUT/sampling_throughput.json"
fi

left=$(( DEADLINE - $(elapsed) - 60 ))
[ "$left" -lt 60 ] && left=60
RUNS=$(mktemp -d)
MAX_TIME=$(printf '00:00:%02d:%02d' $(( left / 60 )) $(( left % 60 )))
if [ "$TRAIN" = none ]; then
  echo "== [$(elapsed) s] 4. no training (TRAIN=none)"
elif [ "$TRAIN" = dsm ]; then
echo "== [$(elapsed) s] 4. dsm-energy-fashion-mnist, max_time ${left} s"
[ -n "$DSM_INIT" ] && FIT+=(--model.init_from="$DSM_INIT")
timeout $(( left + 45 )) $PY -m priorlab fit --config configs/dsm_energy_fashion_mnist_gpu.yaml \
  --data.root="$FMNIST" --trainer.logger.init_args.save_dir="$RUNS" \
  --trainer.max_time="$MAX_TIME" "${FIT[@]}" 2>&1 \
  | grep -v "^INFO\|Tip"
else
echo "== [$(elapsed) s] 4. bf-dncnn-gray (compressed schedule), max_time ${left} s"
[ -n "$BFDNCNN_INIT" ] && BF+=(--model.init_from="$BFDNCNN_INIT")
timeout $(( left + 45 )) $PY -m priorlab fit --config configs/bf_dncnn_bsd400_gray.yaml \
  --data.train_dirs="[$DATA/bsd400]" --data.val_dirs="[$DATA/set12]" --data.test_dirs="[$DATA/set12]" \
  --model.milestones="[6, 8, 10, 12]" --trainer.max_epochs=13 --trainer.enable_progress_bar=false \
  --trainer.logger.init_args.save_dir="$RUNS" --trainer.max_time="$MAX_TIME" "${BF[@]}" 2>&1 | grep -v "^INFO\|Tip"
  bf_ckpt=$(ls -t "$RUNS"/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
  if [ -n "$bf_ckpt" ] && [ -d "$DATA/bsd68" ]; then  # PSNR on BSD68 on the GPU (BM3D comes from the CPU cache later)
    echo "== [$(elapsed) s] 5. BSD68 PSNR of the trained weights"
    timeout 90 $PY benchmarks/denoise_quality.py --ckpt "$bf_ckpt" --name bf-dncnn-gray --datasets bsd68 \
      --sigmas 5 10 15 25 50 75 100 --no-bm3d --data-root "$DATA" "${DQ[@]}" --out "$WORK/dq.md" \
      --json "$OUT/bsd68_psnr.json"
  fi
fi
ckpt=$(ls -t "$RUNS"/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
if [ -n "$ckpt" ]; then
  cp "$(dirname "$(dirname "$ckpt")")/metrics.csv" "$OUT/train_metrics.csv"
  $PY - "$ckpt" "$OUT/train_last.ckpt" <<'PYEOF'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
for key in ("optimizer_states", "lr_schedulers", "callbacks", "loops"):
    ck.pop(key, None)
torch.save(ck, sys.argv[2])
print("slim checkpoint:", sys.argv[2], "step", ck.get("global_step"), "calibration", ck.get("priorlab", {}).get("calibration"))
PYEOF
fi
echo "== [$(elapsed) s] done"
