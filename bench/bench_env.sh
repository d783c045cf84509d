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

# SDXLB_PREBUILT=DIR: binaries built elsewhere against the same LibTorch (DIR/apps/sdxl-batch, DIR/bench/...,
# with libraries the machine lacks in DIR/lib), used when they start here; otherwise the build below runs.
prebuilt_works() {
  [[ -n "${SDXLB_PREBUILT:-}" && -x "$SDXLB_PREBUILT/apps/sdxl-batch" ]] || return 1
  local torch_lib
  torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  LD_LIBRARY_PATH="$SDXLB_PREBUILT/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$SDXLB_PREBUILT/apps/sdxl-batch" --version >/dev/null 2>&1 || return 1
  export LD_LIBRARY_PATH="$SDXLB_PREBUILT/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

build_and_model() {
  if prebuilt_works; then
    build="$SDXLB_PREBUILT"
    bin="$build/apps/sdxl-batch"
    echo "using the prebuilt binaries in $build"
  else
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDXLB_PYTHON="$py" -DSDXLB_BUILD_TESTS=${SDXLB_BENCH_TESTS:-OFF} >/dev/null
    ninja -C "$build" "$@" | tail -1
  fi
  [[ -f "$model/model_index.json" ]] || "$bin" make-demo-model "$model" --full --dtype fp16 >/dev/null
}

# run_row NAME DIR PROMPTS STEPS GUIDANCE BATCH DECODER [MEMORY]: writes DIR/p.txt (PROMPTS numbered prompts)
# and DIR/job.yaml (1024², fp16, output DIR/out, MEMORY a flow map, default {}), runs the CLI on it, and
# leaves its output in $out/NAME.stdout and $out/NAME.stderr, with "exit=... wall_s=..." appended to stdout.
# SDXLB_BENCH_EXTRA_YAML: more job-file lines for every row (e.g. "unet_precision: fp8").
# SDXLB_BENCH_MEMORY: the memory map of rows that set none (e.g. "{overlap_decode: off}").
# SDXLB_ROW_NEGATIVE: the job's negative_prompt (default "": no negatives, so zero negative conditioning, whose
# cross-attentions the UNet fills in; set to measure a job with a negative prompt).
# SDXLB_BENCH_VAE_YAML: the VAE's dtype line (default "vae_fp16_safe: true"; "vae_dtype: bf16" is what the
# stock SDXL VAE can run at that speed).
run_row() {
  local name="$1" d="$2" n="$3" steps="$4" g="$5" b="$6" dec="$7" mem="${8:-${SDXLB_BENCH_MEMORY:-{\}}}"
  rm -rf "$d"; mkdir -p "$d"
  for i in $(seq 1 "$n"); do echo "benchmark prompt number $i, a photo"; done > "$d/p.txt"
  cat > "$d/job.yaml" <<YAML
model: $model
tiny_vae: $model/tiny_vae
decoder: $dec
${SDXLB_BENCH_VAE_YAML:-vae_fp16_safe: true}
prompts_file: p.txt
negative_prompt: "${SDXLB_ROW_NEGATIVE:-}"
steps: $steps
guidance: $g
width: 1024
height: 1024
batch_size: $b
dtype: fp16
output: out
progress_interval_s: 1000
memory: $mem
${SDXLB_BENCH_EXTRA_YAML:-}
YAML
  local start=$EPOCHREALTIME
  # (debug: the workers' "stored items" lines, whose times give the steady wall time per image)
  SDXLB_LOG=debug "$bin" run "$d/job.yaml" > "$out/$name.stdout" 2> "$out/$name.stderr"
  echo "exit=$? wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" >> "$out/$name.stdout"
}
