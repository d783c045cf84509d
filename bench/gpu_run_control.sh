#!/usr/bin/env bash
# Run control on the GPU machine (issue 11): graceful stop and kill -9 with 2 workers sharing the GPU
# (bench/gpu_run_control.py), after a check that the render path's speed is unchanged (rows b4_full and
# b8_full of bench/gpu_bench.sh). Run from the repository root:  bench/gpu_run_control.sh OUT
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
build_and_model sdxl-batch
if ! OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --allow-run-as-root -np 2 "$bin" --version \
    >/dev/null 2>&1; then
  echo "the prebuilt binary does not start under this machine's mpirun: building here"
  unset SDXLB_PREBUILT
  build=/tmp/b bin=/tmp/b/apps/sdxl-batch
  build_and_model sdxl-batch
fi
for row in "b4_full 4" "b8_full 8"; do
  set -- $row
  run_row "$1" "/tmp/bench-$1" $((3 * $2)) 30 5.0 "$2" full
  "$py" - "/tmp/bench-$1/out/index.h5" "$out/$1.items.json" <<'PY'
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
json.dump({k: f[k][()].tolist() for k in ("ms_denoise", "ms_decode", "ms_encode", "status")}, open(sys.argv[2], "w"))
PY
  tail -2 "$out/$1.stdout"
done
"$py" bench/collect_bench.py "$out" >/dev/null 2>&1 && grep -E "b4_full|b8_full" "$out/table.md"
"$py" bench/gpu_run_control.py --bin "$bin" --model "$model" --out "$out" 2>&1 | tee "$out/run_control.log"
