#!/usr/bin/env bash
# Samplers on the GPU machine (issue 13), full-size random SDXL weights, fp16, 1024², through the CLI.
#   bench/gpu_samplers.sh OUT baseline NAME      one Euler job (8 prompts, batch 4, 30 steps), twice, with the
#                                                binaries of SDXLB_PREBUILT: OUT/NAME-{1,2}.json hold every
#                                                image's pixel digest (bench/image_hashes.py)
# Weights are random, so images are noise, but deterministic: identical digests mean identical pixels.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
mode="${2:-baseline}"
build_and_model sdxl-batch

if [[ "$mode" == baseline ]]; then
  name="${3:-euler}"
  for k in 1 2; do
    run_row "$name-$k" "/tmp/samplers-$name-$k" 8 30 5.0 4 full
    tail -2 "$out/$name-$k.stdout"
    "$py" bench/image_hashes.py "/tmp/samplers-$name-$k/out" "$name-$k" > "$out/$name-$k.json"
  done
  cmp -s <("$py" -c 'import json,sys; print([r["sha256"] for r in json.load(open(sys.argv[1]))["items"]])' "$out/$name-1.json") \
         <("$py" -c 'import json,sys; print([r["sha256"] for r in json.load(open(sys.argv[1]))["items"]])' "$out/$name-2.json") &&
    echo "$name: run 1 and run 2 identical" || echo "$name: run 1 and run 2 DIFFER"
fi
