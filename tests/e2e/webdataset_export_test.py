"""`sdxl-batch export --format webdataset` end to end: renders tiny datasets on the CPU with the real CLI, exports
them, and reads the shards back with the `webdataset` package (as a training loop would) and with tarfile.
Checks the samples against index.h5 (pixels and metadata), a kill -9 in the middle of a shard and the rerun
after it (complete shards kept, nothing duplicated, nothing partial under a final name, the same bytes as an
uninterrupted export), the refusals of a rerun that does not match, and bad input.
Usage (ctest does this): webdataset_export_test.py <path to sdxl-batch>
"""
import gc
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import unittest
import warnings

import numpy as np
import webdataset as wds
from PIL import Image

import e2e_jobs as e2e

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import read_output  # noqa: E402

BIN = None
TMP = None
MODEL = None
PROMPTS = ["a red fox in snow", "an astronaut on a horse", "café au lait, still life", "city street, rain"]
FAILED = (4, 7)  # items whose rendering fails (SDXLB_FAULT nan_items): never exported
SHARD = 4


def export(out, to, *args, env=None, check=True):
    p = subprocess.run([BIN, "export", out, "--format", "webdataset", "--to", to, *args], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    msg = p.stdout + p.stderr
    if check and p.returncode != 0:
        raise AssertionError(f"export exited {p.returncode}:\n{msg}")
    assert "Traceback" not in msg and "c10::Error" not in msg, msg
    return p


def files(folder):
    """{name: (sha256, inode, mtime_ns)} of the files in folder."""
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        with open(p, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        st = os.stat(p)
        out[name] = (digest, st.st_ino, st.st_mtime_ns)
    return out


def shard_samples(path):
    """The sample keys of one shard, read with tarfile (each key must have exactly .png and .json)."""
    with tarfile.open(path) as t:
        names = t.getnames()
    keys = [n.split(".", 1)[0] for n in names]
    assert names == [k + ext for k in keys[::2] for ext in (".png", ".json")], names
    return keys[::2]


class WebDatasetExport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # 4 prompts x 3 images = 12 items, two of them failed: 10 OK samples, shards of 4, 4 and 2.
        cls.raw = cls.render("raw", image_format="raw")
        cls.png = cls.render("png", image_format="png")
        cls.ok_items = [i for i in range(12) if i not in FAILED]

    @classmethod
    def render(cls, name, **overrides):
        d = os.path.join(TMP, "render-" + name)
        job = e2e.write_job(d, MODEL, os.path.join(TMP, "cache"), prompts=PROMPTS, **overrides)
        p = e2e.run(BIN, job, 1, env={"SDXLB_FAULT": "nan_items=" + ":".join(map(str, FAILED))}, check=False)
        assert p.returncode == 5, f"the render should end with 2 failed items (exit 5):\n{p.stdout}\n{p.stderr}"
        return os.path.join(d, "out")

    def check_export(self, out, to):
        """Reads every shard of `to` with webdataset and compares each sample with index.h5."""
        shards = sorted(n for n in os.listdir(to) if n.endswith(".tar"))
        self.assertEqual(shards, ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"])
        self.assertEqual(sorted(os.listdir(to)), shards + ["webdataset.json"])  # nothing .tmp left
        self.assertEqual([len(shard_samples(os.path.join(to, s))) for s in shards], [4, 4, 2])
        urls = [os.path.join(to, s) for s in shards]
        with warnings.catch_warnings():  # webdataset leaves its shard files to the garbage collector
            warnings.simplefilter("ignore", ResourceWarning)
            samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
            gc.collect()
        self.assertEqual(len(samples), len(self.ok_items))
        self.assertEqual([s["__key__"] for s in samples], [f"{i:08d}" for i in self.ok_items])
        rows = read_output.items(out)
        with read_output.open_index(out) as index:
            approximations = index["approximations"].asstr()[:]
            for s, i in zip(samples, self.ok_items):
                want = read_output.load_image(out, i, index)
                self.assertEqual(s["png"].dtype, np.uint8)
                np.testing.assert_array_equal(s["png"], want, err_msg=f"pixels of item {i}")
                self.assertGreater(int(want.astype(np.int64).sum()), 0)  # a real image, not the zeros of a failure
                meta, row = s["json"], rows[i]
                self.assertEqual(meta["item_index"], i)
                for key in ("prompt_index", "image_k", "seed", "prompt", "negative_prompt", "steps", "width",
                            "height", "model_id"):
                    self.assertEqual(meta[key], row[key], f"item {i}: {key}")
                self.assertEqual(np.float32(meta["guidance"]), np.float32(row["guidance"]))
                self.assertEqual(meta["guidance"], 5.0)
                self.assertEqual(meta["scheduler"], json.loads(row["scheduler"]))
                self.assertEqual(meta["scheduler"]["_sampler"], "euler")
                self.assertEqual(meta["approximations"], json.loads(approximations[i]))
                self.assertNotIn("host", meta)
        # Independent of index.h5: the prompt file's own text (UTF-8 intact) and the job's seed rule's range.
        for s in samples:
            self.assertEqual(s["json"]["prompt"], PROMPTS[s["json"]["prompt_index"]])
        self.assertIn("café au lait, still life", [s["json"]["prompt"] for s in samples])
        self.assertEqual(len({s["json"]["seed"] for s in samples}), len(samples))
        return samples

    def test_raw_dataset_reads_back_with_webdataset(self):
        to = os.path.join(TMP, "wds-raw")
        p = export(self.raw, to, "--shard-size", str(SHARD))
        self.assertIn("exported 10 samples in 3 shards", p.stdout)
        self.assertIn("2 failed and 0 never-rendered items are not exported", p.stderr)
        self.check_export(self.raw, to)
        with open(os.path.join(to, "webdataset.json")) as f:
            manifest = json.load(f)
        self.assertEqual((manifest["shard_size"], manifest["samples"], manifest["shards"]), (SHARD, 10, 3))

    def test_png_dataset_passes_its_png_bytes_through(self):
        to = os.path.join(TMP, "wds-png")
        export(self.png, to, "--shard-size", str(SHARD))
        self.check_export(self.png, to)
        # The stored PNG of item 0, byte for byte.
        with read_output.open_index(self.png) as index:
            seg, row = int(index["item_segment"][0]), int(index["item_row"][0])
            name = index["segments"].asstr()[seg]
        import h5py
        with h5py.File(os.path.join(self.png, "segments", name), "r") as s:
            stored = s["png"][row].tobytes()
        with tarfile.open(os.path.join(to, "shard-000000.tar")) as t:
            self.assertEqual(t.extractfile("00000000.png").read(), stored)

    def test_limit_exports_the_first_ok_items(self):
        to = os.path.join(TMP, "wds-limit")
        export(self.raw, to, "--shard-size", "3", "--limit", "5")
        keys = [k for s in sorted(os.listdir(to)) if s.endswith(".tar") for k in shard_samples(os.path.join(to, s))]
        self.assertEqual(keys, ["00000000", "00000001", "00000002", "00000003", "00000005"])

    def test_kill_during_export_then_rerun(self):
        ref = os.path.join(TMP, "wds-ref")
        export(self.raw, ref, "--shard-size", str(SHARD))
        want = {name: v[0] for name, v in files(ref).items()}
        # Killed after adding sample K: the shards before the one holding sample K are complete.
        for k in (1, 4, 5, 9, 10):
            with self.subTest(kill_after=k):
                to = os.path.join(TMP, f"wds-kill-{k}")
                p = export(self.raw, to, "--shard-size", str(SHARD), env={"SDXLB_FAULT": f"export_kill_after={k}"},
                           check=False)
                self.assertEqual(p.returncode, -9, p.stdout + p.stderr)
                complete = (k - 1) // SHARD
                left = sorted(os.listdir(to))
                finals = [n for n in left if n.endswith(".tar")]
                self.assertEqual(finals, [f"shard-{n:06d}.tar" for n in range(complete)])
                self.assertIn(f"shard-{complete:06d}.tar.tmp", left)  # the shard it was writing
                for n in finals:  # a final name is a complete shard
                    self.assertEqual(files(to)[n][0], want[n])
                before = files(to)
                p = export(self.raw, to, "--shard-size", str(SHARD))
                self.assertIn(f"({3 - complete} shards written now, {complete} kept from an earlier run)", p.stdout)
                after = files(to)
                for n in finals:  # kept, not rewritten
                    self.assertEqual(after[n], before[n])
                self.assertEqual({n: v[0] for n, v in after.items()}, want)  # same bytes, no duplicates
                self.check_export(self.raw, to)

    def test_rerun_of_a_finished_export_writes_nothing(self):
        to = os.path.join(TMP, "wds-again")
        export(self.raw, to, "--shard-size", str(SHARD))
        before = files(to)
        p = export(self.raw, to, "--shard-size", str(SHARD))
        self.assertIn("(0 shards written now, 3 kept from an earlier run)", p.stdout)
        self.assertEqual(files(to), before)

    def test_rerun_with_another_shard_size_is_refused(self):
        to = os.path.join(TMP, "wds-size")
        export(self.raw, to, "--shard-size", str(SHARD), env={"SDXLB_FAULT": "export_kill_after=6"}, check=False)
        before = files(to)
        p = export(self.raw, to, "--shard-size", "3", check=False)
        self.assertEqual(p.returncode, 3, p.stderr)
        for e in ("4 samples per shard", "--shard-size 3", "rerun with --shard-size 4", "webdataset.json"):
            self.assertIn(e, p.stderr)
        self.assertEqual(files(to), before)

    def test_rerun_against_a_changed_dataset_is_refused(self):
        to = os.path.join(TMP, "wds-changed")
        export(self.raw, to, "--shard-size", str(SHARD), "--limit", "6")
        p = export(self.raw, to, "--shard-size", str(SHARD), check=False)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("holds an export of other items (6 samples", p.stderr)
        self.assertIn("export to a new folder", p.stderr)

    def test_damaged_shard_is_named_not_served(self):
        to = os.path.join(TMP, "wds-damaged")
        export(self.raw, to, "--shard-size", str(SHARD))
        victim = os.path.join(to, "shard-000001.tar")
        with open(victim, "r+b") as f:
            f.truncate(3000)  # mid-way through the first PNG
        p = export(self.raw, to, "--shard-size", str(SHARD), check=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(victim, p.stderr)
        self.assertIn("delete it and rerun", p.stderr)
        # A whole tar, but with another shard's samples (a copy, a rename by hand): not adopted either.
        shutil.copyfile(os.path.join(to, "shard-000000.tar"), victim)
        p = export(self.raw, to, "--shard-size", str(SHARD), check=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(victim + " does not hold the samples this export puts there", p.stderr)
        self.assertIn("from 00000005.png expected, found 8 from 00000000.png", p.stderr)
        os.remove(victim)
        export(self.raw, to, "--shard-size", str(SHARD))
        self.check_export(self.raw, to)

    def test_foreign_shards_are_not_adopted(self):
        to = os.path.join(TMP, "wds-foreign")
        os.makedirs(to)
        with tarfile.open(os.path.join(to, "shard-000000.tar"), "w") as t:
            data = b"{}"
            info = tarfile.TarInfo("x.json")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        p = export(self.raw, to, check=False)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn("no webdataset.json", p.stderr)

    # Bad input: one clear message, the documented exit code, nothing written.
    def bad(self, args, code, expect, folder=None):
        folder = folder or TMP
        before = e2e.snapshot(folder)
        p = subprocess.run([BIN, "export", *args], capture_output=True, text=True, timeout=120)
        msg = p.stdout + p.stderr
        self.assertEqual(p.returncode, code, msg)
        for e in expect:
            self.assertIn(e, msg)
        self.assertNotIn("internal error", msg)
        self.assertEqual(e2e.snapshot(folder), before, "the failed export wrote files:\n" + msg)

    def test_bad_input(self):
        d = os.path.join(TMP, "bad")
        os.makedirs(d, exist_ok=True)
        blocker = os.path.join(d, "blocker")
        with open(blocker, "w") as f:
            f.write("a file, not a folder\n")
        empty = os.path.join(d, "not-a-dataset")
        os.makedirs(empty, exist_ok=True)
        to = os.path.join(d, "wds")
        cases = {
            "unwritable": ([self.raw, "--format", "webdataset", "--to", os.path.join(blocker, "wds")], 4,
                           ["cannot create the export folder", os.path.join(blocker, "wds"), "writable folder"]),
            "to_is_a_file": ([self.raw, "--format", "webdataset", "--to", blocker], 4,
                             ["cannot create the export folder", "not a folder"]),
            "missing_dataset": ([os.path.join(d, "nowhere"), "--format", "webdataset", "--to", to], 2,
                                ["nowhere", "does not exist"]),
            "not_a_dataset": ([empty, "--format", "webdataset", "--to", to], 4,
                              ["not-a-dataset is not an sdxl-batch output folder", "output:"]),
            "shard_size_0": ([self.raw, "--format", "webdataset", "--to", to, "--shard-size", "0"], 2,
                             ["--shard-size 0", "at least 1"]),
            "shard_size_negative": ([self.raw, "--format", "webdataset", "--to", to, "--shard-size", "-3"], 2,
                                    ["--shard-size -3", "at least 1"]),
            "no_to": ([self.raw, "--format", "webdataset"], 2, ["needs --to DIR"]),
            "bad_format": ([self.raw, "--format", "tfrecord", "--to", to], 2, ["--format", "tfrecord"]),
            "sheet_with_webdataset": ([self.raw, "--format", "webdataset", "--to", to, "--contact-sheet",
                                       os.path.join(d, "s.png")], 2, ["--contact-sheet is for --format png"]),
        }
        for name, (args, code, expect) in cases.items():
            with self.subTest(name):
                self.bad(args, code, expect, folder=d)
                self.assertFalse(os.path.exists(to))


if __name__ == "__main__":
    e2e.run_tests(sys.modules[__name__], "sdxlb-wds-")
