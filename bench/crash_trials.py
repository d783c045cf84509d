#!/usr/bin/env python3
"""Seeded crash trials on the CPU: kill -9 a random rank at a random moment of a running job, measure what the
crash cost (items rendered again, seconds of work lost per worker), resume, and check the dataset.

Each trial (random.Random(seed + trial)):
  1. a fresh output folder; `mpirun -np workers+1 sdxl-batch run` with SDXLB_LOG=debug and
     SDXLB_FAULT=item_delay_ms=M (a 48-item, 64x64 job that takes ~15-30 s with 2 workers);
  2. a random rank in 0..workers gets SIGKILL at a random moment: 15%..85% of the reference run's render span
     (first to last `stored items` line) after the first `stored items` line of this run;
  3. after mpirun has exited (and before resuming): items published = item_index in complete segments
     (segments/*.h5, not .tmp); items completed = union of the `stored items` log lines; rendered again =
     completed but not published; lost seconds per worker = its death (the kill time, or its last log line
     when later) minus the start of its open segment (its last `published` line, else its `render pipeline
     ready` line), bounded by segment_seconds + one group (the longest gap between two of its `stored items`
     lines in this run);
  4. the same command again (no kill) must exit 0; index.h5 has all items with status 1, images and metadata
     bit-identical to an uninterrupted reference run, and the complete segments hold every item exactly once.

Writes <out>.json and <out>.md, prints the table, exits 1 when any trial fails.
Usage: crash_trials.py --bin build/apps/sdxl-batch [--trials 20] [--seed 1] [--workers 2] [--segment-seconds 3]
Quick mode (for ctest): --trials 3.
"""
import argparse
import datetime
import glob
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import e2e_jobs as e2e  # noqa: E402  (rank_pids: the ranks under mpirun)

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader", "-np"]
PROMPTS = ["a red fox in snow", "an astronaut on a horse", "a bowl of ramen", "lighthouse at dusk",
           "a cat in a hat", "café au lait, still life", "mountains at dawn", "city street, rain",
           "a teapot on a table", "a sailboat at sea", "autumn forest path", "a robot reading a book",
           "desert dunes at noon", "a koi pond", "neon signs at night", "a snowy cabin"]
IMAGES_PER_PROMPT = 3
META_KEYS = ("item_index", "prompt_index", "image_k", "seed", "prompt", "status")
LINE_RE = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\.(\d\d\d)\] \[rank (\d+)\] (\w+): (.*)$")


# ----------------------------------------------------------------------------------------------------------
# job, running


def write_job(folder, model, cache, segment_seconds):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "prompts.txt"), "w") as f:
        f.write("\n".join(PROMPTS) + "\n")
    settings = dict(model=model, prompts_file="prompts.txt", negative_prompt="", images_per_prompt=IMAGES_PER_PROMPT,
                    seed=77, steps=3, guidance=5.0, width=64, height=64, batch_size=2, dtype="fp32", device="cpu",
                    output="out", image_format="raw", segment_items=1000, segment_seconds=segment_seconds,
                    progress_interval_s=5, embedding_cache=cache)
    lines = [f'{k}: "{v}"' if isinstance(v, str) else f"{k}: {v}" for k, v in settings.items()]
    path = os.path.join(folder, "job.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def job_env(item_delay_ms):
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
             SDXLB_LOG="debug")
    if item_delay_ms > 0:
        e["SDXLB_FAULT"] = f"item_delay_ms={item_delay_ms}"
    else:
        e.pop("SDXLB_FAULT", None)
    return e


def command(binary, job, ranks):
    return MPIRUN + [str(ranks), binary, "run", "--quiet", job]


def run_to_end(binary, job, ranks, env, log_prefix, timeout=900):
    """Runs the job to its end; returns (exit code, wall seconds, start epoch, stderr text)."""
    t0 = time.time()
    with open(log_prefix + ".stdout", "w") as out, open(log_prefix + ".stderr", "w") as err:
        p = subprocess.run(command(binary, job, ranks), env=env, stdout=out, stderr=err, timeout=timeout,
                           cwd=os.path.dirname(job))
    wall = time.time() - t0
    return p.returncode, wall, t0, open(log_prefix + ".stderr", errors="replace").read()


def wait_for_binary(binary, timeout=600):
    """The binary may be rebuilt under us: wait until it is there and runs."""
    t_end = time.time() + timeout
    while True:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            try:
                if subprocess.run([binary, "--help"], capture_output=True, timeout=30).returncode in (0, 1, 2):
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
        if time.time() > t_end:
            raise SystemExit(f"{binary} is missing or does not run")
        time.sleep(5)


