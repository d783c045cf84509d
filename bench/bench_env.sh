# Shared set-up of the GPU-machine benchmarks (sourced by gpu_bench.sh and gpu_memory.sh; $1 is OUT).
# Sets out, py, build, model and bin, and defines build_and_model TARGETS... (configure, build, write the
# full-size random model once).
set -uo pipefail
out="$(mkdir -p "$1" && cd "$1" && pwd)"
export PATH=/opt/torch/.venv/bin:$PATH PYTHONUNBUFFERED=1
[[ -d /tmp/site ]] && export PYTHONPATH=/tmp/site
py="$(command -v python3)"
build="${SDXLB_BENCH_BUILD:-/tmp/b}"
model="${SDXLB_BENCH_MODEL:-/tmp/full}"
bin="$build/apps/sdxl-batch"

build_and_model() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDXLB_PYTHON="$py" -DSDXLB_BUILD_TESTS=OFF >/dev/null
  ninja -C "$build" "$@" | tail -1
  [[ -f "$model/model_index.json" ]] || "$bin" make-demo-model "$model" --full --dtype fp16 >/dev/null
}
