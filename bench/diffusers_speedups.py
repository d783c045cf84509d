"""diffusers' SDXL pipeline with the reference libraries of issue 14 on the GPU: tomesd 0.1.3 (ratio 0.5,
max_downsample 1, 2, 4) and DeepCache's DeepCacheSDHelper (cache_interval 2, 3, 5, branch 0), beside the plain
pipeline, eager, fp16, 1024², 30 steps, guidance 5, batch 4, random prompt embeddings (no text encoders).

Usage: python3 diffusers_speedups.py MODEL_DIR [--rows none,tome_md1,...] [--batches 3]
Prints one "ROW {json}" line per row: s/image (the median of the timed batches, after one warm-up batch).
Weights are whatever MODEL_DIR holds (the random full-size demo model): timings are real, images are noise.
"""
import argparse
import json
import statistics
import time

import torch
from diffusers import StableDiffusionXLPipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rows", default="none,tome_md1,tome_md2,tome_md4,deepcache_i2,deepcache_i3,deepcache_i5")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    pipe = StableDiffusionXLPipeline.from_pretrained(args.model, torch_dtype=torch.float16,
                                                     text_encoder=None, text_encoder_2=None,
                                                     tokenizer=None, tokenizer_2=None).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    b = 4
    g = torch.Generator("cuda").manual_seed(0)
    emb = lambda *s: torch.randn(*s, generator=g, device="cuda", dtype=torch.float16)
    pe, ne, pp, npool = emb(b, 77, 2048), emb(b, 77, 2048), emb(b, 1280), emb(b, 1280)

    def render():
        torch.cuda.synchronize()
        t = time.perf_counter()
        pipe(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pp,
             negative_pooled_prompt_embeds=npool, num_inference_steps=args.steps, guidance_scale=5.0,
             height=1024, width=1024, output_type="pil")
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / b

    for row in args.rows.split(","):
        undo = None
        if row.startswith("tome_md"):
            import tomesd
            # tomesd 0.1.3's patched block reads attributes diffusers 0.42 may not set on every block.
            for m in pipe.unet.modules():
                if type(m).__name__ == "BasicTransformerBlock":
                    for a in ("use_ada_layer_norm", "use_ada_layer_norm_zero", "only_cross_attention"):
                        if not hasattr(m, a):
                            setattr(m, a, False)
            tomesd.apply_patch(pipe, ratio=0.5, max_downsample=int(row[len("tome_md"):]))
            undo = lambda: tomesd.remove_patch(pipe)
        elif row.startswith("deepcache_i"):
            from DeepCache import DeepCacheSDHelper
            helper = DeepCacheSDHelper(pipe=pipe)
            helper.set_params(cache_interval=int(row[len("deepcache_i"):]), cache_branch_id=0)
            helper.enable()
            undo = helper.disable
        render()  # warm-up
        times = [render() for _ in range(args.batches)]
        if undo:
            undo()
        print("ROW " + json.dumps(dict(row=row, s_per_image=statistics.median(times), times=times)), flush=True)


if __name__ == "__main__":
    main()
