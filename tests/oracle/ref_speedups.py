"""Speed-ups reference (issue #14): diffusers' StableDiffusionXLPipeline with token merging (ToMe, tomesd 0.1.3),
token downsampling (ToDo, implemented here: no package) and step caching (DeepCache 0.1.1), for the C++ parity
tests. Same prompts, negatives and seeds as ref_samplers.py, one prompt per call with its own CPU generator,
8 steps (one case 10), guidance 5, the model folder's own EulerDiscreteScheduler.

Size 40x56 as ref_samplers.py: tiny-a's VAE has two levels (factor 2), so the latent is 20x28 and the UNet's
token grids are 20x28, 10x14 and 5x7: non-square, and several are not divisible by the stride or factor (5x7 with
sx = sy = 2, 10x14 with sx 3, 10x14 with factor 4, 5x7 with factor 2), so those paths are exercised.

Writes <out>/speedups/cases.json (the list: name, the technique's job-file map under its job-file key
(token_merging, token_downsampling or deep_cache), model, steps, guidance, height, width, prompts, negatives,
seeds, reference_sensitivity (fraction of uint8 values that change when the initial latents move by one float32
rounding, as in ref_samplers.py), differs_from_exact (fraction of uint8 values that differ from the same render
without the technique) and what the technique did: `levels` (ToMe, ToDo) or `full_steps` and
`cached_step_modules` (DeepCache)) and
<out>/speedups/<name>.safetensors ({"images": uint8 [B, H, W, 3]}). Also a model folder tiny-a-attn0: tiny-a with
a transformer at every level (level 0 included), new random weights, for ToMe/ToDo at max_downsample 1.

Notation. H, W: the UNet input's latent size. The UNet's level l has the token grid h_l x w_l with h_0 = H and
h_{l+1} = ceil(h_l / 2) (stride-2 convolution, padding 1; the up path has the same grids). A transformer block's
input has N = h_l * w_l tokens, row-major (token index = y * w_l + x).
  downsample(N) = ceil(sqrt(floor(H * W / N)))          (tomesd's formula, integer division inside)
which is 2^l for the sizes used here (tiny-a at 40x56: level 1 grid 10x14, downsample 2; level 2 and the mid
block grid 5x7, downsample 4; tiny-a-attn0 level 0 grid 20x28, downsample 1). (On a latent whose levels are not
exact halves it can differ from 2^l, and tomesd's grid below can then disagree with N: tomesd fails.) A technique
applies to a block iff downsample(N) <= max_downsample.

ToMe (tomesd 0.1.3, unchanged): in every BasicTransformerBlock (down, mid and up) with downsample <= max_downsample,
tomesd's grid is h = ceil(H / downsample), w = ceil(W / downsample) (= h_l, w_l here), r = int(N * ratio)
(a float64 product, truncated), and bipartite_soft_matching_random2d(x, w, h, sx, sy, r) merges with use_rand
False (the destination of each sy x sx cell is its top-left token; cells only over the top-left
(h//sy*sy) x (w//sx*sx) part, every other token is a source; r = min(r, number of sources)). The merge is
computed once per block from the block INPUT x (not the normed states) and applied to norm1(x) before attn1
(merge_attn), norm2(x') before attn2 (merge_crossattn), norm3(x'') before the feed-forward (merge_mlp); each
output is unmerged before its residual add. `levels` lists what
happened per block call: downsample, tokens, grid [h, w], merged (the r used), blocks (block calls per UNet call).

ToDo (Smith, Saxena, Saha 2024, arXiv 2402.13573; reference code github.com/ethansmith2000/ImprovedTokenMerge,
utils.py/merge.py, and its ports in kohya-ss/sd-scripts and sd-webui-token-downsampling): only the self-attention
(attn1) of every BasicTransformerBlock with downsample(N) <= max_downsample changes. Its input is
n = norm1(x) [B, N, C]. Queries come from every token: q = to_q(n). Keys and values come from the downsampled
grid:
  g  = n.reshape(B, h, w, C).permute(0, 3, 1, 2)           # [B, C, h, w], h = h_l, w = w_l (the block's grid)
  new_h = int(h / factor), new_w = int(w / factor)         # floor: 10x14 / 2 -> 5x7; / 4 -> 2x3
  "nearest": g' = F.interpolate(g, size=(new_h, new_w), mode="nearest-exact")
             i.e. output row i reads input row min(floor((i + 0.5) * h / new_h), h - 1) (scale h / new_h as a
             float32, likewise for columns): on a divisible grid row factor*i + factor//2 (factor 2: rows
             1, 3, 5, ...; not PyTorch's legacy "nearest", which reads floor(i * h / new_h) = factor*i);
             10x14 / 4 -> 2x3 reads rows 2, 7 and columns 2, 7, 11. The original library's default
             downsample_method is "nearest-exact" (its demo app passes "nearest"; kohya and the webui port use
             "nearest-exact").
  "average": g' = F.avg_pool2d(g, kernel_size=factor, stride=factor)   (padding 0, floor mode)
             output (i, j) = mean of input rows factor*i .. factor*i+factor-1, columns factor*j .. +factor-1;
             the output size is floor(h / factor) x floor(w / factor) = new_h x new_w, and the last h mod factor
             rows and w mod factor columns are not read (10x14 / 4: rows 0-3, 4-7, columns 0-3, 4-7, 8-11;
             5x7 / 2: rows 0-1, 2-3, columns 0-1, 2-3, 4-5). Not adaptive_avg_pool2d, which differs there. (The
             original code's kernel was cur_h // new_h, which is the factor on a divisible grid; it is not an
             adaptive pooling.)
  kv = g'.permute(0, 2, 3, 1).reshape(B, new_h * new_w, C);  k = to_k(kv), v = to_v(kv)
  out = to_out(softmax(q k^T / sqrt(head_dim)) v)  per head, N query tokens as usual.
If new_h < 1 or new_w < 1 (the grid is smaller than the factor), that block is left exact (case
todo_f8_nearest_md4: the 5x7 grids stay exact while 10x14 goes to 1x1). Cross-attention, the feed-forward and
every other block are unchanged; the UNet input size is the one of the current call (both CFG halves alike).
`levels` lists, per downsample level, the grid, the key/value grid (null: left exact) and the block calls per
UNet call.

DeepCache (DeepCache 0.1.1, DeepCacheSDHelper, skip_mode "uniform"): step i (0-based index of the timestep in the
scheduler's timesteps) is a full step iff i % cache_interval == 0; a full step runs everything and stores every
wrapped module's output. On the other steps, with B = cache_branch_id // 3 and L = cache_branch_id % 3:
  down block b: its resnet l, its attention l (after resnet l) and its downsampler (numbered l = number of
    resnets) return the stored output iff b > B or (b == B and l >= L); a whole down block with b > B, or
    b == B and L == 0, returns its stored (hidden_states, res_samples) without running anything;
  the mid block always returns its stored output;
  up blocks are numbered from the output side: b' = (number of up blocks - 1 - index); inside one, resnet j
    (and attention j) is l' = (number of resnets - 1 - j) and the upsampler is l' = 0; a module returns its
    stored output iff b' > B or (b' == B and l' > L); a whole up block with b' > B returns its stored output.
conv_in, the time embedding, the fresh modules and conv_out always run; the skip connections of the fresh up
modules are the (fresh or stored) outputs of their down modules. tiny-a: 3 down blocks of 2 resnets (+ a
downsampler in blocks 0, 1), up blocks of 3 resnets (+ an upsampler in up blocks 0, 1, i.e. b' = 2, 1).
`full_steps` lists the step indices where the mid block ran; `cached_step_modules` the diffusers names of the
resnets, transformers and down/upsamplers that really ran on step 1 (a cached step), e.g. for branch 0 only
up_blocks.2.resnets.2, for branch 3 also down_blocks.0.*, up_blocks.1.resnets.2, .attentions.2, .upsamplers.0.
"""
import contextlib
import json
import math
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file

