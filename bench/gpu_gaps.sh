#!/usr/bin/env bash
# Where the time between kernels goes in the one-image UNet call, fp16 and FP8, on the GPU machine (issues 16
# and 17: the CUDA graph's wall time is 1-2 ms above its kernels' sum). From the repository root:
#   bench/gpu_gaps.sh OUT
# With SDXLB_PREBUILT=DIR (scripts/prebuild-for-device.sh), binaries built elsewhere skip the build. Needs no
# diffusers: bench/unet_reference.py --inputs-only writes the UNet's inputs with zeros where its reference
# output goes, so the relative-error figures of these runs mean nothing. Writes OUT/unet_*.json,
# OUT/profile_*.json (with the first call's launch timeline) and OUT/parts_*.txt (bench/profile_parts.py:
# the parts, and the idle time by the kernels on either side of each gap).
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
build_and_model sdxl-batch unet_parity
inputs=/tmp/unet-gaps-in.safetensors
"$py" bench/unet_reference.py --inputs-only "$inputs"
for row in "fp16" "fp8 --fp8 --fp8-conv --fp8-attention"; do
  name=${row%% *} args=()
  [[ "$row" == *" "* ]] && read -ra args <<< "${row#* }"
  "$build/bench/unet_parity" "$model" "$inputs" "$out/unet_$name.json" --profile "$out/profile_$name.json" \
    "${args[@]}" > "$out/unet_$name.txt" 2>&1
  grep -E "^profile:|^ours:" "$out/unet_$name.txt" | sed "s/^/$name: /"
  "$py" bench/profile_parts.py "$out/profile_$name.json" --gaps 10 | tee "$out/parts_$name.txt"
done
