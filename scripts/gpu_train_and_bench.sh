#!/usr/bin/env bash
# One call on a lent GPU machine (see docs/gpu.md): install the carried wheels, train the
# demo model (phantoms generated there + the real-MRI grid cache), score it on unseen
# phantoms, then run the speed benchmark. Everything it reports lands in $OUT.
set -uo pipefail
OUT="${OUT:-out/gpu}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, monai, SimpleITK; print('torch', torch.__version__, 'monai', monai.__version__, 'sitk', SimpleITK.Version_VersionString())" | tee -a "$OUT/gpu.txt"
timeout "${TRAIN_TIMEOUT:-420}" python3 scripts/train_demo_model.py --device cuda --workers 15 \
  --phantoms "${PHANTOMS:-120}" --test-phantoms "${TEST_PHANTOMS:-6}" --real-train-cache .gpu/real_train.npz \
  --minutes "${MINUTES:-5}" --epochs 400 --batch-size 64 --lr 3e-4 \
  --out "$OUT/spinesegdiff-demo.zip" --work /tmp/work 2>&1 | tee "$OUT/train.log" | grep -v '^warning'
[ "${BENCH_TIMEOUT:-100}" = 0 ] || timeout "${BENCH_TIMEOUT:-100}" python3 benchmarks/bench_segment.py --device cuda --full --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -12
ls -la "$OUT"
