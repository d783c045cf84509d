"""End-to-end tests of scripts/slurm/render.sbatch on a real SLURM cluster, on the CPU, with the tiny demo model.

- the project's render.sbatch, submitted with sbatch to the CPU partition with 3 tasks (srun --mpi=pmix:
  1 coordinator + 2 workers), renders a 48-item job: the job COMPLETES with exit code 0, and the dataset's
  images and metadata equal bit for bit those of the same job run with `mpirun -np 3`;
- a longer job whose batch shell gets SIGTERM mid-run, as SLURM does
  before preemption or the time limit (--signal=B:TERM@120), is requeued by the script (the ranks exit 7) and
  finishes: each item exactly once, images equal to the mpirun reference, the stop inside the grace period,
  and the items rendered again after the requeue counted (at most workers x images in flight).

The cluster must be up: scripts/slurm/local-cluster.sh start (scripts/test.sh does it). The SLURM tools find it
through SLURM_CONF; when that is unset and /etc/slurm/slurm.conf does not exist, the local cluster's
${SDXLB_SLURM_DIR:-/tmp/sdxlb-slurm}/slurm.conf is used. Without a reachable cluster the tests FAIL.
Usage (ctest does this): slurm_test.py <path to sdxl-batch>
"""
import glob
import os
import re
import subprocess
import sys
import time
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import e2e_jobs as e2e  # noqa: E402  (the shared job-file helpers)

BIN = None
TMP = None
MODEL = None
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SBATCH_SCRIPT = os.path.join(ROOT, "scripts", "slurm", "render.sbatch")
PARTITION = os.environ.get("SDXLB_SLURM_PARTITION", "cpu")
PROMPTS = ["a red fox in snow", "an astronaut on a horse", "a bowl of ramen", "lighthouse at dusk",
           "a cat in a hat", "café au lait, still life", "mountains at dawn", "city street, rain",
           "a lone tree on a hill", "koi pond, top view", "steam locomotive", "a library at night",
           "desert dunes at noon", "an owl on a branch", "neon sign, close up", "a paper boat"]
# Columns that say where and how fast an item was rendered; they legitimately differ between two runs.
PLACEMENT_COLUMNS = {"images", "segments", "item_segment", "item_row", "rank", "host", "gpu",
                     "ms_encode", "ms_denoise", "ms_decode"}
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE"}


def write_job(folder, prompts=PROMPTS, **overrides):
    return e2e.write_job(folder, MODEL, os.path.join(folder, "embeddings"), prompts=prompts, **overrides)


def read(out):
    with h5py.File(os.path.join(out, "index.h5"), "r") as f:
        images = f["images"][()]
        meta = {k: f[k][()] for k in f.keys() if k != "images"}
        attrs = dict(f.attrs)
    return images, meta, attrs


def slurm_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if "SLURM_CONF" not in env and not os.path.exists("/etc/slurm/slurm.conf"):
        env["SLURM_CONF"] = os.path.join(os.environ.get("SDXLB_SLURM_DIR", "/tmp/sdxlb-slurm"), "slurm.conf")
    env.update(extra)
    return env


