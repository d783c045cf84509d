"""FP8 GEMM rates at the SDXL UNet's linear shapes on this GPU (issue 17): fp16 (torch.nn.functional.linear with
bias) against torch._scaled_mm in e4m3 with per-tensor scales and with per-row (activation) x per-column
(weight) scales, each with the bias in the epilogue and fp16 output, with and without fast accumulation; and
the cost of quantising the activation with ATen ops. Prints one line per shape and writes OUT.json.

Usage: python3 fp8_gemm_shapes.py OUT.json
"""
import json
import sys

import torch

SHAPES = [  # (M tokens of one CFG pair, K, N): level 2 (1024 tokens) and level 1 (4096 tokens)
    (2048, 1280, 1280), (2048, 1280, 10240), (2048, 5120, 1280), (8192, 640, 640), (8192, 640, 5120),
    (8192, 2560, 640),
]


def ms(fn, iters=50):
    for _ in range(5):
        fn()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters


def main():
    out = {}
    dev = "cuda"
    f8 = torch.float8_e4m3fn
    for m, k, n in SHAPES:
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        w = torch.randn(n, k, device=dev, dtype=torch.float16) * 0.02
        bias = torch.randn(n, device=dev, dtype=torch.float16)
        xq, wq = x.to(f8), w.to(f8)
        one = torch.ones((), device=dev)
        sa, sb = torch.ones(m, 1, device=dev), torch.ones(1, n, device=dev)
        flop = 2 * m * k * n
        r = {"fp16": ms(lambda: torch.nn.functional.linear(x, w, bias))}
        for acc in (False, True):
            r[f"e4m3_tensorwise{'_fast' if acc else ''}"] = ms(
                lambda: torch._scaled_mm(xq, wq.t(), one, one, bias=bias, out_dtype=torch.float16, use_fast_accum=acc))
            r[f"e4m3_rowwise{'_fast' if acc else ''}"] = ms(
                lambda: torch._scaled_mm(xq, wq.t(), sa, sb, bias=bias, out_dtype=torch.float16, use_fast_accum=acc))
        r["aten_quantize_rows"] = ms(lambda: (x.float() / (x.abs().amax(-1, keepdim=True).float() / 448)).to(f8))
        out[f"{m}x{k}x{n}"] = {key: {"ms": v, "tflops": flop / v / 1e9} for key, v in r.items()}
        print(f"{m}x{k}x{n}: " + ", ".join(f"{key} {v * 1000:.1f} us ({flop / v / 1e9:.0f} TFLOP/s)"
                                           for key, v in r.items()), flush=True)
    json.dump(out, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
