"""Builds every oracle fixture once per test run (ctest's `oracle_fixtures` setup test).

Steps: fixture_models.build(out) writes tiny diffusers folders; then every `ref_*.py` beside this file runs its
`build(out)` to write reference inputs and outputs (as .safetensors or .json under <out>/<name>/).
A stamp holding the hash of all scripts here (and the library versions) makes a re-run a no-op.
"""
import argparse
import glob
import hashlib
import importlib
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def fingerprint():
    from importlib.metadata import version

    import diffusers
    import scipy  # scipy.stats.beta.ppf: the beta sigmas of ref_sampler_schedule.py
    import torch
    import transformers

    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(HERE, "*.py"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(f"{torch.__version__} {diffusers.__version__} {transformers.__version__} {scipy.__version__}".encode())
    # ref_speedups.py: tomesd (ToMe) and DeepCache have no __version__; their distributions do.
    h.update(f"tomesd {version('tomesd')} DeepCache {version('DeepCache')}".encode())
    # ref_lora.py: PEFT writes the diffusers-format LoRA and fuses it inside diffusers.
    h.update(f"peft {version('peft')}".encode())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--only", action="append", default=[],
                    help="development: build the models and only these ref_* scripts (e.g. --only ref_unet); "
                         "writes no stamp, so the next full run rebuilds everything")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    stamp = os.path.join(args.out, "STAMP")
    fp = fingerprint()
    if not args.force and not args.only and os.path.exists(stamp) and open(stamp).read().strip() == fp:
        print(f"oracle fixtures up to date in {args.out}")
        return
    # Build into a temporary folder and rename: a killed build never leaves fixtures a later run would trust.
    tmp = args.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    importlib.import_module("fixture_models").build(tmp)
    print(f"models: {time.time() - t0:.1f}s", flush=True)
    for path in sorted(glob.glob(os.path.join(HERE, "ref_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if args.only and name not in args.only:
            continue
        t = time.time()
        importlib.import_module(name).build(tmp)
        print(f"{name}: {time.time() - t:.1f}s", flush=True)
    if not args.only:
        with open(os.path.join(tmp, "STAMP"), "w") as f:
            f.write(fp + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.rename(tmp, args.out)
    print(f"oracle fixtures written to {args.out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
