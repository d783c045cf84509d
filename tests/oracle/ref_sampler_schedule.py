"""Reference schedules and config merges of the five scheduler classes behind our samplers, for
tests/sampler_schedule_test.cpp.

Writes under <out>/sampler_schedule/:
  cases.json   a list of {name, config, steps, schedule}: a scheduler_config.json (with _class_name) and what
               set_timesteps(steps) gives, `schedule` = {timesteps, sigmas, init_noise_sigma,
               final_alpha_cumprod (DDIM), table (a key of tables.json), raw_timesteps}. The grid is every
               class x sigma schedule it has (default, karras, exponential, beta) x timestep_spacing x step
               counts x three base configs (the tiny models' SCHEDULER, SDXL base's file, diffusers'
               defaults), then single cases for the other options. raw_timesteps: for the integer classes
               with karras/exponential/beta sigmas, diffusers' _sigma_to_t values before rounding or the int64
               cast (so the test can tell a rounding boundary from an error).
  tables.json  {key: alphas_cumprod} of every training table used above (float32 as torch holds it).
  merges.json  a list of {name, file, choice, expected, steps, schedule}: a model folder's scheduler file,
               our sampler choice, and what diffusers gives for it, `expected` =
               NewClass.from_config(FolderClass.from_config(file).config, **kwargs).config restricted to the new
               class's __init__ keys (plus _class_name), and its schedule for `steps`.
Floats are float32 values written as exact decimals; -inf as Python's json writes it (-Infinity).
"""
import inspect
import json
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LMSDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)

from fixture_models import SCHEDULER

CLASSES = {
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    "DDIMScheduler": DDIMScheduler,
    "UniPCMultistepScheduler": UniPCMultistepScheduler,
}
WITH_SIGMAS = {"EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"}
INTEGER_CLASSES = {"DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DDIMScheduler"}
SIGMA_KEYS = {"default": None, "karras": "use_karras_sigmas", "exponential": "use_exponential_sigmas",
              "beta": "use_beta_sigmas"}
STEP_COUNTS = (1, 2, 7, 30, 50)

# stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json, keys the Euler class ignores
# included (DDIM picks up clip_sample and set_alpha_to_one from them).
SDXL_BASE_FILE = {
    "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
    "use_karras_sigmas": False,
}
BASES = {
    "tiny": dict(SCHEDULER),
    "sdxl": {k: v for k, v in SDXL_BASE_FILE.items() if not k.startswith("_")},
    "defaults": {},
}

# Our samplers: the class and the settings that make it that sampler (jobs/sampler_choice.cpp).
SAMPLERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", dict(solver_type="bh2")),
}


def _f32(values):
    return [float(v) for v in torch.as_tensor(np.asarray(values)).to(torch.float32).flatten()]


def _table_key(cls_name, cfg):
    return "|".join(str(cfg.get(k, d)) for k, d in (("num_train_timesteps", 1000), ("beta_start", 0.0001),
                                                    ("beta_end", 0.02), ("beta_schedule", "linear"),
                                                    ("rescale_betas_zero_snr", False))) + (
        "|ddim" if cls_name == "DDIMScheduler" else "")


