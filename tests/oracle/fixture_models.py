"""Tiny random SDXL-architecture pipelines saved by diffusers itself, for the oracle tests.

Two configs with every structural feature of SDXL (text_time embedding, a level without transformers, a level
with transformer depth 2, linear projection, GEGLU, two text encoders with projection) but small widths.
Written once per fixture build:
  <out>/models/tiny-a/            plain fp32 safetensors
  <out>/models/tiny-a-fp16/       the same weights, saved twice: plain and with variant="fp16"
  <out>/models/tiny-a-sharded/    the UNet split into several shards (with *.safetensors.index.json)
  <out>/models/tiny-a-tl0/        tiny-a with transformer_layers_per_block [0, 1, 2] (0 where there is no attention)
  <out>/models/tiny-b/            second config (eos_token_id rule, depth per level, non-square)
  <out>/models/taesd-a/, taesd-b/ AutoencoderTiny folders matching each config's latent channels
"""
import json
import os
import shutil

import torch
from diffusers import (AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from clip_vocab import write_clip_tokenizer

CONFIGS = {
    "a": dict(
        unet=dict(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
            cross_attention_dim=64, norm_num_groups=32,
        ),
        vae=dict(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 layers_per_block=1, norm_num_groups=32, sample_size=32, scaling_factor=0.13025,
                 force_upcast=True),
        te1=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                 hidden_act="quick_gelu", projection_dim=32, eos_token_id=2),
        te2=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                 hidden_act="gelu", projection_dim=32, eos_token_id=2),
        taesd=dict(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                   num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4),
    ),
    "b": dict(
        unet=dict(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 48),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), attention_head_dim=(2, 3), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=48,
            cross_attention_dim=40, norm_num_groups=16,
        ),
        vae=dict(block_out_channels=(16, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                 layers_per_block=2, norm_num_groups=16, sample_size=32, scaling_factor=0.13025,
                 force_upcast=False),
        te1=dict(hidden_size=16, intermediate_size=29, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act="quick_gelu", projection_dim=16, eos_token_id=49407),
        te2=dict(hidden_size=24, intermediate_size=31, num_hidden_layers=3, num_attention_heads=3,
                 hidden_act="gelu", projection_dim=24, eos_token_id=49407),
        taesd=dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 12, 8, 16),
                   num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 2, 1, 1), latent_channels=4),
    ),
}

SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
                 use_karras_sigmas=False)


def build_pipeline(name, seed):
    cfg = CONFIGS[name]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, pad_token_id=1,
                  layer_norm_eps=1e-5)
    te1 = CLIPTextModel(CLIPTextConfig(**common, **cfg["te1"]))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **cfg["te2"]))
    # Random weights everywhere, including the normalisation layers, so that no parameter goes unchecked.
    with torch.no_grad():
        for module in (unet, vae, te1, te2):
            for p in module.parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    return unet, vae, te1, te2


def save_pipeline(out, name, seed):
    unet, vae, te1, te2 = build_pipeline(name, seed)
    root = os.path.join(out, "models")
    base = os.path.join(root, f"tiny-{name}")
    tmp = os.path.join(root, f".tok-{name}")
    write_clip_tokenizer(tmp + "/1", "<|endoftext|>")
    write_clip_tokenizer(tmp + "/2", "!")
    tok1 = CLIPTokenizer.from_pretrained(tmp + "/1")
    tok2 = CLIPTokenizer.from_pretrained(tmp + "/2")
    shutil.rmtree(tmp)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(base, safe_serialization=True)
    # save_pretrained re-serialises the tokenizers; put back the files exactly as SDXL ships them.
    for i, sub in ((1, "tokenizer"), (2, "tokenizer_2")):
        for f in os.listdir(os.path.join(base, sub)):
            os.remove(os.path.join(base, sub, f))
        write_clip_tokenizer(os.path.join(base, sub), "<|endoftext|>" if i == 1 else "!")
    if name == "a":
        # The SDXL paper writes the transformer depths as [0, 2, 10]: a 0 on the first level, which has no
        # attention. diffusers ignores it there; the weights are tiny-a's.
        zero = os.path.join(root, "tiny-a-tl0")
        shutil.copytree(base, zero)
        cfg_path = os.path.join(zero, "unet", "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["transformer_layers_per_block"] = [0] + list(cfg["transformer_layers_per_block"][1:])
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        sharded = os.path.join(root, "tiny-a-sharded")
        pipe.save_pretrained(sharded, safe_serialization=True)
        os.remove(os.path.join(sharded, "unet", "diffusion_pytorch_model.safetensors"))
        pipe.unet.save_pretrained(os.path.join(sharded, "unet"), safe_serialization=True, max_shard_size="2MB")
        # Last: converting to fp16 in place rounds the weights.
        fp16 = os.path.join(root, "tiny-a-fp16")
        pipe.save_pretrained(fp16, safe_serialization=True)
        pipe.to(torch.float16).save_pretrained(fp16, safe_serialization=True, variant="fp16")
        pipe.to(torch.float32)
    taesd = AutoencoderTiny(**CONFIGS[name]["taesd"])
    with torch.no_grad():
        for p in taesd.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    taesd.save_pretrained(os.path.join(root, f"taesd-{name}"), safe_serialization=True)


def build(out):
    save_pipeline(out, "a", seed=1234)
    save_pipeline(out, "b", seed=5678)


if __name__ == "__main__":
    import sys
    build(sys.argv[1])
