"""Reference UNet evaluations for the UNet oracle test (tests/unet_test.cpp): diffusers' UNet2DConditionModel.

Boundary compared: one denoiser call as StableDiffusionXLPipeline makes it,
`unet(sample, t, encoder_hidden_states, added_cond_kwargs={"text_embeds", "time_ids"}).sample`, in fp32 on CPU.

Writes <out>/unet/<case>.safetensors with the inputs and diffusers' output:
  sample                 [2, C, h, w]  seeded randn, non-square
  timestep               [2] float32, a different timestep per batch entry (one fractional)
  encoder_hidden_states  [2, 77, cross_attention_dim]
  text_embeds            [2, P]   P = projection_class_embeddings_input_dim - 6 * addition_time_embed_dim
  time_ids               [2, 6]   (orig_h, orig_w, crop_top, crop_left, target_h, target_w), two different rows
  out                    [2, C, h, w]  diffusers' noise prediction
  out_scalar_t           the output for `timestep` given as a 0-dim tensor (timestep[0]), broadcast by diffusers
and __metadata__ {"model": folder under <out>/models, "config_overrides": JSON of config changes}.

Cases: tiny-a at 16x24, tiny-b at 8x16 (the brief's sizes); tiny-b at 9x14 (h, w not multiples of the total
downsampling, so diffusers forwards each skip connection's size to the upsamplers); tiny-a with
center_input_sample=True (a config override the C++ test applies to the same weights).

Also writes <out>/unet/bad-shape/: a copy of tiny-a's model_index.json and unet/config.json with weights in which
conv_in.weight has a wrong shape, for the loader's error path.
"""
import json
import os
import shutil

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

BATCH = 2
CASES = [
    # case name, model folder, (h, w), config overrides
    ("tiny-a", "tiny-a", (16, 24), {}),
    ("tiny-b", "tiny-b", (8, 16), {}),
    ("tiny-b-odd", "tiny-b", (9, 14), {}),
    ("tiny-a-center", "tiny-a", (16, 24), {"center_input_sample": True}),
]


def inputs(cfg, hw, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    return {
        "sample": torch.randn(BATCH, cfg.in_channels, h, w, generator=g),
        "timestep": torch.tensor([981.0, 17.5], dtype=torch.float32),
        "encoder_hidden_states": torch.randn(BATCH, 77, cfg.cross_attention_dim, generator=g),
        "text_embeds": torch.randn(BATCH, pooled, generator=g),
        "time_ids": torch.tensor([[8.0 * h, 8.0 * w, 0.0, 0.0, 8.0 * h, 8.0 * w],
                                  [1024.0, 768.0, 16.0, 32.0, 1024.0, 1024.0]], dtype=torch.float32),
    }


def run(unet, x, timestep):
    added = {"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}
    with torch.no_grad():
        return unet(x["sample"], timestep, x["encoder_hidden_states"], added_cond_kwargs=added).sample


def bad_shape_folder(out):
    src = os.path.join(out, "models", "tiny-a")
    dst = os.path.join(out, "unet", "bad-shape")
    os.makedirs(os.path.join(dst, "unet"), exist_ok=True)
    shutil.copy(os.path.join(src, "model_index.json"), dst)
    shutil.copy(os.path.join(src, "unet", "config.json"), os.path.join(dst, "unet"))
    weights = load_file(os.path.join(src, "unet", "diffusion_pytorch_model.safetensors"))
    weights["conv_in.weight"] = weights["conv_in.weight"][:, :, :1, :1].contiguous()  # [32, 4, 1, 1]
    save_file(weights, os.path.join(dst, "unet", "diffusion_pytorch_model.safetensors"))


def build(out):
    os.makedirs(os.path.join(out, "unet"), exist_ok=True)
    for i, (name, model, hw, overrides) in enumerate(CASES):
        unet = UNet2DConditionModel.from_pretrained(os.path.join(out, "models", model, "unet"), **overrides).eval()
        for key, value in overrides.items():
            assert unet.config[key] == value, (key, unet.config[key])
        x = inputs(unet.config, hw, seed=1000 + i)
        t = dict(x)
        t["out"] = run(unet, x, x["timestep"])
        t["out_scalar_t"] = run(unet, x, x["timestep"][0])
        meta = {"model": model, "config_overrides": json.dumps(overrides)}
        save_file(t, os.path.join(out, "unet", f"{name}.safetensors"), metadata=meta)
    bad_shape_folder(out)


if __name__ == "__main__":
    import sys
    build(sys.argv[1])
