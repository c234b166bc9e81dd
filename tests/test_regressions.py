"""Inputs the fuzzers found, replayed through the engine on every run (release and debug).

Each finding is kept as tests/regressions/NAME.TARGET, the exact bytes libFuzzer saved, and
has a test named after it. tests/check_fuzz.py also replays the file through its fuzz target
before fuzzing. How an input reaches the engine depends on the target:

  checkpoint_tllm     the TLLM magic + the input, with file_size set to the real length as
                      the target does, is a model file for `run`
  checkpoint_llama2c  the input is a model file for `run`
  args                the input split at NUL bytes is `run`'s argument list

(A tokenizer or encode finding would go through tests/tokenize.c, as the fuzz target reads
it: none has been found yet.)

Each test states the exact outcome: the exit status and the first line on stderr (a refusal
naming the file, or the message that ends a generation), and nothing from a sanitizer.
"""
import os
import subprocess

from common import RUN, shared_model, tmp_path
from reference import TLLM_FIELDS, TLLM_V2_FIELDS, field_offsets

HERE = os.path.join("tests", "regressions")
# where file_size lies in each version, as the checkpoint_tllm target finds it
FILE_SIZE_AT = {1: field_offsets(TLLM_FIELDS)["file_size"][0],
                2: field_offsets(TLLM_V2_FIELDS)["file_size"][0]}


def finding(name):
    matches = [f for f in os.listdir(HERE) if f.split(".")[0] == name]
    assert len(matches) == 1, f"tests/regressions/{name}.* is missing"
    path = os.path.join(HERE, matches[0])
    with open(path, "rb") as f:
        return matches[0].split(".", 1)[1], f.read()


def check(p, label, status, first_line):
    """p ended with exit status `status`, its first stderr line is first_line, and nothing
    else came out on stderr but the speed line of a generation that ran."""
    err = p.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Sanitizer" not in err and "runtime error" not in err, f"{label}: {err[-2000:]}"
    assert p.returncode == status, f"{label}: exit status {p.returncode}, not {status}: {err[-500:]}"
    assert lines and lines[0] == first_line, f"{label}: stderr {err[-500:]!r}, not {first_line!r}"
    rest = lines[1:]
    assert not rest or (status == 0 and len(rest) == 1 and rest[0].startswith("achieved tok/s")), \
        f"{label}: more on stderr: {err[-500:]!r}"


def replay_checkpoint(name, embedded, with_tok512):
    """Replays a checkpoint finding through `run` with three sampling settings, with the
    file's own tokenizer and with tok512 (a fuzzed file's own tokenizer is usually broken,
    which stops `run` before the forward pass; tok512 has enough pieces for any vocabulary up
    to 512). embedded and with_tok512 are the (status, first stderr line) each must give;
    {path} in a line stands for the file's path."""
    target, data = finding(name)
    path = tmp_path(f"regression_{name}.bin")
    if target == "checkpoint_tllm":
        data = b"TLLM" + data
        at = FILE_SIZE_AT.get(int.from_bytes(data[4:8], "little"), FILE_SIZE_AT[1])
        if len(data) >= at + 8:
            data = data[:at] + len(data).to_bytes(8, "little") + data[at + 8:]
    with open(path, "wb") as f:
        f.write(data)
    runs = [(["-z", shared_model("tok512.bin")], with_tok512)]
    if target == "checkpoint_tllm":
        runs.append(([], embedded))
    for tok, (status, line) in runs:
        for args in (["-t", "0"], ["-t", "1", "-p", "0.9"], ["-t", "1", "-p", "0"]):
            # --no-shift: a generation ends where its tiny context does, with the message
            p = subprocess.run([RUN, path, "-n", "8", "-s", "1", "--no-shift"] + tok + args,
                               capture_output=True, timeout=60)
            check(p, f"{name} {tok} {args}", status, line.format(path=path))


def test_q8_nan_activation():
    """checkpoint_tllm, first minutes of fuzzing: a Q8_0 file whose weights make the
    activations NaN. kernels.c converted NaN * (1/scale) to int32, which is undefined
    behaviour (UBSan: "-nan is outside the range of representable values of type 'int'").
    The quantizer now clamps first, and fminf/fmaxf turn NaN into a number. Every sampler
    then picks a token from the NaN logits, and the generation runs to the end of its
    context of 8 positions."""
    full = (0, "run: the context of 8 tokens is full")
    replay_checkpoint("q8_nan_activation", embedded=full, with_tok512=full)


def test_topp_no_candidates():
    """checkpoint_tllm with sampling in the target, run against sampler.c with its fix
    reverted (the bug was first found by reading the code): NaN logits leave top-p sampling
    with no candidate above its cutoff, and it read scratch[-1] (ASan: heap-buffer-overflow
    in sample_topp). tests/test_hardening.py covers the other ways in: a vocabulary of one
    token and tiny temperatures. With tok512 the context of 4 positions fills; the file's own
    tokenizer is refused."""
    replay_checkpoint(
        "topp_no_candidates",
        embedded=(1, "run: {path}: embedded tokenizer: piece 3 is 2561 bytes, longer than "
                     "max_token_length 6"),
        with_tok512=(0, "run: the context of 4 tokens is full"))


def test_metadata_string_at_end():
    """Found by tests/test_bad_inputs.py's version-2 catalogue, kept here for the fuzz target
    (tests/check_fuzz.py replays it under ASan): an export.py file whose metadata section was
    moved to the end of the file, its last value, chat_template, cut to the single byte 'x'.
    format.c read every value as a 4-byte int before looking at its key, 3 bytes past the
    end of the input (ASan: heap-buffer-overflow in read_u32 from set_key). It now reads an
    int only for an int key, and refuses the template by name."""
    refused = (1, "run: {path}: metadata chat_template 'x' is unknown (llama2, chatml, zephyr, "
                  "llama3, llama3.1, llama3.2, qwen2.5, qwen3 or smollm2)")
    replay_checkpoint("metadata_string_at_end", embedded=refused, with_tok512=refused)


def test_args_newline_in_message():
    """args, first seconds of fuzzing: `-p $'\\n1.5'` was refused with a message that quoted
    the value, newline and all, so the one-line error became two lines. die() now prints
    control bytes as \\xNN."""
    target, data = finding("args_newline_in_message")
    assert target == "args"
    p = subprocess.run([RUN] + data.split(b"\0"), capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    check(p, "args_newline_in_message", 1, "run: -p\\x0a1.5: unknown option (see --help)")
