#!/usr/bin/env bash
# GPU checks for one short device session (see docs/benchmarks.md): training throughput of BF-DnCNN
# (50x50 gray) and BF-UNet (64x64 RGB), batch 128, bf16, channels_last, fused Adam, without compile, compiled,
# and compiled with CUDA graphs (reduce-overhead, the GPU configs' setting), each
# through a plain PyTorch loop and through DenoiserModule + Lightning's Trainer in the same process; then
# the host-device synchronizations per step of each loop for BF-DnCNN (--sync-debug; SKIP_SYNC_DEBUG=1 skips).
# Runs from the repository root without installing priorlab (PYTHONPATH); writes JSON + log under $OUT.
#   OUT=/tmp/out bash benchmarks/device_checks.sh               # on the GPU machine
#   OUT=/tmp/out DEVICE=cpu STEPS=2 WARMUP=1 BATCH=4 ARCH_DNCNN=test_bf_dncnn ARCH_UNET=test_bf_unet \
#     bash benchmarks/device_checks.sh                          # smoke test on a CPU
set -uo pipefail
OUT=${OUT:?set OUT to an output folder}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
WARMUP=${WARMUP:-30}
BATCH=${BATCH:-128}
PRECISION=${PRECISION:-bf16-mixed}
ARCH_DNCNN=${ARCH_DNCNN:-bf_dncnn}
ARCH_UNET=${ARCH_UNET:-bf_unet}
PY=${PY:-python3}
RUN_TIMEOUT=${RUN_TIMEOUT:-0}             # seconds per measurement (0: none)
FUSED=${FUSED---fused-adam}               # the GPU configs' fused Adam; FUSED= for PyTorch's default (foreach)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } \
  | tee "$OUT/machine.txt"
status=0
for preset in dncnn unet; do
  arch=$([ "$preset" = dncnn ] && echo "$ARCH_DNCNN" || echo "$ARCH_UNET")
  for compile in --no-compile --compile reduce-overhead; do
    name="throughput_${preset}_${compile#--}.json"
    # reduce-overhead: compiled with CUDA graphs, as the GPU configs train
    flags=$([ "$compile" = reduce-overhead ] && echo "--compile --compile-mode reduce-overhead" || echo "$compile")
    timeout "$RUN_TIMEOUT" $PY benchmarks/train_throughput.py --preset "$preset" --arch "$arch" --batch "$BATCH" --steps "$STEPS" \
      --warmup "$WARMUP" --precision "$PRECISION" --channels-last $flags $FUSED --device "$DEVICE" \
      --json "$OUT/$name" --overwrite 2>&1 | grep -v "^INFO\|Tip" | tee -a "$OUT/throughput.log" || status=1
  done
done
# Host-device synchronizations per step of each loop (torch's sync debug mode; no timing), 10 steps each.
if [ "$DEVICE" = cuda ] && [ -z "${SKIP_SYNC_DEBUG:-}" ]; then
  for compile in --no-compile reduce-overhead; do  # reduce-overhead + fused Adam: the GPU configs' settings
    flags=$([ "$compile" = reduce-overhead ] && echo "--compile --compile-mode reduce-overhead" || echo "$compile")
    timeout "$RUN_TIMEOUT" $PY benchmarks/train_throughput.py --preset dncnn --arch "$ARCH_DNCNN" --batch "$BATCH" \
      --steps 10 --warmup 5 --precision "$PRECISION" --channels-last $flags $FUSED --device cuda --sync-debug \
      --json "$OUT/syncs_dncnn_${compile#--}.json" --overwrite 2>&1 | grep -v "^INFO\|Tip\|synchronizing CUDA\|^ *warnings.warn\|^ *return" \
      | tee -a "$OUT/throughput.log" || status=1
  done
fi
exit $status
