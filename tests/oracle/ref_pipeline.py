"""End-to-end reference: diffusers' StableDiffusionXLPipeline on the tiny models, 4 Euler steps, guidance 5,
non-square sizes, per-image CPU generators, with and without a negative prompt, full and tiny VAE.
Writes <out>/pipeline/<case>.json (inputs) and <case>.safetensors (uint8 images [B, H, W, 3])."""
import json
import os

import numpy as np
import torch
from diffusers import AutoencoderTiny, StableDiffusionXLPipeline
from safetensors.torch import save_file

CASES = [
    # name, model, tiny vae, prompts, negatives ("" = none), seeds, height, width, guidance
    ("a_no_negative", "tiny-a", None, ["a red fox in the snow, 35mm photo", "An astronaut riding a horse!"],
     ["", ""], [0, 123456789], 48, 64, 5.0),
    ("a_negative", "tiny-a", None, ["a bowl of ramen, studio lighting"], ["blurry, low quality"], [42], 64, 40, 5.0),
    ("a_tiny_vae", "tiny-a", "taesd-a", ["a lighthouse at dusk", "café au lait"], ["", ""], [7, 8], 64, 96, 5.0),
    ("b_no_negative", "tiny-b", None, ["portrait of a cat wearing a hat"], [""], [2**40 + 5], 40, 56, 5.0),
    ("b_negative_no_cfg", "tiny-b", None, ["mountains"], ["fog"], [99], 56, 40, 1.0),
    # transformer_layers_per_block [0, 1, 2]: the 0 sits on the level without attention (issue 15).
    ("a_zero_depth_level", "tiny-a-tl0", None, ["a red fox in the snow, 35mm photo"], [""], [11], 48, 40, 5.0),
]


def _build_cases(out):
    root = os.path.join(out, "pipeline")
    os.makedirs(root, exist_ok=True)
    for name, model, tiny, prompts, negatives, seeds, h, w, guidance in CASES:
        pipe = StableDiffusionXLPipeline.from_pretrained(os.path.join(out, "models", model))
        if tiny:
            vae = AutoencoderTiny.from_pretrained(os.path.join(out, "models", tiny))
            pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=pipe.text_encoder,
                                             text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer,
                                             tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, scheduler=pipe.scheduler)
        pipe.set_progress_bar_config(disable=True)
        images = []
        for prompt, negative, seed in zip(prompts, negatives, seeds):
            gen = [torch.Generator("cpu").manual_seed(seed)]
            out_np = pipe(prompt=[prompt], negative_prompt=[negative] if negative else None, generator=gen,
                          num_inference_steps=4, guidance_scale=guidance, height=h, width=w,
                          output_type="np").images
            images.append(np.round(out_np * 255).astype(np.uint8))
        save_file({"images": torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))}, os.path.join(root, name + ".safetensors"))
        with open(os.path.join(root, name + ".json"), "w") as f:
            json.dump(dict(model=model, tiny_vae=tiny, prompts=prompts, negatives=negatives, seeds=seeds, height=h,
                           width=w, guidance=guidance, steps=4), f, indent=1)


def _noise(out):
    gen = lambda s: torch.Generator("cpu").manual_seed(s)
    save_file({"seed42": torch.randn((1, 4, 2, 3), generator=gen(42)),
               "seed2p63": torch.randn((1, 4, 2, 3), generator=gen(2**63))},
              os.path.join(out, "pipeline", "noise.safetensors"))


def build(out):
    _build_cases(out)
    _noise(out)
