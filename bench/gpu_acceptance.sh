#!/usr/bin/env bash
# The measurements that issues 16 (the exact fp16 path's speed) and 17 (FP8) accept on, in one device call, in
# order of importance, each part's results written as soon as it ends (a call cut short keeps what it did):
#   unet       the one-image UNet CFG call, fp16 and with the three FP8 switches: time, error against
#              diffusers' fp16 output, kernel profile and its parts (bench/profile_parts.py)
#   rows       batch 4, 30 steps, CFG 5, and the MLPerf setting (20 steps, CFG 8), fp16, k = 2
#   diffusers  diffusers torch.compile at batch 4 beside those rows (OUT/fp16/results.json then has both)
#   fp8rows    the MLPerf setting at batch 16, k = 8, with the three FP8 switches
#   images     8 images (10 steps) at batch 1, 4 and 8 and in the streamed and model-offload placements in
#              fp16, and at batch 1, 4 and streamed with the FP8 switches: each set must be bit-identical
#   tests      the GPU cases of fused_ops_test and fp8_test (only with prebuilt tests, SDXLB_PREBUILT)
#   gemms      not in the default set: bench/gemm_algos at 1 and 2 images per call (cuBLASLt's algorithms
#              against at::linear at the UNet's linear shapes)
# The GPU's SM clock and power are sampled every 200 ms into OUT/smi.csv (the rows run at the power cap).
#
# Usage (GPU machine, repository root): bench/gpu_acceptance.sh OUT [PARTS...]   (default: all, in that order)
# With SDXLB_PREBUILT=DIR (scripts/prebuild-for-device.sh) the binaries built elsewhere are used.
# Writes OUT/summary.txt: one line per part with its headline figures.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
shift
parts=("$@")
((${#parts[@]})) || parts=(unet rows diffusers fp8rows images tests)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fp8_yaml=$'unet_precision: fp8\nconvolution_precision: fp8\nattention_precision: fp8'
start=$(date +%s)
say() { echo "[$(($(date +%s) - start))s] $*" | tee -a "$out/summary.txt"; }
# The rows of a results folder as bench/collect_bench.py tabulates them (ours beside diffusers), on one line.
rows_of() { "$py" bench/collect_bench.py "$1" > /dev/null && grep '^| b' "$1/table.md" | tr '\n' ' '; }

build_and_model sdxl-batch unet_parity gemm_algos
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,memory.total --format=csv,noheader > "$out/gpu.txt"
say "gpu: $(cat "$out/gpu.txt")"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv,noheader -lms 200 > "$out/smi.csv" &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT

for part in "${parts[@]}"; do
  case "$part" in
  unet)
    "$py" bench/unet_reference.py "$model" /tmp/unet-in.safetensors "$out/unet_diffusers.json" \
      > "$out/unet_reference.log" 2>&1
    "$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_fp16.json" \
      --profile "$out/unet_profile_fp16.json" > "$out/unet_fp16.log" 2>&1
    "$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_fp8.json" --fp8 --fp8-conv \
      --fp8-attention --profile "$out/unet_profile_fp8.json" > "$out/unet_fp8.log" 2>&1
    for p in fp16 fp8; do
      "$py" bench/profile_parts.py "$out/unet_profile_$p.json" --gaps 4 --part attention > "$out/unet_parts_$p.txt" 2>&1
      say "unet $p: $(tail -1 "$out/unet_$p.log")"
    done
    ;;
  rows)
    SDXLB_BENCH_BATCHES=4 SDXLB_BENCH_ROWS="b4_full b4_mlperf" SDXLB_BENCH_EXTRA_YAML="images_per_unet_call: 2" \
      bash "$here/gpu_bench.sh" "$out/fp16" ours > "$out/fp16.log" 2>&1
    say "rows fp16: $(rows_of "$out/fp16")"
    ;;
  diffusers)
    bash "$here/gpu_bench.sh" "$out/fp16" diffusers-compile 4 > "$out/diffusers.log" 2>&1
    say "rows fp16 and diffusers compiled: $(rows_of "$out/fp16")"
    ;;
  fp8rows)
    SDXLB_BENCH_BATCHES=4 SDXLB_BENCH_ROWS=b16_mlperf SDXLB_BENCH_EXTRA_YAML=$'images_per_unet_call: 8\n'"$fp8_yaml" \
      bash "$here/gpu_bench.sh" "$out/fp8" ours > "$out/fp8.log" 2>&1
    say "rows fp8: $(rows_of "$out/fp8")"
    ;;
  images)
    # name batch memory (the rest of the line) for each precision; every set is compared with its first.
    for precision in fp16 fp8; do
      extra="images_per_unet_call: 2"
      specs=("b1 1 {}" "b4 4 {}" "b8 8 {}" "streamed 4 {placement: streamed, decode: full, max_gpu_gib: 6}"
        "offload 4 {placement: model_offload, decode: full}")
      if [[ $precision == fp8 ]]; then
        extra+=$'\n'"$fp8_yaml"
        specs=("b1 1 {}" "b4 4 {}" "streamed 4 {placement: streamed, decode: full, max_gpu_gib: 6}")
      fi
      hashes=()
      for spec in "${specs[@]}"; do
        read -r name batch memory <<< "$spec"
        SDXLB_BENCH_EXTRA_YAML="$extra" run_row "images_${precision}_$name" "/tmp/images-$name" 8 10 5.0 "$batch" \
          full "$memory"
        "$py" bench/image_hashes.py "/tmp/images-$name/out" "$name" > "$out/images_${precision}_$name.json"
        hashes+=("$out/images_${precision}_$name.json")
      done
      say "images $precision: $("$py" -c 'import json, sys
sets = [json.load(open(p)) for p in sys.argv[1:]]
ref = {i["item_index"]: i["sha256"] for i in sets[0]["items"]}
print("; ".join("%s %d/%d identical to %s" % (s["label"], sum(ref.get(i["item_index"]) == i["sha256"]
      for i in s["items"]), len(ref), sets[0]["label"]) for s in sets[1:]))' "${hashes[@]}")"
    done
    ;;
  tests)
    for t in fused_ops_test fp8_test; do
      if [[ -x "$build/tests/$t" ]]; then
        timeout 150 "$build/tests/$t" --gtest_filter='*Cuda*' > "$out/$t.txt" 2>&1
        say "$t: exit $? $(grep -h "PASSED\|FAILED" "$out/$t.txt" | tr '\n' ' ')"
      else
        say "$t: not built here (set SDXLB_PREBUILT, or configure with SDXLB_BENCH_TESTS=ON)"
      fi
    done
    ;;
  gemms)
    for k in 1 2; do
      timeout 120 "$build/bench/gemm_algos" $k > "$out/gemm_algos_$k.txt" 2>&1
      say "gemms, $k image(s) per call: exit $? $(tail -1 "$out/gemm_algos_$k.txt")"
    done
    ;;
  *) say "unknown part $part (unet rows diffusers fp8rows images tests gemms)" ;;
  esac
done
say "all parts done"