import fixture_models
from ref_samplers import NEGATIVES, PROMPTS, SEEDS

HEIGHT, WIDTH = 40, 56
ATTN0_SEED = 2468


def _tome(ratio=0.5, max_downsample=2, sx=2, sy=2, merge_attn=True, merge_crossattn=False, merge_mlp=False):
    return dict(ratio=ratio, max_downsample=max_downsample, sx=sx, sy=sy, use_rand=False, merge_attn=merge_attn,
                merge_crossattn=merge_crossattn, merge_mlp=merge_mlp)


def _cases():
    tome = [
        ("tome_r30", "tiny-a", _tome(ratio=0.3)),
        ("tome_r50", "tiny-a", _tome(ratio=0.5)),  # merge_attn only
        ("tome_r70", "tiny-a", _tome(ratio=0.7)),
        ("tome_r50_md4", "tiny-a", _tome(max_downsample=4)),
        ("tome_r50_all", "tiny-a", _tome(merge_crossattn=True, merge_mlp=True)),
        ("tome_r50_crossattn_mlp", "tiny-a", _tome(merge_attn=False, merge_crossattn=True, merge_mlp=True)),
        ("tome_r50_sx3_sy1", "tiny-a", _tome(sx=3, sy=1)),
        ("tome_attn0_md1", "tiny-a-attn0", _tome(max_downsample=1)),
    ]
    todo = [
        ("todo_f2_nearest", dict(factor=2, max_downsample=2, method="nearest")),
        ("todo_f2_average", dict(factor=2, max_downsample=2, method="average")),
        ("todo_f4_nearest", dict(factor=4, max_downsample=2, method="nearest")),
        ("todo_f4_average", dict(factor=4, max_downsample=2, method="average")),  # 10x14 / 4: remainders dropped
        ("todo_f2_nearest_md4", dict(factor=2, max_downsample=4, method="nearest")),
        ("todo_f2_average_md4", dict(factor=2, max_downsample=4, method="average")),  # 5x7 / 2 -> 2x3
        ("todo_f8_nearest_md4", dict(factor=8, max_downsample=4, method="nearest")),  # 5x7 < 8: left exact
    ]
    deep = [(f"deepcache_i{i}_b0", dict(cache_interval=i, cache_branch_id=0), 8) for i in (2, 3, 5)]
    deep += [(f"deepcache_i3_b{b}", dict(cache_interval=3, cache_branch_id=b), 8) for b in (1, 2, 3, 5)]
    deep += [("deepcache_i3_b0_10_steps", dict(cache_interval=3, cache_branch_id=0), 10)]
    cases = [dict(name=n, token_merging=j, model=m, steps=8, guidance=5.0) for n, m, j in tome]
    cases += [dict(name=n, token_downsampling=j, model="tiny-a", steps=8, guidance=5.0) for n, j in todo]
    cases += [dict(name="todo_attn0_md1", token_downsampling=dict(factor=2, max_downsample=1, method="nearest"),
                   model="tiny-a-attn0", steps=8, guidance=5.0)]
    cases += [dict(name=n, deep_cache=j, model="tiny-a", steps=s, guidance=5.0) for n, j, s in deep]
    return cases


