#!/usr/bin/env python3
"""The hostile-user corpus of issue #12: the CLI tried as a hostile or careless user would, on the CPU, with the
built-in tiny demo model, and every case classified automatically as good / weak / bad.

  bad  = a crash (killed by a signal, 128+signal, "Segmentation", an uncaught exception text: "internal error:",
         c10::Error, terminate, Traceback), a hang (no exit within the case's timeout), memory beyond the
         watchdog's limit, processes left running, exit 0 where the input must be refused, or a completed
         dataset with missing, duplicated or mixed items (checked with h5py on out/index.h5, the segments and
         `sdxl-batch inspect`);
  weak = a refusal with a plausible code but a message that misses the file / key / line / fix a user needs,
         a non-zero exit code of the wrong kind (common/exit_codes.h), files left behind by a refusal, a raw
         HDF5 error stack, a huge message, or a valid input refused;
  good = otherwise.

Expectations are what a careful user would want, not what the tool prints today; where more than one exit
code is plausible, any of them is accepted but the message must still name the file / key.

Usage (with the venv's Python: h5py and numpy):
  ~/.local/share/sdxlb/venv/bin/python bench/hostile_corpus.py BIN OUT_PREFIX [--only SUBSTR] [--jobs N] [--keep]
Writes OUT_PREFIX.json (every case) and OUT_PREFIX.md (counts by category, every non-good case), prints one
line per case and a summary. Exit status: 0 when no case is bad, 1 otherwise.
The binary is copied into the scratch folder first, so a rebuild during the run does not mix two binaries.
Timing-sensitive cases (concurrent runs, kill -9, signals, a hung worker) run alone after the others.
"""
import argparse
import collections
import concurrent.futures
import datetime
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import e2e_jobs as e2e  # noqa: E402  (rank_pids)

GOOD, WEAK, BAD = "good", "weak", "bad"
SEVERITY = {GOOD: 0, WEAK: 1, BAD: 2}
MPIRUN = ["mpirun", "-np"]
MPI_OPTS = ["--oversubscribe", "--mca", "btl", "self,vader"]
MEM_LIMIT_GB = 6.0  # a case whose processes together exceed this RSS is killed and classified bad
# Texts that mean a crash or an uncaught exception whatever the exit code.
CRASH_PATTERNS = ["Segmentation fault", "segmentation fault", "internal error:", "c10::Error", "terminate called",
                  "Traceback (most recent call last)", "std::bad_alloc", "AddressSanitizer", "core dumped",
                  "signal 11", "signal 6 ", "(Aborted)", "what():", "double free", "free(): ", "stack smashing",
                  "Assertion `", "munmap_chunk", "corrupted size"]
PROMPTS48 = [f"prompt number {i}" for i in range(16)]  # x3 images = 48 items (the process cases)


class SetupFail(Exception):
    """A step before the case's own command failed (a good run that should have worked, etc.)."""


# ----------------------------------------------------------------------------------------------------------
# running a command: timeout, memory watchdog, leftover processes


class Res:
    def __init__(self, cmd):
        self.cmd = cmd
        self.rc = None
        self.secs = 0.0
        self.out = ""
        self.err = ""
        self.timed_out = False
        self.mem_killed = False
        self.peak_gb = 0.0
        self.leftover = 0
        self.text_bytes = 0

    @property
    def text(self):
        return self.err + "\n" + self.out


def proc_table():
    """{pid: (ppid, session)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            table[int(entry)] = (int(rest[1]), int(rest[3]))
        except (OSError, ValueError, IndexError):
            pass
    return table


def tree(pid, table=None):
    """pid, its descendants, and every process of its session (it was started in a new session)."""
    table = table or proc_table()
    children = collections.defaultdict(list)
    for p, (pp, _) in table.items():
        children[pp].append(p)
    found, stack = {pid}, [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in found:
                found.add(c)
                stack.append(c)
    found.update(p for p, (_, sid) in table.items() if sid == pid)
    return found


def rss_gb(pids):
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total / 2 ** 30


def kill_session(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for p in tree(pid):
        if p != os.getpid():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


class Proc:
    """A started command (own session), watched for memory; wait() applies the timeout."""

    def __init__(self, ctx, cmd, cwd, env, log):
        self.res = Res(cmd)
        self.log = log
        self.fo = open(log + ".out", "wb")
        self.fe = open(log + ".err", "wb")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.fo, stderr=self.fe, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        self.pid = self.p.pid

    def wait(self, timeout):
        r = self.res
        last_poll = 0.0
        while True:
            try:
                r.rc = self.p.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            el = time.monotonic() - self.t0
            if el - last_poll >= 0.5:
                last_poll = el
                gb = rss_gb(tree(self.pid))
                r.peak_gb = max(r.peak_gb, gb)
                if gb > MEM_LIMIT_GB:
                    r.mem_killed = True
            if r.mem_killed or el > timeout:
                r.timed_out = not r.mem_killed
                kill_session(self.pid)
                r.rc = self.p.wait()
                break
        r.secs = time.monotonic() - self.t0
        # Processes of this session still alive after the launcher exited (orphaned ranks)?
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            left = [p for p, (_, sid) in proc_table().items() if sid == self.pid and p != self.pid]
            if not left:
                break
            time.sleep(0.25)
        else:
            r.leftover = len(left)
            kill_session(self.pid)
        self.fo.close()
        self.fe.close()
        r.out, n1 = read_capped(self.log + ".out")
        r.err, n2 = read_capped(self.log + ".err")
        r.text_bytes = n1 + n2
        return r


def read_capped(path, cap=2 * 2 ** 20):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read(cap)
    return data.decode("utf-8", "replace"), size


# ----------------------------------------------------------------------------------------------------------
# files and folders


def write(path, data):
    """Writes bytes or text, replacing (not writing through) an existing file or hard link."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def snapshot(folder):
    """Every path under folder with size and mtime (folders by name only: probing one for writing touches its
    mtime but writes nothing)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else "other"
    return out


def diff_snapshots(before, after, root):
    added = sorted(set(after) - set(before))
    removed = sorted(p for p in set(before) - set(after) if os.path.basename(p) != "lock")  # a stale lock taken over
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    parts = []
    rel = lambda ps: ", ".join(os.path.relpath(p, root) for p in ps[:4]) + (" ..." if len(ps) > 4 else "")
    if added:
        parts.append(f"left {len(added)} new path(s): {rel(added)}")
    if removed:
        parts.append(f"removed {len(removed)}: {rel(removed)}")
    if changed:
        parts.append(f"modified {len(changed)}: {rel(changed)}")
    return "; ".join(parts)


def link_copy(src, dst):
    """A copy of a model folder whose files are hard links (mutations must go through write())."""
    shutil.copytree(src, dst, copy_function=os.link, symlinks=True)


def st_read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def st_write(path, header, data):
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    write(path, struct.pack("<Q", len(hb)) + hb + data)


def tensors(header):
    return [k for k in header if k != "__metadata__"]


def json_edit(path, fn):
    with open(path) as f:
        cfg = json.load(f)
    cfg = fn(cfg) or cfg
    write(path, json.dumps(cfg, indent=1))


def set_key(key, value):
    def fn(cfg):
        cfg[key] = value
    return fn


U = "unet/diffusion_pytorch_model.safetensors"
VAE_W = "vae/diffusion_pytorch_model.safetensors"
TE = "text_encoder/model.safetensors"
TE2 = "text_encoder_2/model.safetensors"


# ----------------------------------------------------------------------------------------------------------
# the job file

KEYS = ["model", "prompts", "images_per_prompt", "steps", "guidance", "width", "height", "seed", "dtype", "device",
        "batch_size", "output", "segment_items"]
LINE = {k: i + 1 for i, k in enumerate(KEYS)}  # line numbers of the default job; extra lines start at 14
DEFAULTS = {"prompts": '["a red fox", "a blue bird"]', "images_per_prompt": "2", "steps": "2", "guidance": "5.0",
            "width": "64", "height": "64", "seed": "7", "dtype": "fp32", "device": "cpu", "batch_size": "2",
            "output": "out", "segment_items": "2"}
N_DEFAULT = 4
SEEDS_DEFAULT = [7, 8, 9, 10]


def J(model="base", pf=None, drop=(), extra="", **settings):
    """A job file builder: the default 4-item job with settings replaced in place (raw YAML text; None writes
    `key:` with no value), keys dropped, lines appended, and `pf` a prompts_file line instead of prompts."""
    def build(ctx, d):
        lines = []
        for k in KEYS:
            if k in drop:
                continue
            if k == "model":
                v = settings.get("model_raw", ctx.model_path(model, d))
            elif k == "prompts" and pf is not None:
                lines.append(f"prompts_file: {pf}")
                continue
            else:
                v = settings.get(k, DEFAULTS[k])
            lines.append(f"{k}:" if v is None else f"{k}: {v}")
        text = "\n".join(lines) + "\n" + extra
        return text.replace("{D}", d)
    return build


def job48(ctx, d, **kw):
    """Writes <d>/prompts.txt (16 prompts) and <d>/job.yaml for the 48-item process cases."""
    write(os.path.join(d, "prompts.txt"), "\n".join(PROMPTS48) + "\n")
    settings = dict(model=ctx.models["base"], prompts_file="prompts.txt", images_per_prompt=3, seed=77, steps=3,
                    guidance=5.0, width=64, height=64, batch_size=2, dtype="fp32", device="cpu", output="out",
                    segment_items=2, segment_seconds=60)
    settings.update(kw)
    write(os.path.join(d, "job.yaml"), "".join(f"{k}: {v}\n" for k, v in settings.items()))
    return os.path.join(d, "job.yaml")


# ----------------------------------------------------------------------------------------------------------
# the cases


class Case:
    def __init__(self, name, cat, job=None, files=None, setup=None, args=None, mpi=0, env=None, codes=(2,),
                 zero=BAD, expect=(), expect_ok=(), nowrite=True, verify=None, post=None, timeout=60, slow=None,
                 serial=False, custom=None, cwd=None, note=""):
        self.name, self.cat, self.job, self.files, self.setup = name, cat, job, files or {}, setup
        self.args, self.mpi, self.env, self.codes, self.zero = args, mpi, env or {}, tuple(codes), zero
        self.expect, self.expect_ok, self.nowrite, self.verify = list(expect or ()), list(expect_ok or ()), nowrite, verify
        self.post, self.timeout, self.slow, self.serial, self.custom = post, timeout, slow, serial, custom
        self.cwd, self.note = cwd, note


CASES = []


def case(name, cat, **kw):
    assert name not in {c.name for c in CASES}, name
    CASES.append(Case(name, cat, **kw))


def msg_missing(text, expect, d):
    """The expected pieces (str: substring, tuple: any of, re.Pattern) that text lacks, case-insensitively."""
    low = text.lower()
    missing = []
    for e in expect:
        if callable(e) and not isinstance(e, re.Pattern):
            e = e(d)
        if isinstance(e, re.Pattern):
            if not e.search(text):
                missing.append(e.pattern)
        elif isinstance(e, tuple):
            if not any(x.lower() in low for x in e):
                missing.append(" | ".join(e))
        elif e.lower() not in low:
            missing.append(e)
    return missing


def basic_issues(c, r, d, codes=None, expect=None, zero=None, what=""):
    """(class, reason) pairs for one command's result."""
    codes = c.codes if codes is None else codes
    expect = c.expect if expect is None else expect
    zero = c.zero if zero is None else zero
    issues = []
    w = (what + ": ") if what else ""
    text = r.text
    if r.timed_out:
        issues.append((BAD, f"{w}hang: no exit after {r.secs:.0f} s"))
    if r.mem_killed:
        issues.append((BAD, f"{w}memory: its processes passed {MEM_LIMIT_GB:.0f} GB RSS (killed)"))
    if r.leftover:
        issues.append((BAD, f"{w}left {r.leftover} process(es) running after the launcher exited"))
    if r.timed_out or r.mem_killed:
        return issues
    if r.rc < 0 or (r.rc >= 128 and r.rc not in codes):
        issues.append((BAD, f"{w}crash: exit {r.rc} (killed by a signal)"))
    for pat in CRASH_PATTERNS:
        if pat in text:
            line = next((ln for ln in text.splitlines() if pat in ln), pat)
            issues.append((BAD, f"{w}crash text: {line.strip()[:160]}"))
            break
    if r.rc == 1 and 1 not in codes:
        issues.append((BAD, f"{w}exit 1 (internal error): {first_line(text)}"))
    elif r.rc == 0 and 0 not in codes:
        issues.append((zero, f"{w}exit 0, but this must be refused (expected {codes_str(codes)})"))
    elif r.rc not in codes and r.rc not in (0, 1) and not (r.rc < 0 or r.rc >= 128):
        if codes == (0,):
            issues.append((WEAK, f"{w}refused a valid input with exit {r.rc}: {first_line(text)}"))
        else:
            issues.append((WEAK, f"{w}exit {r.rc}, expected {codes_str(codes)}: {first_line(text)}"))
    if r.rc not in (0,) and expect:
        miss = msg_missing(text, expect, d)
        if miss:
            issues.append((WEAK, f"{w}message lacks {miss}: {first_line(text)}"))
    if r.rc == 0 and c.expect_ok:
        miss = msg_missing(text, c.expect_ok, d)
        if miss:
            issues.append((WEAK, f"{w}output lacks {miss}"))
    if "HDF5-DIAG" in text:
        issues.append((WEAK, f"{w}a raw HDF5 error stack is printed"))
    if r.text_bytes > 64 * 1024:
        issues.append((WEAK, f"{w}the output is {r.text_bytes / 1024:.0f} KiB long"))
    if c.slow and r.secs > c.slow:
        issues.append((WEAK, f"{w}took {r.secs:.1f} s (more than {c.slow} s)"))
    return issues


def codes_str(codes):
    return "/".join(str(x) for x in codes)


def first_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower() or "refused" in ln.lower()]
    return ((errs or lines or [""])[0])[:220]


# ----------------------------------------------------------------------------------------------------------
# checking a dataset


