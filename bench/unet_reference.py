"""diffusers' side of the full-size UNet check: loads <model>/unet in fp16 on the GPU, runs fixed seeded inputs
(batch 2 = one CFG step, 1024x1024 -> 128x128 latents), saves inputs + output, and times the call.
Usage: unet_reference.py <model dir> <inputs.safetensors> <out.json>
       unet_reference.py --inputs-only <inputs.safetensors>   the same inputs with zeros as the output, without
                                                             diffusers (for timing runs: bench/gpu_gaps.sh)"""
import json
import sys
import time

import torch
from safetensors.torch import save_file


def seeded_inputs(dt=torch.float16):
    g = torch.Generator("cpu").manual_seed(0)
    return dict(sample=torch.randn(2, 4, 128, 128, generator=g).to(dt),
                timestep=torch.tensor(500.0),
                encoder_hidden_states=(torch.randn(2, 77, 2048, generator=g) * 0.5).to(dt),
                text_embeds=(torch.randn(2, 1280, generator=g) * 0.5).to(dt),
                time_ids=torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, dtype=dt))


def main():
    if sys.argv[1] == "--inputs-only":
        inputs = seeded_inputs()
        inputs["expected"] = torch.zeros(2, 4, 128, 128)
        save_file({k: v.contiguous() for k, v in inputs.items()}, sys.argv[2])
        return
    from diffusers import UNet2DConditionModel

    model, path, out = sys.argv[1:4]
    dev, dt = "cuda", torch.float16
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dt).to(dev).eval()
    inputs = seeded_inputs(dt)
    d = {k: v.to(dev) for k, v in inputs.items()}
    with torch.no_grad():
        call = lambda: unet(d["sample"], d["timestep"], d["encoder_hidden_states"],
                            added_cond_kwargs={"text_embeds": d["text_embeds"], "time_ids": d["time_ids"]})[0]
        expected = call()
        for _ in range(3):
            call()
        times = []
        for _ in range(10):
            torch.cuda.synchronize(); t = time.perf_counter(); call(); torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    times.sort()
    inputs["expected"] = expected.float().cpu()
    save_file({k: v.contiguous() for k, v in inputs.items()}, path)
    res = {"seconds_per_unet_call_batch2": times[len(times) // 2], "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "expected_abs_max": expected.float().abs().max().item(),
           "expected_finite": bool(torch.isfinite(expected).all())}
    json.dump(res, open(out, "w"), indent=2)
    print("diffusers:", json.dumps(res))


if __name__ == "__main__":
    main()
