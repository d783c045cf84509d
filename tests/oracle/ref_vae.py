"""Reference decodes for the VAE oracle test (tests/vae_test.cpp): diffusers' AutoencoderKL and AutoencoderTiny.

Boundary compared: the PIPELINE latents (what the denoising loop ends with) go in; what comes out is what
StableDiffusionXLPipeline gets from `vae.decode(latents / vae.config.scaling_factor)` (images in about [-1, 1]),
and the uint8 images of `pipe.image_processor.postprocess(image, "pil")`. So the division by scaling_factor is
part of what C++ must reproduce.

Writes <out>/vae/<name>.safetensors for each model with:
  latents              [2, C, 8, 12] pipeline latents (non-square)
  decoded              vae.decode(latents / scaling_factor).sample
  decoded_sliced       the same with vae.enable_slicing()
  uint8                postprocess(decoded, "pil") as [B, H, W, 3] uint8
  (full VAE only)
  decoded_tiled        with vae.enable_tiling() and tiles forced small (tile_latent_min_size / tile_sample_min_size
                       in the same file's __metadata__), so several overlapping tiles are blended; the
                       metadata also holds diffusers' default tile sizes for the config (default_tile_*)
  images               [2, 3, H, W] images in [-1, 1]; encoded = vae.encode(images).latent_dist.parameters
  decoded_bf16         decoded with the VAE and the latents in bfloat16 (job key vae_dtype: bf16), as float32
Models: tiny-a/vae, tiny-b/vae (AutoencoderKL), taesd-a (AutoencoderTiny), and taesd-c: a second valid
AutoencoderTiny config saved here under <out>/vae/taesd-c, because fixture taesd-b's decoder_block_out_channels
[8, 12, 8, 16] cannot decode in diffusers (level widths must match); <out>/vae/taesd-b.json records diffusers'
error so the C++ test can check that the loader rejects that config with a Status naming the key.
"""
import json
import os

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.image_processor import VaeImageProcessor
from safetensors.torch import save_file

LATENT_HW = (8, 12)
# Small tiles so that tiled decode really blends several tiles: 4 latent pixels a tile, overlap 0.25.
TILE_LATENT = 4


def pipeline_latents(channels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, *LATENT_HW, generator=g)


def to_uint8(vae, image):
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    proc = VaeImageProcessor(vae_scale_factor=scale)
    pil = proc.postprocess(image, output_type="pil")
    return torch.from_numpy(np.stack([np.array(p) for p in pil]))


def pipeline_decode(vae, latents):
    # StableDiffusionXLPipeline.__call__, after the denoising loop (fp32, no upcast, no latents_mean/std).
    return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]


def full_vae(out, name, seed):
    vae = AutoencoderKL.from_pretrained(os.path.join(out, "models", name, "vae")).eval()
    latents = pipeline_latents(vae.config.latent_channels, seed)
    t = {"latents": latents}
    meta = {}
    with torch.no_grad():
        t["decoded"] = pipeline_decode(vae, latents)
        vae.enable_slicing()
        t["decoded_sliced"] = pipeline_decode(vae, latents)
        vae.disable_slicing()
        vae.enable_tiling()
        default_tiling = {"default_tile_latent_min_size": str(vae.tile_latent_min_size),
                          "default_tile_sample_min_size": str(vae.tile_sample_min_size)}
        levels = len(vae.config.block_out_channels)
        vae.tile_latent_min_size = TILE_LATENT
        vae.tile_sample_min_size = TILE_LATENT * 2 ** (levels - 1)
        meta = {"tile_latent_min_size": str(vae.tile_latent_min_size),
                "tile_sample_min_size": str(vae.tile_sample_min_size),
                "tile_overlap_factor": repr(vae.tile_overlap_factor), **default_tiling}
        t["decoded_tiled"] = pipeline_decode(vae, latents)
        vae.disable_tiling()
        t["uint8"] = to_uint8(vae, t["decoded"])
        g = torch.Generator().manual_seed(seed + 1)
        images = torch.rand(2, 3, LATENT_HW[0] * 2 ** (levels - 1), LATENT_HW[1] * 2 ** (levels - 1),
                            generator=g) * 2 - 1
        t["images"] = images
        t["encoded"] = vae.encode(images).latent_dist.parameters
        # vae_dtype: bf16: the VAE's weights in bfloat16 and the latents cast to it before the division by
        # scaling_factor (what StableDiffusionXLPipeline does in bfloat16: force_upcast is for float16 only).
        vae.to(torch.bfloat16)
        t["decoded_bf16"] = pipeline_decode(vae, latents.to(torch.bfloat16)).float()
        vae.to(torch.float32)
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out, "vae", f"{name}.safetensors"), meta)


def tiny_vae(out, name, vae, seed):
    latents = pipeline_latents(vae.config.latent_channels, seed)
    t = {"latents": latents}
    with torch.no_grad():
        t["decoded"] = pipeline_decode(vae, latents)
        vae.enable_slicing()
        t["decoded_sliced"] = pipeline_decode(vae, latents)
        vae.disable_slicing()
        t["uint8"] = to_uint8(vae, t["decoded"])
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(out, "vae", f"{name}.safetensors"))


def build(out):
    os.makedirs(os.path.join(out, "vae"), exist_ok=True)
    full_vae(out, "tiny-a", seed=11)
    full_vae(out, "tiny-b", seed=12)
    tiny_vae(out, "taesd-a", AutoencoderTiny.from_pretrained(os.path.join(out, "models", "taesd-a")).eval(), 13)

    # taesd-b: record that diffusers cannot decode it (so the C++ loader must refuse it, naming the key).
    bad = AutoencoderTiny.from_pretrained(os.path.join(out, "models", "taesd-b")).eval()
    try:
        with torch.no_grad():
            pipeline_decode(bad, pipeline_latents(4, 14))
        err = None
    except RuntimeError as e:
        err = str(e)
    with open(os.path.join(out, "vae", "taesd-b.json"), "w") as f:
        json.dump({"diffusers_decode_error": err}, f, indent=1)

    # taesd-c: a second valid tiny config (other widths, two blocks at one level, silu blocks).
    torch.manual_seed(99)
    good = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(12, 12, 12, 12),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 2, 1, 1), latent_channels=4,
                           act_fn="silu")
    with torch.no_grad():
        for p in good.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = os.path.join(out, "vae", "taesd-c")
    good.save_pretrained(folder, safe_serialization=True)
    tiny_vae(out, "taesd-c", AutoencoderTiny.from_pretrained(folder).eval(), 15)


if __name__ == "__main__":
    import sys
    build(sys.argv[1])