def verify_dataset(ctx, out, n, seeds=None, steps=None, prompts=None, ref=None):
    """Problems of a completed dataset: every item present exactly once with status 1, item order, seeds,
    one model identity, images that are not zeros (or equal to `ref`, an array), inspect agreeing."""
    probs = []
    idx = os.path.join(out, "index.h5")
    if not os.path.exists(idx):
        return ["no index.h5 after a run that exited 0"]
    try:
        with h5py.File(idx, "r") as f:
            a = f.attrs
            total, ok = int(a["total_items"]), int(a["items_ok"])
            missing, dups = int(a["items_missing"]), int(a["duplicates"])
            if total != n:
                probs.append(f"total_items {total}, expected {n}")
            if ok != n or missing or dups:
                probs.append(f"index: {ok} ok, {missing} missing, {dups} duplicates of {n}")
            status = f["status"][()]
            if len(status) != n or (status != 1).any():
                bad = [i for i, s in enumerate(status) if s != 1][:8]
                probs.append(f"items not ok: {bad}")
            ii = f["item_index"][()]
            if len(ii) != n or (ii != np.arange(n)).any():
                probs.append("item_index is not 0..N-1")
            mids = set(f["model_id"].asstr()[()])
            attr_mid = a["model_id"].decode() if isinstance(a["model_id"], bytes) else str(a["model_id"])
            if len(mids) != 1:
                probs.append(f"mixed model identities in one dataset: {len(mids)} distinct")
            elif mids != {attr_mid}:
                probs.append(f"WEAK: the rows' model_id {sorted(mids)[0]} differs from index.h5's model_id attribute {attr_mid}")
            if seeds is not None and [int(s) for s in f["seed"][()]] != [int(s) for s in seeds]:
                probs.append("seeds differ from seed + i (mod 2^64)")
            if steps is not None and (f["steps"][()] != steps).any():
                probs.append(f"rows with steps other than {steps} (items of another job served)")
            if prompts is not None and list(f["prompt"].asstr()[()]) != list(prompts):
                got = list(f["prompt"].asstr()[()])
                probs.append(f"prompts {got[:3]!r}..., expected {list(prompts)[:3]!r}...")
            if "images" in f:
                images = f["images"][()]
                zeros = [i for i in range(len(images)) if not images[i].any()]
                if zeros:
                    probs.append(f"items whose image reads as zeros: {zeros[:8]}")
                if ref is not None and (images.shape != ref.shape or not np.array_equal(images, ref)):
                    diff = [i for i in range(min(len(images), len(ref))) if not np.array_equal(images[i], ref[i])]
                    probs.append(f"images differ from a clean run of the same job/model: items {diff[:8]}")
    except Exception as e:  # an unreadable index is a broken dataset
        return probs + [f"index.h5 unreadable: {type(e).__name__}: {str(e)[:160]}"]
    # Exactly once across the segments (OK rows).
    counts = collections.Counter()
    for s in sorted(glob.glob(os.path.join(out, "segments", "*.h5"))):
        try:
            with h5py.File(s, "r") as f:
                for i, st in zip(f["item_index"][()], f["status"][()]):
                    if st == 1:
                        counts[int(i)] += 1
        except Exception as e:
            probs.append(f"segment {os.path.basename(s)} unreadable: {str(e)[:100]}")
    dup = sorted(i for i, k in counts.items() if k > 1)
    miss = sorted(set(range(n)) - set(counts))
    extra = sorted(set(counts) - set(range(n)))
    if dup:
        probs.append(f"items stored OK in more than one segment: {dup[:8]}")
    if miss:
        probs.append(f"items in no segment: {miss[:8]}")
    if extra:
        probs.append(f"segment rows of items not in the job: {extra[:8]}")
    if os.path.exists(os.path.join(out, "lock")):
        probs.append("the lock file is left after the run")
    ins = subprocess.run([ctx.bin, "inspect", out], capture_output=True, text=True, errors="replace", timeout=60,
                         env=ctx.env())
    itext = (ins.stdout + ins.stderr).replace(out, "<out>")
    if ins.returncode != 0 or "duplicate" in itext.lower() or f"{n} ok" not in itext:
        probs.append(f"inspect: exit {ins.returncode}: {first_line(ins.stdout + ins.stderr)}")
    return probs


def dsi(p, prefix="dataset: "):
    """An issue from a verify_dataset problem (bad, unless marked WEAK)."""
    return (WEAK, prefix + p[6:]) if p.startswith("WEAK: ") else (BAD, prefix + p)


def read_images(out):
    with h5py.File(os.path.join(out, "index.h5"), "r") as f:
        return f["images"][()]


def seg_names(out):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "segments", "*.h5")))


# ----------------------------------------------------------------------------------------------------------
# context: scratch folder, binary, models


class Ctx:
    def __init__(self, binary, root):
        self.root = root
        self.bin = os.path.join(root, "bin", "sdxl-batch")
        os.makedirs(os.path.dirname(self.bin))
        shutil.copy2(binary, self.bin)
        self.models = {}
        self.mounts = []
        self.nlog = 0
        self.mpi_lock = threading.Lock()
        self.last_mpi = 0.0
        self.lock = threading.Lock()
        self.refs = {}
        self.ref_locks = collections.defaultdict(threading.Lock)

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("SDXLB_")}
        e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
        e.update(extra or {})
        return e

    def model_path(self, model, d):
        if model.startswith("/"):
            return model
        if model.startswith("local:"):
            return os.path.join(d, model[6:])
        return self.models[model]

    def cmd(self, args, mpi=0):
        return (MPIRUN + [str(mpi)] + MPI_OPTS if mpi else []) + [self.bin] + list(args)

    def start(self, args, d, mpi=0, env=None, log="x"):
        with self.lock:
            self.nlog += 1
            n = self.nlog
        if not mpi:
            return Proc(self, self.cmd(args, mpi), d, self.env(env), os.path.join(self.root, "logs", f"{log}.{n}"))
        # Two mpiruns that start at the same moment race on Open MPI's session folder (/tmp/ompi.<host>.<uid>:
        # "A call to mkdir was unable to create the desired directory"): launches are spaced by 1.5 s.
        with self.mpi_lock:
            wait = self.last_mpi + 1.5 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last_mpi = time.monotonic()
            return Proc(self, self.cmd(args, mpi), d, self.env(env), os.path.join(self.root, "logs", f"{log}.{n}"))

    def run(self, args, d, mpi=0, env=None, timeout=120, log="x"):
        return self.start(args, d, mpi, env, log).wait(timeout)

    def must(self, args, d, mpi=0, env=None, timeout=120, log="setup", codes=(0,)):
        r = self.run(args, d, mpi, env, timeout, log)
        if r.rc not in codes or r.timed_out:
            raise SetupFail(f"`{' '.join(args)}` exited {r.rc}{' (timeout)' if r.timed_out else ''}: "
                            f"{first_line(r.text)}")
        return r

    def make_model(self, name, *extra):
        path = os.path.join(self.root, "models", name)
        p = subprocess.run([self.bin, "make-demo-model", path, *extra], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"make-demo-model {extra} failed: {p.stderr}")
        self.models[name] = path
        return path

    def variant(self, name, fn, src="base"):
        path = os.path.join(self.root, "models", name)
        link_copy(self.models[src], path)
        fn(path)
        self.models[name] = path

    def reference(self, key, build):
        """A clean run's images, computed once: build(folder) -> out folder."""
        with self.ref_locks[key]:
            if key not in self.refs:
                d = os.path.join(self.root, "refs", key)
                os.makedirs(d, exist_ok=True)
                self.refs[key] = read_images(build(d))
            return self.refs[key]

    def mount_tmpfs(self, path, opts):
        os.makedirs(path, exist_ok=True)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
        if p.returncode != 0:
            return False
        with self.lock:
            self.mounts.append(path)
        return True

    def umount(self, path):
        subprocess.run(["umount", "-l", path], capture_output=True)
        with self.lock:
            if path in self.mounts:
                self.mounts.remove(path)


# ----------------------------------------------------------------------------------------------------------
# the standard flow of a case


def standard(ctx, c, d):
    for fname, data in c.files.items():
        write(os.path.join(d, fname), data(ctx, d) if callable(data) else data)
    if c.job is not None:
        write(os.path.join(d, "job.yaml"), c.job(ctx, d) if callable(c.job) else c.job)
    if c.setup:
        c.setup(ctx, d)
    args = c.args(ctx, d) if callable(c.args) else (c.args if c.args is not None else ["run", "--quiet", "job.yaml"])
    cwd = c.cwd(ctx, d) if callable(c.cwd) else d
    before = snapshot(d)
    r = ctx.run(args, cwd, c.mpi, c.env, c.timeout, log=c.name)
    issues = basic_issues(c, r, d)
    if r.rc in (2, 3, 4) and c.nowrite and not r.timed_out:
        change = diff_snapshots(before, snapshot(d), d)
        if change:
            issues.append((WEAK, "the refusal changed files: " + change))
    if r.rc == 0 and 0 in c.codes and c.verify is not None and not r.timed_out:
        v = c.verify if isinstance(c.verify, dict) else {"n": c.verify}
        v = dict(v)
        out = os.path.join(d, v.pop("out", "out"))
        issues += [dsi(p) for p in verify_dataset(ctx, out, **v)]
    if c.post:
        issues += c.post(ctx, d, r) or []
    return r, issues, ctx.cmd(args, c.mpi)


def run_case(ctx, c):
    d = os.path.join(ctx.root, "cases", c.name)
    os.makedirs(d)
    t0 = time.monotonic()
    r, cmd = None, []
    try:
        if c.custom:
            r, issues, cmd = c.custom(ctx, c, d)
        else:
            r, issues, cmd = standard(ctx, c, d)
    except SetupFail as e:
        issues = [(BAD, f"setup step failed: {e}")]
    except Exception as e:
        issues = [(BAD, f"HARNESS ERROR (a bug of this script): {type(e).__name__}: {e}")]
        traceback.print_exc()
    cls = max((i[0] for i in issues), key=SEVERITY.get, default=GOOD)
    reason = "; ".join(dict.fromkeys(i[1] for i in issues if SEVERITY[i[0]] >= SEVERITY[cls] and cls != GOOD))
    others = [i[1] for i in issues if SEVERITY[i[0]] < SEVERITY[cls] and i[0] != GOOD]
    if others:
        reason += " (also: " + "; ".join(others) + ")"
    command = cmd if isinstance(cmd, str) else shlex.join(cmd)
    command = command.replace(ctx.root, "$T")
    return dict(name=c.name, category=c.cat, command=command, rc=None if r is None else r.rc,
                seconds=round(time.monotonic() - t0, 2), cls=cls, reason=reason.replace(ctx.root, "$T"),
                stderr=("" if r is None else r.err[:400]).replace(ctx.root, "$T"))


# ----------------------------------------------------------------------------------------------------------
# the corpus: job-file YAML

D = J()  # the default job


