"""Collects what bench/gpu_bench.sh wrote into OUT/results.json and OUT/table.md (ours beside diffusers).
Usage: collect_bench.py OUT [--command "..."]"""
import glob
import json
import os
import re
import statistics
import sys

UNET_TFLOP_PER_IMAGE_CALL = 6.76  # SDXL base, 1024^2 (BENCH.md)


def load_json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def steady_seconds_per_image(items, batch):
    """Denoise + decode per image over every batch after the first (which includes capture and autotuning)."""
    den, dec = items["ms_denoise"], items["ms_decode"]
    per_batch = [(den[i] + dec[i]) for i in range(0, len(den), batch)]
    rest = per_batch[1:] or per_batch
    return statistics.mean(rest) / 1000.0, statistics.mean(dec[batch:] or dec) / 1000.0


STORED = re.compile(r"^\[(\d\d):(\d\d):(\d\d(?:\.\d+)?)\] \[rank \d+\] debug: stored items([ 0-9()a-z]*) \(",
                    re.M)


def steady_wall_seconds_per_image(stderr, batch):
    """Wall time per image from the workers' "stored items" log lines (SDXLB_LOG=debug): from when the first
    batch is stored to when the second-to-last one is, over the items of the batches between. Both ends are
    the same point of a batch's cycle, with the decode overlapped (a group is stored after the next group's
    denoise) or not; the last batch, whose decode nothing hides, is left out like the first. None without
    the lines or with fewer than three batches."""
    done_at, seen, last_t, day = {}, set(), None, 0.0
    for m in STORED.finditer(stderr):
        t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) + day
        if last_t is not None and t < last_t:  # past midnight
            day += 86400.0
            t += 86400.0
        last_t = t
        seen.update(int(i) for i in re.findall(r"\d+", m.group(4)))
        for j in range(len(done_at), 1 << 30):
            if not all(i in seen for i in range(j * batch, (j + 1) * batch)):
                break
            done_at[j] = t
    n = len(done_at)
    if n < 3:
        return None
    return (done_at[n - 2] - done_at[0]) / ((n - 2) * batch)


def diffusers_results(out, name):
    for line in open(os.path.join(out, name)).read().splitlines() if os.path.exists(os.path.join(out, name)) else []:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def main():
    out = sys.argv[1]
    res = {"ours": {}, "diffusers": {}}
    for path in sorted(glob.glob(os.path.join(out, "*.items.json"))):
        name = os.path.basename(path).split(".")[0]
        batch = int(re.match(r"b(\d+)_", name).group(1))
        phases, dec = steady_seconds_per_image(load_json(path), batch)
        err = open(os.path.join(out, name + ".stderr")).read()
        # The wall time per image where the log has it (what throughput is: an overlapped decode counts only
        # where it shows), else the per-image denoise + decode times.
        wall = steady_wall_seconds_per_image(err, batch)
        s_img = wall if wall else phases
        row = {"batch": batch, "s_per_image": round(s_img, 4), "images_per_s": round(1 / s_img, 3),
               "s_per_image_phases": round(phases, 4), "decode_ms_per_image": round(dec * 1000, 1),
               "s_per_image_from": "wall" if wall else "phases"}
        if "overlaps the next group's denoise" in err:
            row["decode_overlapped"] = True
        m = re.search(r"first UNet step at ([\d.]+) s", err)
        if m:
            row["startup_s"] = float(m.group(1))
        m = re.search(r"peak GPU memory: ([\d.]+) GiB", err)
        if m:
            row["peak_gib"] = float(m.group(1))
        res["ours"][name] = row
    enc = open(os.path.join(out, "encode.stderr")).read() if os.path.exists(os.path.join(out, "encode.stderr")) else ""
    m = re.search(r"encode: (\d+) texts? in ([\d.]+) s \(([\d.]+) texts/s", enc)
    if m:
        res["ours"]["encode_prompts_per_s_batch64"] = float(m.group(3))
    uo, ud = load_json(os.path.join(out, "unet_ours.json")), load_json(os.path.join(out, "unet_diffusers.json"))
    if uo:
        res["ours"]["unet"] = uo
        ms = uo["seconds_per_unet_call_batch2_graph"] * 1000
        res["ours"]["unet_cfg_step_ms"] = round(ms, 2)
        res["ours"]["unet_tflops"] = round(2 * UNET_TFLOP_PER_IMAGE_CALL / (ms / 1000), 1)
    if ud:
        res["diffusers"]["unet_eager"] = ud
    for key, name in (("eager", "diffusers_eager.log"), ("eager_mlperf", "diffusers_eager_mlperf.log"),
                      ("compile", "diffusers_compile.log")):
        r = diffusers_results(out, name)
        if r:
            res["diffusers"][key] = r
    json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=2)

    def d(key, row, field="s_per_image"):
        r = res["diffusers"].get(key, {}).get(row)
        return r.get(field) if r else None

    lines = ["| row (1024², random weights) | ours s/image | diffusers eager | diffusers compiled | ours/compiled |",
             "| --- | --- | --- | --- | --- |"]
    # diffusers computes the same work with and without a negative prompt: b4_full_neg (ours with MLPerf's
    # negative prompt) sits beside the same diffusers row as b4_full (ours without negatives).
    mapping = {"b1_full": ("b1_full", "eager", "compile"), "b4_full": ("b4_full", "eager", "compile"),
               "b4_full_neg": ("b4_full", "eager", "compile"),
               "b8_full": (None, None, None), "b1_tiny": ("b1_tiny", "eager", "compile"),
               "b4_tiny": ("b4_tiny", "eager", "compile"), "b4_mlperf": ("b4_full", "eager_mlperf", None),
               "b1_mlperf": (None, None, None)}
    for name, row in res["ours"].items():
        if not isinstance(row, dict) or "s_per_image" not in row:
            continue
        drow, ek, ck = mapping.get(name, (None, None, None))
        e = d(ek, drow) if drow and ek else None
        c = d(ck, drow) if drow and ck else None
        ratio = f"{row['s_per_image'] / c:.2f}" if c else "-"
        lines.append(f"| {name} | {row['s_per_image']:.3f} | {e if e else '-'} | {c if c else '-'} | {ratio} |")
    lines.append("")
    if "unet_cfg_step_ms" in res["ours"]:
        ce = res["diffusers"].get("compile", {}).get("unet_cfg_step_ms")
        ee = res["diffusers"].get("eager", {}).get("unet_cfg_step_ms")
        lines.append(f"UNet CFG step (batch 2): ours {res['ours']['unet_cfg_step_ms']} ms "
                     f"({res['ours']['unet_tflops']} TFLOP/s); diffusers eager {ee} ms, compiled {ce} ms.")
    open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
