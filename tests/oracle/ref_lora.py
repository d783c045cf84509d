"""LoRA reference (issue #15): tiny random LoRAs for tiny-a in both file formats, and diffusers'
StableDiffusionXLPipeline with them fused (load_lora_weights + fuse_lora(lora_scale=s)), for the C++ parity tests.

LoRA files (<out>/lora/):
  kohya.safetensors      kohya-ss names as sd-scripts writes them for SDXL: the UNet under its sgm/LDM names
                         (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q, ..._in_layers_2 for a resnet's
                         conv1, ..._op for a downsampler), lora_te1_text_model_..., lora_te2_text_model_...;
                         `.lora_down.weight`, `.lora_up.weight`, `.alpha` (alpha != rank, ranks 2 and 4); linear
                         layers, 1x1 convs (conv_shortcut) and 3x3 convs (resnet conv1/conv2, a downsampler: down
                         [r, in, 3, 3], up [out, r, 1, 1]).
  kohya_no_alpha.safetensors   the same names for a few UNet modules, no `.alpha` keys (alpha = rank, scale 1).
  peft.safetensors       the diffusers/PEFT format: PEFT's get_peft_model_state_dict of LoRA adapters added with
                         LoraConfig(r=4, lora_alpha=8, alpha_pattern, rank_pattern) to the UNet and both text encoders,
                         written by StableDiffusionXLPipeline.save_lora_weights with the adapter metadata
                         (`lora_adapter_metadata` in the safetensors header: r, lora_alpha, alpha_pattern ...).
                         Keys: unet.<module>.lora_A.weight / lora_B.weight, text_encoder.<module>..., text_encoder_2...
  peft_unet.safetensors  PEFT format, UNet modules only (the text encoders' identity must not change).
Every LoRA weight is random (lora_B too, which PEFT initialises to zero), so each one changes the image.

Each file is checked here against diffusers: after load_lora_weights + fuse_lora, exactly the modules the file names
have changed weights (so a name diffusers could not map would fail the fixture build, not pass silently).

Cases (<out>/lora/cases.json: name, loras [{file, scale}], prompts, negatives, seeds, steps, guidance, height, width,
differs_from_base (fraction of uint8 values that differ from the render without LoRA)) and
<out>/lora/case_<name>.safetensors ({"images": uint8 [B, H, W, 3]}, and for cases with "embeds": true the prompt_embeds
[B, 77, D] and pooled [B, P] of the prompts as encode_prompt gives them with the LoRA fused). Several LoRAs: each is
loaded, fused at its scale and unloaded in turn (W += d1, then W += d2), as the C++ side fuses them.
"""
import json
import os

import numpy as np
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

from ref_samplers import NEGATIVES, PROMPTS, SEEDS

HEIGHT, WIDTH, STEPS, GUIDANCE = 40, 56, 4, 5.0
LAYERS_PER_BLOCK = 2  # tiny-a's config (as SDXL's)


def _sgm_name(name, up_has_attn):
    """A diffusers UNet module name as kohya's SDXL (sgm/LDM UNet) names it, with dots."""
    p = name.split(".")
    resnet = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
              "conv_shortcut": "skip_connection"}
    L = LAYERS_PER_BLOCK
    if p[0] == "down_blocks":
        b, kind, l, rest = int(p[1]), p[2], int(p[3]), p[4:]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * (L + 1) + L}.0.op"
        i = 1 + b * (L + 1) + l
        if kind == "resnets":
            return f"input_blocks.{i}.0." + resnet[rest[0]]
        return f"input_blocks.{i}.1." + ".".join(rest)
    if p[0] == "mid_block":
        kind, l, rest = p[1], int(p[2]), p[3:]
        if kind == "resnets":
            return f"middle_block.{0 if l == 0 else 2}." + resnet[rest[0]]
        return "middle_block.1." + ".".join(rest)
    if p[0] == "up_blocks":
        b, kind, l, rest = int(p[1]), p[2], int(p[3]), p[4:]
        if kind == "upsamplers":
            return f"output_blocks.{b * (L + 1) + L}.{2 if up_has_attn[b] else 1}.conv"
        i = b * (L + 1) + l
        if kind == "resnets":
            return f"output_blocks.{i}.0." + resnet[rest[0]]
        return f"output_blocks.{i}.1." + ".".join(rest)
    return {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "time_embedding.linear_1": "time_embed.0",
            "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
            "add_embedding.linear_2": "label_emb.0.2"}[name]