# ----------------------------------------------------------------------------------------------------------
# logs


def log_epoch(hh, mm, ss, ms, day_start_epoch):
    """A log time (spdlog: local time, no date) as epoch seconds, on the local day of day_start_epoch."""
    lt = time.localtime(day_start_epoch)
    t = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, hh, mm, ss, 0, 0, -1)) + ms / 1000.0
    if t < day_start_epoch - 43200:  # the run crossed midnight
        t += 86400
    return t


def parse_log(text, start_epoch):
    """Per rank: stored [(t, [items])], published [(t, path, n)], ready t, last t."""
    ranks = {}
    for line in text.splitlines():
        m = LINE_RE.match(line)
        if not m:
            continue
        hh, mi, ss, ms, rank = (int(m.group(i)) for i in range(1, 6))
        msg = m.group(7)
        t = log_epoch(hh, mi, ss, ms, start_epoch)
        r = ranks.setdefault(rank, {"stored": [], "published": [], "ready": None, "first": t, "last": t})
        r["last"] = max(r["last"], t)
        if msg.startswith("stored items"):
            body = msg[len("stored items"):].split(" (")[0]
            items = [int(x.replace("(failed)", "")) for x in body.split()]
            r["stored"].append((t, items))
        elif msg.startswith("published "):
            pm = re.match(r"published (\S+) with (\d+) items", msg)
            if pm:
                r["published"].append((t, pm.group(1), int(pm.group(2))))
        elif msg.startswith("startup: render pipeline ready"):
            r["ready"] = t
    return ranks


def stored_span(log):
    times = [t for r in log.values() for t, _ in r["stored"]]
    return (min(times), max(times)) if times else (None, None)


def group_gaps(r):
    ts = [t for t, _ in r["stored"]]
    return [b - a for a, b in zip(ts, ts[1:])]


# ----------------------------------------------------------------------------------------------------------
# datasets


def read_index(out):
    with h5py.File(os.path.join(out, "index.h5"), "r") as f:
        images = f["images"][()]
        meta = {k: f[k][()] for k in META_KEYS}
    return images, meta


def segment_items(out):
    """item_index of every complete segment file, concatenated; and the number of .tmp files."""
    items = []
    for p in sorted(glob.glob(os.path.join(out, "segments", "*.h5"))):
        with h5py.File(p, "r") as f:
            items.extend(int(i) for i in f["item_index"][()])
    tmps = len(glob.glob(os.path.join(out, "segments", "*.tmp")))
    return items, tmps


def compare(out, ref_images, ref_meta, total):
    """Problems with out/index.h5 against the reference ([] when none)."""
    problems = []
    try:
        images, meta = read_index(out)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return [f"cannot read index.h5: {e}"]
    if len(meta["item_index"]) != total:
        problems.append(f"index.h5 has {len(meta['item_index'])} items, expected {total}")
    if not (meta["status"] == 1).all():
        problems.append(f"items not ok: {list(np.nonzero(meta['status'] != 1)[0])}")
    if images.shape != ref_images.shape or not np.array_equal(images, ref_images):
        diff = "shape " + str(images.shape) if images.shape != ref_images.shape else \
            "items " + str(sorted({int(i) for i in np.nonzero((images != ref_images).any(axis=(1, 2, 3)))[0]}))
        problems.append("images differ from the reference: " + diff)
    for k in META_KEYS:
        if meta[k].shape != ref_meta[k].shape or not np.array_equal(meta[k], ref_meta[k]):
            problems.append(f"metadata column {k} differs from the reference")
    return problems


# ----------------------------------------------------------------------------------------------------------
# one trial


