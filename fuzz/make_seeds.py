#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets into DIR/<target>/: small valid inputs of each
kind and a few mutations of them, so the fuzzer starts from files that get deep into the
loaders instead of bouncing off the first check. Also writes the byte-level BPE sections of the
real tokenizers in ../shared/tokenizers to DIR/../bpe/, which fuzz_encode loads.
Usage: make_seeds.py DIR (make uses build/fuzz/seeds)"""
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from test_bad_inputs import llama2c_bytes, tokenizer_bytes  # noqa: E402
import checkpoints  # noqa: E402
from reference import Config  # noqa: E402
sys.path.insert(0, os.path.join(HERE, ".."))
import export  # noqa: E402
from test_bpe_tokenizer import GPT2_PRE, tiny_json  # noqa: E402

TINY = [
    dict(dim=8, hidden_dim=12, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=16, seq_len=8),
    dict(dim=8, hidden_dim=6, n_layers=2, n_heads=2, n_kv_heads=2, vocab_size=-12, seq_len=4),
    dict(dim=4, hidden_dim=4, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=4, seq_len=2),
]


def llama2c_seed(shape):
    """llama2c_bytes with a separate classifier appended when vocab_size is negative."""
    data = llama2c_bytes(dict(shape, vocab_size=abs(shape["vocab_size"])),
                         header=[shape[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                                    "n_kv_heads", "vocab_size", "seq_len")])
    if shape["vocab_size"] < 0:
        data += b"\0" * (4 * -shape["vocab_size"] * shape["dim"])
    return data


# Small TLLM files of every weight type, written by export.py (through tests/checkpoints.py)
# with a 16-piece tokenizer so that each seed stays a few kilobytes:
# (config, dtype, group size, format version, per-tensor types).
TINY_TLLM = [
    (Config(8, 12, 1, 2, 1, 16, 8), "f32", None, 2, ()),
    (Config(8, 12, 2, 2, 2, 16, 4, shared_classifier=False), "bf16", None, 2, ()),
    (Config(8, 40, 1, 4, 2, 16, 8, head_size=4), "q8_0", 32, 2, ()),
    (Config(4, 6, 1, 1, 1, 16, 2, shared_classifier=False), "q8_0", 64, 2, ()),
    (Config(8, 12, 1, 2, 1, 16, 8, shared_classifier=False), "bf16", 32, 2,
     (("token_embedding", "q8_0"), ("layers.0.w2", "f32"))),
    (Config(8, 12, 1, 2, 1, 16, 8), "q8_0", 32, 1, ()),
    (Config(8, 12, 2, 2, 2, 16, 4, shared_classifier=False), "f32", None, 1, ()),
]
TINY_PIECES = [b"<unk>", b"<s>", b"</s>", b" ", b"a", b"b", b"c", b" a", b"ab", b"bc", b"abc",
               b"<0x41>", b"\xc3\xa9", b"\xe2\x96\x81", b"\n", b"  "]


def tllm_seeds(out):
    """TLLM files without their magic (the target adds it), version 2 and version 1, all
    written by export.py: from tests/checkpoints.py's random weights, and --random."""
    seeds = []
    for k, (c, dtype, group_size, version, overrides) in enumerate(TINY_TLLM):
        path = os.path.join(out, f"tiny_tllm_{k}.bin")
        checkpoints.export_tllm(path, c, checkpoints.random_weights(c, k), TINY_PIECES,
                                [-float(i) for i in range(len(TINY_PIECES))], dtype,
                                group_size, format_version=version, overrides=overrides)
        with open(path, "rb") as f:
            seeds.append(f.read()[4:])
    for dtype in ("f32", "q4_0"):
        path = os.path.join(out, f"tiny_tllm_export_{dtype}.bin")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "export.py"), path, "--random",
                        "8,12,1,2,1,259,8", "--seed", "1", "--dtype", dtype], check=True,
                       capture_output=True)
        with open(path, "rb") as f:
            seeds.append(f.read()[4:])
    seeds.append(bpe_tllm_seed(out))
    return seeds


