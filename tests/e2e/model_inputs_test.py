"""What users bring, through the CLI on the CPU with the built-in tiny demo model (issue 15):

- the model as one original-layout (SGM/LDM) .safetensors file, with `model_config:` naming the folder it came
  from: the same images, bit for bit, as the folder (the file is written by the Python oracle's conversion,
  tests/oracle/ref_single_file.py, not by our C++ mapping);
- a kohya LoRA in `loras:`: the log names it, index.h5 records it, the images change, the model identity
  changes, and the scale 0 LoRA renders the images of no LoRA.
Usage (ctest does this): model_inputs_test.py <path to sdxl-batch>
"""
import json
import os
import sys
import unittest

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file

import e2e_jobs as e2e

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import ref_single_file  # noqa: E402  (tests/oracle: the documented conversion facts, in Python)

BIN = None
TMP = None
MODEL = None
PROMPTS = ["a red fox in snow", "a bowl of ramen"]


class Yaml:
    """A job-file value written as it is (a flow mapping or sequence), not quoted as a string."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def render(name, **overrides):
    d = os.path.join(TMP, name)
    model = overrides.pop("model", MODEL)
    job = e2e.write_job(d, model, os.path.join(d, "emb"), prompts=PROMPTS, images_per_prompt=1, **overrides)
    p = e2e.run(BIN, job, 1, env={"SDXLB_LOG": "info"})
    images, meta = e2e.read(os.path.join(d, "out"))
    with h5py.File(os.path.join(d, "out", "index.h5"), "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    return images, meta, attrs, p.stderr


def folder_state(sub, stem):
    return load_file(os.path.join(MODEL, sub, stem + ".safetensors"))


def config(sub):
    with open(os.path.join(MODEL, sub, "config.json")) as f:
        return json.load(f)


class ModelInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.images, cls.meta, cls.attrs, _ = render("folder")

    def test_single_file_renders_the_folders_images(self):
        sd = ref_single_file.pipeline_to_ldm(
            folder_state("unet", "diffusion_pytorch_model"), folder_state("vae", "diffusion_pytorch_model"),
            folder_state("text_encoder", "model"), folder_state("text_encoder_2", "model"), config("unet"),
            config("vae"))
        path = os.path.join(TMP, "demo-single-file.safetensors")
        save_file(sd, path)
        images, meta, _, _ = render("single-file", model=path, model_config=MODEL)
        np.testing.assert_array_equal(images, self.images)
        np.testing.assert_array_equal(meta["seed"], self.meta["seed"])

    def test_kohya_lora_is_applied_logged_and_recorded(self):
        unet = folder_state("unet", "diffusion_pytorch_model")
        gen = torch.Generator().manual_seed(3)
        lora = {}
        for name in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                     "mid_block.attentions.0.transformer_blocks.0.ff.net.2"):
            w = unet[name + ".weight"]
            key = "lora_unet_" + name.replace(".", "_")
            lora[key + ".lora_down.weight"] = torch.randn((4, w.shape[1]), generator=gen) * 0.5
            lora[key + ".lora_up.weight"] = torch.randn((w.shape[0], 4), generator=gen) * 0.5
            lora[key + ".alpha"] = torch.tensor(4.0)
        path = os.path.join(TMP, "demo-lora.safetensors")
        save_file(lora, path)

        images, meta, attrs, log = render("lora", loras=Yaml(f'[{{path: "{path}", scale: 1.0}}]'))
        self.assertIn("1 LoRA: " + path + " (scale 1, unet 2 modules)", log)
        self.assertIn("demo-lora.safetensors", str(attrs["loras"]))
        self.assertFalse(np.array_equal(images, self.images), "the LoRA changed nothing")
        self.assertNotEqual(meta["model_id"][0], self.meta["model_id"][0])

        zero, zero_meta, _, _ = render("lora-zero", loras=Yaml(f'[{{path: "{path}", scale: 0.0}}]'))
        np.testing.assert_array_equal(zero, self.images)
        # Another scale is another model (a resume with another scale is refused).
        self.assertNotEqual(zero_meta["model_id"][0], meta["model_id"][0])


if __name__ == "__main__":
    e2e.run_tests(sys.modules[__name__], "sdxlb-model-inputs-")
