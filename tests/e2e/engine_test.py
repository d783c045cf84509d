"""End-to-end tests of the batch engine under mpirun on the CPU, with the built-in tiny demo model.

- the same 24-item job with 1, 2 and 3 workers gives bit-identical images and metadata;
- a worker killed with SIGKILL mid-job, and then the coordinator: rerunning completes each item exactly once,
  with images identical to an uninterrupted run;
- images_per_unet_call: 2 gives the same images with batches of 2 and 3, also where a fault makes an image
  depend on its place in its UNet call (as GPU kernels may);
- the decode overlapped with the next group's denoise gives the same images, each item stored once;
- an item whose latents turn NaN is stored as failed with the reason, the others are fine, exit code 5;
- h5py reads the dataset: counts, order, metadata.
Usage (ctest does this): engine_test.py <path to sdxl-batch>
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

import h5py
import numpy as np

import e2e_jobs as e2e

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import read_output  # noqa: E402

BIN = None
TMP = None
MODEL = None
PROMPTS = list(e2e.PROMPTS)


def write_job(folder, **overrides):
    return e2e.write_job(folder, MODEL, os.path.join(TMP, "embeddings"), prompts=PROMPTS, **overrides)


def run(job, ranks, env=None, check=True):
    return e2e.run(BIN, job, ranks, env=env, check=check)


read = e2e.read


class Engine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The uninterrupted reference run, with 2 workers.
        cls.ref_dir = os.path.join(TMP, "ref")
        run(write_job(cls.ref_dir), 3)
        cls.ref_images, cls.ref_meta = read(os.path.join(cls.ref_dir, "out"))

    def assert_same_dataset(self, out):
        images, meta = read(out)
        self.assertEqual(images.shape, (24, 64, 64, 3))
        np.testing.assert_array_equal(images, self.ref_images)
        for key in ("item_index", "prompt_index", "image_k", "seed", "prompt", "status", "steps", "guidance"):
            np.testing.assert_array_equal(meta[key], self.ref_meta[key], err_msg=key)

    def test_reference_contents(self):
        images, meta = self.ref_images, self.ref_meta
        self.assertEqual(len(meta["item_index"]), 24)
        np.testing.assert_array_equal(meta["item_index"], np.arange(24))
        np.testing.assert_array_equal(meta["prompt_index"], np.arange(24) // 3)
        np.testing.assert_array_equal(meta["seed"], 77 + np.arange(24))
        self.assertTrue((meta["status"] == 1).all())
        prompts = [p.decode() if isinstance(p, bytes) else p for p in meta["prompt"]]
        self.assertEqual(prompts[0], PROMPTS[0])
        self.assertEqual(prompts[23], PROMPTS[7])
        self.assertGreater(images.std(), 1.0)  # noise images, not blank
        self.assertFalse(np.array_equal(images[0], images[1]))  # different seeds differ

    def test_same_images_with_1_2_3_workers(self):
        for ranks in (2, 4):  # 1 and 3 workers (the reference has 2)
            d = os.path.join(TMP, f"w{ranks - 1}")
            # A cache of its own: the encode phase is split differently, and must give the same embeddings.
            run(write_job(d, embedding_cache=os.path.join(d, "emb")), ranks)
            self.assert_same_dataset(os.path.join(d, "out"))
        d = os.path.join(TMP, "single-process")
        run(write_job(d), 1)  # no mpirun: coordinator + a worker thread
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_weights_read_once_per_node_give_the_same_dataset(self):
        # Issue 18: 3 workers of one node under mpirun; with weights_broadcast on (auto's choice here) the
        # first worker reads the weight files and the others receive them; off: each reads its own.
        datasets = {}
        for mode in ("on", "off"):
            d = os.path.join(TMP, f"broadcast-{mode}")
            p = run(write_job(d, weights_broadcast=mode, embedding_cache=os.path.join(d, "emb")), 4)
            self.assert_same_dataset(os.path.join(d, "out"))
            shared = p.stderr.count("received from this node's first worker")
            self.assertEqual(shared, 2 if mode == "on" else 0, p.stderr)
            with h5py.File(os.path.join(d, "out", "index.h5"), "r") as f:
                datasets[mode] = [v.decode() if isinstance(v, bytes) else str(v) for v in f["model_id"][()]]
        self.assertEqual(datasets["on"], datasets["off"])  # the model identity every row records

    def test_same_images_with_another_batch_size(self):
        d = os.path.join(TMP, "b3")
        run(write_job(d, batch_size=3), 3)
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_two_images_per_unet_call(self):
        # images_per_unet_call: 2: the same images with batches of 2 (2 workers) and of 3 (3 workers: each
        # batch's second call padded with a copy of its last image, so images meet other companions and other
        # places in their call); and each image within rounding of one image per call (its CFG pair keeps
        # its own conditioning), which the job's identity tells apart.
        runs = {}
        warning = "batch_size 3 is not a multiple of the 2 images denoised together"
        for batch, ranks in ((2, 3), (3, 4)):
            d = os.path.join(TMP, f"per-call-b{batch}")
            p = run(write_job(d, images_per_unet_call=2, batch_size=batch), ranks)
            runs[batch] = read(os.path.join(d, "out"))
            # The padded calls cost time: the workers say so, and how to avoid it, on the CPU too.
            if batch == 3:
                self.assertIn(warning, p.stderr)
                self.assertIn("use a multiple of 2", p.stderr)
            else:
                self.assertNotIn("is not a multiple of", p.stderr)
        np.testing.assert_array_equal(runs[2][0], runs[3][0])
        images = runs[2][0].astype(np.int16)
        self.assertEqual(images.shape, (24, 64, 64, 3))
        diff = np.abs(images - self.ref_images.astype(np.int16))
        self.assertLessEqual(int(diff.max()), 2)
        self.assertLess(float(diff.mean()), 0.05)

    def test_place_in_the_unet_call_is_the_items(self):
        # A GPU's kernels may round an image's rows by its place in its UNet call (session 18, H200). The
        # fault place_skew shifts each image's latents by its place: the same images with batches of 2 and
        # 3 (worker/call_layout.h puts item i at place i mod 2 whatever its batch), and the skew is real:
        # the odd items, at place 1, differ from an unskewed run, the even ones do not.
        runs = {}
        for batch, ranks, skew in ((2, 3, True), (3, 4, True), (2, 2, False)):
            d = os.path.join(TMP, f"place-b{batch}-{'skew' if skew else 'plain'}")
            env = {"SDXLB_FAULT": "place_skew=200"} if skew else None
            run(write_job(d, images_per_unet_call=2, batch_size=batch), ranks, env=env)
            runs[(batch, skew)] = read(os.path.join(d, "out"))[0]
        np.testing.assert_array_equal(runs[(2, True)], runs[(3, True)])
        plain, skewed = runs[(2, False)], runs[(2, True)]
        np.testing.assert_array_equal(skewed[0::2], plain[0::2])
        for i in range(1, 24, 2):
            self.assertFalse(np.array_equal(skewed[i], plain[i]), f"item {i} at place 1 was not skewed")

    def test_same_images_with_every_placement(self):
        # The UNet's weights streamed from host memory, all of them or around the decode, compute the same images.
        for placement in ("sequential", "streamed", "model_offload"):
            d = os.path.join(TMP, "placement-" + placement)
            p = run(write_job(d, memory={"placement": placement, "decode": "sliced"}), 1)
            self.assertIn("placement: " + placement.replace("_", " "), p.stderr)
            self.assert_same_dataset(os.path.join(d, "out"))

    def test_embeddings_are_reused_across_jobs(self):
        global PROMPTS

        def cached_texts():
            n = 0
            for root, _, files in os.walk(os.path.join(TMP, "embeddings")):
                for name in files:
                    if name.endswith(".h5"):
                        with h5py.File(os.path.join(root, name), "r") as f:
                            n += len(f["text"])
            return n
        before = cached_texts()
        self.assertEqual(before, len(PROMPTS))  # the reference job's prompts, each stored once
        old = PROMPTS
        try:
            PROMPTS = old[:5] + ["a brand new prompt", "another new one"]
            run(write_job(os.path.join(TMP, "overlap"), images_per_prompt=1), 2)
        finally:
            PROMPTS = old
        self.assertEqual(cached_texts(), before + 2)  # only the two new texts were encoded

    def test_overwrite_replaces_another_job(self):
        # issue 12, case 1: `run --overwrite` segfaulted (exit 139) whenever segments/ held files, because our
        # std::filesystem calls were bound to the copy that libtorch.so exports.
        d = os.path.join(TMP, "overwrite")
        run(write_job(d, steps=2), 3)
        job = write_job(d, steps=3)
        p = run(job, 3, check=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)  # refused: the folder holds another job
        p = e2e.run(BIN, job, 3, check=False, extra_args=["--overwrite"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_other_weights_of_the_same_architecture_are_another_model(self):
        # issue 12, cases 2 and 3: the model identity hashed configs and headers only, so swapped weights of
        # the same architecture resumed silently into one dataset, and shared the embedding cache.
        other = os.path.join(TMP, "other-weights")
        subprocess.run([BIN, "make-demo-model", other, "--seed", "5"], check=True, capture_output=True)
        model = os.path.join(TMP, "swapped-model")
        shutil.copytree(MODEL, model)
        d = os.path.join(TMP, "swapped")
        cache = os.path.join(d, "emb")
        job = e2e.write_job(d, model, cache, prompts=PROMPTS)
        run(job, 2)
        unet = os.path.join("unet", "diffusion_pytorch_model.safetensors")
        shutil.copyfile(os.path.join(other, unet), os.path.join(model, unet))
        p = run(job, 2, check=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("holds another job", p.stderr)
        # Other text-encoder weights: the shared cache does not serve the first model's embeddings.
        te = os.path.join("text_encoder", "model.safetensors")
        shutil.copyfile(os.path.join(other, te), os.path.join(model, te))
        shards_before = sum(len(f) for _, _, f in os.walk(cache))
        run(e2e.write_job(os.path.join(TMP, "swapped-te"), model, cache, prompts=PROMPTS), 2)
        self.assertGreater(sum(len(f) for _, _, f in os.walk(cache)), shards_before)

    def test_tampered_segments_are_never_served(self):
        # issue 12, case 6: a segment whose item_index was altered (its checksums rewritten too) served item 2's
        # image and seed as item 0, and flipped image bytes went unnoticed. Now the first is moved aside and
        # rendered again; the second is a read error (Fletcher32) wherever pixels are read.
        d = os.path.join(TMP, "tampered")
        job = write_job(d)
        run(job, 3)
        seg_dir = os.path.join(d, "out", "segments")
        segs = sorted(n for n in os.listdir(seg_dir) if n.endswith(".h5"))
        victim = None
        for name in segs:
            with h5py.File(os.path.join(seg_dir, name), "r+") as f:
                idx = f["item_index"][()]
                if 0 not in idx:
                    idx[0] = 0  # claims to be item 0, with another item's seed and image
                    f["item_index"][...] = idx
                    victim = name
                    break
        p = run(job, 3)
        self.assertIn("does not belong to this job", p.stderr)
        self.assertTrue(os.path.exists(os.path.join(seg_dir, "corrupt", victim)))
        self.assertNotIn("duplicate", p.stdout + p.stderr)
        self.assert_same_dataset(os.path.join(d, "out"))
        # A flipped byte in the pixels of a segment on disk.
        name = sorted(n for n in os.listdir(seg_dir) if n.endswith(".h5"))[0]
        path = os.path.join(seg_dir, name)
        with h5py.File(path, "r") as f:
            info = f["images"].id.get_chunk_info(0)
        with open(path, "r+b") as f:
            f.seek(info.byte_offset + 100)
            b = f.read(1)
            f.seek(info.byte_offset + 100)
            f.write(bytes([b[0] ^ 0x40]))
        p = subprocess.run([BIN, "export", os.path.join(d, "out"), "--to", os.path.join(d, "png")],
                           capture_output=True, text=True, timeout=120)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("images", p.stderr)

    def test_stochastic_sampler_gives_the_same_images_on_any_shape_and_after_a_resume(self):
        # dpmpp_2m_sde draws noise at every step from each item's own generator: the images depend on the
        # item's seed only, not on the batch size, the number of workers or where a killed run stopped.
        ref = os.path.join(TMP, "sde-ref")
        run(write_job(ref, scheduler="dpmpp_2m_sde"), 3)
        want, meta = read(os.path.join(ref, "out"))
        self.assertTrue((meta["status"] == 1).all())
        self.assertFalse(np.array_equal(want, self.ref_images))  # another sampler, other images
        self.assertIn('"_sampler":"dpmpp_2m_sde"', meta["scheduler"][0].decode() if isinstance(
            meta["scheduler"][0], bytes) else meta["scheduler"][0])
        d = os.path.join(TMP, "sde-b3-w1")
        run(write_job(d, scheduler="dpmpp_2m_sde", batch_size=3), 2)
        np.testing.assert_array_equal(read(os.path.join(d, "out"))[0], want)
        d = os.path.join(TMP, "sde-kill")
        job = write_job(d, scheduler="dpmpp_2m_sde")
        p = run(job, 3, env={"SDXLB_FAULT": "kill_rank=2,kill_after=3"}, check=False)
        self.assertNotEqual(p.returncode, 0)
        run(job, 2)  # resume with another shape
        np.testing.assert_array_equal(read(os.path.join(d, "out"))[0], want)

    def test_killed_worker_then_resume(self):
        d = os.path.join(TMP, "kill-worker")
        job = write_job(d)
        p = run(job, 3, env={"SDXLB_FAULT": "kill_rank=2,kill_after=3"}, check=False)
        self.assertNotEqual(p.returncode, 0)
        segs = os.listdir(os.path.join(d, "out", "segments"))
        self.assertTrue(any(s.endswith(".h5") for s in segs), segs)
        run(job, 3)
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_killed_coordinator_then_resume(self):
        d = os.path.join(TMP, "kill-coordinator")
        job = write_job(d)
        p = run(job, 3, env={"SDXLB_FAULT": "kill_rank=0,kill_after=8"}, check=False)
        self.assertNotEqual(p.returncode, 0)
        run(job, 2)  # resume with a different shape
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_out_of_memory_falls_back_without_losing_items(self):
        d = os.path.join(TMP, "oom")
        # Per worker: the first failure stops concurrent denoising, the second splits the batch, and the
        # single-item retry succeeds; every item is stored, with the same pixels.
        p = run(write_job(d), 3, env={"SDXLB_FAULT": "oom_batches=2"})
        self.assertIn("denoising one image at a time from now on", p.stderr)
        self.assertIn("retrying them one at a time", p.stderr)
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_decode_overlapped_with_the_next_denoise(self):
        # memory.overlap_decode: on (what auto chooses on a GPU with the UNet resident): each group's decode
        # runs on a thread of its own while the next group denoises, across batches too (batches of 3 on 2
        # workers; a group is one image on the CPU). The same images and metadata, each item stored once;
        # NaN items still fail alone (exit 5).
        d = os.path.join(TMP, "overlap-decode")
        p = run(write_job(d, batch_size=3, memory={"overlap_decode": "on"}), 3,
                env={"SDXLB_FAULT": "nan_items=5:17"}, check=False)
        self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
        self.assertIn("overlaps the next group's denoise", p.stderr)
        images, meta = read(os.path.join(d, "out"))
        self.assertEqual(list(np.nonzero(meta["status"] != 1)[0]), [5, 17])
        ok = meta["status"] == 1
        np.testing.assert_array_equal(images[ok], self.ref_images[ok])
        for key in ("item_index", "seed", "prompt"):
            np.testing.assert_array_equal(meta[key], self.ref_meta[key], err_msg=key)
        self.assertEqual(sorted(e2e.segment_items(os.path.join(d, "out"))), list(range(24)))
        # PNG output: the decode thread encodes and stores its group too; the same pixels.
        d = os.path.join(TMP, "overlap-decode-png")
        run(write_job(d, image_format="png", memory={"overlap_decode": "on"}), 3)
        out = os.path.join(d, "out")
        with read_output.open_index(out) as f:
            for i in range(24):
                np.testing.assert_array_equal(read_output.load_image(out, i, f), self.ref_images[i], err_msg=str(i))
        # An out-of-memory error ends the overlap for the run; the group is rendered again whole.
        d = os.path.join(TMP, "overlap-decode-oom")
        p = run(write_job(d, memory={"overlap_decode": "on"}), 3, env={"SDXLB_FAULT": "oom_batches=1"})
        self.assertIn("no longer overlaps the next group's denoise", p.stderr)
        self.assert_same_dataset(os.path.join(d, "out"))

    def test_tiny_vae_is_part_of_the_identity(self):
        # bench/hostile_corpus.py: with decoder: tiny, index.h5's model_id differed from every row's (rank 0's
        # identity left the tiny VAE out), so a changed tiny VAE would have resumed into the same dataset.
        d = os.path.join(TMP, "tiny-identity")
        tiny = os.path.join(TMP, "tiny-vae-copy")
        shutil.copytree(os.path.join(MODEL, "tiny_vae"), tiny)
        job = write_job(d, decoder="tiny", tiny_vae=tiny, images_per_prompt=1)
        run(job, 1)
        with h5py.File(os.path.join(d, "out", "index.h5"), "r") as f:
            rows = {m.decode() if isinstance(m, bytes) else m for m in f["model_id"][()]}
            self.assertEqual(rows, {f.attrs["model_id"]})
        # Other weight values in the tiny VAE: the folder is refused as another job, with the reason.
        weights = [n for n in os.listdir(tiny) if n.endswith(".safetensors")][0]
        path = os.path.join(tiny, weights)
        with open(path, "r+b") as f:
            f.seek(-64, os.SEEK_END)
            block = bytearray(f.read(64))
            f.seek(-64, os.SEEK_END)
            f.write(bytes(b ^ 0x55 for b in block))
        p = run(job, 1, check=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("the model changed", p.stderr)

    def test_tokenizer_vocabulary_is_part_of_the_identity(self):
        # The text encoders' identity (the embedding cache's key) hashed tokenizer_config.json only: a changed
        # vocab.json kept the identity, so old embeddings and old images were served for the new tokenizer.
        model = os.path.join(TMP, "model-vocab")
        shutil.copytree(MODEL, model)
        d = os.path.join(TMP, "vocab-identity")
        job = e2e.write_job(d, model, os.path.join(d, "cache"), prompts=PROMPTS[:2], images_per_prompt=1)
        run(job, 1)
        path = os.path.join(model, "tokenizer", "vocab.json")
        with open(path) as f:
            vocab = json.load(f)
        a, b = "a</w>", "e</w>"  # swap two ids: a valid vocabulary that tokenizes differently
        vocab[a], vocab[b] = vocab[b], vocab[a]
        with open(path, "w") as f:
            json.dump(vocab, f)
        p = run(job, 1, check=False)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("the model changed", p.stderr)

    def test_nan_item_is_recorded_as_failed(self):
        d = os.path.join(TMP, "nan")
        p = run(write_job(d), 3, env={"SDXLB_FAULT": "nan_items=5:17"}, check=False)
        self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
        self.assertIn("2 failed", p.stdout)
        self.assertIn("failed item 5:", p.stdout)  # the summary lists the failures with their reasons
        images, meta = read(os.path.join(d, "out"))
        self.assertEqual(list(np.nonzero(meta["status"] != 1)[0]), [5, 17])
        err = meta["error"][5]
        err = err.decode() if isinstance(err, bytes) else err
        self.assertIn("NaN", err)
        # issue 12: the hint fits the dtype (this job is fp32; "try dtype bf16 or fp32" helped nobody).
        self.assertIn("numerical overflow in fp32", err)
        self.assertNotIn("try dtype", err)
        ok = meta["status"] == 1
        np.testing.assert_array_equal(images[ok], self.ref_images[ok])


if __name__ == "__main__":
    e2e.run_tests(sys.modules[__name__], "sdxlb-e2e-")
