"""A catalogue of bad inputs: broken checkpoints, broken tokenizers and bad flags.

For every case the engine must end with exit status 1 and exactly one line on stderr that names
the file or flag at fault: no signal, no sanitizer report (it would add lines), no hang. Under
`make test-debug` the same cases run against the AddressSanitizer build.
"""
import os
import struct
import subprocess

import numpy as np

import checkpoints
from common import RUN, shared_model, tmp_path
from reference import DIRECTORY_ENTRY, DIRECTORY_FIELDS, TLLM_FIELDS, TLLM_V2_FIELDS, \
    Config, TllmFile, field_offsets

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

LEAK_CHECK_EVERY = 8


def expect_clean_failure(args, names, label, stdin=subprocess.DEVNULL, reason=None, leaks=True):
    """Runs the engine; asserts exit 1, one stderr line mentioning `names` (and `reason` when
    given), no sanitizer report, done in time. leaks=False turns LeakSanitizer off (the
    sanitizer build's other checks stay on; see run_catalogue)."""
    env = None
    if not leaks:
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    try:
        p = subprocess.run([RUN] + args, stdin=stdin, capture_output=True, timeout=10, env=env)
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
    that misbehaved; returns the number of cases.

    In the sanitizer build every case is checked for bad reads, writes and undefined
    behaviour, and the first case of each catalogue and every LEAK_CHECK_EVERY-th after it
    also for leaks on its error path: LeakSanitizer's scan at exit takes about 40 of the 56
    ms a refused file costs there, and the catalogues refuse 1,800 files."""
    failures = [f for f in (expect_clean_failure(c[1], c[2], c[0], reason=c[3] if len(c) > 3
                                                 else None, leaks=i % LEAK_CHECK_EVERY == 0)
                            for i, c in enumerate(cases)) if f]
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
# TLLM files (models/FORMAT.md). Every valid file comes from export.py (checkpoints.export_tllm),
# the one writer of the format; where each field and entry lies comes from tests/reference.py
# (field_offsets, TllmFile), the one reader. The cases change bytes in place where they can;
# where an entry must grow, shrink or go, splice() rebuilds the offsets around the change so
# that nothing else is wrong with the file.

V1_FIELDS = field_offsets(TLLM_FIELDS)
V2_FIELDS = field_offsets(TLLM_V2_FIELDS)
ENTRY_FIELDS = field_offsets(DIRECTORY_FIELDS)
SECTIONS = ("metadata", "tokenizer", "directory")


def tllm_file(name, dtype="f32", group_size=None, shared=True, version=2, template="none",
              overrides=()):
    """A valid TLLM file of random weights, written by export.py and read back (TllmFile):
    dim 16, hidden_dim 24, 2 layers, 4 heads of 4, 2 KV heads, vocab 300, seq_len 32, with
    the byte-level test tokenizer embedded."""
    c = Config(16, 24, 2, 4, 2, 300, 32, shared_classifier=shared)
    pieces, scores = checkpoints.tokenizer_pieces(300, 0)
    path = tmp_path(f"bad_src_{name}.bin")
    checkpoints.export_tllm(path, c, checkpoints.random_weights(c, 0), pieces, scores, dtype,
                            group_size, template, version, overrides)
    return TllmFile(path)


def patched(data, at, fmt, value):
    """data with one number, packed as fmt, written at offset at."""
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def with_fields(data, fields, **values):
    """data with header fields (fields: field_offsets of the header) set to values."""
    for name, value in values.items():
        at, fmt = fields[name]
        data = patched(data, at, fmt, value)
    return data


def tllm_field(data, name):
    at, fmt = V1_FIELDS[name]
    return struct.unpack_from(fmt, data, at)[0]


def tllm_with(data, **fields):
    """A version-1 file's bytes with header fields replaced."""
    return with_fields(data, V1_FIELDS, **fields)


def tllm_case(cases, label, data, reason=None, extra=()):
    """Adds a case: data as a model file, which must be refused naming the file and, when
    given, saying reason (the field, key or tensor at fault)."""
    name = "bad_tllm_" + "".join(ch if ch.isalnum() else "_" for ch in label)
    name = f"{name[:80]}_{len(cases)}.bin"  # labels that differ only in punctuation
    cases.append((label, [write(name, data), "-n", "4", *extra], [name], reason))


# ---------------------------------------------------------------------------------------------
# Version 1 (written by export.py --format-version 1)

def tllm_bytes(dtype="f32", group_size=None, shared=True):
    return tllm_file(f"v1_{dtype}_{int(shared)}", dtype, group_size, shared, version=1).data


def test_sanity_the_valid_tllm_works():
    for label, f in [("v1 f32", tllm_file("v1_f32_1", version=1)),
                     ("v1 bf16 unshared", tllm_file("v1_bf16_0", "bf16", shared=False,
                                                    version=1)),
                     ("v1 q8_0", tllm_file("v1_q8_0_1", "q8_0", 32, version=1)),
                     ("v2 f32", tllm_file("v2_f32")),
                     ("v2 q8_0 unshared chatml", tllm_file("v2_q8", "q8_0", 32, False,
                                                           template="chatml")),
                     ("v2 mixed", tllm_file("v2_mixed", "bf16", 32, overrides=(
                         ("token_embedding", "q8_0"), ("layers.*.w2", "f32"))))]:
        assert f.header["version"] == (1 if label.startswith("v1") else 2), label
        path = write("bad_tllm_valid.bin", f.data)
        p = subprocess.run([RUN, path, "-n", "8", "-t", "0"], capture_output=True, timeout=10)
        assert p.returncode == 0, f"{label}: {p.stderr.decode(errors='replace')}"


