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

# bench/gpu_samplers.sh OUT all [EULER_REFERENCE.json]
#   every sampler on one job each (12 prompts, batch 4, 30 steps, guidance 5, full VAE): OUT/<sampler>.json
#   (digests and per-item times) and OUT/<sampler>.stdout; the stochastic ones again at batch 1 (first 4
#   prompts), whose digests must equal the batch-4 run's; and the Euler job of the baseline mode, whose
#   digests are compared with EULER_REFERENCE.json (the same job rendered before the sampler refactor).
if [[ "$mode" == all ]]; then
  sampler_row() {  # NAME SAMPLER PROMPTS BATCH
    local name="$1" sampler="$2" n="$3" b="$4" d="/tmp/samplers-$1"
    rm -rf "$d"; mkdir -p "$d"
    for i in $(seq 1 "$n"); do echo "benchmark prompt number $i, a photo"; done > "$d/p.txt"
    printf 'model: %s\ndecoder: full\nvae_fp16_safe: true\nprompts_file: p.txt\nsteps: 30\nguidance: 5.0\nwidth: 1024\nheight: 1024\nbatch_size: %s\ndtype: fp16\noutput: out\nprogress_interval_s: 1000\nscheduler: %s\n' \
      "$model" "$b" "$sampler" > "$d/job.yaml"
    local start=$EPOCHREALTIME
    "$bin" run "$d/job.yaml" > "$out/$name.stdout" 2> "$out/$name.stderr"
    echo "exit=$? wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" >> "$out/$name.stdout"
    "$py" bench/image_hashes.py "$d/out" "$name" > "$out/$name.json"
    tail -1 "$out/$name.stdout"
  }
  # SDXLB_SAMPLERS="euler euler_a" times only those (euler first: the others are compared with it).
  for s in ${SDXLB_SAMPLERS:-euler euler_a dpmpp_2m dpmpp_2m_sde ddim unipc}; do sampler_row "$s" "$s" 12 4; done
  for s in euler_a dpmpp_2m_sde; do sampler_row "$s-b1" "$s" 4 1; done
  if [[ -n "${3:-}" ]]; then
    run_row euler-identity /tmp/samplers-euler-identity 8 30 5.0 4 full
    "$py" bench/image_hashes.py /tmp/samplers-euler-identity/out euler-identity > "$out/euler-identity.json"
  fi
  "$py" - "$out" "${3:-}" <<'PY' | tee "$out/summary.txt"
import json, os, statistics, sys
out, ref = sys.argv[1], sys.argv[2]
def load(n): return json.load(open(os.path.join(out, n + ".json")))["items"]
euler = None
for s in ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_sde", "ddim", "unipc"]:
    if not os.path.exists(os.path.join(out, s + ".json")):
        continue
    items = load(s)
    # per-batch denoise time / image, without the first batch (it captures the CUDA graph)
    per = [r["ms_denoise"] for r in items[4:]]
    med = statistics.median(per) / 1000
    euler = euler or med
    wall = [l for l in open(os.path.join(out, s + ".stdout")) if l.startswith("exit=")][0].strip()
    print(f"{s}: denoise {med:.4f} s/image ({100 * (med / euler - 1):+.2f}% vs euler), ok {sum(r['status'] == 1 for r in items)}/{len(items)}, {wall}")
for s in ["euler_a", "dpmpp_2m_sde"]:
    a = [r["sha256"] for r in load(s)[:4]]
    b = [r["sha256"] for r in load(s + "-b1")]
    print(f"{s}: batch 1 vs batch 4 identical: {a == b} ({sum(x == y for x, y in zip(a, b))}/4)")
if ref:
    a = [r["sha256"] for r in json.load(open(ref))["items"]]
    b = [r["sha256"] for r in load("euler-identity")]
    print(f"euler: identical to the images before the refactor: {a == b} ({sum(x == y for x, y in zip(a, b))}/{len(a)})")
PY
fi
