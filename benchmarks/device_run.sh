#!/usr/bin/env bash
# The GPU run of issue 17, for one call of the lent H200 (about 6 minutes in all):
#
#   bash benchmarks/device_run.sh              # on the device machine, from the repository root
#   DRY_RUN=1 bash benchmarks/device_run.sh    # here, on the CPU: the same steps at tiny sizes
#
# Writes each section's figures to $OUT as it ends (env.json, loss.json/.md, step.json/.md,
# pytest_gpu.txt), so a run cut short still returns what it finished. Fold them into
# BENCHMARKS.md with `python benchmarks/fold_device.py <folder with those files>`.
# Hydra is not on the device machine: the benchmarks do without it; the gpu-marked tests that
# run the CLI need it, from wheels in .whl/ (benchmarks/device_wheels.sh fetches them here;
# name `.whl` in the call's carry).
set -u
OUT=${OUT:-/tmp/softloss-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# One compilation per fused row function whatever the shapes (three class counts, then the
# step's): compile time is most of this run's budget.
export SOFTLOSS_FUSED_DYNAMIC=${SOFTLOSS_FUSED_DYNAMIC:-1}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -n "${DRY_RUN:-}" ]; then
  ARGS=(--device cpu --quick); T_LOSS=600; T_STEP=600; T_TEST=600
else
  ARGS=(); T_LOSS=170; T_STEP=100; T_TEST=90
fi
start=$(date +%s)
section() { echo "[device] $1 done at +$(( $(date +%s) - start )) s (exit $2)"; }

timeout -k 5 60 $PY benchmarks/device_bench.py env --out "$OUT" "${ARGS[@]}"; section env $?
# Loss cost first: the figures the issue asks for (B = 4096, C in 30/100/1081, every loss, fused and eager).
timeout -k 5 $T_LOSS $PY benchmarks/device_bench.py loss --out "$OUT" "${ARGS[@]}"; section loss $?
# Loss in the step: resnet18 bf16 channels_last batch 512, every loss, relative to ce.
timeout -k 5 $T_STEP $PY benchmarks/device_bench.py step --out "$OUT" "${ARGS[@]}"; section step $?
# The gpu-marked tests: the fused losses on CUDA first (seconds), then the runner's GPU tests.
if [ -z "${DRY_RUN:-}" ]; then
  timeout -k 5 $T_TEST $PY -m pytest -m gpu -v -p no:cacheprovider -n 0 tests/test_losses_fused.py tests/test_gpu.py \
    2>&1 | tee "$OUT/pytest_gpu.txt"; section pytest "${PIPESTATUS[0]}"
else
  $PY -m pytest -m gpu -q -p no:cacheprovider -n 0 tests/test_losses_fused.py 2>&1 | tee "$OUT/pytest_gpu.txt"
  section pytest "${PIPESTATUS[0]}"
fi
ls -l "$OUT"
