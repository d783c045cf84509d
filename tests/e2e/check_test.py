"""`sdxl-batch check JOB.yaml` through the real CLI: what `run` would do at start-up, with run's exit codes,
and never a file written (the output folder, the embedding cache, the lock).
Usage (ctest does this): check_test.py <path to sdxl-batch>
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import unittest

import e2e_jobs as e2e

BIN = None
TMP = None
MODEL = None


class Check(unittest.TestCase):
    def job(self, name, model=None, prompts=e2e.PROMPTS, **overrides):
        d = os.path.join(TMP, name)
        return d, e2e.write_job(d, model or MODEL, os.path.join(d, "cache"), prompts=prompts, **overrides)

    def check(self, job, code=0, env=None, args=()):
        folder = os.path.dirname(job)
        before = e2e.snapshot(folder)
        p = subprocess.run([BIN, "check", job, *args], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
        self.assertEqual(p.returncode, code, p.stdout + p.stderr)
        self.assertEqual(e2e.snapshot(folder), before, "check wrote files:\n" + p.stdout + p.stderr)
        self.assertNotIn("internal error", p.stderr)
        return p

    def test_a_new_job_is_counted_and_nothing_is_written(self):
        d, job = self.job("new")
        p = self.check(job)
        self.assertIn("prompts:  8 prompts from " + os.path.join(d, "prompts.txt") + ", 3 images each: 24 items",
                      p.stdout)
        self.assertIn("model:    " + MODEL + ": configs and weight headers read", p.stdout)
        self.assertIn("encode:   0 of 8 distinct texts in the embedding cache (" + os.path.join(d, "cache") +
                      "); the encode phase computes 8", p.stdout)
        self.assertIn("render:   64x64, 3 steps, guidance 5, EulerDiscreteScheduler, dtype fp32 on the CPU",
                      p.stdout)
        self.assertIn("output:   " + os.path.join(d, "out") + ": will be created; the run renders all 24 items",
                      p.stdout)
        self.assertIn("would start", p.stdout)
        self.assertFalse(os.path.exists(os.path.join(d, "out")))
        self.assertFalse(os.path.exists(os.path.join(d, "cache")))

    def test_the_empty_negative_counts_where_the_model_encodes_it(self):
        # force_zeros_for_empty_prompt false: "" is encoded like a prompt (run's list, texts_to_encode).
        model = os.path.join(TMP, "model-encoding-empty")
        if not os.path.exists(model):
            shutil.copytree(MODEL, model)
            index = os.path.join(model, "model_index.json")
            with open(index) as f:
                config = json.load(f)
            config["force_zeros_for_empty_prompt"] = False
            with open(index, "w") as f:
                json.dump(config, f)
        _, job = self.job("encodes-empty", model=model)
        p = self.check(job)
        self.assertIn("encode:   0 of 9 distinct texts in the embedding cache", p.stdout)
        self.assertIn("the encode phase computes 9", p.stdout)

    def test_a_started_job_says_what_is_left(self):
        d, job = self.job("resume")
        e2e.run(BIN, job, 1)
        p = self.check(job)
        self.assertIn("resumed: 24 of 24 items done, 0 to render", p.stdout)
        self.assertIn("encode:   8 of 8 distinct texts in the embedding cache", p.stdout)
        segments = sorted(f for f in os.listdir(os.path.join(d, "out", "segments")) if f.endswith(".h5"))
        os.remove(os.path.join(d, "out", "segments", segments[0]))  # segment_items: 2
        self.assertIn("resumed: 22 of 24 items done, 2 to render", self.check(job).stdout)

    def test_another_jobs_folder_is_refused_like_run(self):
        d, job = self.job("another")
        e2e.run(BIN, job, 1)
        _, job = self.job("another", steps=4)
        p = self.check(job, code=3)
        self.assertIn("holds another job", p.stderr)
        self.assertIn("image.steps: 3 -> 4", p.stderr)
        self.assertIn("--overwrite", p.stderr)

    def test_a_folder_in_use_is_refused_like_run(self):
        d, job = self.job("locked")
        out = os.path.join(d, "out")
        os.makedirs(out)
        # A live run elsewhere: another host's lock, refreshed just now.
        with open(os.path.join(out, "lock"), "w") as f:
            json.dump({"format": "sdxlb-lock", "host": "node-" + socket.gethostname() + "-other", "pid": 4242,
                       "slurm_job_id": "777", "slurm_restart_count": 0, "run_id": "r1",
                       "started": "2026-12-05T00:00:00Z"}, f)
        p = self.check(job, code=3)
        self.assertIn("is in use by sdxl-batch on host node-", p.stderr)
        self.assertIn("SLURM job 777", p.stderr)
        # Stale (untouched for longer than a live run allows): the run would take it over, and so check passes.
        old = time.time() - 3600
        os.utime(os.path.join(out, "lock"), (old, old))
        self.assertIn("holds no job yet", self.check(job).stdout)

    def test_an_output_path_that_is_a_file_is_refused(self):
        d, job = self.job("file-output", output="taken")
        with open(os.path.join(d, "taken"), "w") as f:
            f.write("x")
        p = self.check(job, code=2)  # as run: the job file's output key is refused
        self.assertIn("job.yaml:", p.stderr)
        self.assertIn('taken" is an existing file, not a folder', p.stderr)

    def test_a_bad_job_file_names_the_line(self):
        d, job = self.job("bad-key")
        with open(job, "a") as f:
            f.write("sampler: euler\n")
        p = self.check(job, code=2)
        self.assertIn('unknown key "sampler"; did you mean "scheduler"?', p.stderr)
        self.assertIn("job.yaml:", p.stderr)

    def test_a_truncated_weight_file_is_found(self):
        broken = e2e.truncated_model(MODEL, os.path.join(TMP, "model-truncated"))
        _, job = self.job("truncated", model=broken)
        p = self.check(job, code=4)
        self.assertIn("diffusion_pytorch_model.safetensors", p.stderr)

    def test_a_gpu_job_is_checked_on_a_machine_without_one(self):
        # A login node: device cuda and fp16 are the GPU nodes' settings, not refused here.
        _, job = self.job("gpu-job", device="cuda", dtype="fp16")
        p = self.check(job)
        self.assertIn("dtype fp16 on a GPU", p.stdout)
        if not os.path.exists("/dev/nvidia0"):
            self.assertIn("this machine has no GPU", p.stdout)

    def test_the_memory_plan_for_the_nodes_gpu(self):
        # --gpu-gib: the plan a worker on such a GPU would choose, with run's refusal where none fits.
        _, job = self.job("gpu-plan", device="cuda", dtype="fp16", width=1024, height=1024, batch_size=4)
        p = self.check(job, args=("--gpu-gib", "80"))
        self.assertIn("memory:   on a 80 GiB GPU: memory plan: resident weights, full decode", p.stdout)
        self.assertIn("batch 4", p.stdout)
        self.assertNotIn("the memory plan (or give --gpu-gib)", p.stdout)
        shared = self.check(job, args=("--gpu-gib", "16", "--workers-per-gpu", "2"))
        self.assertIn("on a 16 GiB GPU shared by 2 workers: memory plan:", shared.stdout)
        self.assertIn(" of 7.4 GiB", shared.stdout)  # half the GPU, less the plan's 8% margin
        self.assertNotIn("resident weights", shared.stdout)
        small = self.check(job, code=6, args=("--gpu-gib", "2"))
        self.assertIn("the lightest plan", small.stderr)
        self.assertIn("job.yaml", small.stderr)
        # The FP8 UNet streams too: a sequential placement, the e4m3 units counted.
        _, fp8 = self.job("gpu-plan-fp8", device="cuda", dtype="fp16", width=1024, height=1024,
                          unet_precision="fp8", memory=dict(placement="sequential"))
        p = self.check(fp8, args=("--gpu-gib", "12"))
        self.assertIn("memory plan: sequential weights", p.stdout)
        self.assertIn("FP8 UNet", p.stdout)
        # memory.overlap_decode: on, and a GPU where the plan must move the weights: refused as run refuses it.
        _, overlap = self.job("gpu-plan-overlap", device="cuda", dtype="fp16", width=1024, height=1024,
                              memory=dict(overlap_decode="on"))
        self.assertIn("resident weights", self.check(overlap, args=("--gpu-gib", "80")).stdout)
        refused = self.check(overlap, code=3, args=("--gpu-gib", "8"))
        self.assertIn("memory.overlap_decode is on, but the memory plan for this GPU keeps the UNet", refused.stderr)
        # A CPU job has no GPU plan.
        _, cpu = self.job("cpu-plan")
        self.assertIn("--gpu-gib ignored", self.check(cpu, args=("--gpu-gib", "80")).stdout)

    def test_every_job_file_key_is_documented(self):
        """The keys the parser accepts, as its unknown-key errors list them, each in docs/job-file.md."""
        docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "job-file.md")).read()
        d = os.path.join(TMP, "keys")
        os.makedirs(d, exist_ok=True)
        job = os.path.join(d, "job.yaml")
        unknown = "qqqqqqqqqqqqqqqqqqqqqqqq"
        with open(job, "w") as f:
            f.write(f"{unknown}: 1\n")
        p = self.check(job, code=2)
        listed = re.search(r"valid keys are: ([a-z0-9_, ]+)$", p.stderr, re.M)
        self.assertIsNotNone(listed, p.stderr)
        top = listed.group(1).split(", ")
        self.assertGreater(len(top), 30)
        # Every top-level key as a map holding an unknown key: the nested sections list theirs.
        with open(job, "w") as f:
            f.write("".join(f"{k}: {{{unknown}: 1}}\n" for k in top if k != "loras"))
            f.write(f"loras: [{{{unknown}: 1}}]\n")
        p = self.check(job, code=2)
        nested = {section: keys.split(", ") for keys, section in
                  re.findall(r"valid keys are: ([a-z0-9_, ]+) \(in ([a-z_]+)[^)]*\)", p.stderr)}
        for section in ("scheduler", "token_merging", "token_downsampling", "deep_cache", "memory", "loras"):
            self.assertIn(section, nested, p.stderr)
        missing = [k for k in top if f"`{k}`" not in docs]
        for section, keys in nested.items():
            missing += [f"{section}.{k}" for k in keys
                        if not re.search(r"`(%s(\[i\])?\.)?%s`" % (section, k), docs)]
        self.assertEqual(missing, [], "job-file keys without a line in docs/job-file.md")


if __name__ == "__main__":
    e2e.run_tests(sys.modules[__name__], "sdxlb-check-", model_args=("--no-tiny-vae",))
