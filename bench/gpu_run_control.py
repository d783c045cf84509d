"""Run control on the GPU (issue 11): graceful stop and kill -9 with 2 workers sharing one GPU, 1024², fp16.

  1. reference: an uninterrupted run of N prompts (mpirun -np 3: a coordinator and 2 workers on one GPU);
  2. SIGTERM to the ranks (as `scancel --signal=TERM` does) once a third of the items are stored: the exit code,
     the seconds from the signal to the end of mpirun, then a resume: items rendered again (stored before the
     signal and again after it), each item exactly once, images bit-identical to the reference;
  3. kill -9 of worker rank 2 after at least 2 x segment_seconds of rendering: work lost per worker (seconds
     from that worker's last publish, or from its first image's start, to the kill), items rendered again,
     then a resume as above.
Writes OUT/run_control.json and prints a table. Weights are random (timings are real, images are noise).
Usage: gpu_run_control.py --bin BIN --model MODEL --out OUT [--prompts 24] [--segment-seconds 15]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import h5py
import numpy as np

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "3"]


def write_job(d, model, prompts, segment_seconds):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "p.txt"), "w") as f:
        f.write("".join(f"run control prompt number {i}, a photo\n" for i in range(prompts)))
    with open(os.path.join(d, "job.yaml"), "w") as f:
        f.write(f"model: {model}\nprompts_file: p.txt\nsteps: 30\nguidance: 5.0\nwidth: 1024\nheight: 1024\n"
                f"vae_fp16_safe: true\nbatch_size: 4\ndtype: fp16\noutput: out\nprogress_interval_s: 1000\n"
                f"segment_items: 1000\nsegment_seconds: {segment_seconds}\nembedding_cache: {d}/../emb\n")
    return os.path.join(d, "job.yaml")


class Run:
    """mpirun -np 3 sdxl-batch run JOB, with every stderr line timestamped on arrival."""

    def __init__(self, binary, job):
        env = dict(os.environ, SDXLB_LOG="debug", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(MPIRUN + [binary, "run", job], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout=900):
        out = self.p.stdout.read()
        self.p.wait(timeout=timeout)
        self.reader.join(timeout=10)
        self.t_end = time.monotonic()
        self.stdout = out
        return self.p.returncode

    def stored(self):
        """[(time, rank, items)] from the workers' debug lines."""
        out = []
        for t, line in self.lines:
            m = re.search(r"\[rank (\d+)\] debug: stored items([ 0-9()a-z]*) \(", line)
            if m:
                out.append((t, int(m.group(1)), [int(x) for x in re.findall(r"\d+", m.group(2))]))
        return out

    def published(self):
        return [(t, int(m.group(1))) for t, line in self.lines
                for m in [re.search(r"\[rank (\d+)\] debug: published ", line)] if m]

    def rank_pids(self):
        """{rank: pid} of the sdxl-batch processes under mpirun."""
        pids = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if open(f"/proc/{entry}/comm").read().strip() != "sdxl-batch":
                    continue
                env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
                for kv in env:
                    if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                        pids[int(kv.split(b"=")[1])] = int(entry)
            except OSError:
                pass
        return pids


def segment_items(out):
    items = []
    seg = os.path.join(out, "segments")
    for name in sorted(os.listdir(seg)):
        if name.endswith(".h5"):
            with h5py.File(os.path.join(seg, name), "r") as f:
                items.extend(int(i) for i in f["item_index"][()])
    return items


def images(out):
    with h5py.File(os.path.join(out, "index.h5"), "r") as f:
        return f["images"][()], f["status"][()]


