"""Inputs the fuzzers found, replayed through the engine on every run (release and debug).

Each finding is kept as tests/regressions/NAME.TARGET, the exact bytes libFuzzer saved, and
has a test named after it. tests/check_fuzz.py also replays the file through its fuzz target
before fuzzing. How an input reaches the engine depends on the target:

  checkpoint_tllm     the TLLM magic + the input, with file_size set to the real length as
                      the target does, is a model file for `run`
  checkpoint_llama2c  the input is a model file for `run`
  tokenizer           2 bytes choosing the vocabulary size, then a tokenizer section, loaded
                      by `tokenize --memory`
  encode              text encoded with the Llama 2 tokenizer by `tokenize`
  args                the input split at NUL bytes is `run`'s argument list

An input must not crash or trip a sanitizer; a bad file may be refused (exit 1, one line).
"""
import os
import subprocess

from common import BIN, RUN, shared_model, tmp_path

HERE = os.path.join("tests", "regressions")


def finding(name):
    matches = [f for f in os.listdir(HERE) if f.split(".")[0] == name]
    assert len(matches) == 1, f"tests/regressions/{name}.* is missing"
    path = os.path.join(HERE, matches[0])
    with open(path, "rb") as f:
        return matches[0].split(".", 1)[1], f.read()


def check(p, label):
    err = p.stderr.decode(errors="replace")
    assert p.returncode in (0, 1), f"{label}: exit status {p.returncode}: {err[-2000:]}"
    assert "Sanitizer" not in err and "runtime error" not in err, f"{label}: {err[-2000:]}"
    if p.returncode == 1:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"{label}: refused with {len(lines)} lines: {err[-500:]}"


def replay(name):
    target, data = finding(name)
    if target.startswith("checkpoint"):
        path = tmp_path(f"regression_{name}.bin")
        if target == "checkpoint_tllm":
            data = b"TLLM" + data
            if len(data) >= 112:
                data = data[:104] + len(data).to_bytes(8, "little") + data[112:]
        with open(path, "wb") as f:
            f.write(data)
        # A fuzzed file's own tokenizer is usually broken, which stops `run` before the
        # forward pass: tok512 (enough pieces for any vocabulary up to 512) gets past it.
        toks = [["-z", shared_model("tok512.bin")]]
        if target == "checkpoint_tllm":
            toks.append([])
        for tok in toks:
            for args in (["-t", "0"], ["-t", "1", "-p", "0.9"], ["-t", "1", "-p", "0"]):
                p = subprocess.run([RUN, path, "-n", "8", "-s", "1"] + tok + args,
                                   capture_output=True, timeout=60)
                check(p, f"{name} {tok} {args}")
    elif target == "tokenizer":
        section = tmp_path(f"regression_{name}.tok")
        with open(section, "wb") as f:
            f.write(data[2:])
        vocab = 1 + (data[0] | data[1] << 8) % 1024
        text = "Hello, w\u00f6rld! \U0001F600 ".encode() + b"\xff\n"
        p = subprocess.run([os.path.join(BIN, "tokenize"), "--memory", "--bos", "--eos", section,
                            str(vocab)], input=b"%d\n" % len(text) + text, capture_output=True,
                           timeout=60)
        check(p, name)
    elif target == "args":
        args = data.split(b"\0")
        p = subprocess.run([RUN] + args, capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        check(p, name)
    else:
        assert target == "encode", target
        text = data.split(b"\0")[0]  # the target reads the input as a C string
        p = subprocess.run([os.path.join(BIN, "tokenize"), "--bos",
                            shared_model("tokenizer.bin"), "32000"],
                           input=b"%d\n" % len(text) + text, capture_output=True, timeout=60)
        check(p, name)


def test_q8_nan_activation():
    """checkpoint_tllm, first minutes of fuzzing: a Q8_0 file whose weights make the
    activations NaN. kernels.c converted NaN * (1/scale) to int32, which is undefined
    behaviour (UBSan: "-nan is outside the range of representable values of type 'int'").
    The quantizer now clamps first, and fminf/fmaxf turn NaN into a number."""
    replay("q8_nan_activation")


def test_topp_no_candidates():
    """checkpoint_tllm with sampling in the target, run against sampler.c with its fix
    reverted (the bug was first found by reading the code): NaN logits leave top-p sampling
    with no candidate above its cutoff, and it read scratch[-1] (ASan: heap-buffer-overflow
    in sample_topp). tests/test_hardening.py covers the other ways in: a vocabulary of one
    token and tiny temperatures."""
    replay("topp_no_candidates")


def test_args_newline_in_message():
    """args, first seconds of fuzzing: `-p $'\\n1.5'` was refused with a message that quoted
    the value, newline and all, so the one-line error became two lines. die() now prints
    control bytes as \\xNN."""
    replay("args_newline_in_message")