def yaml_cases():
    case("yaml_unclosed_bracket", "job-yaml", job=J(prompts='["a red fox", "a blue bird"'),
         expect=[re.compile(r"job\.yaml:\d+"), ("yaml", "syntax")])
    case("yaml_tab_indented_nested", "job-yaml", job=J(extra="memory:\n\tplacement: auto\n"),
         expect=["job.yaml:15", "tab"])
    case("yaml_tab_indented_top_level", "job-yaml", job=J(steps="2\n\tguidance: 3"),
         expect=[re.compile(r"job\.yaml:[45]"), "tab"])
    case("yaml_tab_after_key", "job-yaml", job=J(steps="\t2"), codes=(0, 2), zero=WEAK, verify=N_DEFAULT,
         expect=["job.yaml:4"], note="a tab after the colon is legal YAML")
    case("yaml_deep_flow_nesting", "job-yaml", job=J(prompts="[" * 100000 + "]" * 100000),
         expect=["job.yaml:2", ("too deep", "nesting")], slow=20)
    case("yaml_deep_block_nesting", "job-yaml",
         job=J(extra="memory:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(1500)) + "  " * 1501 + "x\n"),
         expect=["job.yaml:", ("too deep", "nesting", "memory")], slow=20)
    case("yaml_deep_map_nesting_flow", "job-yaml", job=J(extra="memory: " + "{a: " * 50000 + "1" + "}" * 50000 + "\n"),
         expect=["job.yaml:14", ("too deep", "nesting")], slow=20)
    bomb = "".join(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9 if i else ['"lol"'] * 9) + "]\n"
                   for i in range(9))
    case("yaml_alias_bomb", "job-yaml",
         job=lambda ctx, d: J(drop=("prompts",))(ctx, d) + bomb + "prompts: *i\n",
         expect=["job.yaml:", ("prompts", "alias", "unknown key")], slow=20)
    case("yaml_duplicate_key", "job-yaml", job=J(extra="steps: 3\n"), expect=["job.yaml:14", "steps", "duplicate"])
    case("yaml_duplicate_nested_key", "job-yaml", job=J(extra="memory:\n  decode: full\n  decode: tiled\n"),
         expect=["job.yaml:16", "decode", "duplicate"])
    case("yaml_unknown_key", "job-yaml", job=J(extra="stpes: 3\n"), expect=["job.yaml:14", "stpes", 'did you mean "steps"'])
    case("yaml_unknown_key_capitalised", "job-yaml", job=J(extra="Guidance: 7\n"), expect=["job.yaml:14", "Guidance", "guidance"])
    case("yaml_unknown_nested_key", "job-yaml", job=J(extra="memory:\n  placment: auto\n"),
         expect=["job.yaml:15", "placment", "placement"])
    case("yaml_string_for_int", "job-yaml", job=J(steps="two"), expect=["job.yaml:4", "steps"])
    case("yaml_quoted_number", "job-yaml", job=J(steps='"2"'), expect=["job.yaml:4", "steps", "quote"])
    case("yaml_float_for_int", "job-yaml", job=J(steps="2.5"), expect=["job.yaml:4", "steps"])
    case("yaml_list_for_scalar", "job-yaml", job=J(steps="[2, 3]"), expect=["job.yaml:4", "steps"])
    case("yaml_map_for_path", "job-yaml", job=J(model_raw="{path: /models/x}"), expect=["job.yaml:1", "model"])
    case("yaml_bool_for_string", "job-yaml", job=J(dtype="yes"), expect=["job.yaml:9", "dtype"])
    case("yaml_null_model", "job-yaml", job=J(model_raw=None), expect=["job.yaml:1", "model"])
    case("yaml_null_prompts", "job-yaml", job=J(prompts="~"), expect=["job.yaml:2", "prompts"])
    case("yaml_null_output", "job-yaml", job=J(output="null"), expect=["job.yaml:12", "output"])
    case("yaml_null_optional_is_default", "job-yaml", job=J(guidance=None), codes=(0,), verify=N_DEFAULT,
         timeout=120)
    case("yaml_missing_required", "job-yaml", job=J(drop=("output",)), expect=["output"])
    case("yaml_top_level_list", "job-yaml", job="- model: x\n- output: y\n", expect=["job.yaml", ("map", "mapping")])
    case("yaml_top_level_scalar", "job-yaml", job="render some foxes please\n", expect=["job.yaml", ("map", "mapping")])
    case("yaml_empty_file", "job-yaml", job="", expect=["job.yaml", ("empty", "model")])
    case("yaml_only_comments", "job-yaml", job="# model: x\n# output: y\n", expect=["job.yaml", ("empty", "model")])
    case("yaml_multi_document", "job-yaml", job=lambda ctx, d: J()(ctx, d) + "---\nsteps: 9\n", zero=WEAK,
         expect=["job.yaml", ("document", "---")])
    case("yaml_utf8_bom", "job-yaml", job=lambda ctx, d: "\ufeff" + J()(ctx, d), codes=(0,), verify=N_DEFAULT)
    case("yaml_crlf_line_ends", "job-yaml", job=lambda ctx, d: J()(ctx, d).replace("\n", "\r\n"), codes=(0,),
         verify=dict(n=N_DEFAULT, prompts=["a red fox", "a red fox", "a blue bird", "a blue bird"]))
    # YAML 1.2 allows UTF-16 with a byte-order mark: running it, or refusing it with the iconv fix, are both fine.
    case("yaml_utf16_job_file", "job-yaml", job=lambda ctx, d: J()(ctx, d).encode("utf-16"), codes=(0, 2),
         verify=N_DEFAULT, expect=["job.yaml", "UTF-16", ("iconv", "UTF-8")])
    # YAML 1.2 detects UTF-16 without a BOM too (an ASCII first character): the same two answers are fine.
    case("yaml_utf16_no_bom_job_file", "job-yaml", job=lambda ctx, d: J()(ctx, d).encode("utf-16-le"), codes=(0, 2),
         verify=N_DEFAULT, expect=["job.yaml", "UTF-16", ("iconv", "UTF-8")])
    case("yaml_latin1_in_prompt", "job-yaml", job=lambda ctx, d: J(prompts='["caf\xe9 au lait"]')(ctx, d).encode("latin-1"),
         expect=["job.yaml:2", "UTF-8"])
    case("yaml_raw_nul_byte", "job-yaml", job=lambda ctx, d: J(prompts='["a red\0fox"]')(ctx, d).encode(),
         expect=["job.yaml:2", ("NUL", "\\0", "U+0000")])
    case("yaml_escaped_nul", "job-yaml", job=J(prompts='["a red\\0fox"]'), expect=["job.yaml:2", ("NUL", "\\0", "U+0000")])
    case("yaml_directory_as_job", "job-yaml", setup=lambda ctx, d: os.makedirs(os.path.join(d, "job.yaml")),
         expect=["job.yaml"])
    case("yaml_binary_job_file", "job-yaml", setup=lambda ctx, d: shutil.copy(
        os.path.join(ctx.models["base"], VAE_W), os.path.join(d, "job.yaml")), expect=["job.yaml"], slow=20)
    case("yaml_job_is_dev_zero", "job-yaml", args=["run", "/dev/zero"], expect=["/dev/zero"], timeout=30)
    case("yaml_job_is_fifo", "job-yaml", setup=lambda ctx, d: os.mkfifo(os.path.join(d, "job.yaml")),
         expect=["job.yaml"], timeout=30)
    case("yaml_job_file_missing", "job-yaml", args=["run", "nope.yaml"], expect=["nope.yaml"])
    case("yaml_huge_number", "job-yaml", job=J(steps="1e400"), expect=["job.yaml:4", "steps"])
    case("yaml_huge_integer", "job-yaml", job=J(images_per_prompt="999999999999999999999999999999"),
         expect=["job.yaml:3", "images_per_prompt"])
    case("yaml_key_without_space", "job-yaml", job=J(steps="2\nguidance:5"), expect=[re.compile(r"job\.yaml:[45]|line [45] has no space after")])
    case("yaml_40mb_comment", "job-yaml", job=lambda ctx, d: J()(ctx, d) + "# " + "x" * (40 << 20) + "\n",
         codes=(0, 2), verify=N_DEFAULT, expect=["job.yaml"], timeout=90, slow=30)
    case("yaml_typo_under_mpirun", "job-yaml", job=J(extra="stpes: 3\n"), mpi=3,
         expect=["job.yaml:14", "stpes"], timeout=90)


# ----------------------------------------------------------------------------------------------------------
# settings ranges


def settings_cases():
    def bad(name, expect, **kw):
        case("set_" + name, "settings", job=J(**kw), expect=expect)
    bad("steps_zero", ["job.yaml:4", "steps"], steps="0")
    bad("steps_negative", ["job.yaml:4", "steps"], steps="-1")
    bad("steps_1001", ["job.yaml:4", "steps", "1000"], steps="1001")
    bad("steps_1e9", ["job.yaml:4", "steps"], steps="1000000000")
    bad("steps_2pow64", ["job.yaml:4", "steps"], steps="18446744073709551616")
    bad("guidance_1e39", ["job.yaml:5", "guidance", "100"], guidance="1e39")
    bad("guidance_nan", ["job.yaml:5", "guidance"], guidance=".nan")
    bad("guidance_inf", ["job.yaml:5", "guidance"], guidance=".inf")
    bad("guidance_negative", ["job.yaml:5", "guidance"], guidance="-3")
    bad("guidance_string_nan", ["job.yaml:5", "guidance"], guidance="nan")
    case("set_guidance_zero_cfg_off", "settings", job=J(guidance="0"), codes=(0,), verify=N_DEFAULT)
    case("set_width_16384", "settings", job=J(width="16384", height="16384"), codes=(2, 6),
         expect=[("width", "memory", "16384")], timeout=120)
    bad("width_16392", ["job.yaml:6", "width"], width="16392")
    bad("width_not_multiple_of_8", ["job.yaml:6", "width", "8"], width="100")
    bad("width_zero", ["job.yaml:6", "width"], width="0")
    bad("height_negative", ["job.yaml:7", "height"], height="-64")
    case("set_size_8x8_minimum", "settings", job=J(width="8", height="8"), codes=(0, 2), verify=N_DEFAULT,
         expect=[("width", "height", "size")], timeout=90)
    case("set_size_8x1024_extreme_aspect", "settings", job=J(width="8", height="1024"), codes=(0, 2, 6),
         verify=N_DEFAULT, expect=[("width", "height", "size")], timeout=120)
    bad("seed_2pow64", ["job.yaml:8", "seed"], seed="18446744073709551616")
    bad("seed_negative", ["job.yaml:8", "seed"], seed="-1")
    bad("seed_float", ["job.yaml:8", "seed"], seed="1.5")
    bad("seed_random_word", ["job.yaml:8", "seed"], seed="random")
    case("set_seed_max_wraps", "settings", job=J(seed="18446744073709551615"), codes=(0,),
         verify=dict(n=N_DEFAULT, seeds=[2 ** 64 - 1, 0, 1, 2]))
    bad("images_per_prompt_1e12", ["job.yaml:3", "images_per_prompt"], images_per_prompt="1000000000000")
    bad("images_per_prompt_1000001", ["job.yaml:3", "images_per_prompt"], images_per_prompt="1000001")
    bad("images_per_prompt_zero", ["job.yaml:3", "images_per_prompt"], images_per_prompt="0")
    bad("batch_size_zero", ["job.yaml:11", "batch_size"], batch_size="0")
    bad("batch_size_4097", ["job.yaml:11", "batch_size"], batch_size="4097")
    bad("batch_size_word", ["job.yaml:11", "batch_size", "auto"], batch_size="max")
    case("set_batch_size_4096", "settings", job=J(batch_size="4096"), codes=(0,), verify=N_DEFAULT, timeout=120)
    case("set_batch_size_auto", "settings", job=J(batch_size="auto"), codes=(0,), verify=N_DEFAULT)
    bad("segment_items_2pow31_plus", ["job.yaml:13", "segment_items"], segment_items="2147483649")
    bad("progress_interval_zero", ["job.yaml:14", "progress_interval_s"], extra="progress_interval_s: 0\n")
    bad("worker_timeout_1e9", ["job.yaml:14", "worker_timeout_s"], extra="worker_timeout_s: 1e9\n")
    bad("segment_seconds_nan", ["job.yaml:14", "segment_seconds"], extra="segment_seconds: .nan\n")
    bad("scheduler_lms", ["job.yaml:14", "scheduler", "unknown sampler", "dpmpp_2m"], extra="scheduler: lms\n")
    bad("scheduler_a1111_name", ["job.yaml:14", "scheduler", "{name: dpmpp_2m, sigmas: karras}"],
        extra="scheduler: DPM++ 2M Karras\n")
    bad("scheduler_option_not_accepted", ["job.yaml:14", "scheduler.sigmas", "euler_a accepts: timestep_spacing"],
        extra="scheduler: {name: euler_a, sigmas: karras}\n")
    bad("image_format_jpeg", ["job.yaml:14", "image_format", "png"], extra="image_format: jpeg\n")
    bad("negative_prompt_70k", ["job.yaml:14", "negative_prompt", "65536"], extra="negative_prompt: " + "n" * 70000 + "\n")
    bad("inline_prompt_70k", ["job.yaml:2", "65536"], prompts='["' + "p" * 70000 + '"]')
    bad("decoder_tiny_without_tiny_vae", ["decoder", "tiny_vae"], extra="decoder: tiny\n")
    bad("memory_max_gpu_gib_negative", ["job.yaml:15", "max_gpu_gib"], extra="memory:\n  max_gpu_gib: -1\n")
    bad("memory_concurrent_images_9", ["job.yaml:15", "concurrent_images"], extra="memory:\n  concurrent_images: 9\n")
    case("set_model_variant_fp16_absent", "settings", job=J(extra="model_variant: fp16\n"), codes=(2, 4),
         expect=["fp16", "safetensors"])
    bad("model_variant_unknown", ["job.yaml:14", "model_variant"], extra="model_variant: int8\n")
    bad("prompts_and_prompts_file", ["prompts", "prompts_file"], extra="prompts_file: p.txt\n")
    bad("prompts_format_with_inline", ["prompts_format"], extra="prompts_format: csv\n")
    case("set_steps_null_default_30", "settings", job=J(steps="~"), codes=(0,), verify=dict(n=N_DEFAULT, steps=30),
         timeout=180)


# ----------------------------------------------------------------------------------------------------------
# prompt files


