"""Reference numbers: Hugging Face diffusers SDXL on the GPU, random weights, fp16, no text encoders.
(Copied from the project's shared benchmark; adds --guidance so MLPerf's setting can be measured too.)

Weights are random (no hub access): timings and memory are real, images are noise.
diffusers is imported from PYTHONPATH (install its wheel, see BENCH.md) or from $PEERS if set.
Usage: python3 diffusers_speed.py [--steps 30] [--batches 1,4] [--compile] [--tome] [--flops]
"""
import argparse, json, os, sys, time

if os.environ.get("PEERS"):
    sys.path.insert(0, os.environ["PEERS"])
import torch
from diffusers import (AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler,
                       StableDiffusionXLPipeline, UNet2DConditionModel)

UNET = dict(sample_size=128, in_channels=4, out_channels=4,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            block_out_channels=[320, 640, 1280], layers_per_block=2,
            attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10],
            cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
           layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=1024,
           scaling_factor=0.13025, force_upcast=False)
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
             num_train_timesteps=1000, prediction_type="epsilon", timestep_spacing="leading",
             steps_offset=1)


def sync_time(fn):
    torch.cuda.synchronize(); t = time.perf_counter(); out = fn(); torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--tome", action="store_true")
    ap.add_argument("--flops", action="store_true")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--skip-unet-step", action="store_true",
                    help="skip the isolated batch-2 UNet step (compiled, it recompiles for that shape)")
    args = ap.parse_args()
    dev, dt = "cuda", torch.float16
    torch.manual_seed(0)
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": args.steps, "res": args.res,
           "guidance": args.guidance}
    with torch.device(dev):
        unet = UNet2DConditionModel(**UNET).to(dt)
        vae = AutoencoderKL(**VAE).to(dt)
        tiny = AutoencoderTiny().to(dt)
    res["unet_params"] = sum(p.numel() for p in unet.parameters())
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet,
                                     scheduler=EulerDiscreteScheduler(**SCHED))
    pipe.set_progress_bar_config(disable=True)
    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode
        r = args.res // 8
        with torch.no_grad():
            fc = FlopCounterMode(display=False)
            with fc:
                unet(torch.randn(1, 4, r, r, device=dev, dtype=dt), 500,
                     torch.randn(1, 77, 2048, device=dev, dtype=dt),
                     added_cond_kwargs={"text_embeds": torch.randn(1, 1280, device=dev, dtype=dt),
                                        "time_ids": torch.ones(1, 6, device=dev, dtype=dt)})
            res["unet_tflop_per_image_step"] = fc.get_total_flops() / 1e12
            fc = FlopCounterMode(display=False)
            with fc:
                vae.decode(torch.randn(1, 4, r, r, device=dev, dtype=dt))
            res["vae_decode_tflop"] = fc.get_total_flops() / 1e12
            fc = FlopCounterMode(display=False)
            with fc:
                tiny.decode(torch.randn(1, 4, r, r, device=dev, dtype=dt))
            res["tiny_decode_tflop"] = fc.get_total_flops() / 1e12
        print("FLOPS " + json.dumps(res), flush=True)
        return
    if args.tome:
        import tomesd
        tomesd.apply_patch(pipe, ratio=0.5)
        res["tome"] = 0.5
    if args.compile:
        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
        res["compile"] = "reduce-overhead"

    def run(b, vae_kind="full"):
        pipe.vae = vae if vae_kind == "full" else tiny
        e = lambda *s: torch.randn(*s, device=dev, dtype=dt) * 0.1
        return pipe(prompt_embeds=e(b, 77, 2048), negative_prompt_embeds=e(b, 77, 2048),
                    pooled_prompt_embeds=e(b, 1280), negative_pooled_prompt_embeds=e(b, 1280),
                    num_inference_steps=args.steps, height=args.res, width=args.res,
                    guidance_scale=args.guidance, output_type="np").images

    for b in [int(x) for x in args.batches.split(",")]:
        for vk in ("full", "tiny"):
            t0 = time.perf_counter(); run(b, vk); warm = time.perf_counter() - t0
            torch.cuda.reset_peak_memory_stats()
            _, t = sync_time(lambda: run(b, vk))
            res[f"b{b}_{vk}"] = dict(seconds=round(t, 3), s_per_image=round(t / b, 3),
                                     peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                                     first_call_s=round(warm, 1))
            print(json.dumps({f"b{b}_{vk}": res[f"b{b}_{vk}"]}), flush=True)
    # decode-only timings at batch 1
    lat = torch.randn(1, 4, args.res // 8, args.res // 8, device=dev, dtype=dt)
    for name, m in (("vae_decode_full", vae), ("vae_decode_tiny", tiny)):
        with torch.no_grad():
            m.decode(lat); _, t = sync_time(lambda: m.decode(lat))
        res[name + "_s"] = round(t, 4)
    if args.skip_unet_step:
        print("RESULT " + json.dumps(res), flush=True)
        return
    # UNet step (CFG batch 2) isolated
    x = torch.randn(2, 4, args.res // 8, args.res // 8, device=dev, dtype=dt)
    ehs = torch.randn(2, 77, 2048, device=dev, dtype=dt)
    cond = {"text_embeds": torch.randn(2, 1280, device=dev, dtype=dt),
            "time_ids": torch.tensor([[args.res, args.res, 0, 0, args.res, args.res]] * 2, device=dev, dtype=dt)}
    with torch.no_grad():
        for _ in range(3):
            pipe.unet(x, 500, ehs, added_cond_kwargs=cond)
        _, t = sync_time(lambda: [pipe.unet(x, 500, ehs, added_cond_kwargs=cond) for _ in range(10)])
    res["unet_cfg_step_ms"] = round(t * 100, 2)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
