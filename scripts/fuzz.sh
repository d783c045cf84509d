#!/usr/bin/env bash
# libFuzzer runs of the parsers (fuzz/, issue 12): configures a build folder of its own with clang
# (-DSDXLB_FUZZ=ON, tests off), builds only the fuzz targets, and runs each one from a copy of its seed corpus
# (fuzz/corpus/<name>/ is never written to). Exits 1 when a target finds a crash, a leak, a timeout or runs
# out of memory, after printing the input that did it.
#
#   scripts/fuzz.sh [SECONDS] [RUNS]    each target for SECONDS (default 60; 0: no time limit) and at most RUNS
#                                       executions (default: no limit), whichever ends first
#
# Environment:
#   SDXLB_FUZZ_BUILD_DIR   build folder (default build-fuzz)
#   SDXLB_FUZZ_WORK        where corpora, logs and crash inputs go (default <build folder>/run; emptied first)
#   SDXLB_FUZZ_TARGETS     which targets, space-separated (default: all; e.g. "fuzz_job_spec fuzz_tokenizer")
#   SDXLB_FUZZ_TORCH=0     skip fuzz_model_io (the one target that compiles LibTorch sources: minutes)
#   SDXLB_JOBS             parallel build jobs (default: nproc)
#   SDXLB_FUZZ_ARGS        extra libFuzzer flags for every target (e.g. "-jobs=4 -workers=4")
#   SDXLB_SKIP_SETUP=1     do not run scripts/setup.sh (clang, libclang-rt-dev and the rest must be present)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-60}"
runs="${2:--1}"
build="${SDXLB_FUZZ_BUILD_DIR:-build-fuzz}"
work="${SDXLB_FUZZ_WORK:-$build/run}"
jobs="${SDXLB_JOBS:-$(nproc)}"
torch="${SDXLB_FUZZ_TORCH:-1}"
venv="${SDXLB_VENV:-$HOME/.local/share/sdxlb/venv}"

[[ "${SDXLB_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup.sh
# clang with libFuzzer and the sanitizer runtimes (Debian: clang, libclang-rt-dev; not in scripts/setup.sh:
# only fuzzing needs them).
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/p.cpp"
if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" >/dev/null 2>&1; then
  echo "fuzz: clang++ cannot build a libFuzzer target; install clang and its runtimes" \
    "(Debian: apt-get install clang libclang-rt-dev)" >&2
  exit 2
fi

# name, -max_len (bytes): big enough for the largest seed, small enough to keep each execution fast.
declare -A max_len=(
  [fuzz_job_spec]=4096
  [fuzz_prompt_file]=4096
  [fuzz_tokenizer]=512
  [fuzz_tokenizer_files]=32768
  [fuzz_model_io]=8192
)
all=(fuzz_job_spec fuzz_prompt_file fuzz_tokenizer fuzz_tokenizer_files)
[[ "$torch" == 1 ]] && all+=(fuzz_model_io)
read -r -a targets <<<"${SDXLB_FUZZ_TARGETS:-${all[*]}}"

export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
start=$(date +%s)
torch_flag=OFF
[[ "$torch" == 1 ]] && torch_flag=ON
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g" \
  -DSDXLB_FUZZ=ON -DSDXLB_FUZZ_TORCH="$torch_flag" -DSDXLB_BUILD_TESTS=OFF \
  -DSDXLB_PYTHON="$venv/bin/python" >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
echo "fuzz: built ${targets[*]} in $(( $(date +%s) - start ))s"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
rm -rf "$work"
mkdir -p "$work"
failed=()
summary=()
for t in "${targets[@]}"; do
  name="${t#fuzz_}"
  corpus="$work/corpus/$name"
  artifacts="$work/artifacts/$name/"
  mkdir -p "$corpus" "$artifacts"
  cp -r "fuzz/corpus/$name/." "$corpus/"
  seeds=$(find "$corpus" -type f | wc -l)
  dict=()
  [[ -f "fuzz/dict/$name.dict" ]] && dict=("-dict=fuzz/dict/$name.dict")
  log="$work/$t.log"
  cmd=("$build/fuzz/$t" "$corpus" "-max_len=${max_len[$t]}" "-max_total_time=$seconds" "-runs=$runs"
       -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 "-artifact_prefix=$artifacts" "${dict[@]}")
  # shellcheck disable=SC2206
  cmd+=(${SDXLB_FUZZ_ARGS:-})
  echo "fuzz: $t ($seeds seeds): ${cmd[*]}"
  t0=$(date +%s)
  rc=0
  "${cmd[@]}" >"$log" 2>&1 || rc=$?
  elapsed=$(( $(date +%s) - t0 ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  line="$t: rc=$rc, ${execs:-?} executions in ${elapsed}s (${rate:-?}/s), corpus $seeds -> $size"
  summary+=("$line")
  echo "fuzz: $line (log: $log)"
  if [[ $rc -ne 0 ]]; then
    failed+=("$t")
    grep -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|FUZZ_CHECK failed|SUMMARY|Test unit written|Slowest unit" \
      "$log" | head -20 >&2 || true
    for a in "$artifacts"*; do
      [[ -f "$a" ]] && echo "fuzz: $t: crash input: $a (reproduce: $build/fuzz/$t $a)" >&2
    done
  fi
done

echo "fuzz: summary (work folder $work):"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ok ($(( $(date +%s) - start ))s in all)"