def _raw_timesteps(sched, cls_name, n):
    """diffusers' unrounded _sigma_to_t values for the integer classes' converted sigmas, as set_timesteps
    computes them (DPM and UniPC take the range from the flipped training sigmas)."""
    cfg = sched.config
    kind = next((k for k, key in SIGMA_KEYS.items() if key and cfg.get(key)), "default")
    if cls_name not in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler") or kind == "default":
        return None
    sigmas = np.array(((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5)
    log_sigmas = np.log(sigmas)
    flipped = np.flip(sigmas).copy()
    convert = {"karras": sched._convert_to_karras, "exponential": sched._convert_to_exponential,
               "beta": sched._convert_to_beta}[kind]
    converted = convert(in_sigmas=flipped, num_inference_steps=n)
    return [float(sched._sigma_to_t(s, log_sigmas)) for s in converted]


def _schedule(sched, cls_name, n, tables):
    sched.set_timesteps(n)
    cfg = dict(sched.config)
    key = _table_key(cls_name, cfg)
    tables.setdefault(key, _f32(sched.alphas_cumprod))
    out = dict(timesteps=_f32(sched.timesteps), table=key, init_noise_sigma=float(sched.init_noise_sigma))
    if cls_name == "DDIMScheduler":
        out["sigmas"] = []
        out["final_alpha_cumprod"] = float(torch.as_tensor(sched.final_alpha_cumprod).to(torch.float32))
    else:
        out["sigmas"] = _f32(sched.sigmas)
    raw = _raw_timesteps(sched, cls_name, n)
    if raw is not None:
        out["raw_timesteps"] = raw
        # What set_timesteps did with them: round (karras, but not DPM's squaredcos_cap_v2) or truncate.
        rounded = cfg.get("use_karras_sigmas") and not (
            cls_name == "DPMSolverMultistepScheduler" and cfg.get("beta_schedule") == "squaredcos_cap_v2")
        expect = [float(np.round(t)) if rounded else float(int(t)) for t in raw]
        assert expect == out["timesteps"], (cls_name, cfg, expect, out["timesteps"])
        out["rounded"] = bool(rounded)
    return out


def _case(cases, tables, name, cls_name, config, n):
    file = {"_class_name": cls_name, **config}
    sched = CLASSES[cls_name].from_config(file)
    cases.append(dict(name=name, config=file, steps=n, schedule=_schedule(sched, cls_name, n, tables)))


def _grid(cases, tables):
    for base_name, base in BASES.items():
        for cls_name in CLASSES:
            kinds = SIGMA_KEYS if cls_name in WITH_SIGMAS else {"default": None}
            for kind, key in kinds.items():
                for spacing in ("linspace", "leading", "trailing"):
                    for n in STEP_COUNTS:
                        cfg = {**base, "timestep_spacing": spacing}
                        if key:
                            cfg[key] = True
                        _case(cases, tables, f"{base_name}/{cls_name}/{kind}/{spacing}/{n}", cls_name, cfg, n)


def _extras(cases, tables):
    tiny = BASES["tiny"]
    for cls_name in CLASSES:
        sig = cls_name in WITH_SIGMAS
        _case(cases, tables, f"extra/{cls_name}/trailing_61_overshoots", cls_name,
              {**tiny, "timestep_spacing": "trailing"}, 61)
        _case(cases, tables, f"extra/{cls_name}/leading_1000", cls_name, tiny, 1000)
        _case(cases, tables, f"extra/{cls_name}/linspace_999", cls_name, {**tiny, "timestep_spacing": "linspace"}, 999)
        _case(cases, tables, f"extra/{cls_name}/zero_snr_trailing", cls_name,
              {**tiny, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, 25)
        _case(cases, tables, f"extra/{cls_name}/train_777", cls_name,
              {**tiny, "num_train_timesteps": 777, "timestep_spacing": "linspace"}, 33)
        for spacing in ("linspace", "leading", "trailing"):
            _case(cases, tables, f"extra/{cls_name}/squaredcos/{spacing}", cls_name,
                  {**tiny, "beta_schedule": "squaredcos_cap_v2", "timestep_spacing": spacing}, 20)
        if sig:
            for kind in ("karras", "exponential", "beta"):
                _case(cases, tables, f"extra/{cls_name}/squaredcos_{kind}", cls_name,
                      {**tiny, "beta_schedule": "squaredcos_cap_v2", SIGMA_KEYS[kind]: True}, 20)
            for kind in ("default", "karras", "exponential", "beta"):
                cfg = {**tiny, "final_sigmas_type": "sigma_min", "timestep_spacing": "trailing"}
                if SIGMA_KEYS[kind]:
                    cfg[SIGMA_KEYS[kind]] = True
                _case(cases, tables, f"extra/{cls_name}/sigma_min_final/{kind}", cls_name, cfg, 20)
    for kind in ("karras", "exponential", "beta"):
        for cls_name in ("EulerDiscreteScheduler", "UniPCMultistepScheduler", "DPMSolverMultistepScheduler"):
            _case(cases, tables, f"extra/{cls_name}/sigma_range/{kind}", cls_name,
                  {**tiny, SIGMA_KEYS[kind]: True, "sigma_min": 0.05, "sigma_max": 10.0}, 25)
    for kind in ("default", "karras"):
        cfg = {**tiny, "prediction_type": "v_prediction", "timestep_type": "continuous",
               "timestep_spacing": "linspace"}
        if SIGMA_KEYS[kind]:
            cfg[SIGMA_KEYS[kind]] = True
        _case(cases, tables, f"extra/EulerDiscreteScheduler/v_continuous/{kind}", "EulerDiscreteScheduler", cfg, 20)
    for spacing in ("linspace", "leading", "trailing"):
        for algorithm in ("dpmsolver++", "sde-dpmsolver++"):
            _case(cases, tables, f"extra/DPMSolverMultistepScheduler/lambda_clipped/{algorithm}/{spacing}",
                  "DPMSolverMultistepScheduler",
                  {**tiny, "lambda_min_clipped": -2.0, "algorithm_type": algorithm, "timestep_spacing": spacing}, 20)
    _case(cases, tables, "extra/DDIMScheduler/set_alpha_to_one_false", "DDIMScheduler",
          {**tiny, "set_alpha_to_one": False}, 20)


# --- from_config merges ------------------------------------------------------------------------------------

FOLDERS = {
    "sdxl_base": SDXL_BASE_FILE,
    "dpm_finetune": {
        "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "euler_at_final": False,
        "final_sigmas_type": "zero", "lambda_min_clipped": float("-inf"), "lower_order_final": True,
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "solver_order": 2, "solver_type": "midpoint",
        "steps_offset": 1, "thresholding": False, "timestep_spacing": "leading", "trained_betas": None,
        "use_karras_sigmas": True, "variance_type": None, "dynamic_thresholding_ratio": 0.99,
    },
    "unipc_heun": {  # UniPC rewrites solver_type "heun" to "bh2"; DPM then rewrites "bh2" to "midpoint"
        "_class_name": "UniPCMultistepScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "solver_type": "heun", "solver_order": 3, "timestep_spacing": "trailing",
        "lower_order_final": False, "use_exponential_sigmas": True, "sigma_min": 0.1, "steps_offset": 1,
    },
    "ddim_vpred": {
        "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "v_prediction",
        "timestep_spacing": "trailing", "rescale_betas_zero_snr": True, "clip_sample_range": 2.0,
    },
    "euler_a_defaults_listed": {  # a file that lists a key as defaulted: from_config must not carry it
        "_class_name": "EulerAncestralDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "timestep_spacing": "trailing", "_use_default_values": ["timestep_spacing"],
    },
    "pndm": {
        "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False,
    },
    "lms_karras": {
        "_class_name": "LMSDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "num_train_timesteps": 1000, "use_karras_sigmas": True, "timestep_spacing": "linspace",
        "prediction_type": "v_prediction",
    },
}
FOLDER_CLASSES = {**CLASSES, "PNDMScheduler": PNDMScheduler, "LMSDiscreteScheduler": LMSDiscreteScheduler}

CHOICES = (
    [{"name": n} for n in SAMPLERS]
    + [{"name": n, "sigmas": "karras"} for n in ("euler", "dpmpp_2m", "dpmpp_2m_sde", "unipc")]
    + [{"name": n, "timestep_spacing": "trailing"} for n in SAMPLERS]
    + [{"name": "dpmpp_2m", "sigmas": "default", "final_sigmas_type": "sigma_min", "lower_order_final": False,
        "euler_at_final": True},
       {"name": "unipc", "sigmas": "exponential", "final_sigmas_type": "sigma_min", "lower_order_final": True},
       {"name": "euler", "sigmas": "beta", "final_sigmas_type": "sigma_min"},
       {"timestep_spacing": "trailing"},
       {"sigmas": "karras", "timestep_spacing": "linspace"}]
)


def _kwargs(choice):
    kwargs = dict(SAMPLERS[choice["name"]][1]) if "name" in choice else {}
    if "sigmas" in choice:
        for kind, key in SIGMA_KEYS.items():
            if key:
                kwargs[key] = choice["sigmas"] == kind
    for key in ("timestep_spacing", "final_sigmas_type", "lower_order_final", "euler_at_final"):
        if key in choice:
            kwargs[key] = choice[key]
    return kwargs


def _init_keys(cls):
    return [k for k in inspect.signature(cls.__init__).parameters if k != "self"]


def _merges(tables):
    merges = []
    for folder_name, file in FOLDERS.items():
        folder_cls = FOLDER_CLASSES[file["_class_name"]]
        folder = folder_cls.from_config(file)
        for choice in CHOICES:
            if "name" in choice:
                new_name = SAMPLERS[choice["name"]][0]
            elif file["_class_name"] in CLASSES:
                new_name = file["_class_name"]
            else:
                continue  # no name: the folder's own class, which we do not implement
            if "sigmas" in choice and new_name not in WITH_SIGMAS:
                continue  # not accepted (the test checks that error itself)
            new_cls = CLASSES[new_name]
            sched = new_cls.from_config(folder.config, **_kwargs(choice))
            expected = {k: sched.config[k] for k in _init_keys(new_cls) if k in sched.config}
            # DPMSolverMultistep's sigma conversions read sigma_min/sigma_max with hasattr(self.config, ...):
            # carried over as extra keys, they count.
            for k in ("sigma_min", "sigma_max"):
                if new_name == "DPMSolverMultistepScheduler" and sched.config.get(k) is not None:
                    expected[k] = sched.config[k]
            expected["_class_name"] = new_name
            label = choice.get("name", "-") + "".join(f",{k}={v}" for k, v in choice.items() if k != "name")
            merges.append(dict(name=f"{folder_name}/{label}", file=file, choice=choice, expected=expected, steps=30,
                               schedule=_schedule(sched, new_name, 30, tables)))
    return merges


def build(out):
    out_dir = os.path.join(out, "sampler_schedule")
    os.makedirs(out_dir, exist_ok=True)
    cases, tables = [], {}
    _grid(cases, tables)
    _extras(cases, tables)
    merges = _merges(tables)
    for name, data in (("cases", cases), ("tables", tables), ("merges", merges)):
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(data, f)


if __name__ == "__main__":
    import sys

    build(sys.argv[1])
