"""FP8 reference (issue #17): the per-row e4m3 quantisation of the FP8 UNet, written here from the method with
torch's float8_e4m3fn dtype, and the product it stands for.

Method: for each row r of x, scale[r] = max(max|x[r, :]| / 448, 2^-24) in float32 and
q[r, c] = float8_e4m3fn(float32(x[r, c]) * float32(1 / scale[r])) (the reciprocal and the product rounded to float32,
then to e4m3 to nearest even; |x| / scale <= 448 by construction).
A linear layer y = x W^T + b then runs as sum_k q_x[m, k] q_w[n, k] * scale_x[m] * scale_w[n] + b[n] with x
quantised per row (token) and W per row (output channel).

<out>/fp8/quantize.safetensors:
  x_f32 [40, 96] float32 and x_f16 [40, 96] float16: normal rows, a few large and tiny rows (subnormal e4m3 codes),
  an all-zero row; q_f32 / q_f16 (uint8: the float8_e4m3fn bits) and scale_f32 / scale_f16 [40, 1] float32.
  lin_x [16, 96] float32, lin_w [48, 96] float32, lin_b [48] float32, and lin_y [16, 48] float32: the product of the
  dequantised operands (float64, then float32), for fp8_linear.
  conv_x [2, 32, 6, 5] float32 (the second sample 100x larger), conv_w [48, 32, 3, 3] float32; conv_qx [2, 6, 5, 32]
  (uint8) and conv_sx [2, 1]: conv_x quantised per sample, each sample's channels-last values [H * W * C] as one row;
  conv_qw [48, 3, 3, 32] (uint8) and conv_sw [48]: the weight per output channel, each [3 * 3 * C] row in that
  order; conv_y [2, 48, 6, 5] float32: conv2d (stride 1, padding 1) of the dequantised operands in float64, for
  fp8_conv3x3.
"""
import os

import torch
from safetensors.torch import save_file

E4M3_MAX = 448.0
MIN_SCALE = 2.0 ** -24


def quantize_rows(x):
    f = x.float()
    scale = torch.clamp(f.abs().amax(dim=-1, keepdim=True) / E4M3_MAX, min=MIN_SCALE)
    return (f * (1.0 / scale)).to(torch.float8_e4m3fn), scale


def build(out):
    d = os.path.join(out, "fp8")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(17)
    x = torch.randn(40, 96, generator=g)
    x[3] *= 1000.0
    x[4] *= 1e-3
    x[5] *= 1e-6
    x[6] = 0.0
    x[7, 11] = -50.0  # one outlier: the rest of its row lands in e4m3's subnormal codes
    tensors = {}
    for name, dtype in (("f32", torch.float32), ("f16", torch.float16)):
        xs = x.to(dtype)
        q, scale = quantize_rows(xs)
        tensors[f"x_{name}"] = xs
        tensors[f"q_{name}"] = q.view(torch.uint8)
        tensors[f"scale_{name}"] = scale
        # The dequantised rows are within e4m3's half-unit (2^-4 relative) of x, or of the scale for tiny values.
        err = (q.float() * scale - xs.float()).abs()
        assert bool((err <= xs.float().abs() * 2.0 ** -4 + scale * 2.0 ** -9 + 1e-30).all()), "quantisation bound"
    lx = torch.randn(16, 96, generator=g)
    lw = torch.randn(48, 96, generator=g) * 0.05
    lb = torch.randn(48, generator=g)
    qx, sx = quantize_rows(lx)
    qw, sw = quantize_rows(lw)
    y = (qx.double() * sx.double()) @ (qw.double() * sw.double()).T + lb.double()
    tensors.update(lin_x=lx, lin_w=lw, lin_b=lb, lin_y=y.float())
    cx = torch.randn(2, 32, 6, 5, generator=g)
    cx[1] *= 100.0
    cw = torch.randn(48, 32, 3, 3, generator=g) * 0.05
    qcx, scx = quantize_rows(cx.permute(0, 2, 3, 1).reshape(2, -1))
    qcw, scw = quantize_rows(cw.permute(0, 2, 3, 1).reshape(48, -1))
    dx = (qcx.double() * scx.double()).view(2, 6, 5, 32).permute(0, 3, 1, 2)
    dw = (qcw.double() * scw.double()).view(48, 3, 3, 32).permute(0, 3, 1, 2)
    cy = torch.nn.functional.conv2d(dx, dw, padding=1)
    tensors.update(conv_x=cx, conv_w=cw, conv_qx=qcx.view(torch.uint8).view(2, 6, 5, 32), conv_sx=scx,
                   conv_qw=qcw.view(torch.uint8).view(48, 3, 3, 32), conv_sw=scw.view(48), conv_y=cy.float())
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "quantize.safetensors"))
