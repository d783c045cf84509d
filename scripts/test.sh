#!/usr/bin/env bash
# The test command: setup, configure, build, check formatting, run ctest. `.ci/run` calls exactly this.
#   scripts/test.sh                 everything (unit + oracle + mpi; gpu tests skip themselves without a GPU)
#   scripts/test.sh -L unit         extra arguments go to ctest
# Environment: SDXLB_BUILD_DIR (default build), SDXLB_JOBS (default: nproc), SDXLB_SKIP_SANITIZE=1,
# SDXLB_SKIP_FUZZ=1, SDXLB_FUZZ_SECONDS (default 30 per fuzz target), SDXLB_SKIP_SLURM=1 (no local SLURM
# cluster, no `slurm` tests), SDXLB_SLURM_DIR (see scripts/slurm/local-cluster.sh), plus those of scripts/setup.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
venv="${SDXLB_VENV:-$HOME/.local/share/sdxlb/venv}"
build="${SDXLB_BUILD_DIR:-build}"
jobs="${SDXLB_JOBS:-$(nproc)}"

export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime

bash scripts/check-format.sh

start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDXLB_PYTHON="$venv/bin/python" >/dev/null
cmake --build "$build" -j "$jobs"
echo "test: built in $(( $(date +%s) - start ))s"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# One thread per test process: ctest runs several at once, and oversubscribed OpenMP threads make the tiny
# models 50x slower on small machines.
export OMP_NUM_THREADS=1
# The `slurm` tests submit scripts/slurm/render.sbatch to a one-node SLURM cluster on this machine (needs root).
# One that is already up is used and left running; one started here is stopped on exit.
ctest_args=()
if [[ "${SDXLB_SKIP_SLURM:-0}" == 1 ]]; then
  ctest_args+=(-LE slurm)
else
  export SDXLB_SLURM_DIR="${SDXLB_SLURM_DIR:-/tmp/sdxlb-slurm}"
  export SLURM_CONF="$SDXLB_SLURM_DIR/slurm.conf"
  if ! bash scripts/slurm/local-cluster.sh status >/dev/null 2>&1; then
    trap 'bash scripts/slurm/local-cluster.sh stop' EXIT
    bash scripts/slurm/local-cluster.sh start ||
      { echo "test: the local SLURM cluster did not start (SDXLB_SKIP_SLURM=1 skips the slurm tests)" >&2; exit 1; }
  fi
fi
ctest --test-dir "$build" --output-on-failure -j "$jobs" "${ctest_args[@]}" "$@" | tee "$build/ctest.log"
# ASan + UBSan over the unit tests of the parsers, the store and the run side (scripts/sanitize.sh), and a
# short libFuzzer run of each parser (scripts/fuzz.sh). SDXLB_SKIP_SANITIZE=1 / SDXLB_SKIP_FUZZ=1 skip them.
[[ "${SDXLB_SKIP_SANITIZE:-0}" == 1 ]] || bash scripts/sanitize.sh
[[ "${SDXLB_SKIP_FUZZ:-0}" == 1 ]] || SDXLB_SKIP_SETUP=1 bash scripts/fuzz.sh "${SDXLB_FUZZ_SECONDS:-30}"
# The closing line, in the form CI reads: ctest's counts (the sanitizer and fuzz steps fail the run on their own).
skipped=$(grep -c '(Skipped)$' "$build/ctest.log" || true)
sed -n 's/^[0-9]*% tests passed, \([0-9]*\) tests failed out of \([0-9]*\)$/\2 \1/p' "$build/ctest.log" |
  awk -v s="$skipped" '{ printf "%d passed, %d failed, %d skipped\n", $1 - $2 - s, $2, s }'
