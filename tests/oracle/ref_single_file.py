"""Single-file (original SGM/LDM layout) SDXL checkpoints for the single-file tests.

The conversion diffusers -> original layout is written here from the facts of diffusers'
loaders/single_file_utils.py (read backwards), independently of the C++ table. Two checks make the files
trustworthy by diffusers' own reading:
  * the tiny models: StableDiffusionXLPipeline.from_single_file(file, config=<fixture folder>) loads every
    tensor equal to the folder's;
  * the full SDXL base architecture (meta tensors, no weights): diffusers' convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint and convert_open_clip_checkpoint map every name of
    our original-layout header back to the state-dict keys (and shapes) of the diffusers/transformers models.
Writes under <out>/single_file/:
  tiny-a.safetensors, tiny-b.safetensors   the tiny fixture pipelines as single files (fp32)
  tiny-a-vae-ldm.safetensors               tiny-a's VAE alone, original names without prefix
  full-header.json                         {"header": safetensors header of full SDXL base in F16 (offsets
                                           included), "expected": {component: {diffusers name: shape}},
                                           "configs": {component: config dict used}}
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file

from fixture_models import CONFIGS

# --- diffusers -> original layout (inverse of single_file_utils' tables) ----------------------------------

UNET_FIXED = {  # DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"] + ["addition_embed_type"]
    "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
    "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
}
UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
               "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}
VAE_FIXED = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
VAE_ATTN = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
OPENCLIP_FIXED = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
OPENCLIP_LAYER = {"layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.", "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.",
                  "self_attn.out_proj.": "attn.out_proj."}


def _prefix_map(name, table):
    for a, b in table.items():
        if name.startswith(a):
            return b + name[len(a):]
    return None


def unet_to_ldm(sd, cfg):
    lpb = cfg["layers_per_block"]
    has_attn = ["CrossAttn" in t for t in cfg["up_block_types"]]
    out = {}
    for k, v in sd.items():
        n = _prefix_map(k, UNET_FIXED)
        p = k.split(".")
        if n is None and p[0] == "down_blocks":
            b, rest = int(p[1]), ".".join(p[4:])
            if p[2] == "downsamplers":
                n = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op.{'.'.join(p[5:])}"
            else:
                i = 1 + b * (lpb + 1) + int(p[3])
                n = f"input_blocks.{i}.0.{_prefix_map(rest, UNET_RESNET) or rest}" if p[2] == "resnets" else \
                    f"input_blocks.{i}.1.{rest}"
        elif n is None and p[0] == "mid_block":
            rest = ".".join(p[3:])
            n = f"middle_block.{2 * int(p[2])}.{_prefix_map(rest, UNET_RESNET) or rest}" if p[1] == "resnets" else \
                f"middle_block.1.{rest}"
        elif n is None and p[0] == "up_blocks":
            b, rest = int(p[1]), ".".join(p[4:])
            if p[2] == "upsamplers":
                n = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attn[b] else 1}.conv.{'.'.join(p[5:])}"
            else:
                i = b * (lpb + 1) + int(p[3])
                n = f"output_blocks.{i}.0.{_prefix_map(rest, UNET_RESNET) or rest}" if p[2] == "resnets" else \
                    f"output_blocks.{i}.1.{rest}"
        assert n is not None, k
        out["model.diffusion_model." + n] = v
    return out


def vae_to_ldm(sd, cfg, prefix="first_stage_model."):
    levels = len(cfg["up_block_types"])
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        n = _prefix_map(k, VAE_FIXED)
        if n is None and len(p) > 2 and p[1] == "mid_block":
            if p[2] == "resnets":
                n = f"{p[0]}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:]).replace('conv_shortcut.', 'nin_shortcut.')}"
            else:
                n = f"{p[0]}.mid.attn_1.{_prefix_map('.'.join(p[4:]), VAE_ATTN)}"
                if v.dim() == 2:  # linear -> 1x1 conv
                    v = v[:, :, None, None]
        elif n is None and p[1] == "down_blocks":
            rest = ".".join(p[5:]).replace("conv_shortcut.", "nin_shortcut.")
            n = f"encoder.down.{p[2]}.block.{p[4]}.{rest}" if p[3] == "resnets" else \
                f"encoder.down.{p[2]}.downsample.conv.{'.'.join(p[6:])}"
        elif n is None and p[1] == "up_blocks":
            lvl = levels - 1 - int(p[2])
            rest = ".".join(p[5:]).replace("conv_shortcut.", "nin_shortcut.")
            n = f"decoder.up.{lvl}.block.{p[4]}.{rest}" if p[3] == "resnets" else \
                f"decoder.up.{lvl}.upsample.conv.{'.'.join(p[6:])}"
        elif n is None:
            n = k  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
        out[prefix + n] = v
    return out


def clip_to_ldm(sd):
    # The original layout holds transformers' CLIPTextModel names with their "text_model." prefix (transformers
    # >= 5 saves a plain CLIPTextModel without it).
    return {"conditioner.embedders.0.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in sd.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd):
    pre = "conditioner.embedders.1.model."
    out, qkv = {}, {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        if k in OPENCLIP_FIXED:
            out[pre + OPENCLIP_FIXED[k]] = v
        elif k == "text_projection.weight":
            out[pre + "text_projection"] = v.T.contiguous()
        else:
            p = k.split(".")
            assert p[:3] == ["text_model", "encoder", "layers"], k
            rest = ".".join(p[4:])
            if p[5] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((p[3], p[6]), {})[p[5][0]] = v
            else:
                out[pre + f"transformer.resblocks.{p[3]}.{_prefix_map(rest, OPENCLIP_LAYER)}"] = v
    for (layer, kind), parts in qkv.items():
        out[pre + f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def pipeline_to_ldm(unet, vae, te1, te2, unet_cfg, vae_cfg):
    sd = {}
    sd.update(unet_to_ldm(unet, unet_cfg))
    sd.update(vae_to_ldm(vae, vae_cfg))
    sd.update(clip_to_ldm(te1))
    sd.update(open_clip_to_ldm(te2))
    return {k: v.contiguous() for k, v in sd.items()}


# --- the tiny fixtures ---------------------------------------------------------------------------------------

def _folder_state(folder):
    def st(sub, stem):
        return load_file(os.path.join(folder, sub, stem + ".safetensors"))
    return (st("unet", "diffusion_pytorch_model"), st("vae", "diffusion_pytorch_model"),
            st("text_encoder", "model"), st("text_encoder_2", "model"))


def write_tiny(out, name):
    folder = os.path.join(out, "models", f"tiny-{name}")
    unet, vae, te1, te2 = _folder_state(folder)
    cfg = CONFIGS[name]
    sd = pipeline_to_ldm(unet, vae, te1, te2, {**cfg["unet"]}, cfg["vae"])
    path = os.path.join(out, "single_file", f"tiny-{name}.safetensors")
    save_file(sd, path)
    if name == "a":
        save_file({k: v.contiguous() for k, v in vae_to_ldm(vae, cfg["vae"], prefix="").items()},
                  os.path.join(out, "single_file", "tiny-a-vae-ldm.safetensors"))

    # diffusers' own reading of the file must give the folder's tensors.
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_single_file(path, config=folder, local_files_only=True)
    got_states = {label: m.state_dict() for label, m in (("unet", pipe.unet), ("vae", pipe.vae),
                                                         ("text_encoder", pipe.text_encoder),
                                                         ("text_encoder_2", pipe.text_encoder_2))}
    if cfg["te1"]["hidden_size"] == cfg["te2"]["hidden_size"]:
        # diffusers tells the two encoders apart by their width (create_diffusers_clip_model_from_ldm tries the
        # CLIP-L prefix first when its position embedding fits): with equal widths (tiny-a, never SDXL) it loads
        # CLIP-L into text_encoder_2. Its OpenCLIP converter, called directly, is then diffusers' reading.
        from diffusers.loaders import single_file_utils as sfu
        got_states["text_encoder_2"] = sfu.convert_open_clip_checkpoint(
            pipe.text_encoder_2, load_file(path), prefix="conditioner.embedders.1.model.")
    for label, want in (("unet", unet), ("vae", vae), ("text_encoder", te1), ("text_encoder_2", te2)):
        state = {k: v for k, v in got_states[label].items() if not k.endswith("position_ids")}
        want = {k: v for k, v in want.items() if not k.endswith("position_ids")}
        assert set(state) == set(want), (label, sorted(set(state) ^ set(want))[:10])
        for k, v in want.items():
            assert torch.equal(state[k].to(v.dtype), v), (label, k)


# --- full SDXL base, names and shapes only -----------------------------------------------------------------

FULL = {
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, cross_attention_dim=2048, norm_num_groups=32),
    "vae": dict(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         hidden_act="quick_gelu", projection_dim=768, vocab_size=49408, max_position_embeddings=77),
    "text_encoder_2": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                           hidden_act="gelu", projection_dim=1280, vocab_size=49408, max_position_embeddings=77),
}


def write_full(out):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel(**FULL["unet"]),
            "vae": AutoencoderKL(**FULL["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**FULL["text_encoder"])),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**FULL["text_encoder_2"])),
        }
    states = {c: {k: v for k, v in m.state_dict().items() if not k.endswith("position_ids")} for c, m in models.items()}
    ldm = pipeline_to_ldm(states["unet"], states["vae"], states["text_encoder"], states["text_encoder_2"],
                          FULL["unet"], FULL["vae"])
    # diffusers maps our original-layout names back to exactly the models' keys and shapes.
    unet_cfg = dict(FULL["unet"])
    back = {
        "unet": sfu.convert_ldm_unet_checkpoint(ldm, unet_cfg),
        "vae": sfu.convert_ldm_vae_checkpoint(ldm, FULL["vae"]),
        "text_encoder": sfu.convert_ldm_clip_checkpoint(ldm),
        "text_encoder_2": sfu.convert_open_clip_checkpoint(models["text_encoder_2"], ldm,
                                                           prefix="conditioner.embedders.1.model."),
    }
    expected = {}
    for c, state in states.items():
        got = {k: tuple(v.shape) for k, v in back[c].items()}
        want = {k: tuple(v.shape) for k, v in state.items()}
        if c == "text_encoder":  # transformers >= 5: the plain CLIPTextModel's state dict has no text_model.
            want = {("" if k.startswith("text_model.") else "text_model.") + k: s for k, s in want.items()}
        assert got == want, (c, sorted(set(got) ^ set(want))[:10])
        expected[c] = {k: list(s) for k, s in want.items()}
    header, offset = {}, 0
    for k in sorted(ldm):
        n = 2
        for d in ldm[k].shape:
            n *= d
        header[k] = {"dtype": "F16", "shape": list(ldm[k].shape), "data_offsets": [offset, offset + n]}
        offset += n
    with open(os.path.join(out, "single_file", "full-header.json"), "w") as f:
        json.dump({"header": header, "data_bytes": offset, "expected": expected, "configs": FULL}, f)


def build(out):
    os.makedirs(os.path.join(out, "single_file"), exist_ok=True)
    write_tiny(out, "a")
    write_tiny(out, "b")
    write_full(out)


if __name__ == "__main__":
    import sys
    build(sys.argv[1])