def prompt_cases():
    def pf(name, data, expect, codes=(2,), fname="p.txt", extra="", **kw):
        case("pf_" + name, "prompt-file", job=J(pf=fname, extra=extra), files={fname: data} if data is not None else {},
             codes=codes, expect=expect, **kw)
    pf("missing", None, ["nope.txt", "job.yaml:2"], fname="nope.txt")
    pf("empty", "", ["p.txt", ("empty", "no prompt")])
    pf("only_blank_lines", "\n   \n\t\n\r\n", ["p.txt", ("empty", "no prompt")])
    case("pf_dev_zero", "prompt-file", job=J(pf="/dev/zero", extra="prompts_format: txt\n"),
         expect=["/dev/zero", "regular"], timeout=30, slow=10)
    case("pf_dev_urandom", "prompt-file", job=J(pf="/dev/urandom", extra="prompts_format: txt\n"),
         expect=["/dev/urandom"], timeout=30, slow=10)
    case("pf_dev_stdin", "prompt-file", job=J(pf="/dev/stdin", extra="prompts_format: txt\n"),
         expect=["/dev/stdin"], timeout=30, slow=10)
    case("pf_fifo_without_writer", "prompt-file", job=J(pf="p.txt"),
         setup=lambda ctx, d: os.mkfifo(os.path.join(d, "p.txt")), expect=["p.txt", "regular"], timeout=30)
    case("pf_directory", "prompt-file", job=J(pf="dir.txt"),
         setup=lambda ctx, d: os.makedirs(os.path.join(d, "dir.txt")), expect=["dir.txt"])
    case("pf_symlink_to_file", "prompt-file", job=J(pf="link.txt"), files={"real.txt": "a red fox\na blue bird\n"},
         setup=lambda ctx, d: os.symlink("real.txt", os.path.join(d, "link.txt")), codes=(0,), verify=N_DEFAULT)
    case("pf_dangling_symlink", "prompt-file", job=J(pf="link.txt"),
         setup=lambda ctx, d: os.symlink("gone.txt", os.path.join(d, "link.txt")), expect=["link.txt"])
    pf("nul_byte_line1", b"a red\0fox\na blue bird\n", ["p.txt:1", ("NUL", "U+0000", "\\0")])
    pf("nul_byte_line3", b"a red fox\na blue bird\nbad\0\n", ["p.txt:3", ("NUL", "U+0000", "\\0")])
    pf("utf16le_bom", "a red fox\na blue bird\n".encode("utf-16"), ["p.txt", "UTF-16", "iconv"])
    pf("utf16le_no_bom", "a red fox\na blue bird\n".encode("utf-16-le"), ["p.txt", "UTF-16", "iconv"])
    pf("utf16be_bom", b"\xfe\xff" + "a red fox\na blue bird\n".encode("utf-16-be"), ["p.txt", "UTF-16", "iconv"])
    pf("utf32_bom", "a red fox\n".encode("utf-32"), ["p.txt", ("UTF-32", "UTF-16"), "iconv"])
    pf("latin1", "a red fox\ncaf\xe9 au lait\n".encode("latin-1"), ["p.txt:2", "0xE9", "iconv"])
    pf("windows1252_quotes", "\u201cquoted\u201d fox\n".encode("cp1252"), ["p.txt:1", "UTF-8"])
    pf("overlong_utf8", b"a \xc0\xaf fox\n", ["p.txt:1", "UTF-8"])
    pf("surrogate_utf8", b"a \xed\xa0\x80 fox\n", ["p.txt:1", "UTF-8"])
    pf("truncated_utf8_at_eof", b"a red fox\ncaf\xe2\x82", ["p.txt:2", "UTF-8"])
    pf("utf8_bom_ok", "\ufeffa red fox\na blue bird\n".encode(), None, codes=(0,),
       verify=dict(n=N_DEFAULT, prompts=["a red fox", "a red fox", "a blue bird", "a blue bird"]))
    pf("crlf_ok", b"a red fox\r\na blue bird\r\n", None, codes=(0,),
       verify=dict(n=N_DEFAULT, prompts=["a red fox", "a red fox", "a blue bird", "a blue bird"]))
    pf("no_final_newline_ok", b"a red fox\na blue bird", None, codes=(0,), verify=N_DEFAULT)
    pf("prompt_65536_bytes_ok", "x" * 65536 + "\nshort\n", None, codes=(0,), verify=N_DEFAULT, timeout=120)
    pf("prompt_65537_bytes", "x" * 65537 + "\n", ["p.txt:1", "65536"])
    pf("single_2mb_word", "w" * (2 << 20) + "\n", ["p.txt:1", "65536"], slow=10)
    pf("single_20mb_line", ("a red fox " * (2 << 20)) + "\n", ["p.txt:1", "65536"], slow=15)
    pf("control_chars_ok", "a \x1b[31mred\x1b[0m fox\x07\na\tblue bird\n", ["p.txt:1"], codes=(0, 2), verify=N_DEFAULT)
    pf("unknown_extension", "a red fox\n", ["prompts_format"], fname="p.prompts")
    pf("plain_text_in_jsonl", "a red fox\n", ["p.jsonl:1"], fname="p.jsonl")
    pf("csv_unclosed_quote", 'prompt\n"a red fox, in snow\nsecond\n', [re.compile(r"p\.csv:\d"), "quote"], fname="p.csv")
    pf("csv_missing_column", "text,neg\na red fox,blurry\n", ["p.csv", 'no column "prompt"', "text"], fname="p.csv")
    pf("csv_field_count_mismatch", "prompt,negative_prompt\na red fox, in snow,blurry\n", ["p.csv:2"], fname="p.csv")
    pf("csv_header_only", "prompt\n", ["p.csv", ("empty", "no prompt")], fname="p.csv")
    pf("csv_negative_column_absent", "prompt\na red fox\n", ["neg", "prompt"], fname="p.csv",
       extra="csv_negative_column: neg\n")
    pf("csv_duplicate_header", "prompt,prompt\na,b\n", ["p.csv", "prompt"], fname="p.csv", zero=WEAK)
    pf("csv_quoted_newline_ok", 'prompt\n"a red fox\nin snow"\n"a blue, bird"\n', None, fname="p.csv", codes=(0,),
       verify=dict(n=N_DEFAULT, prompts=["a red fox\nin snow"] * 2 + ["a blue, bird"] * 2))
    pf("csv_column_keys_without_csv", "a red fox\n", ["csv_prompt_column"], extra="csv_prompt_column: text\n")
    pf("jsonl_prompt_number", '{"prompt": 5}\n', ["p.jsonl:1", "prompt"], fname="p.jsonl")
    pf("jsonl_non_object", '["a red fox"]\n', ["p.jsonl:1"], fname="p.jsonl")
    pf("jsonl_bare_string", '"a red fox"\n', ["p.jsonl:1"], fname="p.jsonl")
    pf("jsonl_trailing_garbage", '{"prompt": "a red fox"} xyz\n', ["p.jsonl:1"], fname="p.jsonl")
    pf("jsonl_second_line_truncated", '{"prompt": "a"}\n{"prompt": "b", "se\n', ["p.jsonl:2"], fname="p.jsonl")
    pf("jsonl_missing_prompt", '{"text": "a red fox"}\n', ["p.jsonl:1", "prompt"], fname="p.jsonl")
    pf("jsonl_seed_negative", '{"prompt": "a", "seed": -1}\n', ["p.jsonl:1", "seed"], fname="p.jsonl")
    pf("jsonl_seed_2pow64", '{"prompt": "a", "seed": 18446744073709551616}\n', ["p.jsonl:1", "seed"], fname="p.jsonl")
    pf("jsonl_seed_float", '{"prompt": "a", "seed": 1.5}\n', ["p.jsonl:1", "seed"], fname="p.jsonl")
    pf("jsonl_seed_1e400", '{"prompt": "a", "seed": 1e400}\n', ["p.jsonl:1"], fname="p.jsonl")
    pf("jsonl_nul_escape", '{"prompt": "a\\u0000b"}\n', ["p.jsonl:1", ("NUL", "U+0000", "\\u0000")], fname="p.jsonl")
    pf("jsonl_lone_surrogate", '{"prompt": "a \\ud800 b"}\n', ["p.jsonl:1"], fname="p.jsonl")
    pf("jsonl_deep_nesting_other_field", '{"prompt": "a", "x": ' + "[" * 100000 + "]" * 100000 + "}\n",
       ["p.jsonl:1"], fname="p.jsonl", codes=(0, 2), verify=dict(n=2), timeout=90)
    pf("jsonl_duplicate_prompt_key", '{"prompt": "a", "prompt": "b"}\n', ["p.jsonl:1", "prompt"], fname="p.jsonl",
       codes=(0, 2), verify=dict(n=2))
    pf("jsonl_negative_null_ok", '{"prompt": "a", "negative_prompt": null, "seed": null}\n{"prompt": "b"}\n', None,
       fname="p.jsonl", codes=(0,), verify=N_DEFAULT)
    case("pf_neither_prompts_nor_file", "prompt-file", job=J(drop=("prompts",)), expect=["prompts", "prompts_file"])
    case("pf_inline_map_without_prompt", "prompt-file", job=J(prompts="[{negative_prompt: blurry}]"),
         expect=["job.yaml:2", "prompt"])
    case("pf_inline_empty_list", "prompt-file", job=J(prompts="[]"), expect=["job.yaml:2", "prompts"])
    case("pf_relative_path_from_other_cwd", "prompt-file", job=J(pf="p.txt"),
         files={"p.txt": "a red fox\na blue bird\n"}, cwd=lambda ctx, d: "/",
         args=lambda ctx, d: ["run", "--quiet", os.path.join(d, "job.yaml")], codes=(0,), verify=N_DEFAULT)


# ----------------------------------------------------------------------------------------------------------
# model folders


