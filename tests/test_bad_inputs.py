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

def expect_clean_failure(args, names, label, stdin=subprocess.DEVNULL, reason=None):
    """Runs the engine; asserts exit 1, one stderr line mentioning `names` (and `reason` when
    given), no sanitizer report, done in time."""
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
    if "Sanitizer" in err or "runtime error" in err:
        problems.append("sanitizer report")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    elif not any(n in lines[0] for n in names):
        problems.append(f"message does not name {names}")
    elif reason is not None and reason not in lines[0]:
        problems.append(f"message does not say {reason!r}")
    if problems:
        return f"{label}: {', '.join(problems)}: {err.strip()[:300]!r}"
    return None


def run_catalogue(cases):
    """cases: (label, args, names) or (label, args, names, reason). Fails listing every case
    that misbehaved; returns the number of cases."""
    failures = [f for f in (expect_clean_failure(c[1], c[2], c[0], reason=c[3] if len(c) > 3
                                                 else None) for c in cases) if f]
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
    # a FIFO without a writer would block a plain open; /dev/zero would be read forever
    fifo = tmp_path("bad_tok_fifo")
    if os.path.lexists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    cases.append(("fifo as tokenizer", [ckpt, "-z", fifo], ["bad_tok_fifo"], "not a regular"))
    cases.append(("/dev/zero as tokenizer", [ckpt, "-z", "/dev/zero"], ["/dev/zero"]))
    cases.append(("max_token_length above the limit",
                  [ckpt, "-z", write("bad_tok_maxlen.bin", struct.pack("<i", 1025) + full[4:])],
                  ["bad_tok_maxlen.bin"], "limit"))
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
        ("-t infinite", base + ["-t", "inf"], ["-t"]),
        ("-t NaN", base + ["-t", "nan"], ["-t"]),
        ("-n above 2^63", base + ["-n", "99999999999999999999"], ["-n"]),
        ("-k negative", base + ["-k", "-1"], ["-k"]),
        ("--min-p above 1", base + ["--min-p", "2"], ["--min-p"]),
        ("unknown template", base + ["--template", "x"], ["--template"]),
        ("empty stop string", base + ["--stop", ""], ["--stop"]),
        ("flag value with a newline", base + ["-p", "\n1.5"], ["-p"]),
        ("file name with a newline", ["bad\nname.bin"], ["bad\\x0aname.bin"]),
        ("-f /dev/zero", base + ["-f", "/dev/zero"], ["/dev/zero"], "NUL"),
        ("-f a directory", base + ["-f", TMP_DIR], ["-f"]),
        ("-f missing", base + ["-f", tmp_path("no_such_prompt")], ["no_such_prompt"]),
        ("-f and -i", base + ["-f", "/dev/null", "-i", "x"], ["-f"]),
        ("--threads 0", base + ["--threads", "0"], ["--threads"]),
        ("--ppl /dev/zero", base + ["--ppl", "/dev/zero"], ["/dev/zero"], "NUL"),
        ("--ppl empty", base + ["--ppl", "/dev/null"], ["/dev/null"]),
        ("--attn-top 0", base + ["--attn-top", "0"], ["--attn-top"]),
    ]
    run_catalogue(cases)


# ---------------------------------------------------------------------------------------------
# TLLM files (models/FORMAT.md): every field of the 256-byte header, the offsets, the embedded
# tokenizer and truncation. The valid file comes from tests/checkpoints.py's writer.

TLLM_FIELDS = {  # name: (offset, struct format)
    "version": (4, "<I"), "dim": (8, "<I"), "hidden_dim": (12, "<I"), "n_layers": (16, "<I"),
    "n_heads": (20, "<I"), "n_kv_heads": (24, "<I"), "head_size": (28, "<I"),
    "vocab_size": (32, "<I"), "seq_len": (36, "<I"), "rope_theta": (40, "<f"),
    "norm_eps": (44, "<f"), "shared_classifier": (48, "<I"), "bos_id": (52, "<i"),
    "eos_id": (56, "<i"), "weight_type": (60, "<I"), "group_size": (64, "<I"),
    "chat_template": (68, "<I"), "tokenizer_kind": (72, "<I"), "reserved": (76, "<I"),
    "tokenizer_offset": (80, "<Q"), "tokenizer_size": (88, "<Q"), "weights_offset": (96, "<Q"),
    "file_size": (104, "<Q"),
}


