"""A catalogue of bad inputs: broken checkpoints, broken tokenizers and bad flags.

For every case the engine must end with exit status 1 and exactly one line on stderr that names
the file or flag at fault: no signal, no sanitizer report (it would add lines), no hang. Under
`make test-debug` the same cases run against the AddressSanitizer build.
"""
import os
import struct
import subprocess

import numpy as np

from common import RUN, shared_model, tmp_path

# ---------------------------------------------------------------------------------------------
# Small valid inputs to break

SHAPE = dict(dim=16, hidden_dim=24, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
             seq_len=32)
HEADER_FIELDS = list(SHAPE)


def llama2c_bytes(shape=SHAPE, header=None):
    """A valid llama2.c version-0 checkpoint of random weights (or one with `header` values)."""
    s = dict(shape)
    dim, hidden, layers = s["dim"], s["hidden_dim"], s["n_layers"]
    hs = dim // s["n_heads"]
    kv_dim = s["n_kv_heads"] * hs
    n = (s["vocab_size"] * dim + layers * (2 * dim + 2 * dim * dim + 2 * dim * kv_dim
         + 3 * dim * hidden) + dim + s["seq_len"] * hs)
    values = header if header is not None else [s[f] for f in HEADER_FIELDS]
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal(n) * 0.1).astype("<f4")
    return struct.pack("<7i", *values) + weights.tobytes()