def build_variants(ctx):
    m = ctx.models
    base = m["base"]

    def rm(rel):
        def fn(p):
            q = os.path.join(p, rel)
            shutil.rmtree(q) if os.path.isdir(q) and not os.path.islink(q) else os.unlink(q)
        return fn

    def trunc(rel, size):
        def fn(p):
            with open(os.path.join(base, rel), "rb") as f:
                data = f.read()
            write(os.path.join(p, rel), data[:size(len(data))])
        return fn

    def hdr(rel, mutate):
        def fn(p):
            h, data = st_read(os.path.join(base, rel))
            h = mutate(h) or h
            st_write(os.path.join(p, rel), h, data)
        return fn

    def raw(rel, make):
        def fn(p):
            with open(os.path.join(base, rel), "rb") as f:
                data = f.read()
            write(os.path.join(p, rel), make(data))
        return fn

    def cfg(rel, fn2):
        return lambda p: json_edit(os.path.join(p, rel), fn2)

    def text(rel, t):
        return lambda p: write(os.path.join(p, rel), t)

    def first_tensor(h):
        return tensors(h)[0]

    def shape_bad(h):
        h[first_tensor(h)]["shape"] = [999]

    def offsets_past_eof(h):
        last = max(tensors(h), key=lambda k: h[k]["data_offsets"][1])
        a, b = h[last]["data_offsets"]
        h[last]["data_offsets"] = [a + 10 ** 12, b + 10 ** 12]

    def offsets_negative(h):
        t = first_tensor(h)
        a, b = h[t]["data_offsets"]
        h[t]["data_offsets"] = [-8, b]

    def drop_tensor(h):
        del h[[k for k in tensors(h) if k.startswith("conv_in")][0]]

    def dtype_unknown(h):
        h[first_tensor(h)]["dtype"] = "F128"

    def vocab_tiny(p):
        write(os.path.join(p, "tokenizer/vocab.json"), json.dumps({"a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}))

    def unet_dir(p):
        os.unlink(os.path.join(p, U))
        os.makedirs(os.path.join(p, U))

    def unet_fifo(p):
        os.unlink(os.path.join(p, U))
        os.mkfifo(os.path.join(p, U))

    def unet_loop(p):
        shutil.rmtree(os.path.join(p, "unet"))
        os.symlink("unet", os.path.join(p, "unet"))

    def copy_from(src_name, *rels):
        def fn(p):
            for rel in rels:
                with open(os.path.join(m[src_name], rel), "rb") as f:
                    write(os.path.join(p, rel), f.read())
        return fn

    variants = {
        "no_unet": rm("unet"), "no_vae": rm("vae"), "no_te2": rm("text_encoder_2"), "no_tokenizer_vocab": rm("tokenizer/vocab.json"),
        "no_model_index": rm("model_index.json"), "no_unet_weights": rm(U), "no_scheduler": rm("scheduler"),
        "unet_truncated_half": trunc(U, lambda n: n // 2), "unet_truncated_4": trunc(U, lambda n: 4),
        "unet_empty": trunc(U, lambda n: 0), "vae_truncated_last_byte": trunc(VAE_W, lambda n: n - 1),
        "unet_hdrlen_huge": raw(U, lambda b: b"\xff" * 8 + b[8:]),
        "unet_hdrlen_zero": raw(U, lambda b: b"\0" * 8 + b[8:]),
        "unet_hdr_garbage": raw(U, lambda b: b[:8] + b"x" * struct.unpack("<Q", b[:8])[0] + b[8 + struct.unpack("<Q", b[:8])[0]:]),
        "unet_hdr_json_list": hdr(U, lambda h: ["not", "a", "map"]),
        "unet_offsets_past_eof": hdr(U, offsets_past_eof), "unet_offsets_negative": hdr(U, offsets_negative),
        "unet_shape_mismatch": hdr(U, shape_bad), "unet_missing_tensor": hdr(U, drop_tensor),
        "unet_dtype_unknown": hdr(U, dtype_unknown),
        "unet_nan_weights": raw(U, lambda b: b[:8 + struct.unpack("<Q", b[:8])[0]] + b"\xff" * (len(b) - 8 - struct.unpack("<Q", b[:8])[0])),
        "unet_weights_dir": unet_dir, "unet_weights_fifo": unet_fifo, "unet_symlink_loop": unet_loop,
        "unet_cfg_garbage": text("unet/config.json", "not json {"), "unet_cfg_empty": text("unet/config.json", "{}"),
        "unet_cfg_wrong_type": cfg("unet/config.json", set_key("layers_per_block", "two")),
        "unet_layers_1e9": cfg("unet/config.json", set_key("layers_per_block", 1000000000)),
        "vae_block_out_1e6": cfg("vae/config.json", lambda c: c.update(block_out_channels=[1000000] * len(c["block_out_channels"]))),
        "te_vocab_1e12": cfg("text_encoder/config.json", set_key("vocab_size", 10 ** 12)),
        "unet_head_dim_0": cfg("unet/config.json", lambda c: c.update(attention_head_dim=[0] * len(c["attention_head_dim"]))),
        "unet_groups_7": cfg("unet/config.json", set_key("norm_num_groups", 7)),
        "unet_channels_negative": cfg("unet/config.json", lambda c: c.update(block_out_channels=[-32, 64, 128])),
        "unet_cfg_1e400": text("unet/config.json", open(os.path.join(base, "unet/config.json")).read().replace('"layers_per_block": 2', '"layers_per_block": 1e400')),
        "unet_cfg_deep": text("unet/config.json", '{"x": ' + "[" * 200000 + "]" * 200000 + "}"),
        "unet_xattn_64": cfg("unet/config.json", set_key("cross_attention_dim", 64)),
        "te_hidden_0": cfg("text_encoder/config.json", set_key("hidden_size", 0)),
        "te_layers_1e9": cfg("text_encoder/config.json", set_key("num_hidden_layers", 1000000000)),
        "te_maxpos_5": cfg("text_encoder/config.json", set_key("max_position_embeddings", 5)),
        "vae_latent_3": cfg("vae/config.json", set_key("latent_channels", 3)),
        "model_index_garbage": text("model_index.json", "]"),
        "scheduler_garbage": text("scheduler/scheduler_config.json", "\0\0garbage"),
        "scheduler_T0": cfg("scheduler/scheduler_config.json", set_key("num_train_timesteps", 0)),
        "scheduler_vpred": cfg("scheduler/scheduler_config.json", set_key("prediction_type", "v_prediction")),
        "vocab_garbage": text("tokenizer/vocab.json", "{{{"), "vocab_tiny": vocab_tiny,
        "merges_garbage": text("tokenizer_2/merges.txt", "\xff\xfe garbage\nno merges here at all x y z\n"),
        # other weights under the same headers (make-demo-model --seed 1)
        "te_other": copy_from("seed1", TE, TE2),
    }
    for name, fn in variants.items():
        ctx.variant(name, fn)


def model_cases():
    def mc(name, variant, expect, codes=(4,), **kw):
        case("model_" + name, "model", job=J(model=variant), codes=codes, expect=expect, **kw)
    case("model_folder_missing", "model", job=J(model="/nonexistent/sdxl"), expect=["job.yaml:1", "model", "/nonexistent/sdxl"])
    case("model_is_a_file", "model", job=J(model="local:afile"), files={"afile": "hello"}, expect=["job.yaml:1", "model"])
    case("model_empty_folder", "model", job=J(model="local:empty"), setup=lambda ctx, d: os.makedirs(os.path.join(d, "empty")),
         expect=["model", "model_index.json"])
    mc("no_model_index", "no_model_index", ["model_index.json"], codes=(2, 4))
    mc("missing_unet", "no_unet", ["unet"])
    mc("missing_vae", "no_vae", ["vae"])
    mc("missing_text_encoder_2", "no_te2", ["text_encoder_2"])
    mc("missing_tokenizer_vocab", "no_tokenizer_vocab", ["vocab.json"])
    mc("missing_scheduler", "no_scheduler", ["scheduler"], codes=(0, 4), verify=N_DEFAULT)
    mc("missing_unet_weights", "no_unet_weights", ["unet", "safetensors"])
    mc("unet_truncated_half", "unet_truncated_half", ["unet", "diffusion_pytorch_model.safetensors", "truncated"])
    mc("unet_truncated_4_bytes", "unet_truncated_4", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("unet_empty_file", "unet_empty", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("vae_truncated_last_byte", "vae_truncated_last_byte", ["vae", "diffusion_pytorch_model.safetensors"])
    mc("header_length_huge", "unet_hdrlen_huge", ["unet", "diffusion_pytorch_model.safetensors", "header"])
    mc("header_length_zero", "unet_hdrlen_zero", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("header_garbage", "unet_hdr_garbage", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("header_json_list", "unet_hdr_json_list", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("offsets_past_eof", "unet_offsets_past_eof", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("offsets_negative", "unet_offsets_negative", ["unet", "diffusion_pytorch_model.safetensors"])
    mc("tensor_shape_mismatch", "unet_shape_mismatch", ["unet", ("shape", "size")])
    mc("tensor_missing", "unet_missing_tensor", ["unet", "conv_in"])
    mc("tensor_dtype_unknown", "unet_dtype_unknown", ["unet", "F128"])
    mc("unet_nan_weights", "unet_nan_weights", [("nan", "not finite", "non-finite")], codes=(4, 5))
    mc("weights_path_is_folder", "unet_weights_dir", ["diffusion_pytorch_model.safetensors"], timeout=30)
    mc("weights_path_is_fifo", "unet_weights_fifo", ["diffusion_pytorch_model.safetensors"], timeout=30)
    mc("unet_symlink_loop", "unet_symlink_loop", ["unet"], codes=(2, 4), timeout=30)
    mc("unet_config_garbage", "unet_cfg_garbage", ["unet/config.json"])
    mc("unet_config_empty_object", "unet_cfg_empty", ["unet/config.json"])
    mc("unet_config_wrong_type", "unet_cfg_wrong_type", ["unet/config.json", "layers_per_block"])
    mc("layers_per_block_1e9", "unet_layers_1e9", ["unet/config.json", "layers_per_block"], timeout=90)
    mc("vae_block_out_channels_1e6", "vae_block_out_1e6", ["vae/config.json", "block_out_channels"], timeout=90)
    mc("te_vocab_size_1e12", "te_vocab_1e12", ["text_encoder/config.json", "vocab_size"], timeout=90)
    mc("attention_head_dim_0", "unet_head_dim_0", ["unet/config.json", "attention_head_dim"])
    mc("norm_num_groups_7", "unet_groups_7", ["unet/config.json", "norm_num_groups"])
    mc("block_out_channels_negative", "unet_channels_negative", ["unet/config.json", "block_out_channels"])
    mc("config_number_1e400", "unet_cfg_1e400", ["unet/config.json", ("layers_per_block", "1e400")])
    mc("config_deep_json", "unet_cfg_deep", ["unet/config.json"], timeout=60)
    mc("cross_attention_dim_mismatch", "unet_xattn_64", ["unet", ("cross_attention_dim", "shape")])
    mc("te_hidden_size_0", "te_hidden_0", ["text_encoder/config.json", "hidden_size"])
    mc("te_layers_1e9", "te_layers_1e9", ["text_encoder/config.json", "num_hidden_layers"], timeout=90)
    mc("te_max_positions_5", "te_maxpos_5", ["text_encoder", ("max_position_embeddings", "position")])
    mc("vae_latent_channels_3", "vae_latent_3", ["vae", "latent_channels"])
    mc("model_index_garbage", "model_index_garbage", ["model_index.json"], codes=(2, 4))
    mc("scheduler_config_garbage", "scheduler_garbage", ["scheduler_config.json"], codes=(2, 4))
    mc("scheduler_train_timesteps_0", "scheduler_T0", ["scheduler_config.json", "num_train_timesteps"], codes=(2, 4))
    mc("scheduler_v_prediction", "scheduler_vpred", ["prediction_type"], codes=(0, 2, 4), verify=N_DEFAULT)
    mc("tokenizer_vocab_garbage", "vocab_garbage", ["tokenizer", "vocab.json"])
    mc("tokenizer_vocab_3_tokens", "vocab_tiny", ["vocab.json"], codes=(0, 4), verify=N_DEFAULT)
    mc("tokenizer2_merges_garbage", "merges_garbage", ["merges.txt"], codes=(0, 4), verify=N_DEFAULT)
    case("model_fp16_weights_fp32_run", "model", job=J(model="m16"), codes=(0,), verify=N_DEFAULT)
    case("model_bf16_weights_fp32_run", "model", job=J(model="mbf16"), codes=(0,), verify=N_DEFAULT)
    case("model_tiny_vae_is_full_vae", "model", job=lambda ctx, d: J(extra=f"tiny_vae: {ctx.models['base']}/vae\ndecoder: tiny\n")(ctx, d),
         codes=(2, 4), expect=["tiny_vae"])
    case("model_tiny_vae_ok", "model", job=lambda ctx, d: J(extra=f"tiny_vae: {ctx.models['base']}/tiny_vae\ndecoder: tiny\n")(ctx, d),
         codes=(0,), verify=N_DEFAULT)
    case("model_layers_1e9_under_mpirun", "model", job=J(model="unet_layers_1e9"), mpi=3, codes=(4,),
         expect=["unet/config.json", "layers_per_block"], timeout=90)

    # The output folder is the model folder, or inside it: refused, and the model left intact.
    def own_model(ctx, d):
        shutil.copytree(ctx.models["base"], os.path.join(d, "model"))

    case("model_output_is_model_folder", "model", setup=own_model, job=J(model="local:model", output="model"),
         codes=(2, 3), expect=["model", "output"])
    case("model_output_inside_model_folder", "model", setup=own_model, job=J(model="local:model", output="model/out"),
         codes=(2, 3), expect=["model", "output"])
    case("model_output_is_model_folder_overwrite", "model", setup=own_model, job=J(model="local:model", output="model"),
         args=["run", "--quiet", "--overwrite", "job.yaml"], codes=(2, 3), expect=["model", "output"])
    case("model_output_is_model_unet_folder", "model", setup=own_model, job=J(model="local:model", output="model/unet"),
         codes=(2, 3), expect=["model", "output"])

    def model_inside_output(ctx, d):
        shutil.copytree(ctx.models["base"], os.path.join(d, "work", "model"))

    def model_intact(ctx, d, r):
        ref = {os.path.relpath(p, ctx.models["base"]): s for p, s in snapshot(ctx.models["base"]).items()}
        here = {os.path.relpath(p, os.path.join(d, "work", "model")): s for p, s in snapshot(os.path.join(d, "work", "model")).items()}
        if set(ref) != set(here) or any(ref[k] != "other" and ref[k][0] != here[k][0] for k in ref):
            return [(BAD, "the model folder inside the output folder was changed")]
        return []
    case("model_inside_output_folder", "model", setup=model_inside_output, job=J(model="local:work/model", output="work"),
         codes=(0, 2, 3), verify=dict(n=N_DEFAULT, out="work"), post=model_intact, expect=["work"])


# ----------------------------------------------------------------------------------------------------------
# output folders


def run_good(ctx, d, job=None, extra_args=(), env=None, mpi=0):
    if job is not None:
        write(os.path.join(d, "job.yaml"), job(ctx, d))
    return ctx.must(["run", "--quiet", *extra_args, "job.yaml"], d, mpi=mpi, env=env, log=os.path.basename(d) + ".setup")


def then(*steps):
    def setup(ctx, d):
        for s in steps:
            s(ctx, d)
    return setup


def edit_job(**kw):
    return lambda ctx, d: write(os.path.join(d, "job.yaml"), J(**kw)(ctx, d))


def output_cases():
    out = lambda d: os.path.join(d, "out")
    case("out_path_under_regular_file", "output", job=J(output="blocker/out"), files={"blocker": "a file"}, codes=(4,),
         expect=["blocker"])
    case("out_is_regular_file", "output", job=J(output="afile"), files={"afile": "a file"}, codes=(2, 4), expect=["afile"])
    case("out_is_dev_null", "output", job=J(output="/dev/null"), codes=(2, 4), expect=["/dev/null"])
    case("out_under_proc", "output", job=J(output="/proc/sdxlb-hostile-out"), codes=(4,), expect=["/proc/sdxlb-hostile-out"])
    case("out_empty_string", "output", job=J(output='""'), expect=["job.yaml:12", "output"])
    case("out_path_too_long", "output", job=J(output="/tmp/" + "x" * 5000), codes=(2, 4), expect=["output"])

    def ro_mount(ctx, c, d):
        ro = os.path.join(d, "ro")
        if not ctx.mount_tmpfs(ro, "ro,size=1m"):
            return fallback_readonly(ctx, c, d)
        try:
            c2 = Case(c.name, c.cat, job=J(output="ro/out"), codes=(4,), expect=["ro/out", ("read-only", "Read-only")])
            return standard(ctx, c2, d)
        finally:
            ctx.umount(ro)

    def fallback_readonly(ctx, c, d):
        c2 = Case(c.name, c.cat, job=J(output="/proc/1/out"), codes=(4,), expect=["/proc/1/out"])
        return standard(ctx, c2, d)
    case("out_read_only_mount", "output", custom=ro_mount)

    def full_disk(ctx, c, d):
        small = os.path.join(d, "small")
        if not ctx.mount_tmpfs(small, "size=2m"):
            raise SetupFail("cannot mount a tmpfs")
        try:
            write(os.path.join(d, "job.yaml"), J(output="small/out", width="256", height="256", images_per_prompt="8",
                                                 prompts='["a", "b", "c", "d"]')(ctx, d))
            issues = []
            results = []
            for mpi in (0, 3):
                r = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=mpi, timeout=120, log=c.name + f".{mpi}")
                results.append(r)
                issues += basic_issues(c, r, d, codes=(4,), expect=["No space left on device", "small/out"],
                                       what=f"np {mpi or 1}")
                tmp = glob.glob(os.path.join(small, "out", "segments", "*.tmp"))
                if tmp:
                    issues.append((WEAK, f"np {mpi or 1}: left {len(tmp)} .tmp segment(s)"))
                shutil.rmtree(os.path.join(small, "out"), ignore_errors=True)
            return results[-1], issues, "run job.yaml (output on a 2 MB tmpfs; alone, then under mpirun -np 3)"
        finally:
            ctx.umount(small)
    case("out_full_disk", "output", custom=full_disk, serial=True)

    pre = lambda ctx, d: run_good(ctx, d, J())
    case("out_other_job_steps_changed", "output", setup=then(pre, edit_job(steps="3")), codes=(3,),
         expect=["steps", "--overwrite", "2 -> 3"])
    case("out_other_job_negative_changed", "output", setup=then(pre, edit_job(extra='negative_prompt: "blurry"\n')),
         codes=(3,), expect=["negative_prompt", "--overwrite"])
    case("out_other_job_prompts_changed", "output", setup=then(pre, edit_job(prompts='["a red fox", "a green bird"]')),
         codes=(3,), expect=["prompt", "--overwrite"])
    case("out_other_job_images_per_prompt", "output", setup=then(pre, edit_job(images_per_prompt="3")), codes=(3,),
         expect=["images_per_prompt", "--overwrite"])
    case("out_other_job_model_changed", "output", setup=then(pre, edit_job(model="seed1")), codes=(3,),
         expect=["model", "--overwrite"])
    case("out_other_job_under_mpirun", "output", setup=then(pre, edit_job(steps="3")), mpi=3, codes=(3,),
         expect=["steps", "--overwrite"], timeout=90)
    case("out_batch_size_change_resumes", "output", setup=then(pre, edit_job(batch_size="1")), codes=(0,),
         verify=N_DEFAULT, post=lambda ctx, d, r: [] if "0 rendered" in r.text or "0 items this run" in r.text
         else [(BAD, "a batch_size change rendered items again")])
    case("out_overwrite_after_change", "output", setup=then(pre, edit_job(steps="3")),
         args=["run", "--quiet", "--overwrite", "job.yaml"], codes=(0,), verify=dict(n=N_DEFAULT, steps=3))
    case("out_overwrite_option_last", "output", setup=then(pre, edit_job(steps="3")),
         args=["run", "job.yaml", "--overwrite"], codes=(0,), verify=dict(n=N_DEFAULT, steps=3))
    case("out_overwrite_fresh_folder", "output", job=J(), args=["run", "--quiet", "--overwrite", "job.yaml"], codes=(0,),
         verify=N_DEFAULT)
    case("out_overwrite_same_job", "output", setup=pre, args=["run", "--quiet", "--overwrite", "job.yaml"], codes=(0,),
         verify=N_DEFAULT)
    case("out_overwrite_under_mpirun", "output", setup=then(pre, edit_job(steps="3")),
         args=["run", "--quiet", "--overwrite", "job.yaml"], mpi=3, codes=(0,), verify=dict(n=N_DEFAULT, steps=3), timeout=90)

    def no_rerender(ctx, d, r):
        return [] if seg_names(out(d)) == ctx_state.get(d) else [(WEAK, "segments were rendered again")]

    def remember(ctx, d):
        ctx_state[d] = seg_names(out(d))
    rm = lambda rel: (lambda ctx, d: os.unlink(os.path.join(d, rel)))
    case("out_deleted_job_json", "output", setup=then(pre, rm("out/job.json"), remember), codes=(0,), verify=N_DEFAULT,
         post=no_rerender)
    case("out_deleted_job_json_and_changed", "output", setup=then(pre, rm("out/job.json"), edit_job(steps="3")), codes=(3,),
         expect=[("another job", "belongs"), "--overwrite"])
    case("out_garbage_job_json", "output", setup=then(pre, lambda ctx, d: write(os.path.join(d, "out/job.json"), "{garbage")),
         codes=(0, 3, 4), verify=N_DEFAULT, expect=["job.json"])
    case("out_deleted_index", "output", setup=then(pre, rm("out/index.h5")), codes=(0,), verify=N_DEFAULT)
    case("out_index_is_folder", "output", setup=then(pre, rm("out/index.h5"), lambda ctx, d: os.makedirs(os.path.join(d, "out/index.h5"))),
         codes=(0, 4), verify=N_DEFAULT, expect=["index.h5"])
    case("out_segments_is_file", "output", setup=then(pre, lambda ctx, d: (shutil.rmtree(os.path.join(d, "out/segments")),
                                                                             write(os.path.join(d, "out/segments"), "x"))),
         codes=(3, 4), expect=["segments"])

    def seg_mutate(fn):
        def step(ctx, d):
            segs = sorted(glob.glob(os.path.join(d, "out", "segments", "*.h5")))
            fn(segs[0], segs)
        return step

    def truncate_seg(s, segs):
        with open(s, "rb") as f:
            data = f.read()
        write(s, data[: len(data) // 2])

    def garbage_seg(s, segs):
        write(s, os.urandom(os.path.getsize(s)))

    def stray_tmp(s, segs):
        write(s.replace(".h5", "") + "-999.h5.tmp", b"half a segment")

    def alter_item_index(s, segs):
        with h5py.File(s, "r+") as f:
            ii = f["item_index"][()]
            ii[0] = 10 ** 6
            f["item_index"][...] = ii

    def swap_rows(s, segs):
        with h5py.File(s, "r+") as f:
            ii = f["item_index"][()]
            f["item_index"][...] = ii[::-1].copy()

    def empty_seg(s, segs):
        write(s, b"")

    def corrupt_moved(ctx, d, r):
        cdir = os.path.join(d, "out", "segments", "corrupt")
        return [] if os.path.isdir(cdir) and os.listdir(cdir) else [(WEAK, "nothing was moved to segments/corrupt/")]

    ref4 = lambda ctx: ctx.reference("default4", lambda f: (run_good(ctx, f, J()), os.path.join(f, "out"))[1])
    vref = lambda ctx, d, r: [dsi(p) for p in verify_dataset(ctx, out(d), N_DEFAULT, ref=ref4(ctx))] \
        if r.rc == 0 else []
    case("out_truncated_segment", "output", setup=then(pre, seg_mutate(truncate_seg)), codes=(0,), verify=N_DEFAULT,
         post=corrupt_moved, expect_ok=["corrupt"])
    case("out_garbage_segment", "output", setup=then(pre, seg_mutate(garbage_seg)), codes=(0,), verify=N_DEFAULT,
         post=corrupt_moved, expect_ok=["corrupt"])
    case("out_empty_segment", "output", setup=then(pre, seg_mutate(empty_seg)), codes=(0,), verify=N_DEFAULT, post=corrupt_moved)
    case("out_stray_tmp", "output", setup=then(pre, seg_mutate(stray_tmp)), codes=(0,), verify=N_DEFAULT,
         post=lambda ctx, d, r: [(WEAK, ".tmp left")] if glob.glob(os.path.join(d, "out/segments/*.tmp")) else [])
    case("out_segment_item_index_altered", "output", setup=then(pre, seg_mutate(alter_item_index)), codes=(0,),
         verify=N_DEFAULT, post=lambda ctx, d, r: corrupt_moved(ctx, d, r) + vref(ctx, d, r))
    case("out_segment_rows_relabelled", "output", setup=then(pre, seg_mutate(swap_rows)), codes=(0,), verify=N_DEFAULT,
         post=vref)

    def foreign_segment(ctx, d):
        other = os.path.join(d, "other")
        os.makedirs(other)
        run_good(ctx, other, J(steps="3"))
        src = sorted(glob.glob(os.path.join(other, "out", "segments", "*.h5")))[-1]
        shutil.copy(src, os.path.join(d, "out", "segments", "seg-99990101T000000Z-r00001-000000.h5"))
        # Its own segment of the same items goes: the foreign one is all that holds them now.
        mine = sorted(glob.glob(os.path.join(d, "out", "segments", "seg-2*.h5")))
        with h5py.File(src, "r") as f:
            theirs = set(int(i) for i in f["item_index"][()])
        for s in mine:
            with h5py.File(s, "r") as f:
                if set(int(i) for i in f["item_index"][()]) & theirs:
                    os.unlink(s)
    case("out_segment_of_another_job", "output", setup=then(pre, foreign_segment), codes=(0, 3), verify=dict(n=N_DEFAULT, steps=2),
         expect=["seg-99990101T000000Z", ("another job", "belongs")], post=vref, timeout=120)

    def flip_image_byte(ctx, d):
        s = sorted(glob.glob(os.path.join(d, "out", "segments", "*.h5")))[0]
        with h5py.File(s, "r") as f:
            info = f["images"].id.get_chunk_info(0)
        with open(s, "r+b") as f:
            f.seek(info.byte_offset + info.size // 2)
            b = f.read(1)
            f.seek(info.byte_offset + info.size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
    case("out_flipped_image_byte_export", "output", setup=then(pre, flip_image_byte),
         args=["export", "out", "--to", "png"], codes=(4,), expect=["seg-", ("checksum", "Fletcher", "corrupt", "read")],
         nowrite=False)

    def stale_lock(ctx, d):
        write(os.path.join(d, "out", "lock"), json.dumps({"format": "sdxlb-lock", "host": os.uname().nodename, "pid": 4999999,
                                                          "run_id": "20200101T000000Z", "slurm_job_id": "",
                                                          "slurm_restart_count": 0, "started": "2020-01-01T00:00:00Z"}))
    case("out_stale_lock_dead_pid", "output", setup=then(pre, rm("out/index.h5"), stale_lock), codes=(0,), verify=N_DEFAULT,
         expect_ok=["stale"])
    case("out_garbage_lock", "output", setup=then(pre, lambda ctx, d: write(os.path.join(d, "out/lock"), "\0\0\0garbage")),
         codes=(0, 3), verify=N_DEFAULT, expect=["lock"])
    case("out_lock_is_folder", "output", setup=then(pre, lambda ctx, d: os.makedirs(os.path.join(d, "out/lock"))),
         codes=(0, 3, 4), verify=N_DEFAULT, expect=["lock"])

    def user_files(ctx, d):
        write(os.path.join(d, "out", "holiday.jpg"), b"my photo")
        write(os.path.join(d, "out", "notes.txt"), "keep me")

    def user_files_kept(ctx, d, r):
        ok = os.path.exists(os.path.join(d, "out", "holiday.jpg")) and os.path.exists(os.path.join(d, "out", "notes.txt"))
        return [] if ok else [(BAD, "the user's own files in the output folder were deleted")]
    case("out_nonempty_unrelated_folder", "output", job=J(), setup=user_files, codes=(0, 3), verify=N_DEFAULT,
         post=user_files_kept, expect=["out"])
    case("out_nonempty_unrelated_overwrite", "output", job=J(), setup=user_files, args=["run", "--quiet", "--overwrite", "job.yaml"],
         codes=(0, 3), verify=N_DEFAULT, post=user_files_kept, expect=["out"])

    def dot_output_intact(ctx, d, r):
        return [] if os.path.exists(os.path.join(d, "p.txt")) else [(BAD, "the job folder's prompt file was deleted")]
    case("out_is_job_folder_then_overwrite", "output",
         setup=then(lambda ctx, d: write(os.path.join(d, "p.txt"), "a red fox\na blue bird\n"),
                    edit_job(pf="p.txt", output="."),
                    lambda ctx, d: ctx.must(["run", "--quiet", "job.yaml"], d, codes=(0, 2, 3), log="dotfirst"),
                    edit_job(pf="p.txt", output=".", steps="3")),
         args=["run", "--quiet", "--overwrite", "job.yaml"], codes=(0, 2, 3), verify=dict(n=N_DEFAULT, out=".", steps=3),
         post=dot_output_intact, expect=[("output", "folder")])
    case("out_symlink_to_folder", "output", job=J(output="link"), setup=lambda ctx, d: (os.makedirs(os.path.join(d, "real")),
                                                                                      os.symlink("real", os.path.join(d, "link"))),
         codes=(0,), verify=dict(n=N_DEFAULT, out="link"))
    case("out_dangling_symlink", "output", job=J(output="link"), setup=lambda ctx, d: os.symlink("gone/deeper", os.path.join(d, "link")),
         codes=(0, 4), verify=dict(n=N_DEFAULT, out="link"), expect=["link"])
    case("out_embedding_cache_is_file", "output", job=J(extra="embedding_cache: cachefile\n"), files={"cachefile": "x"},
         codes=(2, 4), expect=["cachefile"])
    case("out_embedding_cache_dev_null", "output", job=J(extra="embedding_cache: /dev/null\n"), codes=(2, 4), expect=["/dev/null"])

    def cache_corrupted(ctx, c, d):
        write(os.path.join(d, "job.yaml"), J(extra="embedding_cache: cache\n")(ctx, d))
        run_good(ctx, d)
        shards = [p for p in glob.glob(os.path.join(d, "cache", "**", "*"), recursive=True) if os.path.isfile(p)]
        if not shards:
            raise SetupFail("no embedding shard found in the cache")
        for s in shards:
            with open(s, "rb") as f:
                data = f.read()
            write(s, data[: len(data) // 2])
        write(os.path.join(d, "job2.yaml"), J(extra="embedding_cache: cache\n", output="out2")(ctx, d))
        r = ctx.run(["run", "--quiet", "job2.yaml"], d, log=c.name)
        issues = basic_issues(c, r, d, codes=(0, 4), expect=["cache"])
        if r.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out2"), N_DEFAULT,
                                                                         ref=read_images(os.path.join(d, "out")))]
        return r, issues, "run job.yaml; truncate every embedding-cache file; run job2.yaml (same job, new output)"
    case("out_embedding_cache_truncated", "output", custom=cache_corrupted)

    def partial_inspect(ctx, d):
        run_good(ctx, d, J())
        os.unlink(os.path.join(d, "out", "index.h5"))
    case("out_inspect_without_index", "output", setup=partial_inspect, args=["inspect", "out"], codes=(0, 4),
         expect=["index.h5"])


ctx_state = {}


# ----------------------------------------------------------------------------------------------------------
# CLI and device


def cli_cases():
    def cli(name, args, codes=(2,), expect=(), **kw):
        case("cli_" + name, "cli", args=args, codes=codes, expect=expect, **kw)
    cli("help", ["--help"], codes=(0,), expect_ok=["Usage", "Exit codes"])
    cli("run_help", ["run", "--help"], codes=(0,), expect_ok=["--overwrite"])
    cli("version", ["--version"], codes=(0,), expect_ok=["0."])
    cli("no_arguments", [], codes=(0, 2), expect=[("subcommand", "Usage", "--help")])
    cli("unknown_subcommand", ["render", "job.yaml"], expect=["render", "run"])
    cli("run_without_job", ["run"], expect=["job"])
    cli("run_overwrite_without_job", ["run", "--overwrite"], expect=["job"])
    cli("run_two_jobs", ["run", "job.yaml", "job.yaml"], job=J(), expect=["job.yaml"])
    cli("run_unknown_option", ["run", "--force", "job.yaml"], job=J(), expect=["--force"])
    cli("run_empty_path", ["run", ""], expect=[("job", "file")])
    cli("run_stdin_dash", ["run", "-"], expect=[("-", "job")])
    cli("run_path_too_long", ["run", "x" * 5000 + ".yaml"], expect=[("does not exist", "too long")])
    cli("encode_typo", ["encode", "job.yaml"], job=J(extra="stpes: 3\n"), expect=["job.yaml:14", "stpes"])
    cli("encode_ok", ["encode", "--quiet", "job.yaml"], job=J(), codes=(0,),
        post=lambda ctx, d, r: [] if os.path.isdir(os.path.join(d, "out", "embeddings")) and
        not os.path.exists(os.path.join(d, "out", "index.h5")) else [(WEAK, "encode: no embeddings folder, or images written")])
    pre = lambda ctx, d: run_good(ctx, d, J())
    cli("export_limit_negative", ["export", "out", "--to", "png", "--limit", "-5"], setup=pre, expect=["--limit"])
    cli("export_limit_huge", ["export", "out", "--to", "png", "--limit", "99999999999999999999999"], setup=pre,
        codes=(0, 2), expect=["--limit"], nowrite=True,
        post=lambda ctx, d, r: [] if r.rc != 0 or len(glob.glob(os.path.join(d, "png", "*.png"))) == N_DEFAULT
        else [(BAD, "export did not write every image")])
    cli("export_without_destination", ["export", "out"], setup=pre, expect=["--to"])
    cli("export_to_regular_file", ["export", "out", "--to", "afile"], setup=pre, files={"afile": "x"}, codes=(2, 4),
        expect=["afile"])
    cli("export_contact_sheet_dev_full", ["export", "out", "--contact-sheet", "/dev/full"], setup=pre, codes=(4,),
        expect=["/dev/full", ("No space", "space", "not a regular file")])
    cli("export_ok", ["export", "out", "--to", "png", "--contact-sheet", "sheet.png"], setup=pre, codes=(0,),
        post=lambda ctx, d, r: [] if len(glob.glob(os.path.join(d, "png", "*.png"))) == N_DEFAULT and
        os.path.getsize(os.path.join(d, "sheet.png")) > 0 else [(BAD, "export exit 0 without every PNG")])
    cli("export_empty_folder", ["export", "emptydir", "--to", "png"], setup=lambda ctx, d: os.makedirs(os.path.join(d, "emptydir")),
        codes=(2, 4), expect=["emptydir"])
    cli("inspect_regular_file", ["inspect", "/etc/passwd"], expect=["/etc/passwd"])
    cli("inspect_missing_folder", ["inspect", "nope"], expect=["nope"])
    cli("inspect_empty_folder", ["inspect", "emptydir"], setup=lambda ctx, d: os.makedirs(os.path.join(d, "emptydir")),
        codes=(2, 4), expect=["emptydir"])
    cli("inspect_model_folder", lambda ctx, d: ["inspect", ctx.models["base"]], codes=(2, 4), expect=["index.h5"])
    cli("inspect_missing_list", ["inspect", "out", "--missing"], setup=pre, codes=(0,), expect_ok=["4 ok"])
    cli("inspect_garbage_index", ["inspect", "out"], setup=then(pre, lambda ctx, d: write(os.path.join(d, "out/index.h5"), "garbage")),
        codes=(4,), expect=["index.h5"])
    cli("make_demo_model_nonempty", ["make-demo-model", "full"], setup=lambda ctx, d: write(os.path.join(d, "full", "x"), "x"),
        codes=(2, 3, 4), expect=["full"])
    cli("make_demo_model_under_file", ["make-demo-model", "afile/model"], files={"afile": "x"}, codes=(2, 4), expect=["afile"])
    cli("make_demo_model_bad_dtype", ["make-demo-model", "m", "--dtype", "fp8"], expect=["dtype", "fp8"])
    cli("make_demo_model_negative_seed", ["make-demo-model", "m", "--seed", "-1"], expect=["seed"], zero=WEAK)


def device_cases():
    def dev(name, expect, codes=(2,), **kw):
        case("dev_" + name, "device", codes=codes, expect=expect, **kw)
    dev("cuda_without_gpu", ["job.yaml", "cuda", "device: cpu"], job=J(device="cuda"))
    dev("cuda_index_without_gpu", ["job.yaml:10", "device"], job=J(device="cuda:1"))
    dev("cuda_without_gpu_under_mpirun", ["cuda", "device: cpu"], job=J(device="cuda"), mpi=3, timeout=90)
    dev("cuda_visible_devices_garbage", ["cuda", "device: cpu"], job=J(device="cuda"), env={"CUDA_VISIBLE_DEVICES": "banana"})
    dev("gpu_word", ["job.yaml:10", "device", "cuda"], job=J(device="gpu"))
    dev("auto_on_cpu", [], job=J(device="auto"), codes=(0,), verify=N_DEFAULT)
    dev("fp16_on_cpu", ["job.yaml", "dtype", "fp16", "fp32"], job=J(dtype="fp16"))
    dev("default_dtype_on_cpu", ["dtype", "fp32"], job=J(drop=("dtype",)), codes=(0, 2), verify=N_DEFAULT)
    dev("bf16_on_cpu", ["dtype"], job=J(dtype="bf16"), codes=(0, 2), verify=N_DEFAULT, timeout=120)
    dev("dtype_float32_word", ["job.yaml:9", "dtype", "fp32"], job=J(dtype="float32"))
    dev("max_gpu_gib_on_cpu", ["max_gpu_gib"], job=J(extra="memory:\n  max_gpu_gib: 1\n"), codes=(0, 2), verify=N_DEFAULT)
    dev("placement_sequential_on_cpu", ["placement"], job=J(extra="memory:\n  placement: sequential\n"), codes=(0, 2),
        verify=N_DEFAULT)
    dev("fusion_env_garbage", ["SDXLB_DISABLE_FUSION"], job=J(), env={"SDXLB_DISABLE_FUSION": "everything"})
    dev("fault_env_garbage", ["SDXLB_FAULT"], job=J(), env={"SDXLB_FAULT": "explode=1"})
    dev("omp_threads_garbage", [], job=J(), env={"OMP_NUM_THREADS": "lots"}, codes=(0,), verify=N_DEFAULT)


def mpi_cases():
    case("mpi_good_3_ranks", "mpi", job=J(), mpi=3, codes=(0,), verify=N_DEFAULT, timeout=120)
    case("mpi_more_workers_than_items", "mpi", job=J(prompts='["one"]', images_per_prompt="1"), mpi=5, codes=(0,),
         verify=1, timeout=180, serial=True)
    case("mpi_missing_vae", "mpi", job=J(model="no_vae"), mpi=3, codes=(4,), expect=["vae"], timeout=90)
    case("mpi_unwritable_output", "mpi", job=J(output="blocker/out"), files={"blocker": "x"}, mpi=3, codes=(4,),
         expect=["blocker"], timeout=90)
    case("mpi_oom_fallback", "mpi", job=J(), mpi=3, env={"SDXLB_FAULT": "oom_batches=1"}, codes=(0,), verify=N_DEFAULT,
         timeout=120)

    def nan_post(ctx, d, r):
        try:
            with h5py.File(os.path.join(d, "out", "index.h5"), "r") as f:
                st = list(f["status"][()])
        except Exception as e:
            return [(BAD, f"no readable index after failed items: {e}")]
        return [] if st == [1, 0, 0, 1] else [(BAD, f"status column {st}, expected [1, 0, 0, 1]")]
    case("mpi_nan_items_marked_failed", "mpi", job=J(), mpi=3, env={"SDXLB_FAULT": "nan_items=1:2"}, codes=(5,),
         expect=["failed"], nowrite=False, post=nan_post, timeout=120)


# ----------------------------------------------------------------------------------------------------------
# processes (timing-sensitive: run alone)


rank_pids = e2e.rank_pids  # {rank: pid} of the ranks under a launcher


def ref48(ctx):
    def build(f):
        job48(ctx, f)
        ctx.must(["run", "--quiet", "job.yaml"], f, mpi=3, timeout=180, log="ref48")
        return os.path.join(f, "out")
    return ctx.reference("job48", build)


def wait_for_segments(out, n, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(glob.glob(os.path.join(out, "segments", "*.h5"))) >= n:
            return True
        time.sleep(0.1)
    return False


def interrupt_case(name, mpi, send, first_codes, first_expect=(), delay_ms=300, resume_mpi=3, resume_extra=None,
                   wait_segments=1, note=""):
    """Start the 48-item job slowed down, interrupt it with send(proc) once `wait_segments` segments exist, check
    the first exit, then resume and check the dataset: complete, exactly once, identical to a clean run."""
    def custom(ctx, c, d):
        ref = ref48(ctx)
        job48(ctx, d)
        p = ctx.start(["run", "--quiet", "job.yaml"], d, mpi=mpi, env={"SDXLB_FAULT": f"item_delay_ms={delay_ms}"},
                      log=c.name + ".first")
        if not wait_for_segments(os.path.join(d, "out"), wait_segments, 60):
            p.wait(1)
            raise SetupFail("no segment published within 60 s")
        send(p)
        r1 = p.wait(90)
        issues = []
        if r1.timed_out:
            issues.append((BAD, f"no exit within 90 s of the interruption"))
        elif r1.leftover:
            issues.append((BAD, f"left {r1.leftover} process(es) running after the interruption"))
        elif first_codes is not None and r1.rc not in first_codes:
            issues.append((WEAK if 1 < r1.rc < 128 else BAD, f"first run exit {r1.rc}, expected {codes_str(first_codes)}"))
        if first_expect and first_codes is not None and r1.rc in first_codes:
            miss = msg_missing(r1.text, first_expect, d)
            if miss:
                issues.append((WEAK, f"first run message lacks {miss}"))
        if not r1.timed_out:
            for pat in CRASH_PATTERNS:
                if pat in r1.text:
                    issues.append((BAD, f"first run crash text: {pat}"))
                    break
        if resume_extra:
            resume_extra(ctx, d)
        published = len(seg_names(os.path.join(d, "out")))
        r2 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=resume_mpi, timeout=180, log=c.name + ".resume")
        issues += basic_issues(c, r2, d, codes=(0,), expect=[], what="resume")
        if r2.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 48, ref=ref)]
        summary = f"first exit {r1.rc}, {published} segments before the resume, resume exit {r2.rc}"
        r2.err = f"[{summary}]\n" + r1.err[:200] + "\n--- resume ---\n" + r2.err
        return r2, issues, f"{'mpirun -np %d ' % mpi if mpi else ''}run job.yaml (48 items, item_delay_ms={delay_ms}); {note}; resume"
    case(name, "process", custom=custom, serial=True)


def signal_ranks(p, sig, ranks=None):
    pids = rank_pids(p.pid)
    if not pids:
        raise SetupFail("no ranks found under mpirun")
    for r, pid in pids.items():
        if ranks is None or r in ranks:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    return pids


def process_cases():
    def kill_rank(rank):
        def send(p):
            pids = rank_pids(p.pid)
            if rank not in pids:
                raise SetupFail(f"rank {rank} not found under mpirun")
            os.kill(pids[rank], signal.SIGKILL)
        return send
    interrupt_case("proc_kill9_worker_then_resume", 3, kill_rank(1), None, note="kill -9 rank 1 mid-run")
    interrupt_case("proc_kill9_coordinator_then_resume", 3, kill_rank(0), None, note="kill -9 rank 0 mid-run")
    interrupt_case("proc_kill9_single_process_then_resume", 0, lambda p: os.kill(p.pid, signal.SIGKILL), None,
                   note="kill -9 of the single process")
    interrupt_case("proc_kill9_then_resume_other_shape", 3, kill_rank(2), None, resume_mpi=2,
                   resume_extra=lambda ctx, d: write(os.path.join(d, "job.yaml"),
                                                     open(os.path.join(d, "job.yaml")).read().replace("batch_size: 2", "batch_size: 1")),
                   note="kill -9 rank 2, resume with 1 worker and batch_size 1")
    interrupt_case("proc_sigterm_ranks_then_resume", 3, lambda p: signal_ranks(p, signal.SIGTERM), (7,),
                   ["Resubmit"], delay_ms=150, note="SIGTERM to every rank")
    interrupt_case("proc_sigusr1_mpirun_then_resume", 3, lambda p: os.kill(p.pid, signal.SIGUSR1), (7,), ["Resubmit"],
                   delay_ms=150, note="SIGUSR1 to mpirun")
    interrupt_case("proc_sigterm_mpirun_then_resume", 3, lambda p: os.kill(p.pid, signal.SIGTERM), tuple(range(1, 256)),
                   delay_ms=150, note="SIGTERM to mpirun itself")
    interrupt_case("proc_sigint_single_then_resume", 0, lambda p: os.kill(p.pid, signal.SIGINT), (7,), ["Resubmit"],
                   delay_ms=150, note="Ctrl-C (SIGINT) once")
    interrupt_case("proc_sigterm_single_then_resume", 0, lambda p: os.kill(p.pid, signal.SIGTERM), (7,), ["Resubmit"],
                   delay_ms=150, note="SIGTERM to the single process")

    def double_int(p):
        os.kill(p.pid, signal.SIGINT)
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGINT)
    interrupt_case("proc_double_ctrl_c_then_resume", 0, double_int, None, note="Ctrl-C twice")
    interrupt_case("proc_sighup_single_then_resume", 0, lambda p: os.kill(p.pid, signal.SIGHUP), None,
                   note="SIGHUP (terminal closed)")

    def stop_cont(p):
        for pid in [p.pid] + list(rank_pids(p.pid).values()):
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3)
        for pid in [p.pid] + list(rank_pids(p.pid).values()):
            os.kill(pid, signal.SIGCONT)
    interrupt_case("proc_sigstop_sigcont_completes", 0, stop_cont, (0,), note="SIGSTOP for 3 s, then SIGCONT")

    def kill_env(ctx, c, d):
        ref = ref48(ctx)
        job48(ctx, d)
        r1 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=3, env={"SDXLB_FAULT": "kill_rank=2,kill_after=5"},
                     timeout=120, log=c.name + ".first")
        issues = []
        if r1.timed_out or r1.leftover:
            issues.append((BAD, "a rank killed itself and the launcher hung or left processes"))
        r2 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=3, timeout=180, log=c.name + ".resume")
        issues += basic_issues(c, r2, d, codes=(0,), expect=[], what="resume")
        if r2.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 48, ref=ref)]
        return r2, issues, "SDXLB_FAULT=kill_rank=2,kill_after=5 mpirun -np 3 run job.yaml; mpirun -np 3 run job.yaml"
    case("proc_fault_kill_rank_then_resume", "process", custom=kill_env, serial=True)

    def immediate_resume(ctx, c, d):
        """A crash and an immediate resubmit (a retry loop, a requeue): the resume starts within the same second."""
        job48(ctx, d, images_per_prompt=1)
        issues, r2, same = [], None, False
        for attempt in range(8):
            shutil.rmtree(os.path.join(d, "out"), ignore_errors=True)
            time.sleep(1.0 - time.time() % 1.0 + 0.005)  # start at a second boundary: crash and resume fit in it
            r1 = ctx.run(["run", "--quiet", "job.yaml"], d, env={"SDXLB_FAULT": "kill_rank=1,kill_after=2"}, timeout=60,
                         log=c.name + ".first")
            crashed_run = {s.split("-")[1] for s in seg_names(os.path.join(d, "out"))}
            r2 = ctx.run(["run", "--quiet", "job.yaml"], d, timeout=120, log=c.name + ".resume")
            runs = {s.split("-")[1] for s in seg_names(os.path.join(d, "out"))}
            # The resume started in the crashed run's second when it failed, or when all segments carry one run id.
            same = len(crashed_run) == 1 and (r2.rc != 0 or runs == crashed_run)
            if same or r2.rc != 0:
                break
        issues += basic_issues(c, r2, d, codes=(0,), expect=[], what="resume")
        if r2.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 16)]
        r2.err = f"[resume started in the crashed run's second: {same}]\n" + r2.err
        return r2, issues, "SDXLB_FAULT=kill_rank=1,kill_after=2 run job.yaml; run job.yaml at once (same second)"
    case("proc_immediate_resume_after_crash", "process", custom=immediate_resume, serial=True)

    def hung(ctx, c, d):
        ref = ref48(ctx)
        job48(ctx, d, segment_items=1000, segment_seconds=2, worker_timeout_s=4)
        r1 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=3, env={"SDXLB_FAULT": "item_delay_ms=100,hang_rank=2,hang_after=3"},
                     timeout=90, log=c.name + ".first")
        issues = basic_issues(c, r1, d, codes=(8,), expect=["rank 2", "worker_timeout_s"], what="hung run")
        r2 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=3, timeout=180, log=c.name + ".resume")
        issues += basic_issues(c, r2, d, codes=(0,), expect=[], what="resume")
        if r2.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 48, ref=ref)]
        return r1, issues, "SDXLB_FAULT=hang_rank=2 mpirun -np 3 run job.yaml (worker_timeout_s 4); resume"
    case("proc_hung_worker_then_resume", "process", custom=hung, serial=True)

    def encode_stop(ctx, c, d):
        write(os.path.join(d, "prompts.txt"), "\n".join(f"encode phase prompt {i}" for i in range(200)) + "\n")
        write(os.path.join(d, "job.yaml"), J(pf="prompts.txt", images_per_prompt="1")(ctx, d))
        p = ctx.start(["run", "--quiet", "job.yaml"], d, mpi=3, env={"SDXLB_FAULT": "encode_delay_ms=2000"}, log=c.name)
        time.sleep(3.0)
        signal_ranks(p, signal.SIGTERM)
        r1 = p.wait(90)
        issues = basic_issues(c, r1, d, codes=(7,), expect=["encode"], what="stop")
        r2 = ctx.run(["run", "--quiet", "job.yaml"], d, mpi=3, timeout=240, log=c.name + ".resume")
        issues += basic_issues(c, r2, d, codes=(0,), expect=[], what="resume")
        if r2.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 200)]
        return r1, issues, "mpirun -np 3 run job.yaml (200 prompts, encode_delay_ms=2000); SIGTERM to the ranks at 3 s; resume"
    case("proc_sigterm_during_encode_then_resume", "process", custom=encode_stop, serial=True)

    def concurrent(name, b_args, b_mpi, b_job=None, a_mpi=3):
        def custom(ctx, c, d):
            ref = ref48(ctx)
            job48(ctx, d, segment_items=1000, segment_seconds=1)
            a = ctx.start(["run", "--quiet", "job.yaml"], d, mpi=a_mpi, env={"SDXLB_FAULT": "item_delay_ms=400"},
                          log=c.name + ".A")
            time.sleep(2.0)
            if b_job:
                write(os.path.join(d, "jobB.yaml"), open(os.path.join(d, "job.yaml")).read().replace(b_job[0], b_job[1]))
            b = ctx.run(b_args, d, mpi=b_mpi, timeout=120, log=c.name + ".B")
            ra = a.wait(180)
            issues = basic_issues(c, b, d, codes=(3,), expect=[("in use", "another job")], what="second run")
            if b.rc == 0:
                issues.append((BAD, "two runs rendered into one output folder at once"))
            issues += basic_issues(c, ra, d, codes=(0,), expect=[], what="first run")
            if ra.rc == 0:
                issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), 48, ref=ref)]
            return b, issues, f"A: mpirun -np {a_mpi} run job.yaml (item_delay_ms=400); B 2 s later: {' '.join(b_args)}"
        case(name, "process", custom=custom, serial=True)
    concurrent("proc_two_runs_same_folder", ["run", "--quiet", "job.yaml"], 3)
    concurrent("proc_two_runs_same_folder_single", ["run", "--quiet", "job.yaml"], 0, a_mpi=0)
    concurrent("proc_second_run_other_job_same_folder", ["run", "--quiet", "jobB.yaml"], 0, b_job=("steps: 3", "steps: 4"))
    concurrent("proc_second_run_overwrite_while_running", ["run", "--quiet", "--overwrite", "jobB.yaml"], 0,
               b_job=("steps: 3", "steps: 4"))