UNET_MODULES = [
    "down_blocks.1.attentions.0.proj_in", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
    "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_out.0",
    "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v", "mid_block.attentions.0.proj_out",
    "mid_block.resnets.1.time_emb_proj", "up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", "up_blocks.1.attentions.1.proj_out",
    "down_blocks.0.resnets.1.conv1",  # 3x3 conv
    "up_blocks.2.resnets.0.conv2",  # 3x3 conv
    "up_blocks.2.resnets.1.conv_shortcut",  # 1x1 conv
    "down_blocks.0.downsamplers.0.conv",  # 3x3 conv, stride 2
    "up_blocks.0.upsamplers.0.conv", "time_embedding.linear_1", "add_embedding.linear_2",
]
TE1_MODULES = ["encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1", "encoder.layers.2.self_attn.out_proj"]
TE2_MODULES = ["text_model.encoder.layers.0.self_attn.k_proj", "text_model.encoder.layers.3.mlp.fc2",
               "text_model.encoder.layers.2.self_attn.v_proj"]
# diffusers 0.42 maps no kohya lora_te2_ k_proj/v_proj onto transformers 5's CLIPTextModelWithProjection (the
# converted names stay unexpected; the check in build() caught it), so the kohya file uses these instead.
TE2_KOHYA_MODULES = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.3.mlp.fc2",
                     "text_model.encoder.layers.2.self_attn.out_proj"]


def _modules(model):
    return dict(model.named_modules())


def _pair(gen, module, rank, amp):
    """Random (down, up) for a Linear or Conv2d: down [r, in(, kh, kw)], up [out, r(, 1, 1)]."""
    w = module.weight
    if w.dim() == 2:
        down = torch.randn((rank, w.shape[1]), generator=gen)
        up = torch.randn((w.shape[0], rank), generator=gen)
    else:
        down = torch.randn((rank, w.shape[1], w.shape[2], w.shape[3]), generator=gen)
        up = torch.randn((w.shape[0], rank, 1, 1), generator=gen)
    # ||up @ down|| ~ amp * ||w||: visible in the image, far from chaos.
    k = (amp * w.std().item() / (rank * down[0].numel()) ** 0.5) ** 0.5
    return (down * k).contiguous(), (up * k).contiguous()


def _kohya_file(pipe, path, seed, with_alpha, unet_modules, te1=(), te2=()):
    gen = torch.Generator().manual_seed(seed)
    up_has_attn = [hasattr(b, "attentions") for b in pipe.unet.up_blocks]
    sd = {}
    groups = [("lora_unet_", pipe.unet, unet_modules, lambda n: _sgm_name(n, up_has_attn)),
              ("lora_te1_", pipe.text_encoder, te1, lambda n: "text_model." + n),
              ("lora_te2_", pipe.text_encoder_2, te2, lambda n: n)]
    for prefix, model, names, kohya in groups:
        mods = _modules(model)
        for j, name in enumerate(names):
            rank = 4 if j % 2 == 0 else 2
            down, up = _pair(gen, mods[name], rank, 0.3)
            key = prefix + kohya(name).replace(".", "_")
            sd[key + ".lora_down.weight"] = down
            sd[key + ".lora_up.weight"] = up
            if with_alpha:
                # One alpha per text encoder: diffusers 0.42 keys a kohya text-encoder alpha by the parent of a
                # self-attention projection (".self_attn"), which matches no module, so with several alphas it
                # gives those projections the file's most common alpha (kohya: their own). Equal alphas make
                # both readings agree; the UNet's alphas vary.
                # Likewise for the UNet's attention projections (their alpha_pattern keys keep diffusers'
                # ".processor.to_q_lora.down.weight" spelling and match nothing): they get 8, the file's most
                # common alpha, so both readings agree; the other UNet modules vary (1, 8, 3).
                alpha = [1, 8, 3][j % 3] if prefix == "lora_unet_" else 2
                if ".attn" in name:
                    alpha = 8
                sd[key + ".alpha"] = torch.tensor(float(alpha))
    save_file(sd, path)
    return sd


def _peft_file(pipe, path, seed, unet_modules, te1=(), te2=()):
    import copy

    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    gen = torch.Generator().manual_seed(seed)
    layers, metadata = {}, {}
    for key, model, names in (("unet", pipe.unet, unet_modules), ("text_encoder", pipe.text_encoder, te1),
                              ("text_encoder_2", pipe.text_encoder_2, te2)):
        if not names:
            continue
        # alpha 8 for rank 4 (scaling 2); one module at rank 2 and one with alpha 3 through the patterns.
        config = LoraConfig(r=4, lora_alpha=8, target_modules=list(names), rank_pattern={names[0]: 2},
                            alpha_pattern={names[-1]: 3})
        model = inject_adapter_in_model(config, copy.deepcopy(model), adapter_name="fixture")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
        layers[key] = get_peft_model_state_dict(model, adapter_name="fixture")
        metadata[key] = config.to_dict()
    StableDiffusionXLPipeline.save_lora_weights(
        os.path.dirname(path), weight_name=os.path.basename(path), unet_lora_layers=layers.get("unet"),
        text_encoder_lora_layers=layers.get("text_encoder"), text_encoder_2_lora_layers=layers.get("text_encoder_2"),
        unet_lora_adapter_metadata=metadata.get("unet"), text_encoder_lora_adapter_metadata=metadata.get("text_encoder"),
        text_encoder_2_lora_adapter_metadata=metadata.get("text_encoder_2"))


