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
center_input_sample=True (a config override the C++ test applies to the same weights); tiny-a with the first
sample's context and pooled embedding zero (an empty negative prompt under force_zeros_for_empty_prompt).

Also writes <out>/unet/sdxl-architecture.json: the unet/config.json of SDXL base 1.0 and the name and shape of every
parameter diffusers builds from it (on the meta device: no weights), so the C++ test checks the real SDXL
architecture (5/10/20 heads, transformer depths 1/2/10, 2048-wide context) without downloading it.

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
    ("tiny-a-zero-negative", "tiny-a", (16, 24), {}),
]
# Cases whose first sample's encoder_hidden_states and text_embeds are zeros: an empty negative prompt under
# force_zeros_for_empty_prompt, whose cross-attentions the C++ UNet may fill in (UNetCall::zero_context_samples).
ZERO_FIRST_CONTEXT = {"tiny-a-zero-negative"}


# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json.
SDXL_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0", "act_fn": "silu",
    "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "cross_attention_dim": 2048, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False, "resnet_time_scale_shift": "default", "sample_size": 128,
    "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
    "use_linear_projection": True,
}


def sdxl_architecture(out):
    kwargs = {k: v for k, v in SDXL_UNET_CONFIG.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**kwargs)
    shapes = {k: list(v.shape) for k, v in unet.state_dict().items()}
    doc = {"config": SDXL_UNET_CONFIG, "shapes": shapes, "num_parameters": sum(p.numel() for p in unet.parameters())}
    with open(os.path.join(out, "unet", "sdxl-architecture.json"), "w") as f:
        json.dump(doc, f)


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
        if name in ZERO_FIRST_CONTEXT:
            x["encoder_hidden_states"][0] = 0.0
            x["text_embeds"][0] = 0.0
        t = dict(x)
        t["out"] = run(unet, x, x["timestep"])
        t["out_scalar_t"] = run(unet, x, x["timestep"][0])
        meta = {"model": model, "config_overrides": json.dumps(overrides)}
        save_file(t, os.path.join(out, "unet", f"{name}.safetensors"), metadata=meta)
    bad_shape_folder(out)
    sdxl_architecture(out)


if __name__ == "__main__":
    import sys
    build(sys.argv[1])