def bpe_tllm_seed(out):
    """A tiny TLLM file (without its magic) with a byte-level BPE tokenizer (kind 2): 259
    tokens, an added <s> and <|im_end|>, a vocabulary 3 rows larger, Qwen3's chat template."""
    import numpy as np
    path = os.path.join(out, "tiny_bpe_tllm.json")
    with open(path, "w") as f:
        json.dump(tiny_json([("a", "b"), ("ab", "c")], added=[("<s>", True), ("<|im_end|>", True)]),
                  f)
    tok = export.byte_bpe_tokenizer(export.read_byte_bpe(path))
    cfg = export.Config(dim=8, hidden_dim=12, n_layers=1, n_heads=2, n_kv_heads=1, head_size=4,
                        vocab_size=tok.n_tokens + 3, seq_len=8, bos_id=tok.n_tokens - 2,
                        eos_ids=(tok.n_tokens - 1, tok.n_tokens - 2),
                        chat_template=export.TEMPLATES["qwen3"], qk_norm=True)
    rng = np.random.default_rng(0)
    tensors = ((name, rng.standard_normal(shape).astype(np.float32))
               for name, shape, _ in export.tensor_layout(cfg))
    path = os.path.join(out, "tiny_bpe_tllm.bin")
    export.write_tllm(path, cfg, tok, tensors, "f32", None, "seed")
    with open(path, "rb") as f:
        return f.read()[4:]


BPE_FAMILIES = {"llama3": 128256, "qwen3": 151936, "smollm2": 49152, "gpt2": 50257}


def bpe_sections(out):
    """Small byte-level BPE sections, one per pre-tokenizer, with the features each family
    uses (added tokens, a prefix, ignore_merges, NFC, missing bytes), each after the two bytes
    fuzz_tokenizer.c reads: kind 2 (the top bit) and a vocabulary a little larger than its
    tokens."""
    split = {"type": "Split", "behavior": "Isolated", "invert": False}
    no_regex = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},
                                                     {"Sequence": {"id": "A"}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [259]}}}
    merges = [("a", "b"), ("ab", "c"), (" ", "a"), ("1", "2"), (b"\xc3", b"\xa9"), ("\u00e9", "t"),
              ("<", "s")]
    variants = [
        tiny_json(merges, added=[("<s>", True), ("<t>", False)], post_processor=post),
        tiny_json(merges, added=[("<s>", True)], ignore_merges=True, extra=["xyz"],
                  pre_tokenizer={"type": "Sequence", "pretokenizers": [
                      dict(split, pattern={"Regex": export.LLAMA3_SPLIT}), no_regex]}),
        tiny_json(merges, added=[("<s>", True), ("été", False, True)],
                  normalizer={"type": "NFC"}, pre_tokenizer={"type": "Sequence", "pretokenizers": [
                      dict(split, pattern={"Regex": export.QWEN2_SPLIT}), no_regex]}),
        tiny_json(merges, drop=(4, 0xC0, 0xFF), added=[("<s>", True)],
                  pre_tokenizer={"type": "Sequence", "pretokenizers": [
                      {"type": "Digits", "individual_digits": True}, GPT2_PRE]}),
    ]
    seeds = []
    for k, tj in enumerate(variants):
        path = os.path.join(out, f"tiny_bpe_{k}.json")
        with open(path, "w") as f:
            json.dump(tj, f)
        tok = export.read_byte_bpe(path)
        seeds.append(struct.pack("<H", 0x8000 | len(tok.tokens) + 3) + export.byte_bpe_section(tok))
    bpe_dir = os.path.join(out, "..", "bpe")
    os.makedirs(bpe_dir, exist_ok=True)
    for name in BPE_FAMILIES:
        export.write_bpe_section(os.path.join(bpe_dir, f"{name}.bpe"),
                                 os.path.join(HERE, "..", "..", "shared", "tokenizers", name))
    return seeds


