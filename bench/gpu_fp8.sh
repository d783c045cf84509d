#!/usr/bin/env bash
# The FP8 UNet and FP8 attention on the GPU machine (issue 17), in one call, from the repository root:
#   bench/gpu_fp8.sh OUT
# With SDXLB_PREBUILT=DIR (scripts/prebuild-for-device.sh, which packs tests/fp8_test too; a build here has the test
# with SDXLB_BENCH_TESTS=ON). Runs the FP8 GPU test,
# the UNet call with --fp8 (its kernel profile, and its relative error against diffusers' fp16 output),
# our exact and FP8 rows through the CLI (bench/gpu_speedups.sh: s/image, pixel difference and PSNR against
# fp16, batch 1 against batch 4), the MLPerf setting in FP8, and the e4m3 GEMM rates by scaling
# (bench/fp8_gemm_shapes.py). diffusers must be importable (its wheel in /tmp/site, see BENCH.md).
# Random weights: the pixel figures measure deviation, not quality.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
build_and_model sdxl-batch unet_parity ${SDXLB_BENCH_TESTS:+fp8_test fp8_attention_test}
if [[ -x "$build/tests/fp8_test" ]]; then
  (cd "$build/tests" && timeout 120 ./fp8_test --gtest_filter='Fp8Cuda.*' > "$out/test_fp8.txt" 2>&1
   echo "rc=$?" >> "$out/test_fp8.txt")
  grep -E "OK \]|FAILED|rc=" "$out/test_fp8.txt" | head -5
fi
if [[ -x "$build/tests/fp8_attention_test" ]]; then
  (cd "$build/tests" && timeout 180 ./fp8_attention_test > "$out/test_fp8_attention.txt" 2>&1
   echo "rc=$?" >> "$out/test_fp8_attention.txt")
  grep -E "^fp8 attention|FAILED|rc=" "$out/test_fp8_attention.txt" | head -8
fi
"$py" bench/unet_reference.py "$model" /tmp/unet-in.safetensors "$out/unet_diffusers.json"
"$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_fp16.json" --profile "$out/profile_fp16.json" |
  grep "ours:\|profile:"
"$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_fp8.json" --profile "$out/profile_fp8.json" \
  --fp8 | grep "ours:\|profile:"
"$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_fp8_attention.json" \
  --profile "$out/profile_fp8_attention.json" --fp8-attention | grep "ours:\|profile:"
bench/gpu_speedups.sh "$out/rows" "exact fp8 fp8_b1 fp8_attn fp8_attn_b1" | tail -5
SDXLB_BENCH_EXTRA_YAML="unet_precision: fp8" SDXLB_BENCH_ROWS="b4_mlperf" bench/gpu_bench.sh "$out/fp8_mlperf" ours |
  tail -1
SDXLB_BENCH_EXTRA_YAML=$'unet_precision: fp8\nattention_precision: fp8' SDXLB_BENCH_ROWS="b8_mlperf" \
  bench/gpu_bench.sh "$out/fp8_attention_mlperf" ours | tail -1
"$py" bench/fp8_gemm_shapes.py "$out/fp8_gemm_shapes.json" | tail -6
