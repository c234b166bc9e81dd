"""models/download.sh, offline: its argument handling and its sha256 checks, fed from a
file:// mirror of ../shared/models (MIRROR=URL fetches every file as URL/FILE)."""
import hashlib
import os
import re
import shutil
import subprocess

import common

# A shell script: no C code runs here, and the sanitizer pass of `make test` skips this module.
C_CODE = False

SCRIPT = os.path.join("models", "download.sh")


def download(args, mirror):
    env = dict(os.environ, MIRROR="file://" + os.path.abspath(mirror))
    return subprocess.run(["sh", SCRIPT] + args, capture_output=True, text=True, env=env,
                          timeout=60)


def fresh_dir(name):
    path = common.tmp_path(name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_download_verifies_sha256():
    common.shared_model("stories260K.bin")
    out = fresh_dir("dl_ok")
    p = download(["stories260K", out], common.SHARED)
    assert p.returncode == 0, p.stderr
    for name in ("stories260K.bin", "tok512.bin"):
        assert sha256(os.path.join(out, name)) == sha256(common.shared_model(name))
    assert p.stdout.count("sha256 ok") == 2, p.stdout
    # a second run finds the files and checks them instead of fetching again
    p = download(["stories260K", out], common.SHARED)
    assert p.returncode == 0 and p.stdout.count("already here, sha256 ok") == 2, p.stdout


def test_download_rejects_a_corrupted_file():
    mirror = fresh_dir("dl_bad_mirror")
    shutil.copy(common.shared_model("stories260K.bin"), mirror)
    with open(common.shared_model("tok512.bin"), "rb") as f:
        data = bytearray(f.read())
    data[100] ^= 1  # one flipped bit
    with open(os.path.join(mirror, "tok512.bin"), "wb") as f:
        f.write(data)
    out = fresh_dir("dl_bad")
    p = download(["stories260K", out], mirror)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "tok512.bin: sha256 mismatch" in p.stderr, p.stderr
    assert sorted(os.listdir(out)) == ["stories260K.bin"], os.listdir(out)  # no tok512.bin(.part)


def test_download_says_when_it_cannot_verify():
    """stories15M's hash is not known to the script: it must say UNVERIFIED, not pass it off
    as checked (the mirror serves stories260K under that name: any bytes would do)."""
    mirror = fresh_dir("dl_unknown_mirror")
    shutil.copy(common.shared_model("stories260K.bin"), os.path.join(mirror, "stories15M.bin"))
    for name in ("tokenizer.bin", "tokenizer.model"):
        shutil.copy(common.shared_model(name), mirror)
    out = fresh_dir("dl_unknown")
    p = download(["stories15M", out], mirror)
    assert p.returncode == 0, p.stderr
    line = next(l for l in p.stdout.splitlines() if "stories15M.bin" in l and "UNVERIFIED" in l)
    assert sha256(common.shared_model("stories260K.bin")) in line, line
    assert "tokenizer.bin: sha256 ok" in p.stdout and "tokenizer.model: sha256 ok" in p.stdout


def test_download_arguments():
    for args in ([], ["nope"], ["-x"], ["stories260K", "a", "b"]):
        p = download(args, common.SHARED)
        assert p.returncode == 1 and p.stderr.strip(), (args, p.stdout, p.stderr)
    assert "unknown name" in download(["nope"], common.SHARED).stderr
    p = download(["--list"], common.SHARED)
    assert p.returncode == 0
    for name in ("stories260K", "stories15M", "stories42M", "stories110M", "tinyllama-chat",
                 "llama-68m"):
        assert f"{name}:" in p.stdout, p.stdout
    assert all(u.startswith("https://") for u in re.findall(r"\s(\S+://\S+)", p.stdout))


def test_download_hashes_match_shared_readme():
    """The four known hashes in the script are the ones ../shared/models/README.md lists."""
    with open(os.path.join(common.SHARED, "README.md")) as f:
        readme = f.read()
    with open(SCRIPT) as f:
        script = f.read()
    for name in ("stories260K.bin", "tok512.bin", "tokenizer.bin", "tokenizer.model"):
        want = re.search(rf"\| {re.escape(name)} \|.*\| ([0-9a-f]{{64}}) \|", readme).group(1)
        assert re.search(rf"{re.escape(name)} \S+ {want}", script), f"{name}: {want} not in script"
