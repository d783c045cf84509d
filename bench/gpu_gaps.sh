#!/usr/bin/env bash
# Where the time between kernels goes in the one-image UNet call, fp16 and FP8, on the GPU machine (issues 16
# and 17: the CUDA graph's wall time is 1-2 ms above its kernels' sum). From the repository root:
#   bench/gpu_gaps.sh OUT
# With SDXLB_PREBUILT=DIR (scripts/prebuild-for-device.sh), binaries built elsewhere skip the build. Needs no
# diffusers: the UNet's inputs are written with torch alone (bench/unet_reference.py's, with zeros where its
# reference output goes, so the relative-error figures of these runs mean nothing). Writes OUT/unet_*.json,
# OUT/profile_*.json (with the first call's launch timeline) and OUT/parts_*.txt (bench/profile_parts.py:
# the parts, and the idle time by the kernels on either side of each gap).
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
build_and_model sdxl-batch unet_parity
inputs=/tmp/unet-gaps-in.safetensors
"$py" - "$inputs" <<'PY'
import sys
import torch
from safetensors.torch import save_file
dt = torch.float16
g = torch.Generator("cpu").manual_seed(0)
x = dict(sample=torch.randn(2, 4, 128, 128, generator=g).to(dt), timestep=torch.tensor(500.0),
         encoder_hidden_states=(torch.randn(2, 77, 2048, generator=g) * 0.5).to(dt),
         text_embeds=(torch.randn(2, 1280, generator=g) * 0.5).to(dt),
         time_ids=torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, dtype=dt),
         expected=torch.zeros(2, 4, 128, 128))
save_file({k: v.contiguous() for k, v in x.items()}, sys.argv[1])
PY
for row in "fp16" "fp8 --fp8 --fp8-conv --fp8-attention"; do
  name=${row%% *} args=()
  [[ "$row" == *" "* ]] && read -ra args <<< "${row#* }"
  "$build/bench/unet_parity" "$model" "$inputs" "$out/unet_$name.json" --profile "$out/profile_$name.json" \
    "${args[@]}" > "$out/unet_$name.txt" 2>&1
  grep -E "^profile:|^ours:" "$out/unet_$name.txt" | sed "s/^/$name: /"
  "$py" bench/profile_parts.py "$out/profile_$name.json" --gaps 10 | tee "$out/parts_$name.txt"
done
