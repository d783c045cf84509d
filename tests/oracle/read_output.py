#!/usr/bin/env python3
"""Reads an sdxl-batch output folder with h5py, the way a user would, and prints a JSON summary.

Usage: read_output.py <out>            (prints JSON to stdout; exit 1 when a consistency check fails)

Also a small library: open_index(out), load_image(out, i) and items(out) show how to read the output
from Python (see docs/output-format.md). Used by tests/store_test.cpp to check that h5py reads the files
written by the C++ store: counts, item order, metadata, and that index.h5's virtual `images` dataset
returns the same pixels as the segment files it points at.
"""
import io
import json
import os
import sys

import h5py
import numpy as np

COLUMNS = ["item_index", "prompt_index", "image_k", "seed", "prompt", "negative_prompt", "steps", "guidance",
           "width", "height", "scheduler", "model_id", "rank", "host", "gpu", "ms_encode", "ms_denoise",
           "ms_decode", "status", "error"]
STRING_COLUMNS = {"prompt", "negative_prompt", "scheduler", "model_id", "host", "gpu", "error"}


def open_index(out):
    """index.h5 of an output folder, opened read-only."""
    return h5py.File(os.path.join(out, "index.h5"), "r")


def load_image(out, i, index=None):
    """Item i as a uint8 [H, W, 3] array (zeros when it failed or was never rendered)."""
    own = index is None
    f = open_index(out) if own else index
    try:
        h, w = int(f.attrs["height"]), int(f.attrs["width"])
        if f.attrs["encoding"] == "raw":
            return f["images"][i]  # the virtual dataset reads from the segment file
        seg, row = int(f["item_segment"][i]), int(f["item_row"][i])
        if seg < 0:
            return np.zeros((h, w, 3), np.uint8)
        name = f["segments"].asstr()[seg]
        with h5py.File(os.path.join(out, "segments", name), "r") as s:
            data = s["png"][row].tobytes()
        if not data:
            return np.zeros((h, w, 3), np.uint8)
        from PIL import Image
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    finally:
        if own:
            f.close()


def items(out):
    """Per-item metadata of the whole job, in item order, as a list of dicts."""
    with open_index(out) as f:
        cols = {c: (f[c].asstr()[:] if c in STRING_COLUMNS else f[c][:]) for c in COLUMNS}
    n = len(cols["item_index"])
    return [{c: cols[c][i].item() if hasattr(cols[c][i], "item") else cols[c][i] for c in COLUMNS}
            for i in range(n)]


def attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if hasattr(v, "item"):
        return v.item()
    return v


def summarize(out):
    problems = []
    with open_index(out) as f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        n = int(f.attrs["total_items"])
        segments = list(f["segments"].asstr()[:])
        item_segment = f["item_segment"][:]
        item_row = f["item_row"][:]
        has_images = "images" in f
        if has_images:
            if not f["images"].is_virtual:
                problems.append("index images is not a virtual dataset")
            if f["images"].shape != (n, int(f.attrs["height"]), int(f.attrs["width"]), 3):
                problems.append(f"index images has shape {f['images'].shape}")
        rows = items(out)
        for i, r in enumerate(rows):
            img = load_image(out, i, f)
            r["segment"] = int(item_segment[i])
            r["row"] = int(item_row[i])
            r["pixel_sum"] = int(img.astype(np.uint64).sum())
            r["pixel_first"] = [int(x) for x in img[0, 0]]
            # Cross-check the virtual dataset against the segment file it maps.
            if has_images and r["segment"] >= 0:
                with h5py.File(os.path.join(out, "segments", segments[r["segment"]]), "r") as s:
                    direct = s["images"][r["row"]]
                    if not np.array_equal(direct, img):
                        problems.append(f"item {i}: index images differs from {segments[r['segment']]}")
                    if int(s["item_index"][r["row"]]) != i:
                        problems.append(f"item {i}: item_row points at item {int(s['item_index'][r['row']])}")
    return {"attrs": attrs, "total_items": n, "segments": segments, "has_images": has_images,
            "items": rows, "problems": problems}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    summary = summarize(sys.argv[1])
    json.dump(summary, sys.stdout)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