def bpe_texts():
    """Texts for fuzz_encode: every 8th entry of tests/bpe_corpus.json (but the empty one)."""
    with open(os.path.join(HERE, "..", "tests", "bpe_corpus.json"), encoding="utf-8") as f:
        entries = json.load(f)[::8]
    texts = [bytes.fromhex(e["hex"]) if isinstance(e, dict) else e.encode() for e in entries]
    return [t for t in texts if t]


def mutations(data):
    """A handful of cheap variations: truncations and one flipped byte."""
    yield data[: len(data) // 2]
    yield data[:-1]
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    yield bytes(flipped)


def main(out):
    seeds = {"checkpoint_llama2c": [], "checkpoint_tllm": [], "tokenizer": [], "encode": [],
             "args": []}
    for shape in TINY:
        seeds["checkpoint_llama2c"].append(llama2c_seed(shape))
    tok = tokenizer_bytes(259 + 8)
    seeds["tokenizer"].append(struct.pack("<H", 258) + struct.pack("<I", 259 + 8) + tok)
    seeds["tokenizer"].append(struct.pack("<H", 2) + struct.pack("<I", 3) + tokenizer_bytes(3))
    os.makedirs(out, exist_ok=True)
    seeds["checkpoint_tllm"] += tllm_seeds(out)
    seeds["tokenizer"] += bpe_sections(out)
    # argument lists for run's parser, NUL-separated, good and bad
    seeds["args"] = [b"\0".join(a) for a in [
        [b"m.bin", b"-n", b"12", b"-t", b"0.8", b"-p", b"0.9", b"-s", b"42", b"-i", b"Once"],
        [b"m.bin", b"-m", b"chat", b"-y", b"sys", b"--template", b"chatml", b"--stop", b"x"],
        [b"m.bin", b"-m", b"chat", b"--template", b"qwen3", b"--think", b"--template", b"llama3.2"],
        [b"m.bin", b"-k", b"40", b"--min-p", b"0.05", b"-z", b"tok.bin", b"-v", b"--logits", b"l"],
        [b"m.bin", b"-f", b"p.txt", b"--print-tokens"], [b"m.bin", b"-n", b"12abc"],
        [b"m.bin", b"--attn", b"a.bin", b"--attn-html", b"a.html", b"--attn-top", b"3",
         b"--attn-layer", b"0"],
        [b"m.bin", b"--threads", b"2", b"--ppl", b"story.txt", b"--no-prefill", b"--no-mmap"],
        [b"m.bin", b"--kv-type", b"q8", b"--sinks", b"4", b"--evict", b"64", b"--ppl-mode",
         b"stream", b"--ignore-eos", b"--no-shift"],
        [b"m.bin", b"-t", b"-1"], [b"m.bin", b"-p", b"1.5"], [b"m.bin", b"-s", b"x"],
        [b"m.bin", b"-i"], [b"m.bin", b"--bogus"], [b"m.bin", b"-m", b"dance"], [b"--help"],
        [b"--version"], [b"-n", b"1e99"], [b"m.bin", b"-f", b"a", b"-i", b"b"]]]
    seeds["encode"] += bpe_texts()
    seeds["encode"] += [b"Hello, world!", "h\u00e9llo \u4e16\u754c \U0001F600".encode(),
                        b"\xff\xfe\xc3", b"  two  spaces\tand\ttabs\n\n", b"\xe2\x82"]
    for target, items in seeds.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for i, data in enumerate(items):
            for j, variant in enumerate([data] + list(mutations(data))):
                with open(os.path.join(d, f"seed_{i}_{j}"), "wb") as f:
                    f.write(variant)


if __name__ == "__main__":
    main(sys.argv[1])