# What the message says when a u64 field is zero or huge
U64_REASONS = {"tokenizer_offset": "tokenizer section", "tokenizer_size": "tokenizer",
               "weights_offset": "weights_offset", "file_size": "file_size"}


def test_tllm_header_fields():
    """Version 1: each u32 field zero, huge (2^31 - 1, 2^31 and 2^32 - 1) and off by one; the
    floats zero, negative, NaN and infinite; the u64 offsets zero and huge."""
    good = tllm_bytes()
    cases = []
    for name, (off, fmt) in V1_FIELDS.items():
        if name == "magic":
            continue
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
            if name == "version":
                reason = "version"
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
    for gs in (0, 32):  # Q4_0 came with version 2: the message says so
        tllm_case(cases, f"weight_type 3 (Q4_0) group_size {gs}",
                  tllm_with(good, weight_type=3, group_size=gs), "Q4_0, which only a version-2")
    tllm_case(cases, "magic TLLX", b"TLLX" + good[4:])
    tllm_case(cases, "magic only", b"TLLM")
    tllm_case(cases, "header only", good[:256])
    tllm_case(cases, "one byte extra", tllm_with(good + b"\0", file_size=n + 1))
    tllm_case(cases, "one byte extra, size unchanged", good + b"\0")
    assert run_catalogue(cases) >= 100


def test_tllm_truncated_at_many_offsets():
    """Version 1, cut at many offsets, with file_size left as it was and with file_size
    matching the cut."""
    good = tllm_bytes("q8_0", 32)
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


def tokenizer_cases(cases, good, tok, tok_size, set_size, prefix):
    """The embedded tokenizer section at offset tok (tok_size bytes) of the file good broken:
    a count that differs from vocab_size, piece lengths that overflow or run past the section,
    a section longer or shorter than its content (set_size(data, size) changes its size)."""
    first_len = tok + 8 + 4  # count, max_token_length, then piece 0's score and length
    for label, data in [
        ("count 299 for vocab 300", patched(good, tok, "<I", 299)),
        ("count 301 for vocab 300", patched(good, tok, "<I", 301)),
        ("count 2^32-1", patched(good, tok, "<I", 2**32 - 1)),
        ("max_token_length negative", patched(good, tok + 4, "<i", -1)),
        ("max_token_length huge", patched(good, tok + 4, "<i", 2**31 - 1)),
        ("max_token_length too small", patched(good, tok + 4, "<i", 1)),
        ("piece length negative", patched(good, first_len, "<i", -1)),
        ("piece length 2^31-1", patched(good, first_len, "<i", 2**31 - 1)),
        ("piece length past the section", patched(good, first_len, "<i", 1000)),
        ("piece score NaN", patched(good, first_len - 4, "<f", float("nan"))),
        ("section one byte short", set_size(good, tok_size - 1)),
        ("section of 3 bytes", set_size(good, 3)),
    ]:
        tllm_case(cases, f"{prefix} {label}", data, "tokenizer")


def test_tllm_embedded_tokenizer():
    good = tllm_bytes()
    tok, tok_size = tllm_field(good, "tokenizer_offset"), tllm_field(good, "tokenizer_size")
    gap = tllm_field(good, "weights_offset") - tok - tok_size  # zero padding before weights
    cases = []
    tokenizer_cases(cases, good, tok, tok_size,
                    lambda data, size: tllm_with(data, tokenizer_size=size), "v1")
    if gap >= 4:
        tllm_case(cases, "section with trailing bytes", tllm_with(good, tokenizer_size=tok_size + 4))
    tllm_case(cases, "empty section", tllm_with(good, tokenizer_size=0))
    run_catalogue(cases)


# ---------------------------------------------------------------------------------------------
# Version 2: the header, the metadata and the tensor directory

def v2_set(data, **values):
    """A version-2 file's bytes with header fields set."""
    return with_fields(data, V2_FIELDS, **values)


def v2_header(data, name):
    at, fmt = V2_FIELDS[name]
    return struct.unpack_from(fmt, data, at)[0]


def metadata_entry(f, key):
    return next(e for e in f.metadata_entries if e["key"] == key)


def directory_entry(f, name):
    return next(e for e in f.directory_entries if e["name"] == name)


def splice(f, section, start, end, new):
    """f's bytes with data[start:end], inside `section`, replaced by new: that section grows or
    shrinks by the difference, the sections after it move along, and the tensors move to the
    first multiple of 64 after the last section, the directory's offsets with them. Only what
    new holds is wrong with the result."""
    h, data = f.header, f.data
    delta = len(new) - (end - start)
    sections_end = h["directory_offset"] + h["directory_size"]
    first = min(e["offset"] for e in f.directory_entries)  # where the tensor data starts
    head = data[:start] + new + data[end:sections_end]
    out = bytearray(head + bytes(-len(head) % 64) + data[first:])
    shift = len(head) + -len(head) % 64 - first
    offset_at, offset_fmt = ENTRY_FIELDS["offset"]
    for e in f.directory_entries:  # each entry's offset, unless new replaced the entry
        if e["fields_at"] >= end or e["end"] <= start:
            at = e["fields_at"] + (delta if e["fields_at"] >= end else 0)
            struct.pack_into(offset_fmt, out, at + offset_at, e["offset"] + shift)
    for s in SECTIONS:
        off, size = h[s + "_offset"], h[s + "_size"]
        if s == section:
            size += delta
        elif off >= end:
            off += delta
        struct.pack_into(V2_FIELDS[s + "_offset"][1], out, V2_FIELDS[s + "_offset"][0], off)
        struct.pack_into(V2_FIELDS[s + "_size"][1], out, V2_FIELDS[s + "_size"][0], size)
    return v2_set(bytes(out), file_size=len(out))


