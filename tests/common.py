"""Helpers shared by the tests: where the binaries and the real checkpoints are, how to run
the engine and export.py, how to read what they wrote, and the error measure for logits."""
import fcntl
import os
import shutil
import subprocess

import numpy as np

BIN = os.environ.get("ENGINE_BIN", "build")
RUN = os.path.join(BIN, "run")
SANITIZED = os.path.normpath(BIN) == os.path.join("build", "debug")  # run_tests.py's debug: half
PY = "/usr/bin/python3"
SHARED = os.path.join("..", "shared", "models")
# Each build's suite writes its files in a folder of its own (build/tests, build/debug/tests),
# because `make test` runs the release and the sanitizer suites side by side. What is slow to
# make is kept in one cache they share, build/tests/cache, under a digest of what it depends on.
TMP = os.path.join(BIN, "tests")
CACHE = os.path.join("build", "tests", "cache")
os.makedirs(TMP, exist_ok=True)
os.makedirs(CACHE, exist_ok=True)


def shared_model(name):
    """Path of a real checkpoint in ../shared/models; a missing one fails the test loudly."""
    path = os.path.join(SHARED, name)
    assert os.path.isfile(path), f"{path} is missing: the tests need ../shared/models"
    return path


def stories():
    """(model, tokenizer): the paths of stories260K.bin and tok512.bin in ../shared/models."""
    return shared_model("stories260K.bin"), shared_model("tok512.bin")


def sentencepiece():
    """sentencepiece's processor for the Llama 2 tokenizer.model, the oracle for token ids."""
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=shared_model("tokenizer.model"))


def tmp_path(name):
    return os.path.join(TMP, name)


def cache_path(name):
    return os.path.join(CACHE, name)


def cache_entry(path, make):
    """path, a file or folder of the cache, made by make(where) unless it is there: make
    writes `where`, which is then renamed to path. The two suites run side by side and may
    want the same entry at once: a lock beside it makes the second wait for the first
    instead of making it again."""
    if not os.path.exists(path):
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(path):
                where = path + ".tmp"
                if os.path.isdir(where):
                    shutil.rmtree(where)
                make(where)
                os.replace(where, path)
    return path


def run(args, input=None, timeout=60):
    """Runs the engine with args; returns the CompletedProcess (bytes stdout/stderr)."""
    return subprocess.run([RUN] + [str(a) for a in args], input=input, capture_output=True,
                          timeout=timeout)


def run_ok(args, **kw):
    p = run(args, **kw)
    assert p.returncode == 0, f"run {args} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p


SANITIZER_MARKS = (b"AddressSanitizer", b"runtime error", b"LeakSanitizer")


def tokenize(args, stdin=b"", timeout=300):
    """Runs build/tokenize (tests/tokenize.c); returns the CompletedProcess after checking for
    sanitizer reports."""
    exe = os.path.join(BIN, "tokenize")
    assert os.path.isfile(exe), f"{exe} is missing: build it first (make build/tokenize)"
    p = subprocess.run([exe] + [str(a) for a in args], input=stdin, capture_output=True,
                       timeout=timeout)
    for mark in SANITIZER_MARKS:
        assert mark not in p.stderr, f"tokenize {args}: {p.stderr.decode(errors='replace')}"
    return p


def tokenize_ok(args, stdin=b""):
    p = tokenize(args, stdin)
    assert p.returncode == 0, \
        f"tokenize {args} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p


def frame(records):
    """build/tokenize's input: each record as its length, a newline, then its bytes."""
    return b"".join(b"%d\n" % len(r) + r for r in records)


def unframe(data):
    """Splits build/tokenize's framed output back into records."""
    records, i = [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        n = int(data[i:nl])
        records.append(data[nl + 1:nl + 1 + n])
        i = nl + 1 + n
    return records


def export(out, *args, env=None, timeout=120):
    """Runs `export.py out args...` and asserts it succeeded; returns out."""
    p = subprocess.run([PY, "export.py", out] + [str(a) for a in args], capture_output=True,
                       text=True, env=env, timeout=timeout)
    assert p.returncode == 0, f"export.py {out} {args} exited {p.returncode}: {p.stderr}"
    return out


def read_bytes(path):
    """The whole file. `with`, not open().read(): a ResourceWarning would add
    __warningregistry__ to a test module while the runner iterates over its functions."""
    with open(path, "rb") as f:
        return f.read()


def read_logits(path, vocab_size):
    """The float32 logits `run --logits` wrote, as an array (positions, vocab_size)."""
    data = np.fromfile(path, dtype="<f4")
    assert data.size % vocab_size == 0, f"{path}: {data.size} floats is not a multiple of {vocab_size}"
    return data.reshape(-1, vocab_size)


def relative_error(a, ref):
    """max|a - ref| / max|ref|: the largest error relative to the size of the values, which
    stays meaningful when a single value is near zero."""
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def relative_errors(a, ref):
    """relative_error of each row (position) of two logits arrays."""
    assert a.shape == ref.shape, f"{a.shape} vs {ref.shape}"
    return np.max(np.abs(a - ref), axis=1) / np.max(np.abs(ref), axis=1)
