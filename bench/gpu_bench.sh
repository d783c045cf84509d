#!/usr/bin/env bash
# The GPU benchmark: our renderer through its real path (the CLI running jobs, one worker) beside diffusers, on
# one machine. Run on the GPU machine from the repository root:
#   bench/gpu_bench.sh OUT ours               build, write the full-size random model, time our rows
#   bench/gpu_bench.sh OUT diffusers-eager    diffusers eager rows (bench/diffusers_speed.py)
#   bench/gpu_bench.sh OUT diffusers-compile [BATCH]  diffusers torch.compile rows at BATCH (default 1; slow:
#                                             about two minutes of compiling per batch size)
# With SDXLB_PREBUILT=DIR (scripts/prebuild-for-device.sh), binaries built elsewhere skip the build.
# then `python3 bench/collect_bench.py OUT` writes OUT/results.json and OUT/table.md.
# Weights are random (SDXL base configs, fp16): timings and memory are real, images are noise.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
part="${2:-ours}"

if [[ "$part" == ours ]]; then
  build_and_model sdxl-batch unet_parity ${SDXLB_BENCH_EXTRA_TARGETS:-}
  if [[ -z "${SDXLB_BENCH_ROWS:-}" || " $SDXLB_BENCH_ROWS " == *" unet "* ]]; then
    "$py" bench/unet_reference.py "$model" /tmp/unet-in.safetensors "$out/unet_diffusers.json"
    "$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors "$out/unet_ours.json" \
      --profile "$out/unet_profile.json"
    # SDXLB_BENCH_FUSION_AB="all groupnorm ...": the UNet call again with those fusions switched off (one run
    # each; names as in SDXLB_DISABLE_FUSION), to see what each is worth.
    if [[ -n "${SDXLB_BENCH_FUSION_AB:-}" ]]; then
      for off in $SDXLB_BENCH_FUSION_AB; do
        SDXLB_DISABLE_FUSION=$off "$build/bench/unet_parity" "$model" /tmp/unet-in.safetensors \
          "$out/unet_ours_without_$off.json" --profile "$out/unet_profile_without_$off.json" |
          sed "s/^/without $off: /"
      done
    fi
  fi
  # name batch steps guidance decoder
  while read -r name b steps g dec; do
    # SDXLB_BENCH_ROWS="b4_full b8_full" runs only those rows.
    [[ -n "${SDXLB_BENCH_ROWS:-}" && " $SDXLB_BENCH_ROWS " != *" $name "* ]] && continue
    d="/tmp/bench-$name"
    # The MLPerf rows, and those named *_neg, with MLPerf's negative prompt (MLPerf's SDXL runs every image
    # with it); the others without negatives, whose zero conditioning lets the UNet fill in the negatives'
    # cross-attentions.
    neg=""
    [[ $name == *mlperf* || $name == *_neg ]] &&
      neg="normal quality, low quality, worst quality, low res, blurry, nsfw, nude"
    # SDXLB_BENCH_BATCHES: batches per row (default 3; the first one captures the graphs and is not timed).
    SDXLB_ROW_NEGATIVE="$neg" run_row "$name" "$d" $((${SDXLB_BENCH_BATCHES:-3} * b)) "$steps" "$g" "$b" "$dec"
    "$py" - "$d/out/index.h5" "$out/$name.items.json" <<'PY'
import h5py, json, sys
f = h5py.File(sys.argv[1], "r")
json.dump({k: f[k][()].tolist() for k in ("ms_denoise", "ms_decode", "ms_encode", "status")}, open(sys.argv[2], "w"))
PY
    tail -3 "$out/$name.stdout"
  done <<'ROWS'
b1_full 1 30 5.0 full
b4_full 4 30 5.0 full
b4_full_neg 4 30 5.0 full
b8_full 8 30 5.0 full
b1_tiny 1 30 5.0 tiny
b4_tiny 4 30 5.0 tiny
b1_mlperf 1 20 8.0 full
b4_mlperf 4 20 8.0 full
b8_mlperf 8 20 8.0 full
b16_mlperf 16 20 8.0 full
b32_mlperf 32 20 8.0 full
ROWS
  # Encode phase: 512 distinct prompts through both text encoders at batch 64.
  [[ -n "${SDXLB_BENCH_ROWS:-}" && " $SDXLB_BENCH_ROWS " != *" encode "* ]] && exit 0
  d=/tmp/bench-encode; rm -rf "$d"; mkdir -p "$d"
  for i in $(seq 1 512); do echo "an encode benchmark prompt, number $i, with a few more words"; done > "$d/p.txt"
  printf 'model: %s\nprompts_file: p.txt\nwidth: 1024\nheight: 1024\ndtype: fp16\noutput: out\n' "$model" > "$d/job.yaml"
  "$bin" encode "$d/job.yaml" > "$out/encode.stdout" 2> "$out/encode.stderr"
  grep -h "encode:" "$out/encode.stderr" | tail -2
elif [[ "$part" == diffusers-eager ]]; then
  "$py" bench/diffusers_speed.py --batches 1,4 > "$out/diffusers_eager.log" 2>&1
  "$py" bench/diffusers_speed.py --batches 4 --steps 20 --guidance 8 > "$out/diffusers_eager_mlperf.log" 2>&1
  grep RESULT "$out"/diffusers_eager*.log | cut -c1-300
elif [[ "$part" == diffusers-compile ]]; then
  # One batch size per device call: each compiles for about two minutes. Batch 1's CFG pair is the isolated
  # UNet step's shape; other batch sizes skip that step rather than compile for it again.
  batch="${3:-1}"
  skip=(); [[ "$batch" != 1 ]] && skip=(--skip-unet-step)
  "$py" bench/diffusers_speed.py --batches "$batch" --compile "${skip[@]}" > "$out/diffusers_compile.log" 2>&1
  grep RESULT "$out/diffusers_compile.log" | cut -c1-300
fi
