#!/usr/bin/env bash
# The README's main command: setup, build, then a real job on the built-in tiny demo model, on the CPU, with
# mpirun (a coordinator and 2 workers). Writes demo-out/dataset (HDF5) and demo-out/contact-sheet.png.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
venv="${SDXLB_VENV:-$HOME/.local/share/sdxlb/venv}"
build="${SDXLB_BUILD_DIR:-build}"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDXLB_PYTHON="$venv/bin/python" >/dev/null
cmake --build "$build" --target sdxl-batch -j "$(nproc)"
bin="$build/apps/sdxl-batch"

[[ -f demo-out/model/model_index.json ]] || "$bin" make-demo-model demo-out/model
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 3 --oversubscribe "$bin" run examples/tiny-demo.yaml
"$bin" export demo-out/dataset --contact-sheet demo-out/contact-sheet.png
echo
echo "demo: dataset in $root/demo-out/dataset (open index.h5 with h5py),"
echo "      contact sheet in $root/demo-out/contact-sheet.png."
echo "      The demo weights are random, so the images are noise; point model: at a real SDXL folder for pictures."
