"""Reference schedules and steps of diffusers' EulerDiscreteScheduler, for tests/euler_sampler_test.cpp.

Writes under <out>/scheduler/:
  cases.json               a list of {name, config, steps, timesteps, sigmas, init_noise_sigma}: the config
                           of models/tiny-a/scheduler with fields varied (every spacing x steps_offset 0/1 x
                           step counts, and the other options), and what set_timesteps(steps) gives.
                           Values are float32 written as exact decimals.
  alphas_cumprod.json      the training alphas_cumprod of the base config and of rescale_betas_zero_snr.
  steps_<name>.safetensors scale_model_input and step on fixed random tensors, per step k: sample_k,
                           model_output_k, scaled_k (scale_model_input(sample_k)), prev_k (step output).
"""
import json
import os

import torch
from diffusers import EulerDiscreteScheduler
from safetensors.torch import save_file

STEP_COUNTS = (1, 4, 20, 30, 50)


def _floats(t):
    return [float(v) for v in t.to(torch.float32).flatten()]


def _cases(base):
    cases = []
    for spacing in ("leading", "linspace", "trailing"):
        for offset in (0, 1):
            for steps in STEP_COUNTS:
                cases.append((f"{spacing}_off{offset}_{steps}", dict(timestep_spacing=spacing, steps_offset=offset),
                              steps))
    extra = [
        ("trailing_61_overshoots", dict(timestep_spacing="trailing"), 61),  # numpy arange gives 62 timesteps
        ("leading_off1_1000", dict(timestep_spacing="leading", steps_offset=1), 1000),  # t = 1000 is clamped
        ("linspace_999", dict(timestep_spacing="linspace"), 999),
        ("linear_betas", dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02), 30),
        ("v_prediction_continuous", dict(prediction_type="v_prediction", timestep_type="continuous",
                                         timestep_spacing="linspace"), 20),
        ("v_prediction_discrete", dict(prediction_type="v_prediction"), 20),
        ("sigma_min_final", dict(final_sigmas_type="sigma_min"), 20),
        ("zero_snr_trailing", dict(rescale_betas_zero_snr=True, timestep_spacing="trailing"), 25),
        ("train_777", dict(num_train_timesteps=777), 33),
    ]
    cases += extra
    return [(name, {**base, **changes}, steps) for name, changes, steps in cases]


def _step_check(out_dir, name, config, steps, dtype):
    sched = EulerDiscreteScheduler.from_config(config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(1000 + steps)
    sample = (torch.randn(2, 4, 8, 6, generator=g) * sched.init_noise_sigma).to(dtype)
    tensors = {}
    for k, t in enumerate(sched.timesteps):
        model_output = torch.randn(2, 4, 8, 6, generator=g).to(dtype)
        scaled = sched.scale_model_input(sample, t)
        prev = sched.step(model_output, t, sample, return_dict=False)[0]
        tensors.update({f"sample_{k}": sample.clone(), f"model_output_{k}": model_output, f"scaled_{k}": scaled,
                        f"prev_{k}": prev})
        sample = prev
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, f"steps_{name}.safetensors"))
    return dict(name=name, config=dict(config), steps=steps, dtype=str(dtype).replace("torch.", ""),
                sigmas=_floats(sched.sigmas))


def build(out):
    out_dir = os.path.join(out, "scheduler")
    os.makedirs(out_dir, exist_ok=True)
    base = dict(EulerDiscreteScheduler.load_config(os.path.join(out, "models", "tiny-a", "scheduler")))
    base = {k: v for k, v in base.items() if not k.startswith("_") or k == "_class_name"}

    cases = []
    for name, config, steps in _cases(base):
        sched = EulerDiscreteScheduler.from_config(config)
        sched.set_timesteps(steps)
        cases.append(dict(name=name, config=config, steps=steps, timesteps=_floats(sched.timesteps),
                          sigmas=_floats(sched.sigmas), init_noise_sigma=float(sched.init_noise_sigma)))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)

    tables = {}
    for name, changes in (("base", {}), ("zero_snr", dict(rescale_betas_zero_snr=True))):
        config = {**base, **changes}
        ac = EulerDiscreteScheduler.from_config(config).alphas_cumprod
        tables[name] = dict(config=config, alphas_cumprod=_floats(ac))
    with open(os.path.join(out_dir, "alphas_cumprod.json"), "w") as f:
        json.dump(tables, f)

    steps = [
        _step_check(out_dir, "epsilon", base, 5, torch.float32),
        _step_check(out_dir, "v_prediction", {**base, "prediction_type": "v_prediction"}, 4, torch.float32),
        _step_check(out_dir, "epsilon_fp16", base, 4, torch.float16),
    ]
    with open(os.path.join(out_dir, "steps.json"), "w") as f:
        json.dump(steps, f, indent=1)


if __name__ == "__main__":
    import sys

    build(sys.argv[1])
