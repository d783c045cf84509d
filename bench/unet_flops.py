#!/usr/bin/env python3
"""FLOPs of one SDXL UNet call, by kind of operation, counted by torch's FlopCounterMode on diffusers' UNet on
the meta device (no weights, no GPU; a few seconds on a CPU). With a kernel profile's milliseconds per part
(bench/profile_parts.py) this gives each part's TFLOP/s, and how far each is from the fp16 floor.

Usage: unet_flops.py [MODEL] [--batch B] [--size PX]
  MODEL    a diffusers folder (its unet/config.json); default: the SDXL base UNet's configuration
  --batch  samples per call (default 2: one image with classifier-free guidance)
  --size   image side in pixels (default 1024; the latent is a eighth of it)
Prints one JSON object: total and per-kind TFLOP (linear: addmm and mm; convolution; attention: the two
batched products of softmax(q kᵀ) v), and the convolution FLOPs our phase-convolution upsamplers save
(fused_ops.h, "upsampleconv": 16 instead of 36 multiply-adds per pixel and channel)."""
import argparse
import json
import os

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusers_speed import UNET as SDXL_BASE_UNET  # the SDXL base UNet's configuration (bench/)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    from diffusers import UNet2DConditionModel

    if a.model:
        cfg = UNet2DConditionModel.load_config(os.path.join(a.model, "unet"))
    else:
        cfg = SDXL_BASE_UNET
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg).half()
        lat = a.size // 8
        x = torch.randn(a.batch, unet.config.in_channels, lat, lat, dtype=torch.half)
        ctx = torch.randn(a.batch, 77, unet.config.cross_attention_dim, dtype=torch.half)
        c = unet.config  # the pooled text embedding is what the added-condition projection takes beside the time ids
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        added = dict(text_embeds=torch.randn(a.batch, pooled, dtype=torch.half),
                     time_ids=torch.randn(a.batch, 6, dtype=torch.half))
        counter = FlopCounterMode(display=False)
        with counter:
            unet(x, torch.full((a.batch,), 500.0), ctx, added_cond_kwargs=added)
    by_op = {str(k).split(".")[-1]: v for k, v in counter.get_flop_counts()["Global"].items()}
    # Each upsampler's 3x3 convolution over the doubled image: 2 * 9 * Cin * Cout per output pixel; as phase
    # convolutions: 2 * 4 * Cin * Cout per output pixel (a 2x2 filter per phase).
    saved = 0
    side = lat // 2 ** (len(unet.config.block_out_channels) - 1)  # the deepest level's side
    for block in unet.up_blocks:
        if block.upsamplers:
            conv = block.upsamplers[0].conv
            pixels = (2 * side) ** 2
            saved += a.batch * pixels * 2 * (9 - 4) * conv.in_channels * conv.out_channels
            side *= 2
    tera = 1e12
    out = {
        "batch": a.batch, "size": a.size,
        "total_tflop": round(counter.get_total_flops() / tera, 3),
        "linear_tflop": round((by_op.get("addmm", 0) + by_op.get("mm", 0)) / tera, 3),
        "convolution_tflop": round(by_op.get("convolution", 0) / tera, 3),
        "attention_tflop": round(by_op.get("bmm", 0) / tera, 3),
        "phase_upsamplers_save_tflop": round(saved / tera, 3),
        "by_op_tflop": {k: round(v / tera, 3) for k, v in sorted(by_op.items())},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
