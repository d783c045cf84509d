"""Collects what scripts/fuzz.sh left in its work folders (one <target>.log and corpus/<name>/ per target) into
OUT.json and OUT.md: per target, executions, exec/s, seconds, coverage, corpus size and the result.

Usage: collect_fuzz.py --out bench/results/DATE-fuzz [--run LABEL WORK "COMMAND"]... [--findings FILE.json]

Each --run is one scripts/fuzz.sh invocation (e.g. "short" and "long"); WORK is its SDXLB_FUZZ_WORK. A run
whose work folder is missing is skipped. --findings is a JSON list of {"target", "what", "input", "stack", "fix",
"files"}; without it the findings already in OUT.json are kept, so the file can be regenerated when a long run
ends."""
import argparse
import datetime
import json
import os
import platform
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["fuzz_job_spec", "fuzz_prompt_file", "fuzz_tokenizer", "fuzz_tokenizer_files", "fuzz_model_io"]
STATUS_LINE = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+")


def files_in(folder):
    return sum(len(f) for _, _, f in os.walk(folder)) if os.path.isdir(folder) else 0


def parse_log(path):
    text = open(path, errors="replace").read()
    out = {"executions": None, "exec_per_s": None, "seconds": None, "cov": None, "ft": None,
           "peak_rss_mb": None, "finished": False, "crash": None}
    for line in text.splitlines():
        m = STATUS_LINE.match(line)
        if m:
            out["executions"], out["cov"], out["ft"] = int(m.group(1)), int(m.group(3)), int(m.group(4))
        for key, stat in (("executions", "number_of_executed_units"), ("exec_per_s", "average_exec_per_sec"),
                          ("peak_rss_mb", "peak_rss_mb")):
            if line.startswith("stat::" + stat + ":"):
                out[key] = int(line.split(":")[-1])
        m = re.match(r"^Done (\d+) runs in (\d+) second", line)
        if m:
            out["finished"], out["executions"], out["seconds"] = True, int(m.group(1)), int(m.group(2))
        m = re.search(r"seed corpus: files: (\d+)", line)
        if m:
            out["seeds"] = int(m.group(1))
        m = re.search(r"Test unit written to (\S+)", line)
        if m:
            out["crash"] = m.group(1)
    m = re.search(r"^SUMMARY: (.*)$", text, re.M)
    out["summary"] = m.group(1) if m else None
    if out["seconds"] is None and out["executions"] and out["exec_per_s"]:
        out["seconds"] = round(out["executions"] / max(out["exec_per_s"], 1))
    return out


def collect_run(label, work, command):
    run = {"label": label, "work": work, "command": command, "targets": []}
    for t in TARGETS:
        log = os.path.join(work, t + ".log")
        if not os.path.exists(log):
            continue
        name = t[len("fuzz_"):]
        r = {"target": t, "seeds": files_in(os.path.join(ROOT, "fuzz", "corpus", name)), **parse_log(log),
             "corpus": files_in(os.path.join(work, "corpus", name))}
        r["result"] = "crash" if r["crash"] or r["summary"] else ("clean" if r["finished"] else "running/stopped")
        run["targets"].append(r)
    return run


def markdown(doc):
    lines = [f"# Fuzzing ({doc['date'][:10]})", "",
             f"Machine: {doc['machine']}. libFuzzer + ASan + UBSan ({doc['clang']}), built by "
             "`scripts/fuzz.sh` in `build-fuzz` (`-O1 -g`, `-D_GLIBCXX_ASSERTIONS`, `-fno-sanitize-recover=all`). "
             "Each target starts from a copy of `fuzz/corpus/<name>/` with `fuzz/dict/<name>.dict`. "
             "The machine was shared with builds and tests while these ran, so exec/s is a floor.", ""]
    for run in doc["runs"]:
        lines += [f"## {run['label']}", "", f"`{run['command']}`", "",
                  "| target | executions | exec/s | seconds | cov | ft | corpus (seeds -> end) | peak RSS MB | result |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in run["targets"]:
            lines.append(f"| {r['target']} | {r['executions']} | {r['exec_per_s']} | {r['seconds']} | {r['cov']} | "
                         f"{r['ft']} | {r['seeds']} -> {r['corpus']} | {r['peak_rss_mb']} | {r['result']} |")
        lines.append("")
    lines += ["## Crashes found and fixed", ""]
    if not doc["findings"]:
        lines.append("None.")
    for i, f in enumerate(doc["findings"], 1):
        lines += [f"{i}. **{f['target']}**: {f['what']}", f"   - input: {f['input']}", f"   - stack: {f['stack']}",
                  f"   - fix: {f['fix']} ({', '.join(f['files'])})", ""]
    if doc.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", nargs=3, action="append", default=[], metavar=("LABEL", "WORK", "COMMAND"))
    ap.add_argument("--findings")
    ap.add_argument("--notes")
    args = ap.parse_args()
    old = json.load(open(args.out + ".json")) if os.path.exists(args.out + ".json") else {}
    clang = os.popen("clang++ --version").read().split("\n")[0]
    doc = {
        "what": "libFuzzer runs of the parsers (fuzz/): job files, prompt files, CLIP tokenizer, model configs "
                "and safetensors headers",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "clang": clang,
        "runs": [collect_run(*r) for r in args.run if os.path.isdir(r[1])],
        "findings": json.load(open(args.findings)) if args.findings else old.get("findings", []),
        "notes": json.load(open(args.notes)) if args.notes else old.get("notes", []),
    }
    json.dump(doc, open(args.out + ".json", "w"), indent=1)
    open(args.out + ".md", "w").write(markdown(doc) + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
