"""Shared helpers of the end-to-end tests: a tiny CPU job file, running the CLI (alone or under mpirun),
reading a dataset with h5py, finding the ranks under a launcher, and the test scripts' common main."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader", "-np"]
PROMPTS = ["a red fox in snow", "an astronaut on a horse", "a bowl of ramen", "lighthouse at dusk",
           "a cat in a hat", "café au lait, still life", "mountains at dawn", "city street, rain"]
ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def write_job(folder, model, cache, prompts=PROMPTS, **overrides):
    """Writes <folder>/prompts.txt and <folder>/job.yaml (a 64x64, 3-step CPU job); returns the job's path."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "prompts.txt"), "w") as f:
        f.write("\n".join(prompts) + "\n")
    settings = dict(model=model, prompts_file="prompts.txt", negative_prompt="", images_per_prompt=3, seed=77,
                    steps=3, guidance=5.0, width=64, height=64, batch_size=2, dtype="fp32", device="cpu",
                    output="out", image_format="raw", segment_items=2, progress_interval_s=5,
                    embedding_cache=cache)
    settings.update(overrides)
    lines = []
    for k, v in settings.items():
        lines.append(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {str(v).lower() if isinstance(v, bool) else v}")
    path = os.path.join(folder, "job.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines).replace("'", '"') + "\n")
    return path


def snapshot(folder):
    """Every path under folder with its size and mtime (to prove nothing was written)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.stat(p)
            # Folders by name only: probing a folder for write access touches its mtime but writes nothing.
            out[p] = (st.st_size, st.st_mtime_ns) if os.path.isfile(p) else "dir"
    return out


def truncated_model(model, dest):
    """A copy of `model` at `dest` whose UNet weight file is cut to half its size; returns dest."""
    shutil.copytree(model, dest)
    w = os.path.join(dest, "unet", "diffusion_pytorch_model.safetensors")
    with open(w, "r+b") as f:
        f.truncate(os.path.getsize(w) // 2)
    return dest


def command(binary, job, ranks, extra_args=()):
    """`sdxl-batch run --quiet [extra_args] job`, under mpirun when ranks > 1 (ranks = workers + 1)."""
    return ([binary] if ranks == 1 else MPIRUN + [str(ranks), binary]) + ["run", "--quiet", *extra_args, job]


def run(binary, job, ranks, env=None, check=True, timeout=900, extra_args=()):
    cmd = command(binary, job, ranks, extra_args)
    p = subprocess.run(cmd, env=dict(os.environ, **ENV, **(env or {})), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def read(out):
    """(images, {column: values}) of <out>/index.h5."""
    with h5py.File(os.path.join(out, "index.h5"), "r") as f:
        images = f["images"][()]
        meta = {k: f[k][()] for k in f.keys() if k not in ("images", "segments")}
    return images, meta


def segment_items(out):
    """item_index of every row of every complete segment of <out> (duplicates kept)."""
    items = []
    seg = os.path.join(out, "segments")
    for name in sorted(os.listdir(seg)):
        if name.endswith(".h5"):
            with h5py.File(os.path.join(seg, name), "r") as f:
                items.extend(int(i) for i in f["item_index"][()])
    return items


def descendants(pid):
    """Pids of every process below `pid` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    found, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            found.append(c)
            stack.append(c)
    return found


def rank_pids(pid):
    """{rank: pid} of the processes below `pid` (a launcher) whose environment has OMPI_COMM_WORLD_RANK."""
    ranks = {}
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        for kv in env:
            if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(kv.split(b"=", 1)[1])] = child
    return ranks


def run_tests(module, prefix, model_args=()):
    """The test scripts' main: sets module.BIN (argv[1]), module.TMP (a scratch folder, removed afterwards) and
    module.MODEL (the tiny demo model written there), then runs the unittest cases."""
    module.BIN = os.path.abspath(sys.argv.pop(1))
    module.TMP = tempfile.mkdtemp(prefix=prefix)
    module.MODEL = os.path.join(module.TMP, "model")
    subprocess.run([module.BIN, "make-demo-model", module.MODEL, *model_args], check=True, capture_output=True)
    try:
        unittest.main(module=module, verbosity=2)
    finally:
        shutil.rmtree(module.TMP, ignore_errors=True)

