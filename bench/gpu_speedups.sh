#!/usr/bin/env bash
# The opt-in approximations on the GPU machine (issue 14), full-size random SDXL weights, fp16, 1024², 30 steps,
# guidance 5, batch 4, full VAE, through the CLI: our exact path, ToMe (ratio 0.5; max_downsample 1, 2, 4 with
# merge_attn alone; 4 with merge_mlp too), ToDo (factor 2), DeepCache (intervals 2, 3, 5 at branch 0), and the
# FP8 UNet, FP8 attention and FP8 convolutions (issue 17; not in the default rows; fp8_all: all three), and any
# of exact, fp8, fp8_conv and fp8_all with images_per_unet_call K as NAME_kK (2, 4, 8; batch 2·K), and NAME_b1
# for any of them.
#   bench/gpu_speedups.sh OUT [ROWS]     ROWS: names below (default all); OUT/<row>.json (per-item digests and
#                                        times), OUT/<row>.stdout, and OUT/summary.txt: denoise s/image, ms per
#                                        step, speed-up over exact, and the mean absolute pixel difference and
#                                        PSNR of every image against the exact row's (same seeds).
# SDXLB_SPEEDUPS_EXTRA_YAML: job-file lines added to every row (e.g. 'memory: {overlap_decode: off}').
# Random weights: images are noise, so the pixel differences measure deviation, not quality.
source "$(dirname "${BASH_SOURCE[0]}")/bench_env.sh" "$1"
build_and_model sdxl-batch
declare -A extra=(
  [exact]=""
  [tome_md1]="token_merging: {ratio: 0.5, max_downsample: 1}"
  [tome_md2]="token_merging: {ratio: 0.5, max_downsample: 2}"
  [tome_md4]="token_merging: {ratio: 0.5, max_downsample: 4}"
  [tome_md4_mlp]="token_merging: {ratio: 0.5, max_downsample: 4, merge_mlp: true}"
  [todo_f2]="token_downsampling: {factor: 2, max_downsample: 2}"
  [deepcache_i2]="deep_cache: {cache_interval: 2, cache_branch_id: 0}"
  [deepcache_i3]="deep_cache: {cache_interval: 3, cache_branch_id: 0}"
  [deepcache_i5]="deep_cache: {cache_interval: 5, cache_branch_id: 0}"
  [fp8]="unet_precision: fp8"
  [fp8_attn]=$'unet_precision: fp8\nattention_precision: fp8'
  [fp8_conv]=$'unet_precision: fp8\nconvolution_precision: fp8'
  [fp8_all]=$'unet_precision: fp8\nconvolution_precision: fp8\nattention_precision: fp8'
)
# NAME_kK: NAME with images_per_unet_call: K, at batch 2·K (two concurrent calls) on 2·batch images (at least 12).
for base in exact fp8 fp8_conv fp8_all; do
  for k in 2 4 8; do extra[${base}_k$k]="${extra[$base]}"$'\n'"images_per_unet_call: $k"; done
done
# NAME_b1: the first 4 prompts of NAME at batch 1, whose images must equal NAME's (batch invariance, with ToMe's
# random destinations and DeepCache's two graphs).
extra[tome_md4_b1]="${extra[tome_md4]}"
extra[deepcache_i3_b1]="${extra[deepcache_i3]}"
extra[exact_b1]="${extra[exact]}"
extra[fp8_b1]="${extra[fp8]}"
extra[fp8_attn_b1]="${extra[fp8_attn]}"
extra[fp8_conv_b1]="${extra[fp8_conv]}"
rows="${2:-exact tome_md1 tome_md2 tome_md4 tome_md4_mlp todo_f2 deepcache_i2 deepcache_i3 deepcache_i5 tome_md4_b1 deepcache_i3_b1}"
for name in $rows; do
  [[ "$name" == *_b1 && -z "${extra[$name]+set}" ]] && extra[$name]="${extra[${name%_b1}]}"
  d="/tmp/speedups-$name"
  rm -rf "$d"; mkdir -p "$d"
  n=12 b=4
  if [[ "$name" =~ _k([0-9]+)$ ]]; then b=$((2 * BASH_REMATCH[1])); n=$((2 * b > 12 ? 2 * b : 12)); fi
  [[ "$name" == *_b1 ]] && n=4 b=1
  for i in $(seq 1 "$n"); do echo "benchmark prompt number $i, a photo"; done > "$d/p.txt"
  printf 'model: %s\ndecoder: full\nvae_fp16_safe: true\nprompts_file: p.txt\nsteps: 30\nguidance: 5.0\nwidth: 1024\nheight: 1024\nbatch_size: %s\ndtype: fp16\noutput: out\nprogress_interval_s: 1000\n%s\n%s\n' \
    "$model" "$b" "${extra[$name]}" "${SDXLB_SPEEDUPS_EXTRA_YAML:-}" > "$d/job.yaml"
  start=$EPOCHREALTIME
  "$bin" run "$d/job.yaml" > "$out/$name.stdout" 2> "$out/$name.stderr"
  echo "exit=$? wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" >> "$out/$name.stdout"
  "$py" bench/image_hashes.py "$d/out" "$name" > "$out/$name.json"
  tail -1 "$out/$name.stdout"
done
"$py" - "$out" $rows <<'PY' | tee "$out/summary.txt"
import json, math, os, statistics, sys
import numpy as np
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "oracle"))
from read_output import load_image, open_index
out, rows = sys.argv[1], sys.argv[2:]
def timing(name):
    items = json.load(open(os.path.join(out, name + ".json")))["items"]
    batch = int(next(l.split(":")[1] for l in open(f"/tmp/speedups-{name}/job.yaml") if l.startswith("batch_size:")))
    # per-batch denoise time / image, without the first batch (it captures the CUDA graphs)
    return statistics.median(r["ms_denoise"] for r in items[max(4, batch):]) / 1000, items
exact_s = timing("exact")[0] if "exact" in rows else None
def images(name):
    d = f"/tmp/speedups-{name}/out"
    with open_index(d) as f:
        return [load_image(d, i, f).astype(np.float64) for i in range(12)]
ref = images("exact") if "exact" in rows else None
for name in rows:
    if name.endswith("_b1"):
        a = [r["sha256"] for r in json.load(open(os.path.join(out, name + ".json")))["items"]]
        b = [r["sha256"] for r in json.load(open(os.path.join(out, name[:-3] + ".json")))["items"]][:4]
        print(f"{name}: batch 1 identical to {name[:-3]}'s batch: {a == b} ({sum(x == y for x, y in zip(a, b))}/4)")
        continue
    s, items = timing(name)
    line = f"{name}: denoise {s:.4f} s/image, {1000 * s / 30:.2f} ms/step"
    if exact_s:
        line += f", {exact_s / s:.3f}x exact"
    if ref is not None and name != "exact":
        img = images(name)
        mad = statistics.mean(float(np.abs(a - b).mean()) for a, b in zip(img, ref))
        mse = statistics.mean(float(((a - b) ** 2).mean()) for a, b in zip(img, ref))
        line += f", vs exact: mean |diff| {mad:.2f}, PSNR {10 * math.log10(255 ** 2 / mse) if mse else float('inf'):.2f} dB"
    line += f", ok {sum(r['status'] == 1 for r in items)}/{len(items)}"
    print(line)
PY