def set_count(data, section, count):
    """data with the entry count at the start of section (metadata or directory) replaced."""
    return patched(data, v2_header(data, section + "_offset"), "<I", count)


def without_entry(f, section, e):
    """f without one metadata or directory entry e, its count one less."""
    data = splice(f, section, e["at"], e["end"], b"")
    return set_count(data, section, len(getattr(f, section + "_entries")) - 1)


def renamed(f, section, e, name):
    """f with the key or tensor name of entry e replaced by name (bytes, any length)."""
    return splice(f, section, e["at"], e["at"] + 1 + len(e.get("key", e.get("name"))),
                  bytes([len(name) & 0xFF]) + name)


def test_v2_sanity_splice_keeps_files_valid():
    """splice() itself. Growing the metadata by a second EOS id, and by eight, gives files the
    reference reads (every offset where the format puts it) and the engine runs to the same
    logits. An extra key of 0 to 80 bytes moves the tensors along, 64 bytes at a time: the
    reference still finds every tensor where the format puts it, bit for bit, and the engine
    refuses only the key."""
    f = tllm_file("v2_f32")
    eos = metadata_entry(f, "eos_ids")
    grown = [splice(f, "metadata", eos["count_at"], eos["end"],
                    struct.pack("<I", k) + struct.pack(f"<{k}i", *range(2, 2 + k)))
             for k in (2, 8)]
    same = renamed(f, "directory", directory_entry(f, "layers.1.wq"), b"layers.1.wq")
    assert same == f.data
    ref_logits = None
    for k, data in enumerate(grown):
        path = write(f"bad_splice_{k}.bin", data)
        g = TllmFile(path)
        assert g.header["eos_ids"] == tuple(range(2, 2 + (2, 8)[k]))
        assert all(g.tensors[n][1].tobytes() == f.tensors[n][1].tobytes() for n in f.tensors)
        logits = tmp_path(f"bad_splice_{k}.logits")
        p = subprocess.run([RUN, path, "-n", "8", "-t", "0", "--logits", logits],
                           capture_output=True, timeout=10)
        assert p.returncode == 0, f"splice {k}: {p.stderr.decode(errors='replace')}"
        with open(logits, "rb") as lf:
            rows = lf.read()
        assert ref_logits is None or rows == ref_logits, f"splice {k} changed the logits"
        ref_logits = rows
    end = f.metadata_entries[-1]["end"]
    sizes, cases = set(), []
    for n in range(0, 81, 7):
        entry = b"\x05extra\x03" + struct.pack("<I", n) + b"x" * n
        data = set_count(splice(f, "metadata", end, end, entry), "metadata",
                         len(f.metadata_entries) + 1)
        path = write(f"bad_splice_extra_{n}.bin", data)
        g = TllmFile(path)
        assert g.header["extra"] == "x" * n
        assert all(g.tensors[k][1].tobytes() == f.tensors[k][1].tobytes() for k in f.tensors)
        sizes.add(len(data))
        cases.append((f"extra key of {n} bytes", [path], [path], "'extra'"))
    assert len(sizes) >= 2, "the tensors never moved"
    run_catalogue(cases)


def test_v2_header():
    """The 64-byte header: version, file_size, each section's offset and size outside the
    file, and sections that overlap."""
    cases = []
    for f in (tllm_file("v2_f32"), tllm_file("v2_q8", "q8_0", 32, False, template="chatml")):
        good, n, h = f.data, len(f.data), f.header
        tag = "f32" if f.tensors["layers.0.wq"][0] == 0 else "q8"
        for version in (0, 3, 2**32 - 1):
            tllm_case(cases, f"{tag} version {version}", v2_set(good, version=version),
                      "version")
        for value in (0, n - 1, n + 1, n + 64, 2**63, 2**64 - 1):
            tllm_case(cases, f"{tag} file_size {value}", v2_set(good, file_size=value),
                      "file_size")
        for s in SECTIONS:
            off, size = h[s + "_offset"], h[s + "_size"]
            what = "tensor directory" if s == "directory" else s
            for value in (1, 63, n, n + 1, 2**63, 2**64 - 1):
                tllm_case(cases, f"{tag} {s}_offset {value}",
                          v2_set(good, **{s + "_offset": value}), f"{what} section")
            for value in (n, n - off + 1, 2**63, 2**64 - 1, 2**64 - off):
                tllm_case(cases, f"{tag} {s}_size {value}", v2_set(good, **{s + "_size": value}),
                          f"{what} section")
            tllm_case(cases, f"{tag} {s} at the end of the file",
                      v2_set(good, **{s + "_offset": n - size + 1}), f"{what} section")
        meta_at, tok_at, dir_at = (h[s + "_offset"] for s in SECTIONS)
        for label, values in [
            ("metadata reaches into the tokenizer", dict(metadata_size=tok_at - meta_at + 1)),
            ("tokenizer starts inside the metadata", dict(tokenizer_offset=tok_at - 1)),
            ("tokenizer reaches into the directory",
             dict(tokenizer_size=dir_at - tok_at + 1)),
            ("directory at the tokenizer", dict(directory_offset=tok_at)),
            ("directory at the metadata", dict(directory_offset=meta_at)),
            ("metadata inside the directory", dict(metadata_offset=dir_at + 4, metadata_size=8)),
        ]:
            tllm_case(cases, f"{tag} {label}", v2_set(good, **values), "overlap")
    assert run_catalogue(cases) >= 100


