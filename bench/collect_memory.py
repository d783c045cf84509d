"""Collects what bench/gpu_memory.sh wrote: OUT/memory.json and OUT/memory.md.
Usage: collect_memory.py OUT [ROWS_DIR]   (ROWS_DIR holds mem-<row>/out/index.h5; default /tmp)"""
import glob
import json
import math
import os
import re
import statistics
import sys

import h5py
import numpy as np


def read_row(rows_dir, name):
    path = os.path.join(rows_dir, "mem-" + name, "out", "index.h5")
    if not os.path.exists(path):
        return None, None
    with h5py.File(path, "r") as f:
        items = {k: f[k][()] for k in ("ms_denoise", "ms_decode", "status")}
        images = f["images"][()]
    return items, images


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def main():
    out = sys.argv[1]
    rows_dir = sys.argv[2] if len(sys.argv) > 2 else "/tmp"
    res = {"rows": {}}
    refs = {}
    for stdout in sorted(glob.glob(os.path.join(out, "*.stdout"))):
        name = os.path.basename(stdout)[: -len(".stdout")]
        if not (name.startswith("m_") or name.startswith("s_")):
            continue
        err = open(os.path.join(out, name + ".stderr")).read()
        row = {}
        m = re.search(r"exit=(\d+) wall_s=([\d.]+)", open(stdout).read())
        if m:
            row["exit"], row["wall_s"] = int(m.group(1)), round(float(m.group(2)), 2)
        for key, pat in (("peak_gib", r"peak GPU memory: ([\d.]+) GiB"),
                         ("startup_s", r"first UNet step at ([\d.]+) s")):
            m = re.search(pat, err)
            if m:
                row[key] = float(m.group(1))
        for key, pat in (("plan", r"(memory plan: [^\n]*)"), ("placement", r"(placement: [^\n]*)")):
            m = re.search(pat, err)
            if m:
                row[key] = m.group(1)
        m = re.search(r"memory plan: (\S+) weights.*?, (\S+) decode, (\d+) image", err)
        if m:
            row["chosen_placement"], row["chosen_decode"], row["streams"] = m.group(1), m.group(2), int(m.group(3))
        m = re.search(r"batch (\d+) \(estimated peak ([\d.]+) GiB", err)
        if m:
            row["batch"], row["estimated_gib"] = int(m.group(1)), float(m.group(2))
        items, images = read_row(rows_dir, name)
        if items is not None:
            b = row.get("batch", 1)
            per_batch = [float(sum(items["ms_denoise"][i:i + b]) + sum(items["ms_decode"][i:i + b])) / 1000
                         for i in range(0, len(items["ms_denoise"]), b)]
            steady = per_batch[1:] or per_batch
            row["seconds_per_batch"] = round(statistics.mean(steady), 3)
            row["s_per_image"] = round(statistics.mean(steady) / b, 4)
            row["failed_items"] = int((items["status"] != 1).sum())
            refs[name] = images[:8]
        else:
            err_lines = [l for l in err.splitlines() if "error" in l.lower()]
            row["error"] = err_lines[-1][:300] if err_lines else err[-300:]
        res["rows"][name] = row
    # Bit-identity: memory rows against resident, speed rows against batch 1.
    for name, row in res["rows"].items():
        ref = "m_resident" if name.startswith("m_") else "s_b1"
        if name == ref or name not in refs or ref not in refs:
            continue
        a, b = refs[name], refs[ref][: len(refs[name])]
        row["identical_to_" + ref] = bool(np.array_equal(a, b))
        row["max_abs_diff_vs_" + ref] = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
        row["psnr_db_vs_" + ref] = round(psnr(a, b), 2)
    r = res["rows"]
    base = r.get("m_resident", {}).get("seconds_per_batch")
    if base:
        for name, row in r.items():
            if name.startswith("m_") and row.get("seconds_per_batch") and row.get("batch") == 4:
                row["x_resident"] = round(row["seconds_per_batch"] / base, 2)
    log = os.path.join(out, "diffusers_memory.log")
    if os.path.exists(log):
        for line in open(log):
            if line.startswith("RESULT "):
                res["diffusers"] = json.loads(line[len("RESULT "):])
    json.dump(res, open(os.path.join(out, "memory.json"), "w"), indent=2)

    lines = ["| row | placement chosen | decode | concurrent | peak GiB | s / batch | × resident | pixels vs reference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in r.items():
        ident = [v for k, v in row.items() if k.startswith("identical_to_")]
        ps = [v for k, v in row.items() if k.startswith("psnr_db_vs_")]
        pix = "reference" if not ident else ("identical" if ident[0] else f"PSNR {ps[0]} dB")
        lines.append(f"| {name} | {row.get('chosen_placement', row.get('error', '?'))} | {row.get('chosen_decode', '')} | "
                     f"{row.get('streams', '')} | {row.get('peak_gib', '')} | {row.get('seconds_per_batch', '')} | "
                     f"{row.get('x_resident', '')} | {pix} |")
    if "diffusers" in res:
        lines += ["", "| diffusers option (batch 4, 10 steps) | seconds | peak GiB |", "| --- | --- | --- |"]
        for k, v in res["diffusers"].items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {v['seconds']} | {v['peak_gib']} |")
    open(os.path.join(out, "memory.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
