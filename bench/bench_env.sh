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
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDXLB_PYTHON="$py" -DSDXLB_BUILD_TESTS=${SDXLB_BENCH_TESTS:-OFF} >/dev/null
  ninja -C "$build" "$@" | tail -1
  [[ -f "$model/model_index.json" ]] || "$bin" make-demo-model "$model" --full --dtype fp16 >/dev/null
}

# run_row NAME DIR PROMPTS STEPS GUIDANCE BATCH DECODER [MEMORY]: writes DIR/p.txt (PROMPTS numbered prompts)
# and DIR/job.yaml (1024², fp16, output DIR/out, MEMORY a flow map, default {}), runs the CLI on it, and
# leaves its output in $out/NAME.stdout and $out/NAME.stderr, with "exit=... wall_s=..." appended to stdout.
run_row() {
  local name="$1" d="$2" n="$3" steps="$4" g="$5" b="$6" dec="$7" mem="${8:-{\}}"
  rm -rf "$d"; mkdir -p "$d"
  for i in $(seq 1 "$n"); do echo "benchmark prompt number $i, a photo"; done > "$d/p.txt"
  cat > "$d/job.yaml" <<YAML
model: $model
tiny_vae: $model/tiny_vae
decoder: $dec
vae_fp16_safe: true
prompts_file: p.txt
steps: $steps
guidance: $g
width: 1024
height: 1024
batch_size: $b
dtype: fp16
output: out
progress_interval_s: 1000
memory: $mem
YAML
  local start=$EPOCHREALTIME
  "$bin" run "$d/job.yaml" > "$out/$name.stdout" 2> "$out/$name.stderr"
  echo "exit=$? wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" >> "$out/$name.stdout"
}
