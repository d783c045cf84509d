#!/usr/bin/env python3
"""Generates pipeline/text/unicode_data.inc: the Unicode tables that the C++ CLIP tokenizer needs.

The tokenizer must give the same ids as transformers' CLIPTokenizer, which runs on the Rust `tokenizers`
library. That library does not use one Unicode version throughout:
  - \\p{L}, \\p{N} and \\s come from Oniguruma (the regex engine of its `Split`/`Replace` steps),
  - `Lowercase` is Rust's char::to_lowercase,
  - `NFC` is the `unicode-normalization-alignments` crate, whose tables are older than Python's.
So the tables are built from Python's `unicodedata` and then reconciled with the installed `tokenizers`
(the reference): each per-code-point property is probed through the library itself, and every difference is
applied and printed. The result is checked by running a Python copy of the C++ NFC algorithm on the
generated tables against the library's NFC over every code point and over composed/reordered sequences.

Run with the oracle virtual environment (it has `tokenizers`):
  /root/.local/share/sdxlb/venv/bin/python scripts/gen_unicode_data.py [--out pipeline/text/unicode_data.inc]
`--no-reference` builds from `unicodedata` alone (for a machine without `tokenizers`; ids may then differ on
code points newer than Python's Unicode version).
"""
import argparse
import os
import random
import sys
import unicodedata as ud

MAX_CP = 0x110000
ALL_CPS = [c for c in range(MAX_CP) if not 0xD800 <= c <= 0xDFFF]
SEP = 0x7C  # '|': a starter with no decomposition, used to probe many strings in one library call
PROBE_CPS = [c for c in ALL_CPS if c != SEP]

# White_Space (PropList.txt), which is what Oniguruma's \s means for Unicode text. Python's str.isspace()
# also counts U+001C..U+001F (bidi class B/S), which Oniguruma does not.
WHITE_SPACE = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + [
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000]

S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
N_COUNT = V_COUNT * T_COUNT
S_COUNT = L_COUNT * N_COUNT


def base_tables():
    """Tables from Python's unicodedata alone."""
    t = {}
    t["letters"] = {c for c in ALL_CPS if ud.category(chr(c)).startswith("L")}
    t["numbers"] = {c for c in ALL_CPS if ud.category(chr(c)).startswith("N")}
    t["spaces"] = set(WHITE_SPACE)
    # Per code point, as tokenizers' Lowercase does (no Final_Sigma context: it maps char by char).
    t["lower"] = {c: chr(c).lower() for c in ALL_CPS if chr(c).lower() != chr(c)}
    t["ccc"] = {c: ud.combining(chr(c)) for c in ALL_CPS if ud.combining(chr(c))}
    decomp = {}
    for c in ALL_CPS:
        d = ud.decomposition(chr(c))
        if d and not d.startswith("<"):
            decomp[c] = [int(x, 16) for x in d.split()]
    t["decomp"] = decomp
    comp = {}
    for c, d in decomp.items():
        # A primary composite: a two-code-point canonical decomposition that NFC recomposes (this leaves out
        # the composition exclusions and non-starter decompositions).
        if len(d) == 2 and ud.normalize("NFC", chr(c)) == chr(c):
            comp[(d[0], d[1])] = c
    t["comp"] = comp
    return t


# ---- A Python copy of the C++ NFC (pipeline/text/unicode_text.cpp), used to check the tables. ----

