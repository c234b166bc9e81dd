"""The bundled model, models/stories260K.tllm (models/LICENSE.stories260K says where it comes
from): it must be exactly what `make bundled-model` makes from ../shared/models now, so a
change to the file format that forgets to regenerate it fails here, and it must tell the
story README.md's first command promises.
"""
import os
import subprocess

import common
from test_stories import STEPS, readme_text

BUNDLED = os.path.join("models", "stories260K.tllm")


def quiet_make_env():
    """The environment for running make from a test: without the variables of the `make test`
    that may be running the suite (its job server and flags are not ours to share)."""
    env = dict(os.environ)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(name, None)
    return env


def test_bundled_model_is_export_output():
    common.stories()  # the sources must be there: fail loudly, not with make's message
    fresh = common.tmp_path("bundled_fresh.tllm")
    if os.path.exists(fresh):
        os.remove(fresh)
    # the one command models/LICENSE.stories260K and the Makefile name, writing elsewhere
    p = subprocess.run(["make", "--no-print-directory", "bundled-model", f"BUNDLED={fresh}",
                        f"STORIES={common.SHARED}"], capture_output=True, text=True,
                       env=quiet_make_env(), timeout=120)
    assert p.returncode == 0, f"make bundled-model failed: {p.stdout}{p.stderr}"
    want, got = common.read_bytes(fresh), common.read_bytes(BUNDLED)
    assert got == want, (
        f"{BUNDLED} ({len(got)} bytes) is not what export.py writes now ({len(want)} bytes): "
        f"run `make bundled-model` and commit the file")


def test_bundled_model_tells_the_story():
    # The embedded tokenizer, no -z: the text llama2.c documents for the original checkpoint.
    p = common.run_ok([BUNDLED, "-t", 0, "-n", STEPS])
    assert p.stdout.decode(errors="replace") == readme_text() + "\n", p.stdout
