"""What an FP8 UNet could gain on this GPU (issue 17), measured before building it: diffusers' UNet (the
random full-size demo model, fp16, batch 2 = one image's CFG pair, 1024², channels-last, one CUDA graph per
variant) with its transformer blocks' nn.Linear layers swapped for e4m3 GEMMs (torch._scaled_mm, fp32
accumulation, fp16 output, per-tensor weight scales).

Variants: fp16 (the reference), fp8_static (activation scales from one calibration call, so each linear adds
one elementwise cast), fp8_dynamic (each call computes its activation's amax first: a reduction and a cast).

Usage: python3 fp8_probe.py MODEL_DIR OUT.json [--iters 20]
Weights are random: timings are real; the relative errors measure deviation on noise, not image quality.
"""
import argparse
import json
import statistics

import torch
from diffusers import UNet2DConditionModel

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max


class Fp8Linear(torch.nn.Module):
    def __init__(self, lin, mode):
        super().__init__()
        w = lin.weight.detach()
        self.w_scale = (w.abs().amax().float() / E4M3_MAX).clamp(min=1e-12)
        self.w_t = (w.float() / self.w_scale).to(E4M3).t()  # [K, N], column-major as _scaled_mm wants
        self.bias = lin.bias
        self.mode = mode
        self.x_scale = None
        self.calibrating = mode == "static"
        self.amax = torch.zeros((), device=w.device, dtype=torch.float32)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.mode == "dynamic":
            xs = (x2.abs().amax().float() / E4M3_MAX).clamp(min=1e-12)
        else:
            if self.calibrating:
                self.amax = torch.maximum(self.amax, x2.abs().amax().float())
                xs = (self.amax / E4M3_MAX).clamp(min=1e-12)
            else:
                xs = self.x_scale
        xq = (x2 / xs).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3) if self.mode == "dynamic" or self.calibrating else (
            x2 * self.inv_x_scale).to(E4M3)
        y = torch._scaled_mm(xq, self.w_t, scale_a=xs, scale_b=self.w_scale, bias=self.bias,
                             out_dtype=torch.float16)
        return y.reshape(*shape[:-1], y.shape[-1])

    def freeze(self):
        self.calibrating = False
        # Headroom for the steps the calibration did not see.
        self.x_scale = (self.amax * 1.25 / E4M3_MAX).clamp(min=1e-12)
        self.inv_x_scale = (1.0 / self.x_scale).half()


def swap(unet, mode):
    swapped = []
    for name, m in list(unet.named_modules()):
        if type(m).__name__ != "BasicTransformerBlock":
            continue
        for sub_name, sub in list(m.named_modules()):
            if isinstance(sub, torch.nn.Linear):
                parent = m.get_submodule(sub_name.rsplit(".", 1)[0]) if "." in sub_name else m
                new = Fp8Linear(sub, mode)
                setattr(parent, sub_name.rsplit(".", 1)[-1], new)
                swapped.append(new)
    return swapped


def graph_time(fn, iters):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), out.clone()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    inp = dict(sample=torch.randn(2, 4, 128, 128, device=dev, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last), timestep=torch.tensor(500.0, device=dev),
        encoder_hidden_states=torch.randn(2, 77, 2048, device=dev, dtype=torch.float16),
        added_cond_kwargs=dict(text_embeds=torch.randn(2, 1280, device=dev, dtype=torch.float16),
                               time_ids=torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2, device=dev,
                                                     dtype=torch.float16)))
    results = {}
    with torch.inference_mode():
        unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float16)
        unet = unet.to(dev).to(memory_format=torch.channels_last)
        fn = lambda: unet(**inp, return_dict=False)[0]
        ms, ref = graph_time(fn, args.iters)
        results["fp16"] = {"ms": ms}
        print(f"fp16: {ms:.2f} ms per UNet call (batch 2)", flush=True)
        for mode in ("static", "dynamic"):
            u = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float16)
            u = u.to(dev).to(memory_format=torch.channels_last)
            layers = swap(u, mode)
            f = lambda: u(**inp, return_dict=False)[0]
            if mode == "static":
                f()
                for layer in layers:
                    layer.freeze()
            ms8, out = graph_time(f, args.iters)
            err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
            results[f"fp8_{mode}"] = {"ms": ms8, "layers": len(layers), "relative_error_vs_fp16": err}
            print(f"fp8 {mode}: {ms8:.2f} ms per UNet call, {len(layers)} linears in e4m3, "
                  f"max rel err vs fp16 {err:.3e}", flush=True)
            if mode == "static":
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        f()
                    torch.cuda.synchronize()
                table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
                results["fp8_static"]["profile"] = table
                print(table, flush=True)
            del u, layers
            torch.cuda.empty_cache()
    json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