def kill_trial(binary, job, ranks, env, log_prefix, rng, workers, ref_span, timeout):
    """Starts the job, kills one rank at a random moment; returns a dict of what happened."""
    rank = rng.randint(0, workers)
    frac = rng.uniform(0.15, 0.85)
    err_path = log_prefix + ".stderr"
    t_start = time.time()
    with open(log_prefix + ".stdout", "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen(command(binary, job, ranks), env=env, stdout=out, stderr=err, cwd=os.path.dirname(job),
                             start_new_session=True)
    res = {"rank": rank, "frac": round(frac, 4), "t_start": t_start}
    # Wait for the first `stored items` line.
    t_first = None
    while t_first is None:
        if p.poll() is not None:
            res["error"] = f"mpirun exited {p.returncode} before the first stored item"
            return res
        if time.time() - t_start > timeout:
            break
        with open(err_path, errors="replace") as f:
            if "debug: stored items" in f.read():
                t_first = time.time()
                break
        time.sleep(0.02)
    if t_first is None:
        res["error"] = "no stored item within the timeout"
        _stop(p)
        return res
    t_kill_target = t_first + frac * ref_span
    pid = None
    while time.time() < t_kill_target:
        if p.poll() is not None:
            break
        pid = e2e.rank_pids(p.pid).get(rank, pid)
        time.sleep(min(0.05, max(0.0, t_kill_target - time.time())))
    if p.poll() is not None:
        res["error"] = f"the job ended (exit {p.returncode}) before the kill moment ({frac:.0%} of the span)"
        return res
    pid = e2e.rank_pids(p.pid).get(rank, pid)
    if pid is None:
        res["error"] = f"no process found for rank {rank}"
        _stop(p)
        return res
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    res.update(pid=pid, t_kill=t_kill, t_first_seen=t_first)
    try:
        res["mpirun_rc"] = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        res["mpirun_rc"] = "timeout: mpirun killed"
        _stop(p)
    res["t_exit"] = time.time()
    return res


