"""Hostile use that must end cleanly: a full context, a 1 MB chat line, invalid UTF-8 prompts,
a KV cache too large to allocate, degenerate vocabularies and temperatures, NaN weights.

"Cleanly" means: no signal, no sanitizer report (under the debug build), the exit status the
case calls for, and at most one line from `run:` on stderr besides the speed report.
"""
import os
import resource
import struct
import subprocess

import numpy as np

import checkpoints
from common import RUN, shared_model, tmp_path
from reference import Config

DEBUG = "debug" in os.path.normpath(RUN).split(os.sep)


def tllm_model(name, c, dtype="f32", group_size=None, pieces=None, seed=0, weights=None):
    """Writes a TLLM file for config c with the byte-level test tokenizer (or `pieces`),
    through export.py (checkpoints.export_tllm)."""
    path = tmp_path(name)
    if pieces is None:
        pieces, scores = checkpoints.tokenizer_pieces(c.vocab_size, seed)
    else:
        scores = [-float(i) for i in range(len(pieces))]
    if weights is None:
        weights = checkpoints.random_weights(c, seed)
    checkpoints.export_tllm(path, c, weights, pieces, scores, dtype, group_size)
    return path


def run_engine(args, input=None, timeout=60, env=None, limit_memory=None):
    """Runs the engine; returns (returncode, stdout bytes, stderr text). limit_memory caps the
    address space (release builds only: ASan reserves terabytes of shadow memory)."""
    def preexec():
        if limit_memory:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))
    full_env = dict(os.environ, **(env or {}))
    args = [a if isinstance(a, bytes) else str(a) for a in args]  # bytes: raw argv bytes
    p = subprocess.run([RUN] + args, input=input, capture_output=True,
                       timeout=timeout, env=full_env, preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


# With allocator_may_return_null=1 ASan still says it returned NULL: expected, not a finding.
ASAN_NULL_WARNING = "WARNING: AddressSanitizer failed to allocate"


def assert_clean(rc, err, label, want_rc=0):
    err = "\n".join(line for line in err.splitlines() if ASAN_NULL_WARNING not in line)
    assert rc >= 0, f"{label}: killed by signal {-rc}: {err[-500:]}"
    assert "Sanitizer" not in err and "runtime error" not in err, f"{label}: {err[-2000:]}"
    assert rc == want_rc, f"{label}: exit status {rc}, wanted {want_rc}: {err[-500:]}"
    run_lines = [line for line in err.splitlines() if line.startswith("run:")]
    assert len(run_lines) <= 1, f"{label}: {len(run_lines)} error lines: {err[-500:]}"
    return run_lines[0] if run_lines else ""


SMALL = Config(dim=16, hidden_dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
               seq_len=32)


def small_model():
    return tllm_model("hard_small.bin", SMALL)


# ---------------------------------------------------------------------------------------------
# The context

def test_generation_stops_when_the_context_is_full():
    """-n 0, and -n beyond seq_len with --no-shift, stop at seq_len, with a message. Position
    seq_len is never run: the engine would refuse it ("outside the model"), which would exit 1.
    (The test tokenizer's EOS, id 2, could end a text early; at seed 7 none is drawn: the model
    and the draws are deterministic, so the outcome is exactly this. Without --no-shift, -n
    beyond seq_len goes on: tests/test_past_context.py.)"""
    model = small_model()
    for steps in [["-n", "0"], ["-n", "1000", "--no-shift"]]:
        rc, out, err = run_engine([model, *steps, "-s", "7", "-t", "1.0", "-i", "hello"])
        line = assert_clean(rc, err, f"-n {steps}")
        assert line == "run: the context of 32 tokens is full", err
        assert out.startswith(b"hello") and out.endswith(b"\n"), out


def test_chat_one_megabyte_line():
    """A 1 MB user line piped into chat: encoded on the heap, then refused as too long for the
    context, with a message and exit 0; no fixed-size buffer anywhere in the way."""
    model = small_model()
    line = b"a" * (1 << 20) + b"\n"
    rc, out, err = run_engine([model, "-m", "chat", "-y", "be brief", "-s", "1"], input=line,
                              timeout=120)
    msg = assert_clean(rc, err, "1 MB chat line")
    assert "context of 32 tokens is full" in msg, err[-300:]


def test_chat_many_lines_fill_the_context():
    """Many short turns with --no-shift: the chat ends when the context is full, never runs
    past it."""
    model = small_model()
    turns = b"".join(b"hi %d\n" % i for i in range(200))
    rc, out, err = run_engine([model, "-m", "chat", "-s", "3", "--no-shift"], input=b"\n" + turns,
                              timeout=60)
    msg = assert_clean(rc, err, "many chat turns")
    assert "full" in msg, err[-300:]


def test_chat_with_empty_and_closed_stdin():
    model = small_model()
    for label, data in [("empty stdin", b""), ("system prompt only", b"sys\n"),
                        ("no newline", b"sys\nuser without newline")]:
        rc, out, err = run_engine([model, "-m", "chat", "-n", "20", "-s", "1"], input=data)
        assert_clean(rc, err, label)


# ---------------------------------------------------------------------------------------------
# Prompts

INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"\xc3", b"abc\xc3", b"\x80\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xe2\x96", b"\xe2\x96\x81\xe2\x96",
    b"ok \xf8\x88\x80\x80\x80 ok", b"\x01\x02\x1b[31m",
] + [bytes(range(start, min(start + 24, 256))) for start in range(1, 256, 24)]  # every byte


