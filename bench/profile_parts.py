"""Splits a kernel profile (bench/unet_parity --profile, bench/gpu_timing.h) into the parts the results name
(GEMMs, convolutions, attention, GEGLU, GroupNorm, LayerNorm, quantisers, adds and copies, memsets and the
rest), and, where the profile has the first call's launches in order, the GPU's idle time between kernels by
the parts on either side of each gap. With --part NAME, each kernel of that part (e.g. attention) with its
launch times: the spread over all profiled calls, and the first call's launches in the order they ran (the
UNet's order, so the shapes can be told apart).
Usage: profile_parts.py PROFILE.json [--gaps N] [--part NAME]   (N: the largest boundary pairs to list,
default 12)"""
import json
import sys
from collections import defaultdict


def part(name):
    n = name.lower()
    if "sdpa" in n or "flash" in n or "fmha" in n or "short_attention" in n:
        return "attention"
    if "fprop" in n or "implicit_gemm" in n or "fp8_conv" in n or "conv" in n:
        return "convolutions"
    if "nvjet" in n or "gemm" in n or "cutlass" in n or "splitk" in n:
        return "GEMMs"
    if "geglu" in n or "gelu" in n:
        return "GEGLU"
    if "layer_norm" in n:
        return "LayerNorm"
    if "gn_" in n:
        return "GroupNorm"
    if "quantize" in n or "amax" in n:
        return "quantisers"
    if "memset" in n:
        return "memsets"
    if "bias_residual" in n or "elementwise" in n or "cat" in n or "copy" in n or "add" in n:
        return "adds, cats, copies"
    return "other"


def list_part(p, name, seq):
    """The kernels of part `name`: launches and time per call, the spread of their launch times, and the
    first call's launch times in order."""
    known = {part(k["name"]) for k in p["kernels"]}
    if name not in known:
        sys.exit(f"profile_parts.py: no part named {name!r} in this profile (it has: {', '.join(sorted(known))})")
    for i, k in enumerate(p["kernels"]):
        if part(k["name"]) != name:
            continue
        ds = sorted(k.get("launch_us", []))
        spread = f"min {ds[0]:.1f}, median {ds[len(ds) // 2]:.1f}, max {ds[-1]:.1f} us" if ds else "no launch times"
        print(f"  {k['us_per_call']:8.1f} us per call, {k['launches_per_call']:4g} launches ({spread}): {k['name'][:110]}")
        first = [f"{d:.1f}" for ki, _, d in seq if ki == i]
        if first:
            print(f"    first call, in order: {' '.join(first)}")


def main():
    p = json.load(open(sys.argv[1]))
    top = int(sys.argv[sys.argv.index("--gaps") + 1]) if "--gaps" in sys.argv else 12
    kernels = p["kernels"]
    parts = defaultdict(lambda: [0.0, 0])
    for k in kernels:
        s = parts[part(k["name"])]
        s[0] += k["us_per_call"]
        s[1] += k["launches_per_call"]
    print(f"{p['gpu_us_per_call'] / 1e3:.2f} ms of kernels per call")
    for name, (us, n) in sorted(parts.items(), key=lambda x: -x[1][0]):
        print(f"  {name:20s} {us / 1e3:7.2f} ms  {n:5d} launches")
    seq = p.get("first_call")
    if "--part" in sys.argv:
        list_part(p, sys.argv[sys.argv.index("--part") + 1], seq or [])
    if not seq:
        return
    gaps = defaultdict(lambda: [0.0, 0])
    for (pk, ps, pd), (k, s, _) in zip(seq, seq[1:]):
        gap = s - (ps + pd)
        if gap > 0:
            g = gaps[(part(kernels[pk]["name"]), part(kernels[k]["name"]))]
            g[0] += gap
            g[1] += 1
    end = seq[-1][1] + seq[-1][2]
    print(f"first call ({p.get('timeline_of', 'eager call')}): {end / 1e3:.2f} ms from its first launch to its last kernel's end, "
          f"{p['first_call_idle_us'] / 1e3:.2f} ms of it with no kernel running; the gaps by the parts around them:")
    for (a, b), (us, n) in sorted(gaps.items(), key=lambda x: -x[1][0])[:top]:
        print(f"  {a:>20s} -> {b:20s} {us:8.1f} us over {n:4d} gaps ({us / n:.2f} us each)")


if __name__ == "__main__":
    main()
