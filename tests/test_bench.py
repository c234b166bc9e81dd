"""make bench's measuring tools: the ideal decoder it holds each run to (`build/machine_limits
--products`) reads the bytes the engine reads, and refuses what it cannot read; `--against`
pairs neighbouring runs of the two builds.

decode_ideal is only as honest as the sizes bench.py gives the ideal reader: once, by hand,
they counted Q8_0 at 1.125 bytes a weight where the file holds 1.0625 (groups of 64), and the
reader read 6% more than the engine. So the sizes are checked against the directory of the
file export.py writes, as tests/reference.py reads it.
"""
import subprocess

import bench
from common import export, tmp_path
from reference import TllmFile

# Pure Python and build/machine_limits: the sanitizer pass of `make test` skips this module.
C_CODE = False

LIMITS = "build/machine_limits"

# A grouped-query shape whose widths allow Q8_0 groups of 64, and one that leaves 32
# (dim 96): dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len
SHAPES = ("128,256,2,4,2,512,64", "96,256,3,3,1,320,64")


def test_decode_products_are_the_files_bytes():
    for shape in SHAPES:
        for dtype in ("f32", "bf16", "q8_0", "q4_0"):
            path = export(tmp_path(f"bench_{shape.replace(',', '_')}_{dtype}.bin"), "--random",
                          shape, "--dtype", dtype, "--seq-len", "64")
            f = TllmFile(path)
            size = {e["name"]: e["size"] for e in f.directory_entries}
            h = f.header
            kv_bytes, _ = bench.work_per_token(shape, 256, 4)  # the cache at 256 + 64
            layers, per_layer, last = bench.decode_products(shape, dtype, kv_bytes)
            assert layers == h["n_layers"], (shape, dtype, layers)
            for i in range(layers):  # every layer alike, as --products repeats them
                expected = [size[f"layers.{i}.wq"] + size[f"layers.{i}.wk"]
                            + size[f"layers.{i}.wv"],
                            # keys and values of each KV head, 4 bytes a number, at 256 + 64
                            2 * h["n_kv_heads"] * h["head_size"] * 4 * (256 + 64),
                            size[f"layers.{i}.wo"],
                            size[f"layers.{i}.w1"] + size[f"layers.{i}.w3"],
                            size[f"layers.{i}.w2"]]
                assert per_layer == expected, (shape, dtype, i, per_layer, expected)
            for kv_value in (2, 1):  # --kv-type bf16 and q8 (their scales left out)
                kv_bytes, _ = bench.work_per_token(shape, 1024, kv_value)
                kv = bench.decode_products(shape, dtype, kv_bytes)[1][1]
                assert kv == 2 * h["n_kv_heads"] * h["head_size"] * kv_value * (1024 + 64), kv
            classifier = "token_embedding" if h["shared_classifier"] else "classifier"
            assert last == size[classifier], (shape, dtype, last, size[classifier])


NO_AVX = "machine: no AVX-512 or AVX2+FMA in this build, limits not measured\n"


def limits(*args):
    p = subprocess.run([LIMITS, "--products"] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def measures():
    """Whether this build of machine_limits measures: without AVX-512 or AVX2+FMA it says so,
    whatever its arguments, and exits 0 (checked here instead)."""
    rc, out, err = limits("nonsense")
    if out == NO_AVX:
        assert rc == 0 and err == "", (rc, err)
        return False
    return True


def test_products_reads_and_reports_gb_s():
    measuring = measures()
    for extra in ((), (32,)):  # 128 tokens, or as many as asked
        rc, out, err = limits(2, 2, "262144,524288", 262144, *extra)
        assert rc == 0, err
        if measuring:
            assert float(out) > 0, out
        else:
            assert out == NO_AVX, out


def test_products_refuses_bad_arguments():
    if not measures():
        return  # measures() checked what such a build does with any arguments
    bad = [(2, 2, "4096,8192", 4096, 0),         # no tokens
           (2, 2, "4096,8192", 4096, "3x"),      # not a number
           (2, 2, "4096,8192", 4096, -1),
           (2, 2, "4096,8192", 4096, 100001),    # too many
           (2, 2, "4096,100", 4096),             # a product below one unit of the loop
           (2, 2, "4096,-8192", 4096),
           (2, 0, "4096", 4096),                 # no layers
           (2, 2, "4096,,8192", 4096),
           (2, "2x", "4096", 4096),              # LAYERS not a whole number
           (2, 2, "4096"),                       # too few arguments
           (2, 2, "4096", 4096, 3, 4)]           # too many
    for args in bad:
        rc, out, err = limits(*args)
        assert rc == 1, (args, rc, out)
        assert out == "", (args, out)
        assert err.startswith("machine_limits: --products") and err.count("\n") == 1, (args, err)


def test_against_alternates_and_pairs_neighbours():
    """--against runs the two builds in pairs that take turns at going first, and `paired` is
    the median of each pair's own ratio. Scripted runs, ours 1.10x theirs throughout, whose
    machine halves its speed after the third run (a change of phase): the medians read
    0.55x, the one pair that straddles the change 0.55x too, the other two 1.10x."""
    calls = []

    def run_once(path, threads, flags, other=None, prompt_tokens=None):
        calls.append("theirs" if other else "ours")
        slow = 1.0 if len(calls) <= 3 else 0.5  # the machine halves after run 3
        rate = slow * (1.10 if other is None else 1.0)
        return {"prefill_tok_s": 1000 * rate, "decode_tok_s": 100 * rate}

    saved, bench.run_once = bench.run_once, run_once
    try:
        line = bench.compare("model.bin", 2, [], "OLD/run", 3)
    finally:
        bench.run_once = saved
    assert calls == ["ours", "theirs", "theirs", "ours", "ours", "theirs"], calls
    # ours 1.1, 0.55, 0.55 and theirs 1.0, 1.0, 0.5: medians 0.55 and 1.0
    assert line.count("ratio=0.550") == 2 and line.count("paired=1.100") == 2, line