def tokenizer_bytes(n_tokens, lengths=None):
    """A llama2.c tokenizer.bin: <unk>, <s>, </s>, the 256 byte pieces, then two-letter pieces."""
    pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % i for i in range(256)]
    i = 0
    while len(pieces) < n_tokens:
        pieces.append(bytes([97 + i // 26, 97 + i % 26]))
        i += 1
    pieces = pieces[:n_tokens]
    out = struct.pack("<i", max(len(p) for p in pieces))
    for k, p in enumerate(pieces):
        length = len(p) if lengths is None or k not in lengths else lengths[k]
        out += struct.pack("<fi", -float(k), length) + p
    return out


def write(name, data):
    path = tmp_path(name)
    if os.path.lexists(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(data)
    return path


GOOD_TOKENIZER = None


def good_tokenizer():
    global GOOD_TOKENIZER
    if GOOD_TOKENIZER is None:
        GOOD_TOKENIZER = write("bad_good_tok.bin", tokenizer_bytes(SHAPE["vocab_size"]))
    return GOOD_TOKENIZER


# ---------------------------------------------------------------------------------------------
# The check every case goes through

def expect_clean_failure(args, names, label, stdin=subprocess.DEVNULL):
    """Runs the engine; asserts exit 1, one stderr line mentioning `names`, done in time."""
    try:
        p = subprocess.run([RUN] + args, stdin=stdin, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{label}: still running after 10 s")
    err = p.stderr.decode(errors="replace")
    lines = [line for line in err.splitlines() if line.strip()]
    problems = []
    if p.returncode < 0:
        problems.append(f"killed by signal {-p.returncode}")
    elif p.returncode != 1:
        problems.append(f"exit status {p.returncode}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    elif not any(n in lines[0] for n in names):
        problems.append(f"message does not name {names}")
    if problems:
        return f"{label}: {', '.join(problems)}: {err.strip()[:300]!r}"
    return None


def run_catalogue(cases):
    """cases: (label, args, names) triples. Fails listing every case that misbehaved."""
    failures = [f for f in (expect_clean_failure(args, names, label) for label, args, names in cases)
                if f]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    return len(cases)


# ---------------------------------------------------------------------------------------------
# Checkpoints

def test_sanity_the_valid_inputs_work():
    """The unbroken checkpoint and tokenizer run: otherwise every case below proves nothing."""
    ckpt = write("bad_valid.bin", llama2c_bytes())
    p = subprocess.run([RUN, ckpt, "-z", good_tokenizer(), "-n", "8", "-t", "0"],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr.decode(errors="replace")


def test_checkpoint_not_a_file():
    fifo = tmp_path("bad_fifo")
    if os.path.lexists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    cases = [
        ("missing file", [tmp_path("no_such_model.bin")], ["no_such_model.bin"]),
        ("directory", [TMP_DIR], [TMP_DIR]),
        ("empty file", [write("bad_empty.bin", b"")], ["bad_empty.bin"]),
        ("fifo", [fifo], ["bad_fifo"]),
        ("/dev/zero", ["/dev/zero"], ["/dev/zero"]),
        ("/dev/null", ["/dev/null"], ["/dev/null"]),
    ]
    run_catalogue(cases)


TMP_DIR = os.path.dirname(tmp_path("x"))


def test_checkpoint_truncated_at_many_offsets():
    data = llama2c_bytes()
    offsets = [1, 3, 4, 27, 28, 29, 100, len(data) // 3, len(data) // 2, len(data) - 4,
               len(data) - 1]
    cases = []
    for off in offsets:
        name = f"bad_trunc_{off}.bin"
        cases.append((f"truncated at {off}", [write(name, data[:off]), "-z", good_tokenizer()],
                      [name]))
    cases.append(("one byte extra", [write("bad_long.bin", data + b"\0"), "-z", good_tokenizer()],
                  ["bad_long.bin"]))
    run_catalogue(cases)


def test_checkpoint_header_fields():
    """Each header field zero, negative, huge and inconsistent with the rest."""
    good = [SHAPE[f] for f in HEADER_FIELDS]
    cases = []
    for i, field in enumerate(HEADER_FIELDS):
        for label, value in [("zero", 0), ("negative", -5), ("huge", 2**31 - 1),
                             ("off by one", good[i] + 1)]:
            if field == "vocab_size" and label == "negative":
                continue  # negative vocab_size is llama2.c's flag for a separate classifier
            header = list(good)
            header[i] = value
            name = f"bad_hdr_{field}_{label.replace(' ', '_')}.bin"
            data = llama2c_bytes(header=header)
            cases.append((f"{field} {label}", [write(name, data), "-z", good_tokenizer()], [name]))
    # a negative vocab_size promises a classifier at the end that is not there
    header = list(good)
    header[5] = -good[5]
    cases.append(("vocab negative, no classifier",
                  [write("bad_hdr_unshared.bin", llama2c_bytes(header=header)), "-z",
                   good_tokenizer()], ["bad_hdr_unshared.bin"]))
    # n_heads not a multiple of n_kv_heads, with a size that would otherwise fit
    cases.append(("kv heads do not divide heads",
                  [write("bad_hdr_gqa.bin", llama2c_bytes(dict(SHAPE, n_kv_heads=3))), "-z",
                   good_tokenizer()], ["bad_hdr_gqa.bin"]))
    run_catalogue(cases)


# ---------------------------------------------------------------------------------------------
# Tokenizers

def test_tokenizer_files():
    ckpt = write("bad_tok_model.bin", llama2c_bytes())
    full = tokenizer_bytes(SHAPE["vocab_size"])
    cases = []

    def case(label, data):
        name = f"bad_tok_{label.replace(' ', '_')}.bin"
        cases.append((label, [ckpt, "-z", write(name, data)], [name]))

    case("empty", b"")
    case("header only", full[:4])
    case("truncated mid piece", full[: len(full) // 2])
    case("truncated by one", full[:-1])
    case("fewer pieces than the vocab", tokenizer_bytes(SHAPE["vocab_size"] - 1))
    case("negative length", tokenizer_bytes(SHAPE["vocab_size"], lengths={5: -1}))
    case("huge length", tokenizer_bytes(SHAPE["vocab_size"], lengths={5: 2**31 - 1}))
    case("length past the end", tokenizer_bytes(SHAPE["vocab_size"], lengths={299: 1000}))
    cases.append(("missing tokenizer", [ckpt, "-z", tmp_path("no_such_tok.bin")],
                  ["no_such_tok.bin"]))
    cases.append(("directory as tokenizer", [ckpt, "-z", TMP_DIR], [TMP_DIR]))
    run_catalogue(cases)


def test_model_and_tokenizer_vocab_mismatch():
    """The real stories260K (vocab 512) with the Llama 2 tokenizer works only if it has >= 512
    pieces, which it does; the reverse pairing must fail: tok512 for a 32000-token model."""
    big = dict(SHAPE, vocab_size=32000)
    ckpt = write("bad_vocab_model.bin", llama2c_bytes(big))
    tok = shared_model("tok512.bin")
    run_catalogue([("tok512 for a 32000 vocab", [ckpt, "-z", tok], ["tok512.bin"])])


# ---------------------------------------------------------------------------------------------
# Flags

def test_bad_flags():
    ckpt = write("bad_flags_model.bin", llama2c_bytes())
    base = [ckpt, "-z", good_tokenizer()]
    cases = [
        ("-n with trailing junk", base + ["-n", "12abc"], ["-n"]),
        ("-n negative", base + ["-n", "-3"], ["-n"]),
        ("-t negative", base + ["-t", "-1"], ["-t"]),
        ("-t not a number", base + ["-t", "hot"], ["-t"]),
        ("-p above 1", base + ["-p", "1.5"], ["-p"]),
        ("-s not a number", base + ["-s", "x"], ["-s"]),
        ("flag without value", base + ["-i"], ["-i"]),
        ("unknown flag", base + ["--bogus"], ["--bogus"]),
        ("unknown mode", base + ["-m", "dance"], ["-m"]),
        ("prompt longer than the context", base + ["-i", "x" * 200], ["-i"]),
        ("two checkpoints", base + ["other.bin"], ["other.bin"]),
    ]
    run_catalogue(cases)
