#!/usr/bin/env bash
# Memory placements and bit-identity on the GPU machine, through the product's real path (the CLI, one worker).
# Run from the repository root:
#   bench/gpu_memory.sh OUT ours        build, write the full-size random model, run every row below
#   bench/gpu_memory.sh OUT diffusers   diffusers' memory options (bench/diffusers_memory.py), same settings
# then `python3 bench/collect_memory.py OUT` writes OUT/memory.json and OUT/memory.md.
#   m_* rows: batch 4, 1024², 10 steps, CFG 5 (BENCH.md's memory table), 8 prompts = 2 batches; the second is
#           timed. Every placement × decode, the automatic plan under max_gpu_gib caps, and a minimum-memory row.
#   s_* rows: 30 steps at batch 1, 4 and 8 (and 4 with one image at a time): speed and bit-identity across
#           batch sizes.
# Weights are random (SDXL base configs, fp16): timings and memory are real, images are noise.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
part="${2:-ours}"

if [[ "$part" == diffusers ]]; then
  "$py" bench/diffusers_memory.py --steps 10 --batch 4 > "$out/diffusers_memory.log" 2>&1
  grep RESULT "$out/diffusers_memory.log" | cut -c1-400
  exit 0
fi

build_and_model sdxl-batch

# name steps batch prompts decoder memory-yaml (a flow map, the rest of the line)
while read -r name steps batch n dec mem; do
  [[ -z "$name" ]] && continue
  [[ -n "${SDXLB_BENCH_ROWS:-}" && " $SDXLB_BENCH_ROWS " != *" $name "* ]] && continue
  run_row "$name" "/tmp/mem-$name" "$n" "$steps" 5.0 "$batch" "$dec" "$mem"
  echo "$name: $(tail -1 "$out/$name.stdout") $(grep -ho 'peak GPU memory: [0-9.]* GiB' "$out/$name.stderr")"
done <<'ROWS'
m_resident 10 4 8 full {placement: resident, decode: full}
m_resident_1stream 10 4 8 full {placement: resident, decode: full, concurrent_images: 1}
m_resident_tiled 10 4 8 full {placement: resident, decode: tiled}
m_resident_tiny 10 4 8 tiny {placement: resident}
m_offload 10 4 8 full {placement: model_offload, decode: full}
m_offload_tiled 10 4 8 full {placement: model_offload, decode: tiled}
m_streamed 10 4 8 full {placement: streamed, decode: sliced, max_gpu_gib: 6}
m_streamed_tiled 10 4 8 full {placement: streamed, decode: tiled, max_gpu_gib: 6}
m_sequential 10 4 8 full {placement: sequential, decode: full}
m_sequential_tiled 10 4 8 full {placement: sequential, decode: tiled}
m_minimum 10 1 2 full {placement: sequential, decode: tiled}
m_auto_4 10 4 8 full {max_gpu_gib: 4}
m_auto_8 10 4 8 full {max_gpu_gib: 8}
m_auto_12 10 4 8 full {max_gpu_gib: 12}
m_auto_24 10 4 8 full {max_gpu_gib: 24}
m_auto_80 10 4 8 full {max_gpu_gib: 80}
s_b1 30 1 8 full {}
s_b4 30 4 12 full {}
s_b8 30 8 24 full {}
s_b4_1stream 30 4 12 full {concurrent_images: 1}
s_b8_3streams 30 8 24 full {concurrent_images: 3}
s_b8_4streams 30 8 24 full {concurrent_images: 4}
ROWS
"$py" bench/collect_memory.py "$out" /tmp
