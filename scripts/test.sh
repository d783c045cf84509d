#!/usr/bin/env bash
# The test command: setup, configure, build, check formatting, run ctest. `.ci/run` calls exactly this.
#   scripts/test.sh                 everything (unit + oracle + mpi; gpu tests skip themselves without a GPU)
#   scripts/test.sh -L unit         extra arguments go to ctest
# Environment: SDXLB_BUILD_DIR (default build), SDXLB_JOBS (default: nproc), plus those of scripts/setup.sh.
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
ctest --test-dir "$build" --output-on-failure -j "$jobs" "$@"