def test_v2_truncated_at_many_offsets():
    """Cut at many offsets, with file_size left as it was and with file_size matching the
    cut; and cut inside each section with the section's size matching the cut."""
    f = tllm_file("v2_q8", "q8_0", 32, False, template="chatml")
    good, n, h = f.data, len(f.data), f.header
    offsets = {1, 3, 4, 8, 15, 16, 63, 64, 65, 100, n // 3, n // 2, n - 65, n - 64, n - 4,
               n - 1}
    offsets |= {h[s + "_offset"] + h[s + "_size"] // k for s in SECTIONS for k in (1, 2, 3)}
    offsets |= {e["offset"] for e in f.directory_entries[::4]}
    cases = []
    for off in sorted(offsets):
        tllm_case(cases, f"cut at {off}", good[:off])
        if off >= 16:
            tllm_case(cases, f"cut at {off} with file_size {off}", v2_set(good[:off],
                                                                          file_size=off))
    run_catalogue(cases)


def int_keys(f):
    return [e["key"] for e in f.metadata_entries if e["kind"] == 1]


LIMITS = {"dim": 2**16, "hidden_dim": 2**18, "n_layers": 1024, "n_heads": 1024,
          "n_kv_heads": 1024, "head_size": 2**16, "vocab_size": 2**20, "seq_len": 2**20}


def test_v2_metadata_values():
    """Every numeric key zero, negative, huge, past its limit and inconsistent; the floats
    zero, negative, one, NaN and infinite; ids outside the vocabulary; eos_ids of 0 and 9
    values; tokenizer_kind and chat_template unknown. Values change in place."""
    f = tllm_file("v2_q8", "q8_0", 32, False, template="chatml")
    good = f.data
    cases = []

    def value(key, fmt, v, label, reason=None):
        tllm_case(cases, f"{key} {label}", patched(good, metadata_entry(f, key)["value_at"],
                                                   fmt, v), reason or key)

    for key, limit in LIMITS.items():
        for label, v in [("zero", 0), ("-1", -1), ("-2^31", -2**31), ("2^31-1", 2**31 - 1),
                         ("limit + 1", limit + 1)]:
            value(key, "<i", v, label)
    # inside the limits but wrong for this model: the tensors' shapes show it
    for key, v, reason in [("dim", 17, "token_embedding"), ("hidden_dim", 25, "w1"),
                           ("n_layers", 3, "layers.2.attn_norm"), ("n_heads", 8, "wq"),
                           ("n_kv_heads", 4, "wk"), ("n_kv_heads", 3, "n_kv_heads"),
                           ("head_size", 3, "head_size"), ("head_size", 8, "wq"),
                           ("vocab_size", 301, "token_embedding"),
                           ("n_heads", 1024, "n_heads"), ("n_layers", 1, "tensor")]:
        value(key, "<i", v, f"{v}", reason)
    for key in ("rope_theta", "norm_eps"):
        for label, v in [("zero", 0.0), ("negative", -1e-5), ("one", 1.0), ("nan", float("nan")),
                         ("inf", float("inf")), ("-inf", float("-inf"))]:
            value(key, "<f", v, label)
    for label, v in [("-1", -1), ("vocab_size", 300), ("2^31-1", 2**31 - 1)]:
        value("bos_id", "<i", v, label)
        value("eos_ids", "<i", v, label)
    for label, v in [("0", 0), ("-1", -1), ("2^31-1", 2**31 - 1)]:
        value("tokenizer_kind", "<i", v, label)
    # a known kind that is not the section's: the byte-level reader refuses the SentencePiece
    # bytes (their first u32, the piece count, is no pre-tokenizer id it knows)
    value("tokenizer_kind", "<i", 2, "2 on a SentencePiece section", "embedded tokenizer: ")
    eos = metadata_entry(f, "eos_ids")
    for count in (0, 9, 2**32 - 1):  # refused by the count, before any value is read
        tllm_case(cases, f"eos_ids of {count} values", patched(good, eos["count_at"], "<I", count),
                  "eos_ids")
    tllm_case(cases, "second eos_id outside the vocabulary",
              splice(f, "metadata", eos["count_at"], eos["end"], struct.pack("<I3i", 3, 2, 300, 5)),
              "eos_ids")
    template = metadata_entry(f, "chat_template")
    for label, name in [("chatmx", b"chatmx"), ("ChatML", b"ChatML"), ("NUL", b"chat\0l"),
                        ("newline", b"chat\nl"), ("0xff", b"\xff\xfeatml")]:
        tllm_case(cases, f"chat_template {label}",
                  good[:template["value_at"]] + name + good[template["end"]:], "chat_template")
    for name in (b"", b"x", b"llama", b"llama2!", b"z" * 32, b"z" * 33):
        tllm_case(cases, f"chat_template '{name[:8].decode()}' of {len(name)} bytes",
                  splice(f, "metadata", template["count_at"], template["end"],
                         struct.pack("<I", len(name)) + name), "chat_template")
    assert run_catalogue(cases) >= 80


def test_v2_metadata_entries():
    """Each key unknown, with bad bytes, duplicated, of the wrong type or count, missing; an
    entry cut short; the count too large or too small."""
    f = tllm_file("v2_q8", "q8_0", 32, False, template="chatml")
    good, h = f.data, f.header
    cases = []
    for e in f.metadata_entries:
        key = e["key"]
        k = key.encode()
        tllm_case(cases, f"{key} renamed", renamed(f, "metadata", e, k[:-1] + b"x"),
                  f"'{key[:-1]}x'")
        tllm_case(cases, f"{key} in capitals", renamed(f, "metadata", e, k.upper()),
                  f"'{key.upper()}'")
        for label, name in [("space", b" " + k), ("byte 1", k + b"\x01"), ("byte 0xff", b"\xff" + k),
                            ("empty", b""), ("64 bytes", (k * 64)[:64])]:
            tllm_case(cases, f"{key} key with {label}", renamed(f, "metadata", e, name),
                      "metadata entry")
        kinds = {1: (2, 3), 2: (1, 3), 3: (1, 2)}[e["kind"]] + (0, 4, 255)
        for kind in kinds:
            tllm_case(cases, f"{key} of type {kind}", patched(good, e["kind_at"], "<B", kind),
                      f"'{key}'")
        max_count = {"eos_ids": 8, "chat_template": 32}.get(key, 1)
        for count in (0, max_count + 1, 2**31, 2**32 - 1):
            tllm_case(cases, f"{key} with count {count}", patched(good, e["count_at"], "<I", count),
                      f"'{key}'")
        if key != "chat_template":  # optional
            tllm_case(cases, f"{key} missing", without_entry(f, "metadata", e), f"'{key}'")
        # the section ending inside this entry, which is then the last one
        cut_file = set_count(good, "metadata", f.metadata_entries.index(e) + 1)
        for label, end, reason in [
                ("in its key length", e["at"], "metadata entry"),
                ("in its key", e["at"] + len(k), "metadata entry"),
                ("before its type", e["kind_at"], f"'{key}'"),
                ("in its count", e["count_at"] + 2, f"'{key}'"),
                ("before its value", e["value_at"], f"'{key}'"),
                ("one byte short", e["end"] - 1, f"'{key}'")]:
            tllm_case(cases, f"{key} cut {label}",
                      v2_set(cut_file, metadata_size=end - h["metadata_offset"]), reason)
    first, second = f.metadata_entries[:2]
    tllm_case(cases, "dim twice", renamed(f, "metadata", second, b"dim"), "'dim' appears twice")
    seq = metadata_entry(f, "seq_len")
    tllm_case(cases, "n_heads twice", renamed(f, "metadata", seq, b"n_heads"), "'n_heads'")
    n_keys = len(f.metadata_entries)
    for count in (n_keys + 1, 2**32 - 1):
        tllm_case(cases, f"metadata count {count}", set_count(good, "metadata", count),
                  "metadata entry")
    for count in (n_keys - 1, 0):
        tllm_case(cases, f"metadata count {count}", set_count(good, "metadata", count),
                  "after the last metadata entry")
    tllm_case(cases, "metadata with trailing bytes",
              splice(f, "metadata", f.metadata_entries[-1]["end"], f.metadata_entries[-1]["end"],
                     b"\0\0\0\0"), "after the last metadata entry")
    tllm_case(cases, "metadata of 3 bytes", v2_set(good, metadata_size=3), "metadata")
    tllm_case(cases, "metadata of 0 bytes", v2_set(good, metadata_size=0), "metadata")
    assert run_catalogue(cases) >= 300


def test_v2_metadata_string_at_the_end_of_the_file():
    """A chat_template of one byte, the last value of a metadata section that ends where the
    file (and its mapping, a whole number of pages long) ends: the loader must not read a
    byte past it. The rest of the file would be refused later; the value is refused first."""
    f = tllm_file("v2_q8", "q8_0", 32, False, template="chatml")
    template = metadata_entry(f, "chat_template")
    meta_at, meta_end = f.header["metadata_offset"], template["end"]
    section = f.data[meta_at:template["count_at"]] + struct.pack("<I", 1) + b"x"
    body = f.data + bytes(-(len(f.data) + len(section)) % 4096)
    data = v2_set(body + section, file_size=len(body) + len(section), metadata_offset=len(body),
                  metadata_size=len(section))
    assert len(data) % 4096 == 0 and meta_end == meta_at + f.header["metadata_size"]
    run_catalogue([("one-byte chat_template at the end",
                    [write("bad_tllm_meta_at_end.bin", data), "-n", "4"],
                    ["bad_tllm_meta_at_end.bin"], "chat_template")])


def test_v2_directory():
    """Each tensor unknown, past n_layers, duplicated, of the wrong shape, type, group size
    or size, misplaced, overlapping, missing; entries cut short; bad names; trailing bytes;
    counts larger than the model's names."""
    cases = []
    for f in (tllm_file("v2_f32"), tllm_file("v2_q8", "q8_0", 32, False, template="chatml"),
              tllm_file("v2_q4", "q4_0")):
        good, n, h = f.data, len(f.data), f.header
        tag = {0: "f32", 2: "q8", 3: "q4"}[f.tensors["layers.0.wq"][0]]
        entries = f.directory_entries
        by_offset = sorted(entries, key=lambda e: e["offset"])

        def field(e, name, value):
            at, fmt = ENTRY_FIELDS[name]
            return patched(good, e["fields_at"] + at, fmt, value)

        def case(label, data, reason):
            tllm_case(cases, f"{tag} {label}", data, reason)

        # every tensor missing; every other change to the global tensors and to one layer's
        # (layer 0 of one file, layer 1 of the other)
        layer = "layers.0." if tag == "f32" else "layers.1."
        for e in entries:
            name = e["name"]
            quoted = f"'{name}'"
            case(f"{name} missing", without_entry(f, "directory", e),
                 "after the last tensor" if name == "classifier" else quoted)
            if name.startswith("layers.") and not name.startswith(layer):
                continue
            case(f"{name} rows + 1", field(e, "rows", e["rows"] + 1), quoted)
            case(f"{name} cols - 1", field(e, "cols", e["cols"] - 1), quoted)
            case(f"{name} rows 2^32-1", field(e, "rows", 2**32 - 1), quoted)
            case(f"{name} size + 1", field(e, "size", e["size"] + 1), quoted)
            case(f"{name} size - 64", field(e, "size", e["size"] - 64), quoted)
            case(f"{name} size 2^64-1", field(e, "size", 2**64 - 1), quoted)
            for t in (4, 255, 256, 2**32 - 1):  # 3 is Q4_0
                case(f"{name} type {t}", field(e, "type", t), quoted)
            case(f"{name} offset + 4", field(e, "offset", e["offset"] + 4), quoted)
            case(f"{name} offset + 1", field(e, "offset", e["offset"] + 1), quoted)
            case(f"{name} offset 0", field(e, "offset", 0), quoted)
            case(f"{name} offset 64", field(e, "offset", 64), quoted)
            case(f"{name} offset at the end", field(e, "offset", n // 64 * 64 + 64), quoted)
            case(f"{name} offset 2^64-64", field(e, "offset", 2**64 - 64), quoted)
            case(f"{name} past the end", field(e, "offset", (n - e["size"]) // 64 * 64 + 64),
                 quoted)
            vector = name.endswith("norm")
            if vector:
                case(f"{name} as bf16", field(e, "type", 1), quoted)
                data = field(e, "type", 2)
                data = patched(data, e["fields_at"] + ENTRY_FIELDS["group_size"][0], "<I", 32)
                case(f"{name} as q8_0", data, quoted)
            elif e["type"] == 2:
                for gs in (0, 16, 33, 128, 2**32 - 1):
                    case(f"{name} group size {gs}", field(e, "group_size", gs), quoted)
                case(f"{name} as f32", field(e, "type", 0), quoted)
            elif e["type"] == 3:  # Q4_0: blocks of 32 weights in 18 bytes, no multiple of 64
                for gs in (0, 16, 64):
                    case(f"{name} group size {gs}", field(e, "group_size", gs), quoted)
                case(f"{name} size - 1", field(e, "size", e["size"] - 1), quoted)
            else:
                case(f"{name} group size 32", field(e, "group_size", 32), quoted)
                case(f"{name} as bf16", field(e, "type", 1), quoted)
        # overlapping tensors: each starting where the one before it starts, or inside it
        for before, e in list(zip(by_offset, by_offset[1:]))[::3]:
            case(f"{e['name']} at {before['name']}", field(e, "offset", before["offset"]),
                 "overlaps")
            if before["size"] > 64:
                case(f"{e['name']} inside {before['name']}",
                     field(e, "offset", before["offset"] + 64), "overlaps")
        # a gap: the last tensor 64 bytes later than it must be (the file grown to hold it)
        last = by_offset[-1]
        grown = field(last, "offset", last["offset"] + 64)[:last["offset"]] + bytes(64) + \
            good[last["offset"]:]
        case(f"{last['name']} 64 bytes after the data before it",
             v2_set(grown, file_size=len(grown)), "at most 63")
        # a byte of a gap that is not zero (Q8_0's scales leave gaps; f32 sizes are all
        # multiples of 64 here)
        ends = [e["offset"] + e["size"] for e in by_offset]
        gapped = [e for e, end in zip(by_offset[1:], ends) if e["offset"] > end]
        assert gapped or tag == "f32", "the Q8_0 file has no gap between tensors to test"
        for e in gapped[:2]:
            dirty = bytearray(good)
            dirty[e["offset"] - 1] = 1
            case(f"a nonzero byte before {e['name']}", bytes(dirty), "all zero")
        # names
        wq = directory_entry(f, "layers.1.wq")
        for label, name, reason in [
                ("layers.1.wx", b"layers.1.wx", "'layers.1.wx'"),
                ("Layers.1.wq", b"Layers.1.wq", "'Layers.1.wq'"),
                ("final_norx", b"final_norx", "'final_norx'"),
                ("layers.2.wq (n_layers 2)", b"layers.2.wq", "'layers.2.wq'"),
                ("layers.9.wq", b"layers.9.wq", "'layers.9.wq'"),
                ("layers.01.wq", b"layers.01.wq", "'layers.01.wq'"),
                ("layers.10.wq", b"layers.10.wq", "'layers.10.wq'"),
                ("layers.-1.wq", b"layers.-1.wq", "'layers.-1.wq'"),
                ("layers.+1.wq", b"layers.+1.wq", "'layers.+1.wq'"),
                ("layers.2^32.wq", b"layers.4294967296.wq", "'layers.4294967296.wq'"),
                ("layers.2^32+1.wq", b"layers.4294967297.wq", "'layers.4294967297.wq'"),
                ("layers.2^64.wq", b"layers.18446744073709551616.wq", "layers.1844674407"),
                ("layers.1", b"layers.1", "'layers.1'"),
                ("layers.1.", b"layers.1.", "'layers.1.'"),
                ("layers..wq", b"layers..wq", "'layers..wq'"),
                ("layers.0.wq twice", b"layers.0.wq", "'layers.0.wq' appears twice"),
                ("classifier in a shared file", b"classifier", "'classifier'"),
                ("empty name", b"", "tensor directory entry"),
                ("name with a space", b"layers.1 wq", "tensor directory entry"),
                ("name with byte 0xff", b"layers.1.wq\xff", "tensor directory entry"),
                ("name of 64 bytes", (b"layers.1.wq" * 6)[:64], "tensor directory entry")]:
            if name == b"classifier" and "classifier" in f.tensors:
                name, label, reason = b"token_embedding", "token_embedding twice", "appears twice"
            case(f"name {label}", renamed(f, "directory", wq, name), reason)
        # counts, trailing bytes, entries cut short
        for count in (1000, 2**31, 2**32 - 1):  # more than any model of 2 layers has names
            case(f"count {count}", set_count(good, "directory", count), "names the model has")
        case(f"count {len(entries) + 1}", set_count(good, "directory", len(entries) + 1),
             "tensor directory entry")
        case("count one less", set_count(good, "directory", len(entries) - 1),
             "after the last tensor directory entry")
        case("count 0", set_count(good, "directory", 0), "after the last tensor directory entry")
        dir_end = h["directory_offset"] + h["directory_size"]
        case("directory with trailing bytes", splice(f, "directory", dir_end, dir_end, bytes(4)),
             "after the last tensor directory entry")
        case("directory of 3 bytes", v2_set(good, directory_size=3), "tensor directory")
        case("file with trailing bytes", v2_set(good + bytes(64), file_size=n + 64),
             "after the last tensor")
        last = entries[-1]
        for label, end, reason in [("in its name length", last["at"], "tensor directory entry"),
                                   ("in its name", last["at"] + 4, "tensor directory entry"),
                                   ("in its type", last["fields_at"] + 2, f"'{last['name']}'"),
                                   ("in its offset", last["fields_at"] + 20, f"'{last['name']}'"),
                                   ("one byte short", last["end"] - 1, f"'{last['name']}'")]:
            case(f"last entry cut {label}",
                 v2_set(good, directory_size=end - h["directory_offset"]), reason)
    assert run_catalogue(cases) >= 300


def with_tensors(f, tensors):
    """f with more tensors: (name, type, group size, rows, cols, bytes) each, their entries
    at the end of the directory and their data at the end of the file."""
    end = f.header["directory_offset"] + f.header["directory_size"]
    entries = b"".join(bytes([len(name)]) + name.encode() +
                       struct.pack(DIRECTORY_ENTRY, t, gs, rows, cols, 0, len(blob))
                       for name, t, gs, rows, cols, blob in tensors)
    data = bytearray(set_count(splice(f, "directory", end, end, entries), "directory",
                               len(f.directory_entries) + len(tensors)))
    at = v2_header(data, "directory_offset") + v2_header(data, "directory_size") - len(entries)
    for name, t, gs, rows, cols, blob in tensors:
        data += bytes(-len(data) % 64)
        at += 1 + len(name)
        struct.pack_into("<Q", data, at + ENTRY_FIELDS["offset"][0], len(data))
        at += struct.calcsize(DIRECTORY_ENTRY)
        data += blob
    return v2_set(bytes(data), file_size=len(data))


def vector(name, n, value=1.0):
    """An f32 vector tensor of n values, for with_tensors."""
    return (name, 0, 0, 1, n, np.full(n, value, dtype="<f4").tobytes())


def test_v2_optional_tensors():
    """The optional sets of layer tensors (FORMAT.md): q, k and v biases, q and k norms. A
    complete set in every layer loads; a set in some layers only, or incomplete, or of the
    wrong shape or type, is refused naming a tensor."""
    f = tllm_file("v2_f32")  # q_dim 16, kv_dim 8, head_size 4
    biases = [vector(f"layers.{l}.{n}", size) for l in (0, 1)
              for n, size in (("bq", 16), ("bk", 8), ("bv", 8))]
    norms = [vector(f"layers.{l}.{n}", 4) for l in (0, 1) for n in ("q_norm", "k_norm")]
    for label, tensors in [("biases", biases), ("q and k norms", norms),
                           ("both", biases + norms)]:
        path = write("bad_tllm_optional_ok.bin", with_tensors(f, tensors))
        p = subprocess.run([RUN, path, "-n", "8", "-t", "0"], capture_output=True, timeout=10)
        assert p.returncode == 0, f"{label}: {p.stderr.decode(errors='replace')}"
    cases = []
    for label, tensors, reason in [
            ("biases in layer 0 only", biases[:3], "'layers.1.bq' is missing"),
            ("biases in layer 1 only", biases[3:], "'layers.1.bq' is present"),
            ("bq without bk and bv", [biases[0], biases[3]], "'layers.0.bk' is missing"),
            ("q_norm without k_norm", [norms[0], norms[2]], "'layers.0.k_norm' is missing"),
            ("k norms in layer 1 only", [norms[3]], "'layers.1.k_norm' is present"),
            ("bq of dim + 1", [vector("layers.0.bq", 17)] + biases[1:], "'layers.0.bq'"),
            ("q_norm of dim", [vector("layers.1.q_norm", 16)] + norms[:2] + norms[3:],
             "'layers.1.q_norm'"),
            ("bk in bf16", biases[:1] + [("layers.0.bk", 1, 0, 1, 8, bytes(16))] + biases[2:],
             "'layers.0.bk'"),
            ("bias of layer 2", biases + [vector("layers.2.bq", 16)], "'layers.2.bq'"),
            ("bq twice", biases + biases[:1], "'layers.0.bq' appears twice")]:
        tllm_case(cases, f"optional: {label}", with_tensors(f, tensors), reason)
    run_catalogue(cases)


def test_v2_rope_scaling():
    """The optional rope_scaling keys: an unknown type, a factor below 1, NaN or infinite,
    llama3's frequencies out of order, and each key missing where its type needs it or
    present where it does not. The valid ones load."""
    f = tllm_file("v2_f32")
    end = f.metadata_entries[-1]["end"]

    def text(key, value):
        return (key, 3, len(value), value.encode())

    def number(key, value):
        kind, fmt = (1, "<i") if key == "rope_original_context" else (2, "<f")
        return (key, kind, 1, struct.pack(fmt, value))

    def with_keys(*entries):
        blob = b"".join(bytes([len(k)]) + k.encode() + struct.pack("<BI", kind, n) + v
                        for k, kind, n, v in entries)
        return set_count(splice(f, "metadata", end, end, blob), "metadata",
                         len(f.metadata_entries) + len(entries))

    linear = [text("rope_scaling", "linear"), number("rope_scaling_factor", 4.0)]
    llama3 = [text("rope_scaling", "llama3"), number("rope_scaling_factor", 8.0),
              number("rope_low_freq_factor", 1.0), number("rope_high_freq_factor", 4.0),
              number("rope_original_context", 16)]
    for label, entries in [("linear", linear), ("llama3", llama3)]:
        path = write("bad_tllm_rope_ok.bin", with_keys(*entries))
        p = subprocess.run([RUN, path, "-n", "20", "-t", "0"], capture_output=True, timeout=10)
        assert p.returncode == 0, f"{label}: {p.stderr.decode(errors='replace')}"
    cases = []
    for label, entries, reason in [
            ("type cubic", [text("rope_scaling", "cubic"), linear[1]], "rope_scaling"),
            ("type LINEAR", [text("rope_scaling", "LINEAR"), linear[1]], "rope_scaling"),
            ("type of 0 bytes", [text("rope_scaling", ""), linear[1]], "'rope_scaling'"),
            ("linear without a factor", linear[:1], "'rope_scaling_factor' is missing"),
            ("a factor without a type", linear[1:], "'rope_scaling_factor' is not used"),
            ("linear with llama3's keys", linear + llama3[2:], "'rope_low_freq_factor'"),
            ("llama3 without its context", llama3[:4], "'rope_original_context' is missing"),
            ("llama3 without low_freq", llama3[:2] + llama3[3:], "'rope_low_freq_factor'"),
            ("factor 0.5", [linear[0], number("rope_scaling_factor", 0.5)],
             "rope_scaling_factor"),
            ("factor NaN", [linear[0], number("rope_scaling_factor", float("nan"))],
             "rope_scaling_factor"),
            ("factor inf", [linear[0], number("rope_scaling_factor", float("inf"))],
             "rope_scaling_factor"),
            ("low 0", llama3[:2] + [number("rope_low_freq_factor", 0.0)] + llama3[3:],
             "rope_low_freq_factor"),
            ("high = low", llama3[:3] + [number("rope_high_freq_factor", 1.0)] + llama3[4:],
             "rope_high_freq_factor"),
            ("high inf", llama3[:3] + [number("rope_high_freq_factor", float("inf"))] +
             llama3[4:], "rope_high_freq_factor"),
            ("context 0", llama3[:4] + [number("rope_original_context", 0)],
             "rope_original_context"),
            ("context -1", llama3[:4] + [number("rope_original_context", -1)],
             "rope_original_context"),
            ("rope_scaling twice", linear + linear[:1], "'rope_scaling' appears twice")]:
        tllm_case(cases, f"rope: {label}", with_keys(*entries), reason)
    run_catalogue(cases)


def test_v2_embedded_tokenizer():
    """The tokenizer section of a version-2 file broken as in version 1; and tokenizer_kind
    absent while the file has a tokenizer."""
    f = tllm_file("v2_f32")
    good, h = f.data, f.header
    cases = []
    tokenizer_cases(cases, good, h["tokenizer_offset"], h["tokenizer_size"],
                    lambda data, size: v2_set(data, tokenizer_size=size), "v2")
    tllm_case(cases, "v2 empty section", v2_set(good, tokenizer_size=0), "tokenizer section")
    tllm_case(cases, "v2 tokenizer_kind missing",
              without_entry(f, "metadata", metadata_entry(f, "tokenizer_kind")), "tokenizer_kind")
    run_catalogue(cases)