# ----------------------------------------------------------------------------------------------------------
# model changes between runs


def model_change_cases():
    def swap(ctx, d, src, *rels):
        for rel in rels:
            with open(os.path.join(ctx.models[src], rel), "rb") as f:
                write(os.path.join(d, "model", rel), f.read())

    def changed(name, mutate, partial, ref_model):
        """Run (complete, or killed after 2 items) with a private copy of the model, change the model in place,
        run again: refused with exit 3 naming the model, or every item rendered with the new model; never mixed."""
        def custom(ctx, c, d):
            link_copy(ctx.models["base"], os.path.join(d, "model"))
            write(os.path.join(d, "job.yaml"), J(model="local:model", segment_items="1")(ctx, d))
            if partial:
                ctx.run(["run", "--quiet", "job.yaml"], d, env={"SDXLB_FAULT": "kill_rank=1,kill_after=2"}, log=c.name + ".first")
                if not seg_names(os.path.join(d, "out")):
                    raise SetupFail("the killed run published no segment")
            else:
                run_good(ctx, d)
            old = set(seg_names(os.path.join(d, "out")))
            mutate(ctx, d)
            time.sleep(1.1)  # a new run id
            before = snapshot(os.path.join(d, "out"))
            r = ctx.run(["run", "--quiet", "job.yaml"], d, timeout=120, log=c.name)
            issues = basic_issues(c, r, d, codes=(0, 3), expect=["model", ("changed", "another job", "differ")])
            if r.rc == 3:
                ch = diff_snapshots(before, snapshot(os.path.join(d, "out")), d)
                if ch:
                    issues.append((WEAK, "the refusal changed files: " + ch))
            if r.rc == 0:
                ref = ctx.reference(ref_model, lambda f: (run_good(ctx, f, J(model=ref_model)), os.path.join(f, "out"))[1])
                probs = verify_dataset(ctx, os.path.join(d, "out"), N_DEFAULT, ref=ref)
                kept = old & set(seg_names(os.path.join(d, "out")))
                with h5py.File(os.path.join(d, "out", "index.h5"), "r") as f:
                    served = set(f["segments"].asstr()[()])
                if old & served:
                    probs.append(f"segments rendered with the old model are still served ({len(old & served)})")
                issues += [dsi(p, "changed model resumed silently: " if old & served else "dataset: ") for p in probs]
            return r, issues, f"run job.yaml ({'killed after 2 items' if partial else 'complete'}); {name.replace('mc_', '')}; run job.yaml"
        case(name, "model-change", custom=custom)

    changed("mc_unet_weights_swapped_after_complete", lambda ctx, d: swap(ctx, d, "seed1", U), False, "unet_from_seed1")
    changed("mc_unet_weights_swapped_mid_job", lambda ctx, d: swap(ctx, d, "seed1", U), True, "unet_from_seed1")
    changed("mc_text_encoders_swapped_mid_job", lambda ctx, d: swap(ctx, d, "seed1", TE, TE2), True, "te_other")
    changed("mc_vae_swapped_after_complete", lambda ctx, d: swap(ctx, d, "seed1", VAE_W), False, "vae_from_seed1")
    changed("mc_unet_config_changed_mid_job",
            lambda ctx, d: json_edit(os.path.join(d, "model", "unet/config.json"), set_key("norm_eps", 1e-3)), True, "unet_eps")
    changed("mc_scheduler_config_changed",
            lambda ctx, d: json_edit(os.path.join(d, "model", "scheduler/scheduler_config.json"), set_key("beta_end", 0.02)),
            False, "sched_beta")

    def moved(ctx, c, d):
        shutil.copytree(ctx.models["base"], os.path.join(d, "model_a"))
        write(os.path.join(d, "job.yaml"), J(model="local:model_a")(ctx, d))
        run_good(ctx, d)
        segs = seg_names(os.path.join(d, "out"))
        os.rename(os.path.join(d, "model_a"), os.path.join(d, "model_b"))
        write(os.path.join(d, "job.yaml"), J(model="local:model_b")(ctx, d))
        os.unlink(os.path.join(d, "out", "index.h5"))
        r = ctx.run(["run", "--quiet", "job.yaml"], d, log=c.name)
        issues = basic_issues(c, r, d, codes=(0,), expect=[])
        if r.rc == 0:
            issues += [dsi(p) for p in verify_dataset(ctx, os.path.join(d, "out"), N_DEFAULT)]
            if seg_names(os.path.join(d, "out")) != segs:
                issues.append((WEAK, "the same model at a new path rendered everything again"))
        return r, issues, "run job.yaml; mv model_a model_b; point model: at model_b; run job.yaml"
    case("mc_same_model_moved_resumes", "model-change", custom=moved)

    def shared_cache(ctx, c, d):
        for name, model, cache in (("A", "base", "shared"), ("B", "te_other", "shared"), ("C", "te_other", "fresh")):
            write(os.path.join(d, f"job{name}.yaml"), J(model=model, output=f"out{name}", extra=f"embedding_cache: {cache}\n")(ctx, d))
        issues = []
        for name in "AB":
            r = ctx.run(["run", "--quiet", f"job{name}.yaml"], d, log=c.name + name)
            issues += basic_issues(c, r, d, codes=(0,), expect=[], what=f"job {name}")
        rc = ctx.run(["run", "--quiet", "jobC.yaml"], d, log=c.name + "C")
        if rc.rc != 0:
            raise SetupFail(f"reference run C exited {rc.rc}")
        if r.rc == 0:
            probs = verify_dataset(ctx, os.path.join(d, "outB"), N_DEFAULT, ref=read_images(os.path.join(d, "outC")))
            issues += [dsi(p, "shared embedding_cache: model B's dataset: ") for p in probs]
            if np.array_equal(read_images(os.path.join(d, "outA")), read_images(os.path.join(d, "outC"))):
                issues.append((WEAK, "harness: models A and B give the same images (the check is void)"))
        return r, issues, "run A (model A, cache shared); run B (other text encoder weights, cache shared); B == fresh-cache run?"
    case("mc_shared_embedding_cache_two_text_encoders", "model-change", custom=shared_cache)

    def shared_cache_concurrent(ctx, c, d):
        """Two jobs with different text encoders writing one embedding_cache at the same time."""
        write(os.path.join(d, "p.txt"), "\n".join(f"cache prompt {i}" for i in range(64)) + "\n")
        for name, model, cache in (("A", "base", "shared"), ("B", "te_other", "shared"), ("C", "te_other", "fresh")):
            write(os.path.join(d, f"job{name}.yaml"), J(model=model, pf="p.txt", images_per_prompt="1", output=f"out{name}",
                                                       extra=f"embedding_cache: {cache}\n")(ctx, d))
        pa = ctx.start(["run", "--quiet", "jobA.yaml"], d, log=c.name + "A")
        pb = ctx.start(["run", "--quiet", "jobB.yaml"], d, log=c.name + "B")
        ra, rb = pa.wait(180), pb.wait(180)
        issues = basic_issues(c, ra, d, codes=(0,), expect=[], what="job A") + basic_issues(c, rb, d, codes=(0,), expect=[], what="job B")
        rc = ctx.run(["run", "--quiet", "jobC.yaml"], d, timeout=180, log=c.name + "C")
        if rc.rc != 0:
            raise SetupFail(f"reference run C exited {rc.rc}")
        if rb.rc == 0:
            probs = verify_dataset(ctx, os.path.join(d, "outB"), 64, ref=read_images(os.path.join(d, "outC")))
            issues += [dsi(p, "shared embedding_cache: model B's dataset: ") for p in probs]
        return rb, issues, "jobs A and B (different text encoders) at once on one embedding_cache; B == fresh-cache run?"
    case("mc_shared_embedding_cache_concurrent", "model-change", custom=shared_cache_concurrent, serial=True)


