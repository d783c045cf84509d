"""Samplers reference: diffusers' StableDiffusionXLPipeline on tiny-a with each scheduler class our samplers
mirror, for tests/sampler_parity_test.cpp. Every sampler x sigmas {default, karras} x timestep_spacing
{leading, trailing}, plus no-CFG cases, a 20-step case per multistep sampler, and a model folder whose own
scheduler is DPMSolverMultistepScheduler (tiny-a-dpm, used by default). Non-square 40x56, 8 steps, per-image
CPU generators (one prompt per call, as the renderer's per-item seeds).

Writes <out>/samplers/cases.json (the list: name, the job's `scheduler` map, model, steps, guidance, size,
prompts, negatives, seeds, and either "unsupported" or the scheduler's timesteps and sigmas after the run, and
reference_sensitivity: the fraction of uint8 values that change when diffusers' own initial latents are moved
by one float32 rounding) and
<out>/samplers/<name>.safetensors (uint8 images [B, H, W, 3])."""
import inspect
import json
import os
import shutil

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionXLPipeline, UniPCMultistepScheduler)
from safetensors.torch import save_file

# Our name -> (class, the settings that make the class that sampler).
SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, dict(solver_type="bh2")),
}
PROMPTS = ["a red fox in the snow, 35mm photo", "An astronaut riding a horse!"]
NEGATIVES = ["", "blurry, low quality"]
SEEDS = [3, 2**33 + 1]


def _cases():
    cases = []
    for name in SAMPLERS:
        for sigmas in ("default", "karras"):
            for spacing in ("leading", "trailing"):
                job = dict(name=name, timestep_spacing=spacing)
                if sigmas != "default":
                    job["sigmas"] = sigmas
                cases.append(dict(name=f"{name}_{sigmas}_{spacing}", job=job, model="tiny-a", steps=8,
                                  guidance=5.0))
    for name in ("euler_a", "dpmpp_2m_sde", "unipc", "ddim"):
        cases.append(dict(name=f"{name}_no_cfg", job=dict(name=name), model="tiny-a", steps=8, guidance=1.0))
    for name in ("dpmpp_2m", "dpmpp_2m_sde", "unipc"):
        cases.append(dict(name=f"{name}_20_steps", job=dict(name=name, sigmas="karras"), model="tiny-a",
                          steps=20, guidance=5.0))
    cases.append(dict(name="folder_dpm_default", job=None, model="tiny-a-dpm", steps=8, guidance=5.0))
    return cases


def _scheduler(base_config, job):
    cls, fixed = SAMPLERS[job["name"]]
    kwargs = dict(fixed)
    if "timestep_spacing" in job:
        kwargs["timestep_spacing"] = job["timestep_spacing"]
    if job.get("sigmas") == "karras":
        if "use_karras_sigmas" not in inspect.signature(cls.__init__).parameters:
            return None  # diffusers has no Karras sigmas for this class
        kwargs["use_karras_sigmas"] = True
    return cls.from_config(base_config, **kwargs)


def build(out):
    root = os.path.join(out, "samplers")
    os.makedirs(root, exist_ok=True)
    models = os.path.join(out, "models")
    # A model folder whose own scheduler is DPM-Solver++ (as many fine-tunes ship it).
    dpm_dir = os.path.join(models, "tiny-a-dpm")
    shutil.copytree(os.path.join(models, "tiny-a"), dpm_dir)
    euler = EulerDiscreteScheduler.from_pretrained(os.path.join(models, "tiny-a"), subfolder="scheduler")
    DPMSolverMultistepScheduler.from_config(euler.config).save_pretrained(os.path.join(dpm_dir, "scheduler"))
    # diffusers' pipeline takes the class from model_index.json (a fine-tune ships both saying the same).
    with open(os.path.join(dpm_dir, "model_index.json")) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", "DPMSolverMultistepScheduler"]
    with open(os.path.join(dpm_dir, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)

    pipes = {m: StableDiffusionXLPipeline.from_pretrained(os.path.join(models, m)) for m in ("tiny-a", "tiny-a-dpm")}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    folder_schedulers = {m: p.scheduler for m, p in pipes.items()}
    listing = []
    for case in _cases():
        pipe = pipes[case["model"]]
        base = folder_schedulers[case["model"]]
        sched = base if case["job"] is None else _scheduler(base.config, case["job"])
        entry = dict(case, height=40, width=56, prompts=PROMPTS, negatives=NEGATIVES, seeds=SEEDS)
        if sched is None:
            entry["unsupported"] = True
            listing.append(entry)
            continue
        pipe.scheduler = sched
        images, moved = [], 0
        shape = (1, pipe.unet.config.in_channels, 40 // pipe.vae_scale_factor, 56 // pipe.vae_scale_factor)
        for prompt, negative, seed in zip(PROMPTS, NEGATIVES, SEEDS):
            def render(perturb):
                gen = torch.Generator("cpu").manual_seed(seed)
                # The initial latents as the pipeline draws them (the generator then goes on to the step
                # noise), optionally moved by one float32 unit in the last place.
                latents = torch.randn(shape, generator=gen)
                if perturb:
                    latents = latents * (1 + 2**-23)
                out_np = pipe(prompt=[prompt], negative_prompt=[negative] if negative else None,
                              generator=[gen], latents=latents, num_inference_steps=case["steps"],
                              guidance_scale=case["guidance"], height=40, width=56, output_type="np").images
                return np.round(out_np * 255).astype(np.uint8)
            image = render(False)
            moved += int((image != render(True)).sum())
            images.append(image)
        # How much the reference itself moves when its input moves by one rounding: a parity criterion
        # tighter than this cannot be met by any other float32 implementation (DDIM with clip_sample on these
        # random models is the sensitive one).
        entry["reference_sensitivity"] = moved / float(sum(i.size for i in images))
        entry["class"] = type(sched).__name__
        entry["timesteps"] = [float(t) for t in sched.timesteps]
        entry["sigmas"] = [float(s) for s in getattr(sched, "sigmas", [])] if type(sched) is not DDIMScheduler else []
        save_file({"images": torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))},
                  os.path.join(root, case["name"] + ".safetensors"))
        listing.append(entry)
        pipe.scheduler = base
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(listing, f, indent=1)
