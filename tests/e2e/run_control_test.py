"""Run control under mpirun on the CPU, with the built-in tiny demo model: graceful stop on a signal, a hung
worker, exit codes that keep their kind across ranks, and segments published by time.

- SIGTERM to the ranks (what `scancel --signal=TERM` and SLURM's preemption do), SIGUSR1 to mpirun (which
  forwards it; mpirun itself kills the ranks one second after a SIGTERM) and Ctrl-C to a single process:
  exit 7 well inside the grace period, nothing in flight lost, and the resumed run completes each item
  exactly once with images identical to an uninterrupted run;
- the same SIGTERM with the decode overlapped (memory.overlap_decode: on): the group still decoding is saved
  too; SIGTERM to one worker alone: it saves what it finished, the other worker renders the rest of its
  batch, every item exactly once (exit 0);
- a signal during the encode phase: exit 7, the texts encoded so far are kept, the resume completes;
- the encode phase's progress line (summed over the workers, with an ETA), and a worker that hangs in it:
  exit 8 naming the rank, the other workers' texts kept, the resume completes;
- a worker that stops answering: exit 8 within worker_timeout_s + 10 s, naming the rank and host; the
  resume completes;
- a worker's out-of-memory, model and bad-input errors give exit 6, 4 and 2, alone and under mpirun;
- segment_seconds publishes a worker's segment by time even when segment_items is far away.
Usage (ctest does this): run_control_test.py <path to sdxl-batch>
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

import numpy as np

import e2e_jobs as e2e

BIN = None
TMP = None
MODEL = None
PROMPTS = [f"prompt number {i}" for i in range(16)]  # 48 items


def job(name, **overrides):
    return e2e.write_job(os.path.join(TMP, name), MODEL, os.path.join(TMP, "embeddings"), prompts=PROMPTS,
                         **overrides)


def start(job_path, ranks, env):
    """Starts the CLI (under mpirun when ranks > 1) in its own process group; returns the Popen."""
    return subprocess.Popen(e2e.command(BIN, job_path, ranks), env=dict(os.environ, **e2e.ENV, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


class Output:
    """Reads a started process's stdout and stderr as they come (threads), so that a test can wait for a line
    before it acts, instead of sleeping a fixed time that a loaded machine overruns."""

    def __init__(self, p):
        self.p = p
        self.out, self.err = [], []
        self.threads = [threading.Thread(target=self._read, args=(s, dst), daemon=True)
                        for s, dst in ((p.stdout, self.out), (p.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, dst):
        for line in stream:
            dst.append(line)

    def wait_for(self, pattern, timeout=120):
        """Blocks until a stderr line matches the regex `pattern`; fails the test on a timeout or an exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.err)):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no stderr line matched {pattern!r}:\n" + "".join(self.err))

    def communicate(self, timeout):
        self.p.wait(timeout=timeout)
        for t in self.threads:
            t.join(timeout=30)
        self.p.stdout.close()
        self.p.stderr.close()
        return "".join(self.out), "".join(self.err)


def stored_items(stderr):
    """Items the workers reported stored (SDXLB_LOG=debug lines)."""
    items = set()
    for m in re.finditer(r"stored items([ 0-9()a-z]*) \(", stderr):
        items.update(int(t) for t in re.findall(r"\d+", m.group(1)))
    return items


def shards_in(cache):
    """The embedding shards under a cache folder (every encoder identity)."""
    return [f for _, _, files in os.walk(cache) for f in files if f.startswith("shard-") and f.endswith(".h5")]


def signal_ranks(p, sig):
    """Sends `sig` to the sdxl-batch processes under `p` (the ranks), not to mpirun: as SLURM signals the
    tasks of a job step. Other tests' processes are left alone."""
    for pid in e2e.descendants(p.pid) + [p.pid]:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sdxl-batch":
                    os.kill(pid, sig)
        except OSError:
            pass


