"""The sampler's filters (top-k, min-p, top-p) on hand-made distributions: build/test_sampler."""
import os
import subprocess

from common import BIN


def test_sampler_filters():
    exe = os.path.join(BIN, "test_sampler")
    assert os.path.isfile(exe), f"{exe} is missing: build it with make"
    p = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "sampler: 0 failed" in p.stdout, p.stdout
