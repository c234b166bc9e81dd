"""A newcomer's first five minutes, checked on a fresh clone of the repository (its committed
HEAD, in a temporary folder): README.md's first command, run exactly as the README writes it
with no network, must tell the known story; `make test` with a Python that lacks numpy must
stop at once with one line saying what to run, never a traceback. Run once per `make test`:
they build their own copies, whatever $ENGINE_BIN says.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile

import common
from test_bundled import quiet_make_env
from test_stories import readme_text

ROOT = os.getcwd()  # run_tests.py runs the tests from the project's root


def readme_commands(readme_path):
    """The first line of each ```sh block of a README, in order."""
    with open(readme_path, encoding="utf-8") as f:
        blocks = re.findall(r"^```sh\n(.*?)^```", f.read(), re.M | re.S)
    return [b.split("\n", 1)[0] for b in blocks]


def clone(into):
    """A fresh clone of this repository at its current commit, in into/repo."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dest = os.path.join(into, "repo")
    subprocess.run(["git", "clone", "-q", ROOT, dest], check=True, timeout=120)
    subprocess.run(["git", "-C", dest, "checkout", "-q", head], check=True, timeout=60)
    return dest


def offline_prefix():
    """A command prefix that runs its command in a new network namespace (no interface but
    its own loopback): `unshare -n` as root, else `unshare -rn` in a user namespace."""
    assert shutil.which("unshare"), "unshare is missing (util-linux): cannot cut the network"
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        p = subprocess.run(prefix + ["cat", "/proc/net/dev"], capture_output=True, text=True)
        if p.returncode == 0:
            interfaces = [line.split(":")[0].strip() for line in p.stdout.splitlines()
                          if ":" in line]
            assert interfaces == ["lo"], f"{prefix} left interfaces {interfaces}"
            return prefix
    raise AssertionError("neither `unshare -n` nor `unshare -rn` works here: no way to run "
                         "the README's command without network")


def run_group(cmd, cwd, env, timeout):
    """Runs cmd in its own process group, killing the whole group if it outlives timeout.
    Returns the CompletedProcess (text)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError(f"{cmd} in {cwd} ran over {timeout} s")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_readme_first_command_offline_in_a_clone():
    prefix = offline_prefix()
    with tempfile.TemporaryDirectory() as tmp:
        repo = clone(tmp)
        commands = readme_commands(os.path.join(repo, "README.md"))
        assert commands, "README.md has no ```sh block"
        first = commands[0]
        p = run_group(prefix + ["sh", "-c", first], repo, quiet_make_env(), 300)
        assert p.returncode == 0, f"`{first}` exited {p.returncode}:\n{p.stderr}"
        assert p.stdout.endswith(readme_text() + "\n"), (
            f"`{first}` did not end with the known story:\n{p.stdout}")
        # stdout: make's compiler commands, then the story; stderr: the speed, no warning
        assert re.fullmatch(r"achieved tok/s: [0-9.]+\n", p.stderr), p.stderr


def test_readme_test_command_is_what_ci_runs():
    commands = readme_commands("README.md")
    assert len(commands) >= 2 and commands[1] == "make test", commands
    with open(os.path.join(".ci", "run")) as f:
        lines = [l for l in f.read().splitlines() if l and not l.startswith("#")]
    assert lines[-1] == commands[1], lines


def python_without_numpy(folder):
    """A python3 that cannot import numpy: Debian's, without its site-packages (-S)."""
    path = os.path.join(folder, "python3-without-numpy")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n')
    os.chmod(path, 0o755)
    p = subprocess.run([path, "-c", "import numpy"], capture_output=True, text=True)
    assert p.returncode != 0 and "ModuleNotFoundError" in p.stderr, "numpy imported after all"
    return path


def test_make_test_without_numpy():
    with tempfile.TemporaryDirectory() as tmp:
        repo = clone(tmp)
        python = python_without_numpy(tmp)
        p = run_group(["make", "test", f"PYTHON={python}"], repo, quiet_make_env(), 120)
        out = p.stdout + p.stderr
        assert p.returncode != 0, f"make test went on without numpy:\n{out[-2000:]}"
        assert "Traceback" not in out, out
        ours = [l for l in out.splitlines() if not l.startswith("make: *** ")]
        assert len(ours) == 1, f"expected one line, got:\n{out}"
        assert ours[0] == (f"make test: {python} cannot import numpy sentencepiece; "
                           "run: make test PYTHON=/usr/bin/python3"), ours[0]
        assert not os.path.exists(os.path.join(repo, "build")), "make test built something"
    # and the command it names passes the check (here, where make test is running)
    p = subprocess.run(["sh", os.path.join("tests", "deps.sh")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON="/usr/bin/python3"), timeout=600)
    assert p.returncode == 0, p.stderr
    assert all(l.startswith("make test: installing ") for l in p.stderr.splitlines()), p.stderr


def test_dependency_check_is_quiet_when_all_is_there():
    # What make test ran first: everything is installed now, so not a word and status 0.
    for _ in range(2):  # the first run installs whatever a direct run_tests.py call lacked
        p = subprocess.run(["sh", os.path.join("tests", "deps.sh")], capture_output=True,
                           text=True, env=dict(os.environ, PYTHON=common.PY), timeout=600)
        assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == "", (p.stdout, p.stderr)
    for pkg in ("tokenizers", "jinja"):
        path = os.path.join(".deps", "npm", "node_modules", "@huggingface", pkg, "package.json")
        assert os.path.isfile(path), f"{path} is missing"