def test_invalid_utf8_prompts():
    """Every byte string encodes (byte fallback) and the output stays valid UTF-8."""
    tok = shared_model("tok512.bin")
    stories = shared_model("stories260K.bin")
    model = small_model()
    for prompt in INVALID_UTF8:
        for args in ([stories, "-z", tok], [model]):
            rc, out, err = run_engine(args + ["-n", "32", "-t", "0", "-i", prompt])
            assert_clean(rc, err, f"prompt {prompt[:20]!r}")
            out.decode("utf-8")  # raises if the output filter let a broken sequence through


def test_prompt_exactly_the_context():
    """A prompt of seq_len tokens runs; one token more is refused with a message."""
    model = small_model()
    # BOS + dummy space + 30 bytes = 32 tokens with the byte-level tokenizer
    rc, out, err = run_engine([model, "-n", "0", "-t", "0", "-i", "x" * 30])
    assert_clean(rc, err, "prompt of seq_len tokens")
    rc, out, err = run_engine([model, "-n", "0", "-t", "0", "-i", "x" * 31])
    msg = assert_clean(rc, err, "prompt of seq_len + 1 tokens", want_rc=1)
    assert "-i" in msg and "context" in msg, msg


# ---------------------------------------------------------------------------------------------
# Memory

def test_kv_cache_too_large_to_allocate():
    """seq_len 2^20 with 4096-wide KV heads asks for a 32 GB cache: a valid header, but the
    allocation fails, which must be a one-line error, not a crash. The failure is made certain
    by an address-space limit (release) or ASan's allocation limit (debug)."""
    c = Config(dim=8, hidden_dim=8, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=300,
               seq_len=1 << 20, head_size=4096)
    model = tllm_model("hard_huge_cache.bin", c)
    env = {"ASAN_OPTIONS": "allocator_may_return_null=1:max_allocation_size_mb=4096"}
    rc, out, err = run_engine([model, "-n", "4"], env=env,
                              limit_memory=None if DEBUG else 4 << 30)
    msg = assert_clean(rc, err, "huge KV cache", want_rc=1)
    assert "cannot allocate" in msg and "hard_huge_cache.bin" in msg, msg


# ---------------------------------------------------------------------------------------------
# Degenerate models and sampling settings

def test_vocabulary_of_one_token():
    """vocab_size 1 (BOS = EOS = 0): top-p sampling divides its cutoff by vocab_size - 1 = 0
    and kept no candidate, then read before its scratch array."""
    c = Config(dim=8, hidden_dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=1,
               seq_len=8, bos_id=0, eos_id=0)
    model = tllm_model("hard_vocab1.bin", c, pieces=[b"<s>"])
    for args in (["-t", "1", "-p", "0.9"], ["-t", "0"], ["-t", "1", "-p", "1"]):
        rc, out, err = run_engine([model, "-n", "8", "-s", "1"] + args)
        assert_clean(rc, err, f"vocab 1 {args}")


def test_extreme_temperatures():
    """A tiny temperature turns the logits into inf and the probabilities into NaN; a huge
    one makes them uniform. Both must still pick a token inside the vocabulary."""
    model = small_model()
    for t in ["2e-38", "1e-30", "1e30"]:
        for p in ["0.9", "1", "0"]:
            rc, out, err = run_engine([model, "-n", "16", "-s", "5", "-t", t, "-p", p])
            assert_clean(rc, err, f"-t {t} -p {p}")


def test_nan_and_inf_weights():
    """Weights of NaN and inf (a corrupt but well-formed file) give NaN logits; every weight
    type and the sampler must survive them."""
    for wt, gs in [("f32", None), ("q8_0", 32)]:
        for bad in [float("nan"), float("inf")]:
            w = checkpoints.random_weights(SMALL, 1)
            w["layers"][0]["wq"][0, 0] = bad
            w["layers"][1]["attn_norm"][3] = bad
            with np.errstate(invalid="ignore"):  # Q8_0 encoding meets NaN and inf / inf
                model = tllm_model(f"hard_nan_{wt}.bin", SMALL, wt, gs, weights=w)
            for args in (["-t", "0"], ["-t", "1", "-p", "0.9"], ["-t", "1", "-p", "0"]):
                rc, out, err = run_engine([model, "-n", "12", "-s", "2", "-i", "abc"] + args)
                assert_clean(rc, err, f"{bad} weights, type {wt}, {args}")
