#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets into DIR/<target>/: small valid inputs of each
kind and a few mutations of them, so the fuzzer starts from files that get deep into the
loaders instead of bouncing off the first check. Usage: make_seeds.py DIR"""
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from test_bad_inputs import llama2c_bytes, tokenizer_bytes  # noqa: E402

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


def mutations(data):
    """A handful of cheap variations: truncations and one flipped byte."""
    yield data[: len(data) // 2]
    yield data[:-1]
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    yield bytes(flipped)


def main(out):
    seeds = {"checkpoint_llama2c": [], "checkpoint_tllm": [], "tokenizer": [], "encode": []}
    for shape in TINY:
        seeds["checkpoint_llama2c"].append(llama2c_seed(shape))
    tok = tokenizer_bytes(259 + 8)
    seeds["tokenizer"].append(struct.pack("<H", 258) + struct.pack("<I", 259 + 8) + tok)
    seeds["tokenizer"].append(struct.pack("<H", 2) + struct.pack("<I", 3) + tokenizer_bytes(3))
    tllm = os.path.join(out, "tiny_tllm.bin")
    os.makedirs(out, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(HERE, "..", "export.py"), tllm, "--random",
                    "8,12,1,2,1,259,8", "--seed", "1"], check=True, capture_output=True)
    with open(tllm, "rb") as f:
        seeds["checkpoint_tllm"].append(f.read()[4:])  # the target adds the magic itself
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
