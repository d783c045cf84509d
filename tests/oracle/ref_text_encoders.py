"""Reference outputs of SDXL's two text encoders (transformers CLIPTextModel / CLIPTextModelWithProjection).

For each fixture pipeline, writes <out>/text_encoders/<name>.safetensors holding, for both encoders
("text_encoder", "text_encoder_2") and two inputs:
  <enc>.prompts.ids          int64 [B, 77], PROMPTS tokenized with that encoder's own tokenizer folder
  <enc>.crafted.ids          int64 [B, 77], hand-made ids where the two pooling rules disagree (see crafted_ids)
  <enc>.<input>.penultimate  hidden_states[-2] (output of the second-to-last layer, before the final LayerNorm)
  <enc>.<input>.last         last_hidden_state (final-LayerNormed)
  <enc>.<input>.pooled       pooler_output for CLIPTextModel, text_embeds for CLIPTextModelWithProjection
Names: "tiny-a", "tiny-b" (plain fp32 weights) and "tiny-a-fp16" (the fp16 variant weights upcast to fp32, so the
C++ side loading the same variant with dtype float must match to fp32 precision).
The prompts are also written to <out>/text_encoders/prompts.json.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "A   Café  &amp; <b>bakery</b>, 4k, highly-detailed!!! (masterpiece:1.2)",
    "ünïcödé — “quotes” 東京 🙂",
    " ".join(["a very long prompt that will be truncated"] * 12),
]

ENCODERS = (("text_encoder", "tokenizer", CLIPTextModel), ("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection))

# (folder under <out>/models, variant)
PIPELINES = {"tiny-a": ("tiny-a", None), "tiny-b": ("tiny-b", None), "tiny-a-fp16": ("tiny-a-fp16", "fp16")}


def crafted_ids(vocab_size, length):
    """Hand-made rows that check the pooling position, including one where the two transformers rules disagree.

    Row 0: BOS, an id 2 before the EOS (the eos_token_id == 2 rule must not search for id 2), EOS at 40.
    Row 1: several EOS (both rules take the first, at 7).
    Row 2: neither BOS nor EOS: argmax(ids) picks the largest random id, "first EOS" gives position 0.
    Row 3: EOS in the last slot.
    """
    g = torch.Generator().manual_seed(77)
    ids = torch.randint(0, vocab_size - 2, (4, length), generator=g)
    ids[:, 0] = 49406
    ids[0, 5] = 2
    ids[0, 40] = 49407
    ids[1, 7] = 49407
    ids[1, 30:] = 49407
    ids[2, 0] = 17
    ids[3, length - 1] = 49407
    return ids


def run(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return {
        "penultimate": out.hidden_states[-2],
        "last": out.last_hidden_state,
        "pooled": pooled,
    }


def build(out):
    dest = os.path.join(out, "text_encoders")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump(PROMPTS, f, ensure_ascii=False, indent=1)
    for name, (folder, variant) in PIPELINES.items():
        root = os.path.join(out, "models", folder)
        tensors = {}
        for enc, tok_name, cls in ENCODERS:
            tok = CLIPTokenizer.from_pretrained(os.path.join(out, "models", "tiny-a" if variant else folder, tok_name))
            model = cls.from_pretrained(os.path.join(root, enc), variant=variant, dtype=torch.float32,
                                        attn_implementation="sdpa").eval()
            assert model.config._attn_implementation == "sdpa"
            ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            inputs = {"prompts": ids, "crafted": crafted_ids(model.config.vocab_size, ids.shape[1])}
            for input_name, x in inputs.items():
                tensors[f"{enc}.{input_name}.ids"] = x.to(torch.int64)
                for key, value in run(model, x).items():
                    tensors[f"{enc}.{input_name}.{key}"] = value.float()
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(dest, f"{name}.safetensors"))


if __name__ == "__main__":
    import sys

    build(sys.argv[1])