def slurm(*cmd, check=True, timeout=30):
    p = subprocess.run(list(cmd), env=slurm_env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{list(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def mpirun_reference(folder, **job):
    """The same job under plain mpirun (no SLURM), 3 ranks; returns (images, meta)."""
    path = write_job(folder, **job)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    # An mpirun started inside a SLURM allocation (ctest run by sbatch, say) would launch through SLURM.
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]
    cmd = e2e.command(BIN, path, 3)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    images, meta, _ = read(os.path.join(folder, "out"))
    return images, meta


class Slurm(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        p = None
        try:
            p = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%a %t"], env=slurm_env(),
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            err = str(e)
        else:
            err = p.stderr.strip()
        if p is None or p.returncode != 0 or not p.stdout.strip():
            raise AssertionError(
                f"no SLURM cluster with a '{PARTITION}' partition is reachable (sinfo: {err or 'no nodes'}; "
                f"SLURM_CONF={slurm_env().get('SLURM_CONF', '(unset)')}). Start the local one-node cluster with "
                "`scripts/slurm/local-cluster.sh start` and `export SLURM_CONF=/tmp/sdxlb-slurm/slurm.conf` "
                "(scripts/test.sh does both), or run ctest with -LE slurm.")
        cls.references = {}

    def reference(self, name, **job):
        if name not in self.references:
            self.references[name] = mpirun_reference(os.path.join(TMP, "ref-" + name), **job)
        return self.references[name]

    def submit(self, folder, job, ntasks=3, time_limit="00:15:00", **env):
        log = os.path.join(folder, "slurm-%j.out")
        p = subprocess.run(["sbatch", "--parsable", f"--partition={PARTITION}", f"--ntasks={ntasks}",
                            f"--time={time_limit}", f"--chdir={folder}", f"--output={log}",
                            "--job-name=sdxlb-test", SBATCH_SCRIPT, job],
                           env=slurm_env(SDXLB_BIN=BIN, **env), capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, f"sbatch failed:\n{p.stdout}\n{p.stderr}")
        job_id = p.stdout.strip().split(";")[0]
        self.addCleanup(slurm, "scancel", job_id, check=False)
        return job_id, log.replace("%j", job_id)

    def job_info(self, job_id):
        p = slurm("scontrol", "show", "job", "-o", job_id)
        # One line of Key=Value pairs; values may hold spaces only in fields we do not read.
        return dict(re.findall(r"(\w+)=(\S*)", p.stdout))

    def wait_for(self, job_id, log, timeout=600, until=None):
        """Polls `scontrol show job` (no accounting here, so no sacct) until the job ends or until(info)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job_info(job_id)
            if info.get("JobState") in TERMINAL_STATES or (until and until(info)):
                return info
            if time.monotonic() > deadline:
                slurm("scancel", job_id, check=False)
                self.fail(f"job {job_id} not done after {timeout}s: {info.get('JobState')} "
                          f"({info.get('Reason')})\n{self.log_text(log)}")
            time.sleep(0.5)

    @staticmethod
    def log_text(log):
        try:
            with open(log) as f:
                return f.read()
        except OSError as e:
            return f"(no log: {e})"

    def assert_same_as_reference(self, out, ref, n):
        images, meta, attrs = read(out)
        ref_images, ref_meta = ref
        self.assertEqual(images.shape, (n, 64, 64, 3))
        np.testing.assert_array_equal(meta["item_index"], np.arange(n))
        self.assertTrue((meta["status"] == 1).all(), meta["status"])
        self.assertEqual(int(attrs["items_ok"]), n)
        self.assertEqual(int(attrs["items_missing"]), 0)
        self.assertEqual(int(attrs["duplicates"]), 0)
        np.testing.assert_array_equal(images, ref_images)
        columns = set(meta) - PLACEMENT_COLUMNS
        self.assertEqual(columns, set(ref_meta) - PLACEMENT_COLUMNS)
        self.assertIn("seed", columns)
        for key in sorted(columns):
            np.testing.assert_array_equal(meta[key], ref_meta[key], err_msg=key)
        self.assertGreater(images.std(), 1.0)  # noise images, not blank

    def assert_each_item_once_in_segments(self, out, n):
        """Every item stored OK in exactly one segment file (nothing lost, nothing rendered twice and kept)."""
        counts = np.zeros(n, dtype=int)
        for path in glob.glob(os.path.join(out, "segments", "*.h5")):
            with h5py.File(path, "r") as s:
                idx, status = s["item_index"][()], s["status"][()]
            np.add.at(counts, idx[status == 1], 1)
        self.assertEqual(list(np.nonzero(counts != 1)[0]), [], f"items not stored exactly once: {counts}")

    def test_render_48_items_with_3_tasks(self):
        d = os.path.join(TMP, "sbatch")
        job = write_job(d)
        t0 = time.monotonic()
        job_id, log = self.submit(d, job)
        info = self.wait_for(job_id, log)
        text = self.log_text(log)
        print(f"slurm job {job_id}: {info.get('JobState')} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        self.assertEqual(info.get("JobState"), "COMPLETED", text)
        self.assertEqual(info.get("ExitCode"), "0:0", text)
        self.assertEqual(info.get("Restarts"), "0", text)
        self.assertIn("3 ranks", text)
        self.assertIn("exited 0: not requeueing", text)
        self.assert_same_as_reference(os.path.join(d, "out"), self.reference("48"), 48)
        self.assert_each_item_once_in_segments(os.path.join(d, "out"), 48)

    def test_sigterm_to_batch_shell_requeues_and_finishes(self):
        # Longer: 96 items of 24 steps, so that the signal lands mid-run.
        prompts = [f"{p}, variation {v}" for v in range(2) for p in PROMPTS]
        settings = dict(prompts=prompts, steps=24)
        n = len(prompts) * 3
        d = os.path.join(TMP, "preempt")
        job = write_job(d, **settings)
        # Debug logs list the items each worker stored, to count those rendered twice.
        job_id, log = self.submit(d, job, SDXLB_LOG="debug")
        segments = os.path.join(d, "out", "segments")

        def some_segments_done(info):
            return info.get("JobState") == "RUNNING" and len(glob.glob(os.path.join(segments, "*.h5"))) >= 4
        info = self.wait_for(job_id, log, until=some_segments_done)
        self.assertEqual(info.get("JobState"), "RUNNING", "job ended before it could be signalled:\n"
                         + self.log_text(log))
        # What SLURM does ahead of preemption or the time limit (--signal=B:TERM@120): SIGTERM to the batch
        # shell only (--batch), not to the tasks; the script's trap passes it on to the ranks.
        slurm("scancel", "--signal=TERM", "--batch", job_id)
        t0 = time.monotonic()
        info = self.wait_for(job_id, log, timeout=900)
        text = self.log_text(log)
        print(f"slurm job {job_id}: {info.get('JobState')} {time.monotonic() - t0:.1f}s after SIGTERM, "
              f"restarts {info.get('Restarts')}", file=sys.stderr)
        self.assertEqual(info.get("JobState"), "COMPLETED", text)
        self.assertEqual(info.get("ExitCode"), "0:0", text)
        self.assertGreaterEqual(int(info.get("Restarts", "0")), 1, text)
        self.assertIn("got SIGTERM", text)
        self.assertIn("exited 7 (resumable): requeueing", text)
        self.assertIn("(restart 1)", text)
        out = os.path.join(d, "out")
        self.assert_each_item_once_in_segments(out, n)
        self.assert_same_as_reference(out, self.reference("preempt", **settings), n)
        # The stop stayed inside the grace period (one image group, here a fraction of a second, plus saving).
        m = re.search(r"stopped early by SIGTERM, ([0-9.]+) s after it arrived", text)
        self.assertIsNotNone(m, text)
        self.assertLess(float(m.group(1)), 10.0)
        # Items rendered in the signalled run and again after the requeue: at most workers x images in flight
        # (2 workers x 1 image on the CPU); the workers save everything they finished, so 0 is expected.
        first, _, second = text.partition("(restart 1)")

        def stored(part):
            items = set()
            for line in re.findall(r"stored items([ 0-9()a-z]*) \(", part):
                items.update(int(t) for t in re.findall(r"\d+", line))
            return items
        again = stored(first) & stored(second)
        print(f"slurm job {job_id}: stopped {m.group(1)} s after SIGTERM; {len(stored(first))} items before the "
              f"requeue, {len(again)} rendered again after it", file=sys.stderr)
        self.assertLessEqual(len(again), 2, sorted(again))


if __name__ == "__main__":
    # The tasks that slurmd starts run on this host as this user, so they see the scratch folder.
    e2e.run_tests(sys.modules[__name__], "sdxlb-slurm-e2e-")