# ---------------------------------------------------------------------------------------------------- models

def _save_attn0(models):
    """tiny-a with a transformer at every level: tiny-a's text encoders, VAE and scheduler, a new UNet."""
    cfg = dict(fixture_models.CONFIGS["a"]["unet"])
    cfg.update(down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
               layers_per_block=1, transformer_layers_per_block=(1, 1, 1))
    with torch.random.fork_rng(devices=[]):  # leaves the global generator as it was for the scripts after this
        torch.manual_seed(ATTN0_SEED)
        unet = UNet2DConditionModel(**cfg)
        with torch.no_grad():  # random norms and biases too, as fixture_models.build_pipeline does
            for p in unet.parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.1)
    folder = os.path.join(models, "tiny-a-attn0")
    shutil.copytree(os.path.join(models, "tiny-a"), folder)
    shutil.rmtree(os.path.join(folder, "unet"))
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)


# ---------------------------------------------------------------------------------------------------- ToMe

def _tome_shim(unet):
    """tomesd 0.1.3's patched BasicTransformerBlock.forward reads use_ada_layer_norm, use_ada_layer_norm_zero and
    only_cross_attention. diffusers 0.42 still sets all three in BasicTransformerBlock.__init__ (and tomesd
    itself sets the first two when missing), so this is a no-op there; kept so that a diffusers that drops them
    fails loudly here instead of silently. SDXL's blocks are norm_type "layer_norm" with no pos_embed, no
    GLIGEN and no chunked feed-forward: the only paths tomesd's forward (copied from diffusers 0.14) handles;
    build() checks that ratio 0 gives diffusers' own images bit for bit."""
    for m in unet.modules():
        if type(m).__name__ == "BasicTransformerBlock":
            assert m.norm_type == "layer_norm" and m.pos_embed is None and m._chunk_size is None
            for attr in ("use_ada_layer_norm", "use_ada_layer_norm_zero", "only_cross_attention"):
                if not hasattr(m, attr):
                    setattr(m, attr, False)
                assert getattr(m, attr) is False, attr


