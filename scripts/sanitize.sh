#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the unit tests of the code that parses what users and
# other processes hand us: job files, prompt files, the CLIP tokenizer, HDF5 segments and the output folder,
# the protocol between ranks, dispatch and the coordinator. (The LibTorch model tests are not built here:
# LibTorch itself is not instrumented, and its allocations at exit drown the reports.) A build folder of its
# own (SDXLB_ASAN_BUILD_DIR, default build-asan); scripts/test.sh runs this after ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${SDXLB_VENV:-$HOME/.local/share/sdxlb/venv}"
build="${SDXLB_ASAN_BUILD_DIR:-build-asan}"
jobs="${SDXLB_JOBS:-$(nproc)}"
tests=(status_test protocol_test comm_test job_spec_test prompt_source_test job_plan_test store_test store_faults_test
       output_lock_test dispatcher_test coordinator_test memory_plan_test clip_tokenizer_test)
start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDXLB_SANITIZE=address,undefined \
  -DSDXLB_PYTHON="$venv/bin/python" >/dev/null
cmake --build "$build" -j "$jobs" --target "${tests[@]}" | tail -1
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=()
for t in "${tests[@]}"; do
  # The tokenizer's oracle cases need the fixtures ctest built in the main build folder.
  if ! (cd "$build/tests" && SDXLB_FIXTURES_DIR="$root/${SDXLB_BUILD_DIR:-build}/fixtures" "./$t" \
        --gtest_brief=1 > "$t.log" 2>&1); then
    failed+=("$t")
    tail -30 "$build/tests/$t.log"
  fi
done
echo "sanitize: ${#tests[@]} test programs under ASan+UBSan in $(( $(date +%s) - start ))s"
if ((${#failed[@]})); then
  echo "sanitize: FAILED: ${failed[*]} (logs in $build/tests/)" >&2
  exit 1
fi
echo "sanitize: ok"