def _decompose(c, t, out):
    if S_BASE <= c < S_BASE + S_COUNT:
        s = c - S_BASE
        out.append(L_BASE + s // N_COUNT)
        out.append(V_BASE + (s % N_COUNT) // T_COUNT)
        if s % T_COUNT:
            out.append(T_BASE + s % T_COUNT)
        return
    d = t["decomp"].get(c)
    if d is None:
        out.append(c)
        return
    for x in d:
        _decompose(x, t, out)


def _compose_pair(a, b, t):
    if L_BASE <= a < L_BASE + L_COUNT and V_BASE <= b < V_BASE + V_COUNT:
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT
    if S_BASE <= a < S_BASE + S_COUNT and (a - S_BASE) % T_COUNT == 0 and T_BASE < b < T_BASE + T_COUNT:
        return a + (b - T_BASE)
    return t["comp"].get((a, b))


def nfc_model(s, t):
    cps = []
    for ch in s:
        _decompose(ord(ch), t, cps)
    ccc = t["ccc"]
    # Canonical ordering: a stable sort of each run of non-starters by combining class.
    i = 0
    while i < len(cps):
        if ccc.get(cps[i], 0) == 0:
            i += 1
            continue
        j = i
        while j < len(cps) and ccc.get(cps[j], 0) != 0:
            j += 1
        cps[i:j] = sorted(cps[i:j], key=lambda x: ccc.get(x, 0))
        i = j
    # Canonical composition.
    out = []
    starter = -1
    last_ccc = -1
    for c in cps:
        cc = ccc.get(c, 0)
        if starter >= 0 and (last_ccc < cc or (last_ccc == 0 and len(out) - 1 == starter)):
            composed = _compose_pair(out[starter], c, t)
            if composed is not None:
                out[starter] = composed
                continue
        if cc == 0:
            starter = len(out)
        last_ccc = cc
        out.append(c)
    return "".join(chr(c) for c in out)


# ---- Reconciliation with the reference library. ----

def _matched(pattern):
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(pattern), "removed", invert=True)
    found = set()
    for tok, _ in split.pre_tokenize_str("".join(chr(c) for c in ALL_CPS)):
        found.update(ord(ch) for ch in tok)
    return found


def _probe(normalizer, strings):
    """Normalizes many SEP-free strings in one call; returns the outputs in order."""
    out = normalizer.normalize_str(chr(SEP).join(strings)).split(chr(SEP))
    assert len(out) == len(strings)
    return out


def _report(name, added, removed):
    def show(cps):
        return " ".join(f"U+{c:04X}" for c in sorted(cps)[:12]) + (" ..." if len(cps) > 12 else "")

    print(f"  {name}: +{len(added)} -{len(removed)}" + (f"  added {show(added)}" if added else "") +
          (f"  removed {show(removed)}" if removed else ""))


def reconcile(t):
    import tokenizers
    from tokenizers import normalizers

    print(f"reconciling with tokenizers {tokenizers.__version__}:")
    notes = [f"tokenizers {tokenizers.__version__}"]
    for key, pattern in (("letters", r"\p{L}"), ("numbers", r"\p{N}"), ("spaces", r"\s")):
        ref = _matched(pattern)
        _report(key, ref - t[key], t[key] - ref)
        notes.append(f"{key} +{len(ref - t[key])} -{len(t[key] - ref)}")
        t[key] = ref

    lower = normalizers.Lowercase()
    ref_lower = {}
    for c, out in zip(PROBE_CPS, _probe(lower, [chr(c) for c in PROBE_CPS])):
        if out != chr(c):
            ref_lower[c] = out
    if lower.normalize_str(chr(SEP)) != chr(SEP):
        ref_lower[SEP] = lower.normalize_str(chr(SEP))
    changed = {c for c in set(ref_lower) | set(t["lower"]) if ref_lower.get(c) != t["lower"].get(c)}
    _report("lowercase", changed, set())
    notes.append(f"lowercase {len(changed)} changed")
    t["lower"] = ref_lower

    # Combining classes the NFC crate does not know (marks newer than its Unicode version) act as starters.
    nfc = normalizers.NFC()
    ccc = t["ccc"]
    marks = sorted(ccc)
    # ccc > 1: a following U+0334 (ccc 1) moves in front; ccc == 1: it moves in front of a preceding U+0301.
    probes = ["0" + chr(c) + "\u0334" if ccc[c] > 1 else "0\u0301" + chr(c) for c in marks]
    unknown = set()
    for c, p, out in zip(marks, probes, _probe(nfc, probes)):
        if out == p and ud.normalize("NFC", p) != p:
            unknown.add(c)
    for c in unknown:
        del ccc[c]
    _report("combining classes (dropped)", set(), unknown)
    notes.append(f"ccc -{len(unknown)}")

    nfd = normalizers.NFD()
    dropped = set()
    for c, out in zip(PROBE_CPS, _probe(nfd, [chr(c) for c in PROBE_CPS])):
        if out != ud.normalize("NFD", chr(c)):
            if out != chr(c):
                sys.exit(f"U+{c:04X}: tokenizers decomposes it differently ({out!r}); extend this script")
            dropped.add(c)
    for c in dropped:
        del t["decomp"][c]
    t["comp"] = {k: v for k, v in t["comp"].items() if v not in dropped}
    _report("decompositions (dropped)", set(), dropped)
    notes.append(f"decompositions -{len(dropped)}")
    return notes


def verify_nfc(t):
    """Checks the Python copy of the C++ NFC on the final tables against the library's NFC."""
    from tokenizers import normalizers

    nfc = normalizers.NFC()
    rng = random.Random(7)
    marks = sorted(t["ccc"]) + [0x334, 0x301, 0x316, 0x345, 0x3099, 0x309A]
    composites = sorted(t["comp"].values())
    strings = [chr(c) for c in PROBE_CPS]
    strings += ["0" + chr(c) + "\u0334" for c in PROBE_CPS]
    strings += [ud.normalize("NFD", chr(c)) + chr(rng.choice(marks)) for c in composites]
    for _ in range(200000):
        base = chr(rng.choice(composites)) if rng.random() < 0.5 else rng.choice("aeiouAEIOUnNcCsSzZ\u3046\u304b")
        s = base + "".join(chr(rng.choice(marks)) for _ in range(rng.randint(1, 4)))
        strings.append(ud.normalize("NFD", s) if rng.random() < 0.5 else s)
    hangul = [chr(L_BASE + i) + chr(V_BASE + j) + (chr(T_BASE + k) if k else "")
              for i in range(L_COUNT) for j in range(V_COUNT) for k in range(0, T_COUNT, 3)]
    strings += hangul + [chr(S_BASE + i) + chr(T_BASE + 1 + i % 27) for i in range(0, S_COUNT, 97)]
    bad = 0
    for s, out in zip(strings, _probe(nfc, strings)):
        if nfc_model(s, t) != out:
            bad += 1
            if bad <= 5:
                print(f"  NFC mismatch on {s!r}: library {out!r}, tables {nfc_model(s, t)!r}")
    print(f"NFC check: {len(strings)} strings, {bad} mismatches")
    if bad:
        sys.exit("the generated NFC tables do not reproduce tokenizers' NFC")


# ---- Output ----

def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] + 1 == c:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def emit(name, ctype, rows, per_line):
    lines = [f"constexpr {ctype} {name}[] = {{"]
    for i in range(0, len(rows), per_line):
        lines.append("    " + " ".join(r + "," for r in rows[i:i + per_line]))
    lines.append("};")
    return "\n".join(lines)