# ----------------------------------------------------------------------------------------------------------


def build_corpus():
    yaml_cases()
    settings_cases()
    prompt_cases()
    model_cases()
    output_cases()
    cli_cases()
    device_cases()
    mpi_cases()
    process_cases()
    model_change_cases()


def write_reports(prefix, results, meta):
    with open(prefix + ".json", "w") as f:
        json.dump(dict(meta=meta, cases=[{**r, "class": r.pop("cls")} if "cls" in r else r for r in results]), f, indent=1)
    cats = collections.OrderedDict()
    for r in results:
        cats.setdefault(r["category"], collections.Counter())[r["class"]] += 1
    tot = collections.Counter(r["class"] for r in results)
    lines = [f"# Hostile-user corpus (issue #12): {len(results)} cases", "",
             f"Binary: `{meta['binary']}` (mtime {meta['binary_mtime']}, sha256 {meta['binary_sha256'][:12]}), "
             f"run {meta['started']} on {meta['host']}, {meta['jobs']} parallel, {meta['seconds']:.0f} s.", "",
             f"**{tot[GOOD]} good, {tot[WEAK]} weak, {tot[BAD]} bad.**", "",
             "| category | cases | good | weak | bad |", "| --- | --- | --- | --- | --- |"]
    for cat, cnt in cats.items():
        lines.append(f"| {cat} | {sum(cnt.values())} | {cnt[GOOD]} | {cnt[WEAK]} | {cnt[BAD]} |")
    lines.append(f"| **all** | {len(results)} | {tot[GOOD]} | {tot[WEAK]} | {tot[BAD]} |")
    for cls in (BAD, WEAK):
        sel = [r for r in results if r["class"] == cls]
        if not sel:
            continue
        lines += ["", f"## {cls} ({len(sel)})", ""]
        for r in sel:
            lines.append(f"- **{r['name']}** ({r['category']}, exit {r['rc']}, {r['seconds']} s): {r['reason']}  ")
            lines.append(f"  `{r['command'][:300]}`")
    lines += ["", "Classification: bad = crash / hang / internal error / exit 0 where it must fail / a completed "
              "dataset with missing, duplicate or mixed items; weak = a plausible refusal whose message misses the "
              "file, key, line or fix, a wrong non-zero exit code, files left by a refusal, or a valid input refused; "
              "good = otherwise. Generated by bench/hostile_corpus.py."]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin")
    ap.add_argument("out_prefix")
    ap.add_argument("--only", default=None, help="run only the cases whose name or category contains this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    t_start = time.monotonic()
    root = tempfile.mkdtemp(prefix="sdxlb-hostile-")
    ctx = Ctx(binary, root)
    os.makedirs(os.path.join(root, "logs"))
    print(f"scratch: {root}", flush=True)
    build_corpus()
    try:
        ctx.make_model("base")
        ctx.make_model("seed1", "--seed", "1")
        ctx.make_model("m16", "--dtype", "fp16", "--no-tiny-vae")
        ctx.make_model("mbf16", "--dtype", "bf16", "--no-tiny-vae")
        hb, _ = st_read(os.path.join(ctx.models["base"], U))
        h1, _ = st_read(os.path.join(ctx.models["seed1"], U))
        assert hb == h1, "make-demo-model --seed 1 changed the UNet header; the swapped-weights cases need the same one"
        build_variants(ctx)

        def from_seed1(*rels):
            def fn(p):
                for rel in rels:
                    with open(os.path.join(ctx.models["seed1"], rel), "rb") as f:
                        write(os.path.join(p, rel), f.read())
            return fn
        ctx.variant("unet_from_seed1", from_seed1(U))
        ctx.variant("vae_from_seed1", from_seed1(VAE_W))
        ctx.variant("unet_eps", lambda p: json_edit(os.path.join(p, "unet/config.json"), set_key("norm_eps", 1e-3)))
        ctx.variant("sched_beta", lambda p: json_edit(os.path.join(p, "scheduler/scheduler_config.json"), set_key("beta_end", 0.02)))
        cases = [c for c in CASES if not a.only or a.only in c.name or a.only in c.cat]
        print(f"{len(cases)} cases ({sum(c.serial for c in cases)} alone), {a.jobs} at a time", flush=True)
        results = {}
        plock = threading.Lock()

        def one(c):
            r = run_case(ctx, c)
            with plock:
                results[c.name] = r
                print(f"{r['cls'].upper():4} {r['seconds']:6.1f}s  rc={str(r['rc']):>4}  {c.cat:12} {c.name}"
                      + (f"  -- {r['reason'][:200]}" if r["cls"] != GOOD else ""), flush=True)
        with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
            list(pool.map(one, [c for c in cases if not c.serial]))
        for c in cases:
            if c.serial:
                one(c)
        ordered = [results[c.name] for c in cases]
        with open(binary, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        with open(ctx.bin, "rb") as f:
            used_sha = hashlib.sha256(f.read()).hexdigest()
        meta = dict(binary=a.bin, binary_sha256=used_sha, binary_changed_during_run=sha != used_sha,
                    binary_mtime=datetime.datetime.fromtimestamp(os.path.getmtime(binary)).isoformat(timespec="seconds"),
                    started=datetime.datetime.now().isoformat(timespec="seconds"), host=os.uname().nodename,
                    jobs=a.jobs, seconds=time.monotonic() - t_start, mem_limit_gb=MEM_LIMIT_GB)
        for r in ordered:
            r["class"] = r.pop("cls")
        write_reports(a.out_prefix, ordered, meta)
        tot = collections.Counter(r["class"] for r in ordered)
        print(f"\n{len(ordered)} cases: {tot[GOOD]} good, {tot[WEAK]} weak, {tot[BAD]} bad "
              f"({meta['seconds']:.0f} s); {a.out_prefix}.json, {a.out_prefix}.md", flush=True)
        return 1 if tot[BAD] else 0
    finally:
        for m in list(ctx.mounts):
            ctx.umount(m)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
