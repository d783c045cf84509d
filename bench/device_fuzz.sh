#!/usr/bin/env bash
# Long libFuzzer runs on a many-core machine (issue 12: 10 million executions per target), with targets built
# elsewhere by scripts/fuzz.sh (ASan + UBSan + libFuzzer; the sanitizer runtimes are linked in). Each target
# runs in libFuzzer's parallel mode: JOBS jobs on JOBS workers sharing one corpus (a copy of
# fuzz/corpus/<name>), each job stopping after RUNS/JOBS executions or SECONDS, whichever comes first.
# Writes OUT/<target>/ (corpus, fuzz-N.log of every job, crash inputs) and one line per target to
# OUT/fuzz-summary.txt: executions (summed over the jobs), seconds, and "clean" or what was found.
#
#   bench/device_fuzz.sh OUT BIN_DIR "TARGET:SECONDS ..." [JOBS=nproc-2] [RUNS=10000000]
#
# Run from the repository root (the corpora, dictionaries and tokenizer data are read from fuzz/).
set -uo pipefail
out="$(mkdir -p "$1" && cd "$1" && pwd)"
bin_dir="$(cd "$2" && pwd)"
plan="$3"
jobs="${4:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}"
runs="${5:-10000000}"
root="$(pwd)"
# Libraries packed next to the targets (scripts/prebuild-for-device.sh puts them in ../lib).
[[ -d "$bin_dir/../lib" ]] && export LD_LIBRARY_PATH="$(cd "$bin_dir/../lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
declare -A max_len=([fuzz_job_spec]=4096 [fuzz_prompt_file]=4096 [fuzz_tokenizer]=512
                    [fuzz_tokenizer_files]=32768 [fuzz_model_io]=8192)
export SDXLB_FUZZ_TOKENIZERS="$root/fuzz/data/tokenizer:$root/fuzz/data/tokenizer_2"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
for entry in $plan; do
  t="${entry%%:*}" seconds="${entry##*:}" name="${entry%%:*}"
  name="${name#fuzz_}"
  work="$out/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -r "$root/fuzz/corpus/$name/." "$work/corpus/"
  dict=()
  [[ -f "$root/fuzz/dict/$name.dict" ]] && dict=("-dict=$root/fuzz/dict/$name.dict")
  t0=$EPOCHREALTIME
  (cd "$work" && "$bin_dir/$t" corpus "-jobs=$jobs" "-workers=$jobs" "-runs=$(( runs / jobs + 1 ))" \
     "-max_total_time=$seconds" "-max_len=${max_len[$t]}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
     "-artifact_prefix=$work/artifacts/" "${dict[@]}" >"$work/driver.log" 2>&1)
  elapsed=$(awk "BEGIN{printf \"%.0f\", $EPOCHREALTIME - $t0}")
  execs=$(cat "$work"/fuzz-*.log 2>/dev/null | sed -n 's/^stat::number_of_executed_units: *//p' |
          awk '{s += $1} END {print s + 0}')
  found=$(cat "$work"/fuzz-*.log 2>/dev/null |
          grep -cE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|FUZZ_CHECK failed" || true)
  crashes=$(find "$work/artifacts" -type f | wc -l)
  result=clean
  [[ "$found" -gt 0 || "$crashes" -gt 0 ]] && result="FOUND ($found reports, $crashes inputs in $work/artifacts)"
  corpus=$(find "$work/corpus" -type f | wc -l)
  echo "$t: $execs executions in ${elapsed}s on $jobs jobs, corpus -> $corpus, $result" | tee -a "$out/fuzz-summary.txt"
done
