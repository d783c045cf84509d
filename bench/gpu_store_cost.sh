#!/usr/bin/env bash
# What the store's integrity costs on the GPU machine (issue 12), with the full-size random model:
#   1. bench/store_bench: writing, scanning (resume) and reading back 1024^2 images with Fletcher32 checksums
#      and without, on this machine's disk (store_bench.json);
#   2. the render path at 1024^2, batch 8, 30 steps (row b8_full of bench/gpu_bench.sh, which recorded
#      0.940 s/image of denoise + decode before the checksums and the Env file driver:
#      2026-12-02-h200-run-control), run with 24 and 48 items: the difference of the two wall times over 24
#      is the whole cost of an image, writing included (start-up cancels out);
#   3. a resume of that finished job: rank 0's start-up phases (model identity, output folder = scan).
# With SDXLB_FUZZ_BIN (a folder of libFuzzer targets) and SDXLB_FUZZ_PLAN ("target:seconds ..."), long fuzz
# runs go on the spare cores at the lowest priority meanwhile (bench/device_fuzz.sh; OUT/fuzz).
#   bench/gpu_store_cost.sh OUT
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
fuzz_pid=
if [[ -n "${SDXLB_FUZZ_BIN:-}" && -n "${SDXLB_FUZZ_PLAN:-}" ]]; then
  nice -n 19 bash bench/device_fuzz.sh "$out/fuzz" "$SDXLB_FUZZ_BIN" "$SDXLB_FUZZ_PLAN" \
    "${SDXLB_FUZZ_JOBS:-14}" >"$out/fuzz.log" 2>&1 &
  fuzz_pid=$!
fi
build_and_model sdxl-batch store_bench
run_row b8_48 /tmp/bench-b8-48 48 30 5.0 8 full
run_row b8_full /tmp/bench-b8 24 30 5.0 8 full
for name in b8_full b8_48; do
  d=/tmp/bench-b8; [[ $name == b8_48 ]] && d=/tmp/bench-b8-48
  "$py" - "$d/out/index.h5" "$out/$name.items.json" <<'PY'
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
json.dump({k: f[k][()].tolist() for k in ("ms_denoise", "ms_decode", "ms_encode", "status")}, open(sys.argv[2], "w"))
PY
  tail -1 "$out/$name.stdout"
done
w24=$(sed -n 's/.*wall_s=//p' "$out/b8_full.stdout") w48=$(sed -n 's/.*wall_s=//p' "$out/b8_48.stdout")
echo "whole cost per image (48-item wall - 24-item wall) / 24: $(awk "BEGIN{printf \"%.3f\", ($w48 - $w24) / 24}") s" |
  tee "$out/slope.txt"
"$py" bench/collect_bench.py "$out" >/dev/null 2>&1 && grep -E "b8_full" "$out/table.md"
"$bin" run /tmp/bench-b8/job.yaml 2>&1 | grep -E "startup:|render:|nothing to do|items" | head -5 | tee "$out/resume.txt"
"$build/bench/store_bench" /tmp/store-bench 256 1024 32 >"$out/store_bench.json"
"$py" - "$out/store_bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("with_checksums", "without_checksums", "with_checksums_again"):
    m = r[k]
    print(k, "write %.2f ms/image" % m["write_ms_per_image"],
          *["%s: scan %.1f ms, read %.2f ms/image" % (c, m[c]["scan_ms"], m[c]["read_ms_per_image"])
            for c in ("warm", "cold") if isinstance(m.get(c), dict)])
PY
if [[ -n "$fuzz_pid" ]]; then
  wait "$fuzz_pid"
  cat "$out/fuzz/fuzz-summary.txt"
fi
