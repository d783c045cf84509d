"""Reference ids of transformers' CLIPTokenizer (the `tokenizers`-backed one of transformers 5) for SDXL's two
tokenizer folders, for tests/clip_tokenizer_test.cpp.

Writes <out>/tokenizer/cases.json:
  {"transformers": version, "tokenizers": version, "max_length": 77,
   "folders": {name: folder relative to <out>},
   "cases": [{"text": prompt, "ids": {name: [77 ids]}}, ...]}
with the ids of CLIPTokenizer.from_pretrained(folder)(text, padding="max_length", max_length=77,
truncation=True). Folders:
  tokenizer, tokenizer_2   <out>/models/tiny-a/tokenizer{,_2}: the files exactly as SDXL ships them (tokenizer_2
                           pads with "!", which makes "!" a special token)
  legacy_1, legacy_2       the same vocab with the 2023 SDXL release's config style: special tokens as
                           {"__type": "AddedToken", "normalized": true} objects (<out>/tokenizer/variants/)
  decoder_1, decoder_2     the style newer transformers saves: an "added_tokens_decoder" where
                           <|startoftext|> is normalized (so "<|STARTOFTEXT|>" matches it) and <|endoftext|> not
The prompts: hand-written edge cases (unicode, accents, CJK, emoji, digits, punctuation runs, HTML entities,
whitespace runs, "!" and apostrophes, special-token text, long prompts, the empty prompt) and random ones from a
seeded generator.
"""
import json
import os
import random
import shutil

import tokenizers
import transformers
from transformers import CLIPTokenizer

N_RANDOM = 1200
SEED = 20240607

HAND = [
    "",
    " ",
    "   \t\n  ",
    "a photo of an astronaut riding a horse on mars",
    "A photo of an Astronaut riding a HORSE on Mars",
    "cat!!",
    "cat!",
    "!",
    "!!",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    "wow!! such art! very detail!!!",
    "hello!world",
    "?!?!",
    "...!...",
    "it's a dog's life, isn't it? we're here, they've gone, I'm fine, you'll see, he'd know",
    "IT'S A DOG'S LIFE, ISN'T IT? WE'RE HERE, THEY'VE GONE",
    "it’s curly ’s and ‘quoted’ text",
    "'s 't 're 've 'm 'll 'd",
    "''s '''t 'x 'S 'Re",
    "rock'n'roll o'clock don't",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;apos&#39; &nbsp; &copy; &#x27;",
    "fish &amp; chips &amp;amp; more",
    "<b>bakery</b> <i>italic</i> <br/>",
    "A   Café  &amp; <b>bakery</b>, 4k, highly-detailed!!! (masterpiece:1.2)",
    "ünïcödé — “quotes” 東京 🙂",
    "café naïve résumé Crème brûlée Ångström façade jalapeño",
    "cafe\u0301 re\u0301sume\u0301 A\u030angstro\u0308m",
    "a\u0328\u0301 a\u0301\u0328 o\u0302\u0323 o\u0323\u0302 \u1e0b\u0323 q\u0307\u0323",
    "\u0301leading combining mark",
    "İstanbul ISTANBUL ıi",
    "ΣΑΣ ΟΔΟΣ σς Καλημέρα κόσμε",
    "Straße STRASSE ẞ ß",
    "ǅemal ǈ ǋ",
    "ﬁne ﬂow ﬀ",
    "Ω Å K ℃ ™",
    "東京の夜景, 北京 上海 香港 台北",
    "日本語のプロンプト：猫が寝ている",
    "か\u3099き\u3099 が ぱ は\u309a",
    "안녕하세요 세계 한국어",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "가\u11a8 각",
    "🐱 🐶 👍 👍🏽 👩‍💻 🇯🇵 ❤️ ☕ 🏳️‍🌈 🧑🏿‍🚀",
    "emoji🐱in🐶words",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "Привет МИР ёжик Ёлка",
    "Ａｂｃ ＡＢＣ １２３ ！？",
    "1024x1024 3.14159 1,000,000 2023-12-31 12:30pm 50% $100 #1",
    "½ ¼ ² ³ ⁴ ₅ Ⅻ ⅻ ① ⑳",
    "٠١٢٣ ١٢٣٤ १२३ ๑๒๓ 𝟘𝟙𝟚",
    "𝐀𝐁𝐂 𝒶𝒷𝒸 𝔘𝔫𝔦",
    "tab\tseparated\twords",
    "new\nline\r\nwindows\rcr",
    "nbsp\u00a0em\u2003ideographic\u3000nel\u0085ls\u2028ps\u2029vt\x0bff\x0c",
    "fs\x1cgs\x1drs\x1eus\x1f",
    "zero\u200bwidth\u200cjoin\u200dbom\ufeff",
    "nul\x00bel\x07del\x7f",
    "private\ue000use \U000f0000 unassigned\u0378 nonchar\uffff \U0010ffff repl\ufffd",
    "<|startoftext|>",
    "<|endoftext|>",
    "a<|startoftext|>b<|endoftext|>c",
    "<|STARTOFTEXT|> a <|ENDOFTEXT|> b <|EndOfText|>",
    "<|startoftext|<|endoftext|> <|endoftext| <|endoftext|>> <<|endoftext|>",
    "!<|endoftext|>! x!<|startoftext|>",
    "(masterpiece:1.2), [cat|dog], {a,b}, __init__, --ar 16:9, #hashtag, @user",
    "http://example.com/a?b=c&d=e user@example.com C:\\path\\to\\file.png",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abababababababababababababababababab",
    "qwxzjv kxqz fjwq zzzzzz xyzzy",
    " ".join(["a very long prompt that will be truncated"] * 12),
    ", ".join(["masterpiece", "best quality", "ultra-detailed", "8k", "photorealistic"] * 10),
    " ".join(str(i) for i in range(200)),
    # Code points newer than Python's unicodedata but known to tokenizers' Unicode tables.
    "\u1c89\u1c8a \ua7cb\ua7cc\ua7dc \U00010d50\U00010d51\U00010d70 \U00010d40\U00010d41 \U000105c0",
    # Marks that the NFC library does not know (no reordering) and a decomposition it lacks.
    "0\u07fd\u0334 a\u0898\u0334 \U00011935\U00011930 \U00011938",
    "Ǆ ǅ ǆ Ⓐ ⓐ Ⅰ ⅰ",
]

