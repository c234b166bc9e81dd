"""Memcheck: end-to-end runs of build/valgrind/run under valgrind, run once per `make test`.

build/valgrind/run is built without OpenMP and without -march=native (Makefile, VFLAGS):
libgomp keeps its thread pool alive until exit, which memcheck reports as "possibly lost"
blocks that are not ours, and valgrind cannot decode AVX-512 instructions that -march=native
may emit. Any invalid read or write, use of uninitialised memory, or definite or indirect leak
makes valgrind exit with its error code.
"""
import os
import shutil
import subprocess

from common import shared_model, tmp_path

BINARY = os.path.join("build", "valgrind", "run")
MEMCHECK = ["valgrind", "-q", "--error-exitcode=1", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect"]


def memcheck(args, input=None, error_exitcode=None):
    """Runs the engine under memcheck. Returns (status, stderr)."""
    assert shutil.which("valgrind"), "valgrind is not installed (apt-get install valgrind)"
    assert os.path.exists(BINARY), f"{BINARY} is missing: `make test` builds it"
    cmd = list(MEMCHECK)
    if error_exitcode is not None:
        cmd[2] = f"--error-exitcode={error_exitcode}"
    p = subprocess.run(cmd + [BINARY] + [str(a) for a in args], input=input,
                       capture_output=True, timeout=300)
    err = p.stderr.decode(errors="replace")
    reports = [line for line in err.splitlines() if line.startswith("==")]
    assert not reports, "memcheck found:\n" + "\n".join(reports[:40])
    return p.returncode, err


def test_generation_memcheck():
    """stories260K generating 64 tokens with top-p sampling: the whole path from mapping the
    file to freeing the run state."""
    rc, err = memcheck([shared_model("stories260K.bin"), "-z", shared_model("tok512.bin"),
                        "-n", "64", "-s", "42", "-t", "0.8", "-p", "0.9", "-i", "Once upon a time"])
    assert rc == 0, err[-2000:]


def test_chat_memcheck():
    """A Q8_0 TLLM file with its embedded tokenizer, in chat mode with a short conversation and
    a long line that fills the context."""
    import checkpoints
    from reference import Config
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
               seq_len=64)
    pieces, scores = checkpoints.tokenizer_pieces(300, 0)
    model = tmp_path("valgrind_q8.bin")
    checkpoints.export_tllm(model, c, checkpoints.random_weights(c, 0), pieces, scores,
                            "q8_0", 32)
    rc, err = memcheck([model, "-m", "chat", "-s", "1"],
                       input=b"be brief\nhello\nhow are you\n" + b"x" * 5000 + b"\n")
    assert rc == 0, err[-2000:]


def test_error_path_memcheck():
    """A file rejected after the run state exists (the embedded tokenizer is broken) exits 1
    through the error path; memcheck must still find no error (its own code here is 99)."""
    import checkpoints
    from reference import Config, TllmFile
    c = Config(dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=300,
               seq_len=16)
    pieces, scores = checkpoints.tokenizer_pieces(300, 0)
    model = tmp_path("valgrind_badtok.bin")
    checkpoints.export_tllm(model, c, checkpoints.random_weights(c, 0), pieces, scores)
    with open(model, "r+b") as f:  # piece count 299 for a vocabulary of 300
        f.seek(TllmFile(model).header["tokenizer_offset"])
        f.write((299).to_bytes(4, "little"))
    rc, err = memcheck([model, "-n", "4"], error_exitcode=99)
    assert rc == 1 and "embedded tokenizer" in err, err[-2000:]