@contextlib.contextmanager
def _tome_applied(pipe, job, record):
    """tomesd.apply_patch with counters: every patched block call (compute_merge) and every real merge."""
    import tomesd
    import tomesd.merge
    import tomesd.patch

    _tome_shim(pipe.unet)
    orig_compute, orig_match = tomesd.patch.compute_merge, tomesd.merge.bipartite_soft_matching_random2d

    def compute_merge(x, info):
        h, w = info["size"]
        record["block_calls"] += 1
        record["downsample"] = int(math.ceil(math.sqrt(h * w // x.shape[1])))
        return orig_compute(x, info)

    def match(metric, w, h, sx, sy, r, **kw):
        n = metric.shape[1]
        used = min(r, n - (h // sy) * (w // sx))
        if used > 0:
            record["merges"].append((record["downsample"], n, h, w, used))
        return orig_match(metric, w, h, sx, sy, r, **kw)

    tomesd.patch.compute_merge, tomesd.merge.bipartite_soft_matching_random2d = compute_merge, match
    tomesd.apply_patch(pipe, **job)
    try:
        yield
    finally:
        tomesd.remove_patch(pipe)
        tomesd.patch.compute_merge, tomesd.merge.bipartite_soft_matching_random2d = orig_compute, orig_match


def _tome_levels(record, unet_calls):
    """Per distinct merge (one per level here): its downsample, tokens, grid, the r used, block calls per UNet call."""
    counts = {}
    for merge in record["merges"]:
        counts[merge] = counts.get(merge, 0) + 1
    return [dict(downsample=d, tokens=n, grid=[h, w], merged=r, blocks=c // unet_calls)
            for (d, n, h, w, r), c in sorted(counts.items())]


# ---------------------------------------------------------------------------------------------------- ToDo

class ToDoState:
    """The UNet input's latent size (H, W) and the grid of the transformer now running, from forward pre-hooks."""

    def __init__(self, factor, max_downsample, method):
        assert method in ("nearest", "average") and int(factor) == factor and factor >= 2
        self.factor, self.max_downsample, self.method = int(factor), max_downsample, method
        self.size = self.grid = None
        self.levels = {}

    def kv_tokens(self, n):
        """norm1(x) [B, N, C] -> the key/value input, or None where this block stays exact."""
        big_h, big_w = self.size
        h, w = self.grid
        tokens = n.shape[1]
        assert h * w == tokens, (h, w, tokens)
        downsample = int(math.ceil(math.sqrt(big_h * big_w // tokens)))
        if downsample > self.max_downsample:
            return None
        new_h, new_w = int(h / self.factor), int(w / self.factor)
        level = self.levels.setdefault(downsample, dict(downsample=downsample, grid=[h, w], kv_grid=[new_h, new_w],
                                                        calls=0))
        level["calls"] += 1
        if new_h < 1 or new_w < 1:
            level["kv_grid"] = None  # left exact
            return None
        g = n.reshape(n.shape[0], h, w, n.shape[2]).permute(0, 3, 1, 2)
        if self.method == "nearest":
            g = F.interpolate(g, size=(new_h, new_w), mode="nearest-exact")
        else:
            g = F.avg_pool2d(g, kernel_size=self.factor, stride=self.factor)
        assert g.shape[2:] == (new_h, new_w)
        return g.permute(0, 2, 3, 1).reshape(n.shape[0], new_h * new_w, n.shape[2])


class ToDoProcessor:
    """attn1's processor: diffusers' own processor, with keys and values from the downsampled tokens."""

    def __init__(self, inner, state):
        self.inner, self.state = inner, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        kv = self.state.kv_tokens(hidden_states)
        # With encoder_hidden_states given, AttnProcessor2_0 takes keys/values from it (attn1 has no norm_cross).
        return self.inner(attn, hidden_states, encoder_hidden_states=kv, attention_mask=None, temb=temb, **kwargs)


@contextlib.contextmanager
def _todo_applied(pipe, state):
    unet = pipe.unet
    hooks = [unet.register_forward_pre_hook(lambda m, args: setattr(state, "size", tuple(args[0].shape[2:])))]
    saved = []

    def grid_hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        state.grid = tuple(x.shape[2:])

    for m in unet.modules():
        if type(m).__name__ == "Transformer2DModel":
            hooks.append(m.register_forward_pre_hook(grid_hook, with_kwargs=True))
        if type(m).__name__ == "BasicTransformerBlock":
            saved.append((m.attn1, m.attn1.processor))
            m.attn1.processor = ToDoProcessor(m.attn1.processor, state)
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for attn, proc in saved:
            attn.processor = proc


# ---------------------------------------------------------------------------------------------------- DeepCache

@contextlib.contextmanager
def _deepcache_applied(pipe, job, record):
    """DeepCacheSDHelper as documented, plus a counter of the mid block's real runs. DeepCache 0.1.1 replaces the
    forward of the UNet, of every down/up block and of their resnets, attentions, down/upsamplers and the mid
    block by wrappers (instance attributes, which nn.Module.__call__ in torch 2.11 honours); its step index is
    list(pipe.scheduler.timesteps).index(t) with t the UNet's second positional argument, which diffusers 0.42's
    SDXL pipeline still passes positionally. No shim is needed; build() checks that interval 1 gives diffusers'
    own images bit for bit and that the mid block runs only on full steps."""
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(**job)
    helper.enable()
    # The mid block's attentions are not wrapped: they run only when the mid block's own forward runs. Likewise
    # the first norm/conv of each resnet, transformer and down/upsampler runs only when that module really runs.
    hooks = [pipe.unet.mid_block.attentions[0].register_forward_pre_hook(
        lambda m, a: record["mid_runs"].append(helper.cur_timestep))]
    for name, module in pipe.unet.named_modules():
        if type(module).__name__ in ("ResnetBlock2D", "Transformer2DModel", "Downsample2D", "Upsample2D"):
            leaf = next(c for c in module.modules() if isinstance(c, (torch.nn.Conv2d, torch.nn.GroupNorm)))
            hooks.append(leaf.register_forward_pre_hook(
                lambda m, a, name=name: record["ran"].setdefault(helper.cur_timestep, []).append(name)))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        helper.disable()


# ---------------------------------------------------------------------------------------------------- rendering

def _render(pipe, case, prompt, negative, seed, perturb):
    shape = (1, pipe.unet.config.in_channels, HEIGHT // pipe.vae_scale_factor, WIDTH // pipe.vae_scale_factor)
    gen = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(shape, generator=gen)
    if perturb:
        latents = latents * (1 + 2**-23)
    out_np = pipe(prompt=[prompt], negative_prompt=[negative] if negative else None, generator=[gen],
                  latents=latents, num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                  height=HEIGHT, width=WIDTH, output_type="np").images
    return np.round(out_np * 255).astype(np.uint8)


def _technique(pipe, case, record):
    if "token_merging" in case:
        return _tome_applied(pipe, case["token_merging"], record)
    if "token_downsampling" in case:
        return _todo_applied(pipe, record["todo"])
    return _deepcache_applied(pipe, case["deep_cache"], record)


def _new_record(case):
    rec = dict(block_calls=0, downsample=None, merges=[], mid_runs=[], ran={})
    if "token_downsampling" in case:
        rec["todo"] = ToDoState(**case["token_downsampling"])
    return rec


def _self_checks(pipes, exact):
    """The patches are what they claim: with nothing to merge, tomesd's patched blocks are diffusers' blocks bit
    for bit; with interval 1, DeepCache's wrappers change nothing; ToDo with a factor the grids cannot take
    changes nothing (its processor falls back to diffusers' own)."""
    pipe = pipes["tiny-a"]
    case = dict(steps=8, guidance=5.0)
    ref = exact[("tiny-a", 8)][0]
    rec = _new_record({})
    with _tome_applied(pipe, _tome(ratio=0.0, max_downsample=8), rec):
        img = _render(pipe, case, PROMPTS[0], NEGATIVES[0], SEEDS[0], False)
    assert rec["block_calls"] > 0 and not rec["merges"] and np.array_equal(img, ref), "tomesd ratio 0 != diffusers"
    rec = _new_record({})
    with _deepcache_applied(pipe, dict(cache_interval=1, cache_branch_id=0), rec):
        img = _render(pipe, case, PROMPTS[0], NEGATIVES[0], SEEDS[0], False)
    assert len(rec["mid_runs"]) == 8 and np.array_equal(img, ref), "DeepCache interval 1 != diffusers"
    state = ToDoState(factor=64, max_downsample=8, method="nearest")
    with _todo_applied(pipe, state):
        img = _render(pipe, case, PROMPTS[0], NEGATIVES[0], SEEDS[0], False)
    assert state.levels and np.array_equal(img, ref), "ToDo processor without downsampling != diffusers"


def build(out):
    root = os.path.join(out, "speedups")
    os.makedirs(root, exist_ok=True)
    models = os.path.join(out, "models")
    _save_attn0(models)
    pipes = {m: StableDiffusionXLPipeline.from_pretrained(os.path.join(models, m)) for m in ("tiny-a", "tiny-a-attn0")}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
        assert type(p.scheduler).__name__ == "EulerDiscreteScheduler"
    cases = _cases()
    exact = {}
    for key in sorted({(c["model"], c["steps"]) for c in cases}):
        case = dict(steps=key[1], guidance=5.0)
        exact[key] = [_render(pipes[key[0]], case, p, n, s, False) for p, n, s in zip(PROMPTS, NEGATIVES, SEEDS)]
    _self_checks(pipes, exact)

    listing = []
    for case in cases:
        pipe = pipes[case["model"]]
        entry = dict(case, height=HEIGHT, width=WIDTH, prompts=PROMPTS, negatives=NEGATIVES, seeds=SEEDS)
        images, moved, differs, first = [], 0, 0, None
        for i, (prompt, negative, seed) in enumerate(zip(PROMPTS, NEGATIVES, SEEDS)):
            rec = _new_record(case)
            with _technique(pipe, case, rec):
                image = _render(pipe, case, prompt, negative, seed, False)
            first = first or rec
            with _technique(pipe, case, _new_record(case)):
                moved += int((image != _render(pipe, case, prompt, negative, seed, True)).sum())
            differs += int((image != exact[(case["model"], case["steps"])][i]).sum())
            images.append(image)
        total = float(sum(i.size for i in images))
        entry["reference_sensitivity"] = moved / total
        entry["differs_from_exact"] = differs / total
        steps = case["steps"]
        if "token_merging" in case:
            # Every block ran tomesd's patched forward at every step (compute_merge is only called from it), and
            # real merges happened.
            blocks = sum(type(m).__name__ == "BasicTransformerBlock" for m in pipe.unet.modules())
            assert first["block_calls"] == steps * blocks and first["merges"], case["name"]
            entry["levels"] = _tome_levels(first, steps)
        elif "token_downsampling" in case:
            levels = first["todo"].levels
            assert levels and any(v["kv_grid"] for v in levels.values()), case["name"]
            entry["levels"] = [dict(downsample=d, grid=v["grid"], kv_grid=v["kv_grid"], blocks=v["calls"] // steps)
                               for d, v in sorted(levels.items())]
        else:
            # The mid block ran at the full steps only.
            interval = case["deep_cache"]["cache_interval"]
            expected = [i for i in range(steps) if i % interval == 0]
            assert first["mid_runs"] == expected, (case["name"], first["mid_runs"])
            entry["full_steps"] = expected
            entry["cached_step_modules"] = sorted(first["ran"][1])
        if entry["differs_from_exact"] < 0.005:
            entry["no_op"] = True
        save_file({"images": torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))},
                  os.path.join(root, case["name"] + ".safetensors"))
        listing.append(entry)
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(listing, f, indent=1)
    print(f"{'case':28s} {'differs_from_exact':>18s} {'reference_sensitivity':>21s}")
    for e in listing:
        print(f"{e['name']:28s} {e['differs_from_exact']:18.4f} {e['reference_sensitivity']:21.4f}"
              + ("  NO-OP" if e.get("no_op") else ""))
