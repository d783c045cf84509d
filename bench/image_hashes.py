#!/usr/bin/env python3
"""Per-item pixel digests of an sdxl-batch output folder, to compare two runs image by image.

Usage: image_hashes.py OUT [LABEL]   prints one JSON object: label, items (item_index, seed, status, sha256 of
                                      the uint8 [H, W, 3] pixels, scheduler, ms_denoise)
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
from read_output import items, load_image, open_index  # noqa: E402

out = sys.argv[1]
rows = []
with open_index(out) as f:
    for it in items(out):
        img = load_image(out, it["item_index"], f)
        rows.append(dict(item_index=it["item_index"], seed=it["seed"], status=it["status"],
                         sha256=hashlib.sha256(img.tobytes()).hexdigest(), scheduler=it["scheduler"],
                         ms_denoise=it["ms_denoise"]))
print(json.dumps(dict(label=sys.argv[2] if len(sys.argv) > 2 else out, items=rows)))