class RunControl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ref = job("ref", segment_items=1000)
        e2e.run(BIN, ref, 3)
        cls.ref_images, cls.ref_meta = e2e.read(os.path.join(TMP, "ref", "out"))

    def assert_complete_and_identical(self, out):
        images, meta = e2e.read(out)
        np.testing.assert_array_equal(images, self.ref_images)
        for key in ("item_index", "seed", "prompt", "status"):
            np.testing.assert_array_equal(meta[key], self.ref_meta[key], err_msg=key)
        items = e2e.segment_items(out)
        self.assertEqual(sorted(items), list(range(48)), "each item exactly once across the segments")

    def stop_and_resume(self, name, ranks, send, **overrides):
        """Runs a slowed-down job, calls send(process) once the first item is stored (every rank is then past
        its start-up), checks exit 7 and the resume."""
        j = job(name, segment_items=1000, segment_seconds=60, **overrides)
        p = start(j, ranks, {"SDXLB_FAULT": "item_delay_ms=150", "SDXLB_LOG": "debug"})
        output = Output(p)
        output.wait_for(r"debug: stored items")
        t_signal = time.monotonic()
        send(p)
        out, err = output.communicate(timeout=120)
        exit_s = time.monotonic() - t_signal
        self.assertEqual(p.returncode, 7, out + err)
        self.assertIn("Resubmit the same command", err)
        # An image group here takes about 0.2 s: well inside "one image's time plus 10 s".
        self.assertLess(exit_s, 10.0, err)
        out_dir = os.path.join(TMP, name, "out")
        published = set(e2e.segment_items(out_dir))
        rendered_again = stored_items(err) - published
        print(f"\n[ {name} ] exit 7 {exit_s:.2f} s after the signal; {len(published)} of 48 saved; "
              f"{len(rendered_again)} items to render again", file=sys.stderr)
        # Nothing finished is thrown away (a worker stops after the images in flight, and saves them).
        self.assertEqual(rendered_again, set())
        self.assertLess(len(published), 48, "the signal came too late to test anything")
        r = e2e.run(BIN, j, ranks)
        self.assert_complete_and_identical(out_dir)
        return r

    def test_sigterm_to_the_ranks(self):
        self.stop_and_resume("sigterm", 3, lambda p: signal_ranks(p, signal.SIGTERM))

    def test_sigterm_with_the_decode_overlapped(self):
        # The group still decoding when the stop comes is stored and saved too.
        self.stop_and_resume("sigterm-overlap", 3, lambda p: signal_ranks(p, signal.SIGTERM),
                             memory={"overlap_decode": "on"})

    def test_sigterm_to_one_worker_with_the_decode_overlapped(self):
        # A signal that reaches one worker alone: it saves its finished groups (the one still decoding too)
        # and gives the rest of its batch back, and the other worker renders that. Every item exactly once.
        j = job("one-worker-overlap", segment_items=1000, segment_seconds=60, memory={"overlap_decode": "on"})
        p = start(j, 3, {"SDXLB_FAULT": "item_delay_ms=150", "SDXLB_LOG": "debug"})
        output = Output(p)
        output.wait_for(r"\[rank 2\] debug: stored items")
        for pid in e2e.descendants(p.pid):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if b"OMPI_COMM_WORLD_RANK=2\0" in f.read():
                        os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        out, err = output.communicate(timeout=120)
        print(f"\n[ one-worker-overlap ] exit {p.returncode}", file=sys.stderr)
        self.assertIn(p.returncode, (0, 7), out + err)
        if p.returncode == 7:
            e2e.run(BIN, j, 3)
        self.assert_complete_and_identical(os.path.join(TMP, "one-worker-overlap", "out"))

    def test_sigusr1_to_mpirun(self):
        self.stop_and_resume("sigusr1", 3, lambda p: p.send_signal(signal.SIGUSR1))

    def test_ctrl_c_to_one_process(self):
        self.stop_and_resume("sigint", 1, lambda p: p.send_signal(signal.SIGINT))

    def test_signal_during_encode(self):
        prompts = [f"encode phase prompt {i}" for i in range(200)]
        d = os.path.join(TMP, "encode-stop")
        # The cache inside the output folder (the default place): a stop keeps it and the job's files.
        cache = os.path.join(d, "out", "embeddings")
        j = e2e.write_job(d, MODEL, cache, prompts=prompts, images_per_prompt=1)
        # Each worker encodes 100 texts in two chunks; each chunk waits 2 s first. The signal comes during the
        # first wait, so the second chunk is never started.
        p = start(j, 3, {"SDXLB_FAULT": "encode_delay_ms=2000"})
        output = Output(p)
        # Rank 0 logs its start-up once every rank is connected; the encode phase starts right after.
        output.wait_for(r"info: startup: job file")
        time.sleep(0.5)
        signal_ranks(p, signal.SIGTERM)
        out, err = output.communicate(timeout=120)
        self.assertEqual(p.returncode, 7, out + err)
        self.assertIn("during the encode phase", err)
        self.assertFalse(os.path.exists(os.path.join(d, "out", "index.h5")))
        self.assertTrue(shards_in(cache), "the texts encoded before the stop were removed")
        r = e2e.run(BIN, j, 3)
        self.assertIn("200 ok", r.stdout)

    def test_encode_progress(self):
        # A long encode phase shows one progress line with an ETA on rank 0, summed over the workers.
        prompts = [f"encode progress prompt {i}" for i in range(400)]
        d = os.path.join(TMP, "encode-progress")
        j = e2e.write_job(d, MODEL, os.path.join(d, "emb"), prompts=prompts, images_per_prompt=1,
                          progress_interval_s=0.5)

        def encode(env=None):
            p = subprocess.run(e2e.MPIRUN + ["3", BIN, "encode", j], capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, **e2e.ENV, **(env or {})))
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            return p

        # Each worker encodes 200 texts in 4 chunks of 0.7 s or more: it reports at least twice.
        p = encode({"SDXLB_FAULT": "encode_delay_ms=700"})
        lines = re.findall(r"encode: (\d+)/(\d+) \([\d.]+%\), [\d.]+ texts/s, ETA \S+, \S+ elapsed", p.stderr)
        self.assertTrue(lines, p.stderr)
        total = int(lines[0][1])
        self.assertIn(total, (400, 401))  # with "" where the model encodes empty negatives
        self.assertTrue(all(0 < int(done) < total for done, _ in lines), lines)
        self.assertRegex(p.stderr, rf"encode: {total}/{total} done in")
        # Everything is in the cache now: nothing to encode the second time.
        self.assertIn("encode: every text is in the embedding cache", encode().stderr)

    def test_hung_worker_during_encode(self):
        prompts = [f"encode hang prompt {i}" for i in range(300)]
        d = os.path.join(TMP, "encode-hang")
        cache = os.path.join(d, "out", "embeddings")  # inside the output folder: kept with it
        j = e2e.write_job(d, MODEL, cache, prompts=prompts, images_per_prompt=1, worker_timeout_s=4)
        t0 = time.monotonic()
        p = e2e.run(BIN, j, 3, env={"SDXLB_FAULT": "encode_hang_rank=2"}, check=False, timeout=120)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 8, p.stdout + p.stderr)
        self.assertIn("rank 2 on host", p.stderr)
        self.assertIn("during the encode phase", p.stderr)
        self.assertIn("resubmit the same command to resume", p.stderr)
        self.assertLess(elapsed, 30.0)
        self.assertFalse(os.path.exists(os.path.join(d, "out", "index.h5")))
        self.assertTrue(shards_in(cache), "the other worker's texts were removed")
        # The other worker's share was stored; the resubmitted job encodes the rest and renders everything.
        r = e2e.run(BIN, j, 3)
        self.assertIn("300 ok", r.stdout)
        print(f"\n[ encode-hang ] exit 8 after {elapsed:.1f} s (worker_timeout_s 4)", file=sys.stderr)

    def test_hung_worker(self):
        j = job("hung", segment_items=1000, segment_seconds=2, worker_timeout_s=4)
        t0 = time.monotonic()
        p = e2e.run(BIN, j, 3, env={"SDXLB_FAULT": "item_delay_ms=100,hang_rank=2,hang_after=3",
                                    "SDXLB_LOG": "debug"}, check=False, timeout=120)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 8, p.stdout + p.stderr)
        self.assertIn("rank 2 on host", p.stderr)
        self.assertIn("worker_timeout_s", p.stderr)
        last = [m for m in re.finditer(r"\[rank 2\] debug: stored items", p.stderr)]
        self.assertTrue(last, p.stderr)
        # Start-up, 3 items, then detection within the timeout plus 10 s.
        self.assertLess(elapsed, 30.0)
        print(f"\n[ hung ] exit 8 after {elapsed:.1f} s (worker_timeout_s 4)", file=sys.stderr)
        e2e.run(BIN, j, 3)
        self.assert_complete_and_identical(os.path.join(TMP, "hung", "out"))

    def test_worker_errors_keep_their_exit_code(self):
        for kind, code in (("out_of_memory", 6), ("model", 4), ("bad_input", 2)):
            for ranks in (1, 2):
                with self.subTest(kind=kind, ranks=ranks):
                    j = job(f"fail-{kind}-{ranks}")
                    p = e2e.run(BIN, j, ranks, env={"SDXLB_FAULT": f"fail_rank=1,fail_code={kind}"},
                                check=False, timeout=300)
                    self.assertEqual(p.returncode, code, p.stdout + p.stderr)
                    self.assertIn("injected", p.stdout + p.stderr)

    def test_a_second_run_on_the_same_folder_is_refused(self):
        # issue 12, case 4: run B started while run A was rendering rendered the remaining items again.
        j = job("locked", segment_items=1000, segment_seconds=1)
        a = start(j, 3, {"SDXLB_FAULT": "item_delay_ms=400"})  # about 10 s of rendering
        time.sleep(2.5)
        b = e2e.run(BIN, j, 3, check=False, timeout=120)
        self.assertEqual(b.returncode, 3, b.stdout + b.stderr)
        self.assertIn("is in use by sdxl-batch on host", b.stderr)
        out, err = a.communicate(timeout=120)
        self.assertEqual(a.returncode, 0, out + err)
        self.assert_complete_and_identical(os.path.join(TMP, "locked", "out"))
        self.assertFalse(os.path.exists(os.path.join(TMP, "locked", "out", "lock")))

    def test_a_full_disk_is_an_io_error_not_a_crash(self):
        # issue 12, case 5: after a correct ENOSPC message, every rank segfaulted on exit in HDF5's exit
        # handler (H5F__close_cb, exit 139), closing again a file whose close had failed.
        small = os.path.join(TMP, "small-disk")
        os.makedirs(small)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here (needs root)")
        try:
            for ranks in (1, 3):
                with self.subTest(ranks=ranks):
                    out = os.path.join(small, f"out{ranks}")
                    j = job(f"full-disk-{ranks}", output=out, width=256, height=256)
                    p = e2e.run(BIN, j, ranks, check=False, timeout=300)
                    self.assertEqual(p.returncode, 4, p.stdout + p.stderr)
                    self.assertIn("No space left on device", p.stderr)
                    self.assertNotIn("Segmentation", p.stderr)
                    self.assertNotIn("signal 11", p.stderr)
                    # Nothing half-written is left for a later run to trust.
                    segs = os.listdir(os.path.join(out, "segments"))
                    self.assertFalse([s for s in segs if s.endswith(".tmp")], segs)
                    shutil.rmtree(out, ignore_errors=True)
        finally:
            subprocess.run(["umount", small], capture_output=True)

    def test_segments_are_published_by_time(self):
        j = job("by-time", segment_items=1000, segment_seconds=1)
        e2e.run(BIN, j, 3, env={"SDXLB_FAULT": "item_delay_ms=150"})
        segs = os.listdir(os.path.join(TMP, "by-time", "out", "segments"))
        per_rank = {}
        for s in segs:
            m = re.search(r"-r(\d+)-", s)
            if m:
                per_rank[m.group(1)] = per_rank.get(m.group(1), 0) + 1
        # Each worker works about 4 s: a segment a second, not one of 1000 items.
        self.assertTrue(all(n >= 3 for n in per_rank.values()), per_rank)
        self.assert_complete_and_identical(os.path.join(TMP, "by-time", "out"))


if __name__ == "__main__":
    e2e.run_tests(sys.modules[__name__], "sdxlb-runctl-")