def hx(c):
    return f"0x{c:X}"


def render(t, notes):
    lower_rows = []
    for c, s in sorted(t["lower"].items()):
        cps = [ord(x) for x in s]
        if len(cps) > 2:
            sys.exit(f"U+{c:04X} lowercases to {len(cps)} code points; LowercaseEntry holds 2")
        lower_rows.append("{" + ", ".join(hx(x) for x in [c] + cps + [0] * (2 - len(cps))) + "}")
    ccc_rows = []
    for c in sorted(t["ccc"]):
        v = t["ccc"][c]
        if ccc_rows and ccc_rows[-1][1] + 1 == c and ccc_rows[-1][2] == v:
            ccc_rows[-1][1] = c
        else:
            ccc_rows.append([c, c, v])
    decomp_rows = []
    for c, d in sorted(t["decomp"].items()):
        if len(d) > 2:
            sys.exit(f"U+{c:04X} has a {len(d)}-code-point canonical decomposition; Decomposition holds 2")
        decomp_rows.append("{" + ", ".join(hx(x) for x in [c] + d + [0] * (2 - len(d))) + "}")
    comp_rows = ["{" + f"{hx(a)}, {hx(b)}, {hx(c)}" + "}" for (a, b), c in sorted(t["comp"].items())]
    parts = [
        "// Generated by scripts/gen_unicode_data.py; do not edit. Included by pipeline/text/unicode_text.cpp only.",
        f"// Source: Python unicodedata {ud.unidata_version}, reconciled with the reference library: "
        + "; ".join(notes) + ".",
        "// Every table is sorted by code point (compositions by pair), for binary search.",
        "",
        "// \\p{L} and \\p{N} as Oniguruma matches them in tokenizers' Split pre-tokenizer.",
        emit("kLetterRanges", "CodepointRange", ["{" + f"{hx(a)}, {hx(b)}" + "}" for a, b in ranges(t["letters"])], 6),
        emit("kNumberRanges", "CodepointRange", ["{" + f"{hx(a)}, {hx(b)}" + "}" for a, b in ranges(t["numbers"])], 6),
        "// \\s as Oniguruma matches it (tokenizers' Replace(\\s+, ' ') normalizer).",
        emit("kSpaceCodepoints", "char32_t", [hx(c) for c in sorted(t["spaces"])], 12),
        "// Per-code-point full lowercase mapping (Rust char::to_lowercase): {code point, first, second or 0}.",
        emit("kLowercase", "LowercaseEntry", lower_rows, 5),
        "// Canonical combining classes as the NFC implementation knows them: {first, last, class}.",
        emit("kCombiningClasses", "CombiningClassRange", ["{" + f"{hx(a)}, {hx(b)}, {v}" + "}" for a, b, v in ccc_rows],
             5),
        "// Canonical decompositions, one level: {code point, first, second or 0}. Hangul is algorithmic.",
        emit("kDecompositions", "Decomposition", decomp_rows, 5),
        "// Primary composites: {first, second, composite}. Hangul is algorithmic.",
        emit("kCompositions", "Composition", comp_rows, 4),
        "",
    ]
    return "\n".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "pipeline", "unicode_data.inc"))
    ap.add_argument("--no-reference", action="store_true", help="do not reconcile with the tokenizers library")
    args = ap.parse_args()
    t = base_tables()
    notes = ["not reconciled"]
    if not args.no_reference:
        notes = reconcile(t)
        verify_nfc(t)
    text = render(t, notes)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: {len(text)} bytes, {len(t['letters'])} letters, {len(t['numbers'])} numbers, "
          f"{len(t['lower'])} lowercase, {len(t['ccc'])} ccc, {len(t['decomp'])} decompositions, "
          f"{len(t['comp'])} compositions")


if __name__ == "__main__":
    main()