def _stop(p):
    """Ends our mpirun and its ranks (by pid)."""
    for pid in sorted(e2e.rank_pids(p.pid).values()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        p.kill()
    except OSError:
        pass
    p.wait()


def analyse_kill(out, log, res, workers, segment_seconds):
    """What the crash cost: published, completed, rendered again, lost seconds per worker."""
    published, tmps = segment_items(out)
    completed = set()
    per_rank_completed = {}
    for rank, r in log.items():
        s = {i for _, items in r["stored"] for i in items}
        per_rank_completed[rank] = len(s)
        completed |= s
    pub = set(published)
    lost = {}
    bound = {}
    for w in range(1, workers + 1):
        r = log.get(w)
        if r is None or (not r["stored"] and not r["published"]):
            lost[w], bound[w] = 0.0, float(segment_seconds)
            continue
        death = res["t_kill"] if w == res["rank"] else max(res["t_kill"], r["last"])
        if r["published"] and r["published"][-1][0] <= death:
            seg_start = r["published"][-1][0]
        elif r["ready"] is not None:
            seg_start = r["ready"]
        else:  # first stored line minus one group
            gaps = group_gaps(r)
            seg_start = r["stored"][0][0] - (statistics.median(gaps) if gaps else 0.0)
        lost[w] = max(0.0, death - seg_start)
        gaps = group_gaps(r)
        bound[w] = segment_seconds + (max(gaps) if gaps else 0.0)
    return {
        "published": len(pub), "published_duplicates": len(published) - len(pub), "tmp_files": tmps,
        "completed": len(completed), "per_rank_completed": per_rank_completed,
        "rendered_again": len(completed - pub), "published_not_logged": len(pub - completed),
        "lost_s": {str(w): round(v, 3) for w, v in lost.items()},
        "bound_s": {str(w): round(v, 3) for w, v in bound.items()},
        "max_lost_s": round(max(lost.values()) if lost else 0.0, 3),
        "lost_within_bound": all(lost[w] <= bound[w] for w in lost),
        "bound_of_max": round(bound[max(lost, key=lost.get)] if lost else segment_seconds, 3),
    }


# ----------------------------------------------------------------------------------------------------------


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="path to sdxl-batch")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--segment-seconds", type=float, default=3)
    ap.add_argument("--item-delay-ms", type=int, default=250, help="SDXLB_FAULT=item_delay_ms (killed and resumed runs)")
    ap.add_argument("--out", default=None, help="results path prefix (default bench/results/<date>-cpu-crash-trials)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    here = os.path.dirname(os.path.abspath(__file__))
    out_prefix = args.out or os.path.join(here, "results", datetime.date.today().isoformat() + "-cpu-crash-trials")
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    ranks = args.workers + 1
    total = len(PROMPTS) * IMAGES_PER_PROMPT
    seg_s = args.segment_seconds
    seg_s_yaml = int(seg_s) if float(seg_s).is_integer() else seg_s
    env = job_env(args.item_delay_ms)
    t_begin = time.time()

    wait_for_binary(binary)
    tmp = tempfile.mkdtemp(prefix="sdxlb-crash-")
    model, cache = os.path.join(tmp, "model"), os.path.join(tmp, "embeddings")
    subprocess.run([binary, "make-demo-model", model], check=True, capture_output=True)

    # Reference: uninterrupted.
    ref_dir = os.path.join(tmp, "ref")
    ref_job = write_job(ref_dir, model, cache, seg_s_yaml)
    rc, ref_wall, ref_t0, ref_err = run_to_end(binary, ref_job, ranks, env, os.path.join(ref_dir, "run"))
    if rc != 0:
        print(ref_err[-4000:], file=sys.stderr)
        raise SystemExit(f"reference run exited {rc}")
    ref_images, ref_meta = read_index(os.path.join(ref_dir, "out"))
    assert len(ref_meta["item_index"]) == total and (ref_meta["status"] == 1).all(), "bad reference run"
    ref_log = parse_log(ref_err, ref_t0)
    first, last = stored_span(ref_log)
    ref_span = last - first
    ref_gaps = [g for r in ref_log.values() for g in group_gaps(r)]
    skew = min(r["first"] for r in ref_log.values()) - ref_t0
    print(f"reference: {ref_wall:.1f} s wall, render span {ref_span:.1f} s, median group {statistics.median(ref_gaps):.3f} s, "
          f"first log line {skew:+.2f} s after start", flush=True)
    if not -1.0 < skew < 30.0:
        print(f"warning: the log clock and time.time() disagree ({skew:+.1f} s): local-time conversion?", file=sys.stderr)

    rows, failed_logs = [], []
    for trial in range(args.trials):
        rng = random.Random(args.seed + trial)
        d = os.path.join(tmp, f"trial{trial:03d}")
        job = write_job(d, model, cache, seg_s_yaml)
        out = os.path.join(d, "out")
        wait_for_binary(binary)
        res = kill_trial(binary, job, ranks, env, os.path.join(d, "killed"), rng, args.workers, ref_span, timeout=600)
        row = {"trial": trial, "rng_seed": args.seed + trial, "killed_rank": res["rank"], "kill_frac": res["frac"],
               "binary_mtime": os.path.getmtime(binary)}
        problems = []
        if "error" in res:
            problems.append(res["error"])
        else:
            row["kill_after_start_s"] = round(res["t_kill"] - res["t_start"], 3)
            row["kill_after_first_item_s"] = round(res["t_kill"] - res["t_first_seen"], 3)
            row["kill_clock"] = time.strftime("%H:%M:%S", time.localtime(res["t_kill"])) + \
                f".{int(res['t_kill'] % 1 * 1000):03d}"  # as in the log lines
            row["killed_pid"] = res["pid"]
            row["mpirun_rc"] = res["mpirun_rc"]
            row["mpirun_exit_after_kill_s"] = round(res["t_exit"] - res["t_kill"], 3)
            if res["mpirun_rc"] == 0:
                problems.append("the killed run exited 0")
            err = open(os.path.join(d, "killed.stderr"), errors="replace").read()
            a = analyse_kill(out, parse_log(err, res["t_start"]), res, args.workers, seg_s)
            row.update(a)
            if a["published_duplicates"]:
                problems.append(f"{a['published_duplicates']} duplicated items in the segments after the kill")
            if not a["lost_within_bound"]:
                problems.append(f"lost work over the bound: {a['lost_s']} > {a['bound_s']}")
        # Resume: the same command, no kill.
        wait_for_binary(binary)
        rc, wall, _, _ = run_to_end(binary, job, ranks, env, os.path.join(d, "resume"))
        row["resume_rc"], row["resume_wall_s"] = rc, round(wall, 2)
        if rc != 0:
            problems.append(f"resume exited {rc}")
        cmp = compare(out, ref_images, ref_meta, total) if rc == 0 or os.path.exists(os.path.join(out, "index.h5")) \
            else ["no index.h5"]
        row["bit_identical"] = not cmp
        problems += cmp
        items, tmps = segment_items(out)
        counts = np.bincount(np.asarray(items, dtype=np.int64), minlength=total) if items else np.zeros(total, int)
        row["lost_items"] = int((counts[:total] == 0).sum())
        row["duplicated_items"] = int((counts > 1).sum())
        row["tmp_files_after_resume"] = tmps
        if row["lost_items"] or row["duplicated_items"] or len(counts) > total:
            problems.append(f"segments after resume: {row['lost_items']} lost, {row['duplicated_items']} duplicated "
                            f"items ({len(items)} rows)")
        row["pass"] = not problems
        row["problems"] = problems
        rows.append(row)
        if problems:
            for name in ("killed.stderr", "killed.stdout", "resume.stderr", "resume.stdout", "job.yaml"):
                src = os.path.join(d, name)
                if os.path.exists(src):
                    dst = f"{out_prefix}-trial{trial}-{name}"
                    shutil.copy(src, dst)
                    failed_logs.append(dst)
        print(fmt_row(row, seg_s), flush=True)

    elapsed = time.time() - t_begin
    ok = [r for r in rows if r["pass"]]
    killed = [r for r in rows if "max_lost_s" in r]
    totals = {
        "trials": len(rows), "passed": len(ok),
        "lost_items": sum(r["lost_items"] for r in rows),
        "duplicated_items": sum(r["duplicated_items"] for r in rows),
        "bit_identical": sum(r["bit_identical"] for r in rows),
        "max_rendered_again": max((r["rendered_again"] for r in killed), default=0),
        "max_lost_s": max((r["max_lost_s"] for r in killed), default=0),
        "lost_within_bound": sum(r["lost_within_bound"] for r in killed),
        "elapsed_s": round(elapsed, 1),
    }
    report = {
        "what": "CPU crash trials: kill -9 of a random rank at a random moment, then resume",
        "command": " ".join([sys.executable] + sys.argv),
        "binary": binary, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(), "cpus": os.cpu_count(),
        "args": vars(args),
        "job": open(ref_job).read(),
        "env": {k: env[k] for k in ("SDXLB_LOG", "SDXLB_FAULT") if k in env},
        "items": total, "ranks": ranks,
        "reference": {"wall_s": round(ref_wall, 2), "render_span_s": round(ref_span, 2),
                      "median_group_s": round(statistics.median(ref_gaps), 3),
                      "max_group_s": round(max(ref_gaps), 3)},
        "totals": totals, "rows": rows, "failed_trial_logs": failed_logs,
    }
    with open(out_prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    md = markdown(report, seg_s)
    with open(out_prefix + ".md", "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {out_prefix}.json and {out_prefix}.md")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if len(ok) == len(rows) else 1


HEADER = ("| trial | killed rank | kill at (s) | completed | published | rendered again | max lost (s) | bound (s) "
          "| pass |\n|---:|---:|---:|---:|---:|---:|---:|---:|:---|")


def fmt_row(r, seg_s):
    if "max_lost_s" not in r:
        return (f"| {r['trial']} | {r['killed_rank']} | - | - | - | - | - | - | "
                f"{'pass' if r['pass'] else 'FAIL: ' + '; '.join(r['problems'])} |")
    return (f"| {r['trial']} | {r['killed_rank']} | {r['kill_after_start_s']:.2f} | {r['completed']} | "
            f"{r['published']} | {r['rendered_again']} | {r['max_lost_s']:.2f} | {r['bound_of_max']:.2f} | "
            f"{'pass' if r['pass'] else 'FAIL: ' + '; '.join(r['problems'])} |")


def markdown(rep, seg_s):
    t = rep["totals"]
    a = rep["args"]
    lines = [
        f"# CPU crash trials ({rep['date'][:10]})",
        "",
        f"`{rep['command']}`",
        "",
        f"Machine: {rep['cpu_model']} ({rep['cpus']} CPUs). Job: {rep['items']} items (16 prompts x 3), 64x64, 3 steps, "
        f"fp32, CPU, raw images, batch_size 2, segment_items 1000, segment_seconds {a['segment_seconds']:g}, "
        f"{rep['ranks']} ranks (1 coordinator + {a['workers']} workers), SDXLB_FAULT=item_delay_ms={a['item_delay_ms']}. "
        f"Reference run (uninterrupted): {rep['reference']['wall_s']} s wall, render span "
        f"{rep['reference']['render_span_s']} s, median group {rep['reference']['median_group_s']} s.",
        "",
        f"Each trial (random.Random({a['seed']} + trial)) kills a random rank (0 = coordinator) with SIGKILL at a "
        "random moment 15%..85% of the reference render span after the first stored item, reads what the "
        "complete segments hold, reruns the same command, and checks index.h5 against the reference. "
        "*completed*: items in `stored items` log lines before the job ended; *published*: items in complete "
        "segments after the kill; *rendered again*: completed but not published; *max lost*: over the workers, "
        "death (kill time) minus the start of the open segment (its last `published` line, else `render pipeline "
        "ready`); *bound*: segment_seconds + that worker's longest gap between two stored-items lines.",
        "",
        HEADER,
    ]
    lines += [fmt_row(r, seg_s) for r in rep["rows"]]
    lines += [
        "",
        f"Totals over {t['trials']} trials: {t['passed']} passed; lost items {t['lost_items']}, duplicated items "
        f"{t['duplicated_items']}, bit-identical {t['bit_identical']}/{t['trials']}, max items rendered again "
        f"{t['max_rendered_again']}, max lost seconds {t['max_lost_s']:.2f} (within the bound in "
        f"{t['lost_within_bound']}/{t['trials']}). Total time {t['elapsed_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
