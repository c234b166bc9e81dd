"""Helpers shared by the tests: where the binaries and the real checkpoints are, and how to run
the engine and read what it wrote."""
import os
import subprocess

import numpy as np

BIN = os.environ.get("ENGINE_BIN", "build")
RUN = os.path.join(BIN, "run")
SHARED = os.path.join("..", "shared", "models")
TMP = os.path.join("build", "tests")
os.makedirs(TMP, exist_ok=True)


def shared_model(name):
    """Path of a real checkpoint in ../shared/models; a missing one fails the test loudly."""
    path = os.path.join(SHARED, name)
    assert os.path.isfile(path), f"{path} is missing: the tests need ../shared/models"
    return path


def tmp_path(name):
    return os.path.join(TMP, name)


def run(args, input=None, timeout=60):
    """Runs the engine with args; returns the CompletedProcess (bytes stdout/stderr)."""
    return subprocess.run([RUN] + [str(a) for a in args], input=input, capture_output=True,
                          timeout=timeout)


def run_ok(args, **kw):
    p = run(args, **kw)
    assert p.returncode == 0, f"run {args} exited {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p


def read_logits(path, vocab_size):
    """The float32 logits `run --logits` wrote, as an array (positions, vocab_size)."""
    data = np.fromfile(path, dtype="<f4")
    assert data.size % vocab_size == 0, f"{path}: {data.size} floats is not a multiple of {vocab_size}"
    return data.reshape(-1, vocab_size)
