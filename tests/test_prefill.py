"""Batched prefill (the prompt in chunks of up to 64 tokens) gives bit-identical logits to
token-by-token decoding (`run --no-prefill`): model.c runs every row through the same
arithmetic whatever the chunk, so not a single bit may differ. Random models of several
shapes, in every weight type; prompts that end just before, at and just after a chunk
boundary, and one that spans three chunks; generation continues after each prompt, so the
decode steps read a cache that prefill filled.
"""
import subprocess

import numpy as np

import common

# dim, hidden, layers, heads, kv_heads, vocab, seq_len: multi-head; grouped-query with a
# hidden size that leaves short vector tails; multi-query with odd head_size 18 and widths
# that are no multiple of 32 (short last Q8_0 groups)
SHAPES = {"mha": "64,172,2,4,4,300,200", "gqa": "96,200,2,6,2,320,200",
          "mqa_odd": "90,150,3,5,1,301,200"}
# 160 tokens with export.py's generated tokenizer: chunks of 64, 64 and 32
TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs far away into the "
        "forest where the tall trees grow; nobody sees it again until the next morning.")


def lone_bytes(n_tokens):
    """A prompt of exactly n_tokens tokens: BOS, the leading space, then UTF-8 continuation
    bytes, each invalid alone and so each its own byte-fallback token."""
    return bytes(0x80 + i % 64 for i in range(n_tokens - 2))


# each shape meets two chunk boundaries
PROMPTS = {"mha": [lone_bytes(64), lone_bytes(129)], "gqa": [lone_bytes(65), lone_bytes(128)],
           "mqa_odd": [lone_bytes(63), TEXT.encode()]}
STEPS = 190


def logits_of(model, prompt, *flags):
    """The --logits rows of a greedy run of STEPS positions on prompt (bytes)."""
    path = common.tmp_path("prefill.logits")
    p = subprocess.run([common.RUN, model, "-t", "0", "-n", str(STEPS), "-i", prompt, "--logits",
                        path] + list(flags), capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return common.read_logits(path, int(model.split(",")[5]))


def prompt_tokens(model, prompt):
    p = subprocess.run([common.RUN, model, "--print-tokens", "-i", prompt], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return len(p.stdout.split())


def test_prefill_matches_token_by_token():
    for shape_name, shape in SHAPES.items():
        for dtype in ("f32", "bf16", "q8_0"):
            model = common.export(common.tmp_path(f"prefill_{shape},{dtype}.bin"), "--random",
                                  shape, "--dtype", dtype, "--seed", "5", timeout=300)
            for prompt in PROMPTS[shape_name]:
                n = prompt_tokens(model, prompt)
                want = len(prompt) + 2 if prompt[0] >= 0x80 else 160
                assert n == want, f"{shape_name}: the prompt is {n} tokens, not {want}"
                batched = logits_of(model, prompt)
                single = logits_of(model, prompt, "--no-prefill")
                assert len(batched) == STEPS, f"{shape_name}: only {len(batched)} positions ran"
                same = np.all(batched == single, axis=1)
                assert same.all(), (
                    f"{shape_name} {dtype}, a prompt of {n} tokens: prefill differs from token "
                    f"by token first at position {int(np.argmin(same))}, by up to "
                    f"{np.abs(batched - single).max():.3g}")