def tllm_bytes(weight_type=0, group_size=0, shared=True):
    """A valid TLLM file: dim 16, 2 layers, 4 heads of 4, 2 KV heads, vocab 300, seq_len 32,
    with the byte-level test tokenizer embedded."""
    import checkpoints
    from reference import Config
    c = Config(16, 24, 2, 4, 2, 300, 32, shared_classifier=shared)
    pieces, scores = checkpoints.tokenizer_pieces(300, 0)
    path = tmp_path("bad_tllm_valid_src.bin")
    checkpoints.write_tllm(path, c, checkpoints.random_weights(c, 0), pieces, scores,
                           weight_type, group_size)
    with open(path, "rb") as f:
        return f.read()


def tllm_field(data, name):
    off, fmt = TLLM_FIELDS[name]
    return struct.unpack_from(fmt, data, off)[0]


def tllm_with(data, **fields):
    """data with header fields replaced."""
    out = bytearray(data)
    for name, value in fields.items():
        off, fmt = TLLM_FIELDS[name]
        struct.pack_into(fmt, out, off, value)
    return bytes(out)


def test_sanity_the_valid_tllm_works():
    for label, data in [("f32", tllm_bytes()), ("bf16 unshared", tllm_bytes(1, 0, False)),
                        ("q8_0", tllm_bytes(2, 32))]:
        path = write("bad_tllm_valid.bin", data)
        p = subprocess.run([RUN, path, "-n", "8", "-t", "0"], capture_output=True, timeout=10)
        assert p.returncode == 0, f"{label}: {p.stderr.decode(errors='replace')}"


# What the message says when a u64 field is zero or huge
U64_REASONS = {"tokenizer_offset": "tokenizer section", "tokenizer_size": "tokenizer",
               "weights_offset": "weights_offset", "file_size": "header says"}


def tllm_case(cases, label, data, reason=None, extra=()):
    name = "bad_tllm_" + "".join(ch if ch.isalnum() else "_" for ch in label) + ".bin"
    cases.append((label, [write(name, data), "-n", "4", *extra], [name], reason))