WORDS = (
    "a an the of in on at with and or photo portrait painting drawing illustration render of cat dog horse "
    "astronaut castle forest city night sunset mountain river ocean robot dragon wizard girl boy woman man old "
    "young beautiful detailed highly ultra realistic photorealistic cinematic lighting volumetric bokeh 8k 4k "
    "hdr masterpiece best quality trending artstation unreal engine octane oil watercolor sketch anime style "
    "by greg rutkowski alphonse mucha studio ghibli vibrant colors dramatic sky golden hour wide angle macro "
    "lens 35mm f/1.8 depth field sharp focus intricate elegant fantasy sci-fi cyberpunk steampunk"
).split()

FRAGMENTS = [
    "!", "!!", "!!!", "?!", "...", "…", ",", ";", ":", "-", "--", "—", "–", "(", ")", "[", "]", "{", "}", "|",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s", "'", "\"", "`", "´",
    "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&copy;", "&", "<", ">", "</w>", "<b>",
    "<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|EndOfText|>", "<|endoftext|", "<|", "|>",
    "(masterpiece:1.2)", "((best quality))", "[[x]]", "1024x1024", "3.14", "2023", "100%", "$5", "#1", "@",
    "½", "²", "Ⅻ", "٣", "१२", "１２", "ＡＢ", "café", "e\u0301", "A\u030a", "a\u0328\u0301", "İ", "Σ", "ß",
    "ẞ", "ǅ", "ﬁ", "Ω", "東京", "猫", "안녕", "\u1100\u1161", "か\u3099", "🐱", "👍🏽", "👩‍💻", "🇯🇵", "❤️",
    "مرحبا", "שלום", "नमस्ते", "สวัสดี", "Привет", "Καλημέρα", "𝐀𝐁", "𝟘", "\u200b", "\ufeff", "\ufffd",
    "\u1c89", "\ua7cb", "\U00010d50", "\U00010d40", "\u07fd", "\U00011935\U00011930",
]

SEPARATORS = [" "] * 12 + ["", "  ", ", ", ",", "\t", "\n", "\r\n", " \t ", "\u00a0", "\u3000", "\u2003", "!",
                            " ! ", "_", "-", "/", ".", "\x1c"]

# Blocks to draw random code points from (letters, marks, digits, symbols, emoji, CJK, Hangul, etc.).
BLOCKS = [(0x20, 0x7E), (0xA0, 0x17F), (0x180, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
          (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1EFF),
          (0x2000, 0x206F), (0x2070, 0x209F), (0x2100, 0x218F), (0x2190, 0x22FF), (0x2460, 0x24FF),
          (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFB00, 0xFB4F), (0xFF00, 0xFFEF),
          (0x1D400, 0x1D7FF), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x10D40, 0x10D8F), (0xA7C0, 0xA7DF)]