def _weights(pipe):
    out = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        for n, p in getattr(pipe, comp).state_dict().items():
            out[comp + "." + n] = p.detach().clone()
    return out


def _fuse(pipe, root, loras):
    for i, (file, scale) in enumerate(loras):
        pipe.load_lora_weights(os.path.join(root, file), adapter_name=f"l{i}")
        pipe.fuse_lora(lora_scale=scale, adapter_names=[f"l{i}"])
        pipe.unload_lora_weights()


def _render(pipe):
    images = []
    for prompt, negative, seed in zip(PROMPTS, NEGATIVES, SEEDS):
        gen = [torch.Generator("cpu").manual_seed(seed)]
        out_np = pipe(prompt=[prompt], negative_prompt=[negative] if negative else None, generator=gen,
                      num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=HEIGHT, width=WIDTH,
                      output_type="np").images
        images.append(np.round(out_np * 255).astype(np.uint8))
    return np.ascontiguousarray(np.concatenate(images))


def build(out):
    root = os.path.join(out, "lora")
    os.makedirs(root, exist_ok=True)
    model = os.path.join(out, "models", "tiny-a")
    load = lambda: StableDiffusionXLPipeline.from_pretrained(model)
    pipe = load()
    pipe.set_progress_bar_config(disable=True)
    te1 = TE1_MODULES
    targets = {
        "kohya.safetensors": [("unet", n) for n in UNET_MODULES] + [("text_encoder", n) for n in te1] +
                             [("text_encoder_2", n) for n in TE2_KOHYA_MODULES],
        "kohya_no_alpha.safetensors": [("unet", n) for n in UNET_MODULES[:6]],
        "peft.safetensors": [("unet", n) for n in UNET_MODULES[:11]] + [("text_encoder", n) for n in te1] +
                            [("text_encoder_2", n) for n in TE2_MODULES],
        "peft_unet.safetensors": [("unet", n) for n in UNET_MODULES[2:9]],
    }
    _kohya_file(pipe, os.path.join(root, "kohya.safetensors"), 11, True, UNET_MODULES, te1, TE2_KOHYA_MODULES)
    _kohya_file(pipe, os.path.join(root, "kohya_no_alpha.safetensors"), 12, False, UNET_MODULES[:6])
    _peft_file(pipe, os.path.join(root, "peft.safetensors"), 13, UNET_MODULES[:11], te1, TE2_MODULES)
    _peft_file(pipe, os.path.join(root, "peft_unet.safetensors"), 14, UNET_MODULES[2:9])

    # Each file changes exactly the weights of the modules it names, in diffusers' hands.
    base = _weights(load())
    for file, mods in targets.items():
        p = load()
        _fuse(p, root, [(file, 1.0)])
        changed = sorted(k for k, v in _weights(p).items() if not torch.equal(v, base[k]))
        expected = sorted(f"{c}.{n}.weight" for c, n in mods)
        assert changed == expected, f"{file}: diffusers changed {changed}, expected {expected}"

    base_images = _render(load_quiet(load))
    cases = [
        ("kohya_s1", [("kohya.safetensors", 1.0)], True),
        ("kohya_s05", [("kohya.safetensors", 0.5)], False),
        ("peft_s1", [("peft.safetensors", 1.0)], True),
        ("peft_s05", [("peft.safetensors", 0.5)], False),
        ("kohya_no_alpha", [("kohya_no_alpha.safetensors", 1.0)], False),
        ("two_loras", [("kohya.safetensors", 0.5), ("peft.safetensors", 1.0)], False),
        ("peft_unet_only", [("peft_unet.safetensors", 0.75)], False),
    ]
    listing = []
    for name, loras, embeds in cases:
        p = load_quiet(load)
        _fuse(p, root, loras)
        images = _render(p)
        tensors = {"images": torch.from_numpy(images)}
        if embeds:
            pe, _, pooled, _ = p.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
            tensors["prompt_embeds"] = pe.contiguous()
            tensors["pooled"] = pooled.contiguous()
        save_file(tensors, os.path.join(root, "case_" + name + ".safetensors"))
        differs = float((images != base_images).mean())
        assert differs > 0.05, f"{name}: the LoRA changes only {differs:.3%} of the values"
        listing.append(dict(name=name, loras=[dict(file=f, scale=s) for f, s in loras], embeds=embeds,
                            prompts=PROMPTS, negatives=NEGATIVES, seeds=SEEDS, steps=STEPS, guidance=GUIDANCE,
                            height=HEIGHT, width=WIDTH, differs_from_base=differs))
    save_file({"images": torch.from_numpy(base_images)}, os.path.join(root, "base.safetensors"))
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(listing, f, indent=1)


def load_quiet(load):
    p = load()
    p.set_progress_bar_config(disable=True)
    return p