def test_tllm_header_fields():
    """Each u32 field zero, huge (2^31 - 1, 2^31 and 2^32 - 1) and off by one; the floats zero,
    negative, NaN and infinite; the u64 offsets zero and huge."""
    good = tllm_bytes()
    cases = []
    for name, (off, fmt) in TLLM_FIELDS.items():
        if fmt in ("<I", "<i"):
            values = [("zero", 0), ("2^31-1", 2**31 - 1), ("2^31", -2**31 if fmt == "<i" else 2**31),
                      ("2^32-1", -1 if fmt == "<i" else 2**32 - 1)]
            if name not in ("seq_len",):  # seq_len + 1 is a valid file: the cache is not stored
                values.append(("plus one", tllm_field(good, name) + 1))
        elif fmt == "<f":
            values = [("zero", 0.0), ("negative", -1.0), ("nan", float("nan")),
                      ("inf", float("inf")), ("one", 1.0)]
        else:
            values = [("zero", 0), ("huge", 2**64 - 1), ("plus one", tllm_field(good, name) + 1),
                      ("minus one", tllm_field(good, name) - 1)]
        for label, value in values:
            if (name, label) in {("shared_classifier", "zero"), ("weight_type", "zero"),
                                 ("group_size", "zero"), ("chat_template", "zero"),
                                 ("chat_template", "plus one"), ("reserved", "zero"),
                                 ("bos_id", "zero"), ("eos_id", "zero"),
                                 ("bos_id", "plus one"), ("eos_id", "plus one")}:
                continue  # the valid file already has these values, or they are valid too
            # the message must name the field, except for an inconsistent value, which shows
            # up later as a size that does not match
            reason = None if label in ("plus one", "minus one") else U64_REASONS.get(name, name)
            tllm_case(cases, f"{name} {label}", tllm_with(good, **{name: value}), reason)
    # values that pass the range checks but disagree with the rest of the file
    n = len(good)
    for label, fields in [
        ("shared_classifier 0 without a classifier", dict(shared_classifier=0)),
        ("bf16 type for f32 weights", dict(weight_type=1)),
        ("q8_0 type for f32 weights", dict(weight_type=2, group_size=32)),
        ("group_size 32 for f32 weights", dict(group_size=32)),
        ("n_kv_heads 3 does not divide 4", dict(n_kv_heads=3)),
        ("n_kv_heads 1", dict(n_kv_heads=1)),
        ("odd head_size", dict(head_size=3)),
        ("head_size doubled", dict(head_size=8)),
        ("bos_id = vocab_size", dict(bos_id=300)),
        ("eos_id negative", dict(eos_id=-1)),
        ("seq_len above the limit", dict(seq_len=2**20 + 1)),
        ("vocab_size above the limit", dict(vocab_size=2**20 + 1)),
        ("dim above the limit", dict(dim=2**16 + 1)),
        ("n_heads * head_size above the limit", dict(n_heads=1024, head_size=1024)),
        ("version 2", dict(version=2)),
        ("version 0", dict(version=0)),
        ("file_size says more", dict(file_size=n + 64)),
        ("file_size says less", dict(file_size=n - 64)),
        ("tokenizer_offset inside the header", dict(tokenizer_offset=255)),
        ("tokenizer_offset past the end", dict(tokenizer_offset=n + 1)),
        ("tokenizer_size past the end", dict(tokenizer_size=n)),
        ("tokenizer_size wraps around", dict(tokenizer_offset=256, tokenizer_size=2**64 - 200)),
        ("weights_offset misaligned", dict(weights_offset=tllm_field(good, "weights_offset") + 4)),
        ("weights_offset inside the tokenizer",
         dict(weights_offset=tllm_field(good, "weights_offset") - 64)),
        ("weights_offset past the end", dict(weights_offset=(n + 64) // 64 * 64)),
        ("weights_offset one tensor late",
         dict(weights_offset=tllm_field(good, "weights_offset") + 64)),
    ]:
        tllm_case(cases, label, tllm_with(good, **fields))
    tllm_case(cases, "magic TLLX", b"TLLX" + good[4:])
    tllm_case(cases, "magic only", b"TLLM")
    tllm_case(cases, "header only", good[:256])
    tllm_case(cases, "one byte extra", tllm_with(good + b"\0", file_size=n + 1))
    tllm_case(cases, "one byte extra, size unchanged", good + b"\0")
    assert run_catalogue(cases) >= 100


def test_tllm_truncated_at_many_offsets():
    """Cut at many offsets, with file_size left as it was and with file_size matching the cut."""
    good = tllm_bytes(2, 32)
    n = len(good)
    offsets = sorted({1, 3, 4, 8, 100, 255, 256, 260, 1000, tllm_field(good, "weights_offset"),
                      n // 3, n // 2, n - 65, n - 64, n - 4, n - 1})
    cases = []
    for off in offsets:
        tllm_case(cases, f"cut at {off}", good[:off])
        if off >= 112:
            tllm_case(cases, f"cut at {off} with file_size {off}",
                      tllm_with(good[:off], file_size=off))
    run_catalogue(cases)


def test_tllm_embedded_tokenizer():
    """The tokenizer section: a count that differs from vocab_size, piece lengths that overflow
    or run past the section, a section longer or shorter than its content."""
    good = tllm_bytes()
    tok = tllm_field(good, "tokenizer_offset")
    tok_size = tllm_field(good, "tokenizer_size")
    gap = tllm_field(good, "weights_offset") - tok - tok_size  # zero padding before weights

    def patched(at, fmt, value):
        out = bytearray(good)
        struct.pack_into(fmt, out, at, value)
        return bytes(out)

    first_len = tok + 8 + 4  # count, max_token_length, then piece 0's score and length
    cases = []
    tllm_case(cases, "count 299 for vocab 300", patched(tok, "<I", 299))
    tllm_case(cases, "count 301 for vocab 300", patched(tok, "<I", 301))
    tllm_case(cases, "count 2^32-1", patched(tok, "<I", 2**32 - 1))
    tllm_case(cases, "max_token_length negative", patched(tok + 4, "<i", -1))
    tllm_case(cases, "max_token_length huge", patched(tok + 4, "<i", 2**31 - 1))
    tllm_case(cases, "max_token_length too small", patched(tok + 4, "<i", 1))
    tllm_case(cases, "piece length negative", patched(first_len, "<i", -1))
    tllm_case(cases, "piece length 2^31-1", patched(first_len, "<i", 2**31 - 1))
    tllm_case(cases, "piece length past the section", patched(first_len, "<i", 1000))
    tllm_case(cases, "piece score NaN", patched(first_len - 4, "<f", float("nan")))
    tllm_case(cases, "section one byte short", tllm_with(good, tokenizer_size=tok_size - 1))
    if gap >= 4:
        tllm_case(cases, "section with trailing bytes", tllm_with(good, tokenizer_size=tok_size + 4))
    tllm_case(cases, "empty section", tllm_with(good, tokenizer_size=0))
    tllm_case(cases, "section of 3 bytes", tllm_with(good, tokenizer_size=3))
    run_catalogue(cases)