def random_codepoints(rng, n):
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            c = rng.randrange(0x20, 0x110000)
        else:
            lo, hi = rng.choice(BLOCKS)
            c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            c = 0xFFFD
        out.append(chr(c))
    return "".join(out)


def random_prompt(rng):
    parts = []
    for _ in range(rng.choice([1, 2, 3, 5, 8, 12, 20, 30, 45, 70])):
        r = rng.random()
        if r < 0.5:
            w = rng.choice(WORDS)
            case = rng.random()
            w = w.upper() if case < 0.1 else w.capitalize() if case < 0.25 else w
        elif r < 0.7:
            w = rng.choice(FRAGMENTS)
        elif r < 0.85:
            w = random_codepoints(rng, rng.randint(1, 6))
        else:
            w = "".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 12)))
        parts.append(w)
        parts.append(rng.choice(SEPARATORS))
    text = "".join(parts)
    r = rng.random()
    if r < 0.05:
        text = "  " + text + "\n"
    elif r < 0.1:
        text = text.upper()
    return text


def prompts():
    rng = random.Random(SEED)
    out = list(HAND)
    out += [random_prompt(rng) for _ in range(N_RANDOM)]
    return out


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_variants(base1, base2, root):
    """Tokenizer folders with the same vocab/merges and the config styles found in SDXL releases."""
    def added(content, normalized, typed=True, **extra):
        d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
        d.update(extra)
        return {"__type": "AddedToken", **d} if typed else d

    folders = {}
    for i, (base, pad) in enumerate(((base1, "<|endoftext|>"), (base2, "!")), start=1):
        common = {"add_prefix_space": False, "clean_up_tokenization_spaces": True, "do_lower_case": True,
                  "errors": "replace", "model_max_length": 77, "pad_token": pad, "tokenizer_class": "CLIPTokenizer"}
        legacy_cfg = dict(common, bos_token=added("<|startoftext|>", True), eos_token=added("<|endoftext|>", True),
                          unk_token=added("<|endoftext|>", True))
        legacy_map = {"bos_token": added("<|startoftext|>", True, False), "eos_token": added("<|endoftext|>", True, False),
                      "pad_token": pad, "unk_token": added("<|endoftext|>", True, False)}
        decoder = {"49406": added("<|startoftext|>", True, False, special=True),
                   "49407": added("<|endoftext|>", False, False, special=True)}
        if pad == "!":
            decoder = {"0": added("!", False, False, special=True), **decoder}
        decoder_cfg = dict(common, added_tokens_decoder=decoder, additional_special_tokens=[],
                           bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
        for name, cfg, smap in ((f"legacy_{i}", legacy_cfg, legacy_map), (f"decoder_{i}", decoder_cfg,
                                                                           {"bos_token": "<|startoftext|>"})):
            folder = os.path.join(root, name)
            os.makedirs(folder, exist_ok=True)
            for f in ("vocab.json", "merges.txt"):
                _link_or_copy(os.path.join(base, f), os.path.join(folder, f))
            with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
                json.dump(smap, f, indent=2)
            folders[name] = folder
    return folders


def build(out):
    root = os.path.join(out, "tokenizer")
    os.makedirs(root, exist_ok=True)
    base = os.path.join(out, "models", "tiny-a")
    folders = {"tokenizer": os.path.join(base, "tokenizer"), "tokenizer_2": os.path.join(base, "tokenizer_2")}
    folders.update(write_variants(folders["tokenizer"], folders["tokenizer_2"], os.path.join(root, "variants")))
    texts = prompts()
    ids = {}
    for name, folder in folders.items():
        tok = CLIPTokenizer.from_pretrained(folder)
        ids[name] = tok(texts, padding="max_length", max_length=77, truncation=True).input_ids
        assert all(len(x) == 77 for x in ids[name])
    cases = [{"text": t, "ids": {name: ids[name][i] for name in folders}} for i, t in enumerate(texts)]
    doc = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "max_length": 77,
           "folders": {name: os.path.relpath(folder, out) for name, folder in folders.items()}, "cases": cases}
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
    differ = sum(c["ids"]["tokenizer"] != c["ids"]["tokenizer_2"] for c in cases)
    print(f"ref_tokenizer: {len(cases)} prompts x {len(folders)} tokenizers; tokenizer and tokenizer_2 differ on "
          f"{differ} (padding and '!')")