def wait_until(run, cond, timeout=600):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and run.p.poll() is None:
        if cond():
            return True
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--segment-seconds", type=float, default=10)
    ap.add_argument("--parts", default="sigterm,kill9")
    a = ap.parse_args()
    root = "/tmp/runctl"
    shutil.rmtree(root, ignore_errors=True)
    n = a.prompts
    res = {"prompts": n, "segment_seconds": a.segment_seconds, "gpu": "", "workers": 2}

    # 1. Reference.
    ref_job = write_job(f"{root}/ref", a.model, n, a.segment_seconds)
    r = Run(a.bin, ref_job)
    rc = r.wait()
    st = r.stored()
    res["reference"] = {"exit": rc, "wall_s": round(r.t_end - r.t0, 2),
                        "render_s": round(st[-1][0] - st[0][0], 2) if st else None}
    ref_images, ref_status = images(f"{root}/ref/out")
    print("reference:", res["reference"], flush=True)

    def check_resumed(out, total=n):
        imgs, status = images(out)
        items = segment_items(out)
        return {"exactly_once": sorted(items) == list(range(total)), "all_ok": bool((status == 1).all()),
                "bit_identical_to_reference": bool(np.array_equal(imgs[:n], ref_images))}

    parts = a.parts.split(",")
    # 2. SIGTERM to the ranks.
    job = write_job(f"{root}/term", a.model, n, a.segment_seconds)
    run = Run(a.bin, job) if "sigterm" in parts else None
    if run:
        sigterm(a, res, run, job, root, n, check_resumed)
    if "kill9" in parts:
        kill9(a, res, root, n, check_resumed)
    print(json.dumps(res, indent=1))
    json.dump(res, open(os.path.join(a.out, "run_control.json"), "w"), indent=1)


def sigterm(a, res, run, job, root, n, check_resumed):
    wait_until(run, lambda: sum(len(s[2]) for s in run.stored()) >= n // 3)
    pids = run.rank_pids()
    t_sig = time.monotonic()
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    rc = run.wait()
    stopped = next((m.group(1) for _, l in run.lines for m in [re.search(r"stopped early by \S+, ([0-9.]+) s", l)] if m),
                   None)
    published = set(segment_items(f"{root}/term/out"))
    before = {i for _, _, items in run.stored() for i in items}
    resume = Run(a.bin, job)
    rc2 = resume.wait()
    after = {i for _, _, items in resume.stored() for i in items}
    res["sigterm"] = {"exit": rc, "exit_s_after_signal": round(run.t_end - t_sig, 2),
                      "coordinator_stop_s": float(stopped) if stopped else None,
                      "stored_before": len(before), "published_before": len(published),
                      "rendered_again": len(before & after), "resume_exit": rc2,
                      **check_resumed(f"{root}/term/out")}
    print("sigterm:", res["sigterm"], flush=True)


def kill9(a, res, root, n, check_resumed):
    # Twice the reference's prompts (its first n items are the reference's), so that the kill lands after
    # at least two segment_seconds windows.
    job = write_job(f"{root}/kill", a.model, 2 * n, a.segment_seconds)
    run = Run(a.bin, job)
    wait_until(run, lambda: bool(run.stored()) and time.monotonic() - run.stored()[0][0] > 2 * a.segment_seconds)
    pids = run.rank_pids()
    t_kill = time.monotonic()
    if 2 not in pids:
        res["kill9"] = {"error": "the job ended before the kill"}
        return
    os.kill(pids[2], signal.SIGKILL)
    rc = run.wait()
    st = run.stored()
    pub = run.published()
    lost = {}
    group_s = {}
    for rank in (1, 2):
        times = [t for t, rk, _ in st if rk == rank and t <= t_kill]
        if len(times) > 1:
            group_s[rank] = (times[-1] - times[0]) / (len(times) - 1)
        last_pub = max([t for t, rk in pub if rk == rank and t <= t_kill], default=None)
        start = last_pub if last_pub is not None else (times[0] - group_s.get(rank, 0) if times else t_kill)
        lost[rank] = round(t_kill - start, 2)
    published = set(segment_items(f"{root}/kill/out"))
    before = {i for t, _, items in st if t <= t_kill for i in items}
    resume = Run(a.bin, job)
    rc2 = resume.wait()
    after = {i for _, _, items in resume.stored() for i in items}
    res["kill9"] = {"exit": rc, "killed_rank": 2, "kill_s_after_first_image": round(t_kill - st[0][0], 2),
                    "lost_s_per_worker": lost, "group_s": {k: round(v, 2) for k, v in group_s.items()},
                    "stored_before": len(before), "published_before": len(published),
                    "rendered_again": len(before - published), "rendered_twice": len(before & after),
                    "resume_exit": rc2, **check_resumed(f"{root}/kill/out", 2 * n)}
    print("kill9:", res["kill9"], flush=True)


if __name__ == "__main__":
    main()
