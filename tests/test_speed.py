"""The fast paths must not change the numbers.

  - tests/test_kernels.c holds every SIMD kernel to its plain C reference; it runs here for the
    native build and, compiled again, for the AVX2, AVX-512-without-VNNI and plain paths.
  - Batched prefill (the prompt in chunks of tokens) gives the logits of token-by-token
    decoding (`run --no-prefill`) on random models of several shapes and all weight types;
    more threads, and weights copied out of the mapping (`--no-mmap`), give the same logits.
  - bf16 and Q8_0 copies of stories260K keep its perplexity on a short story (tests/story.txt)
    within 0.5% and 2% of float32, the float32 perplexity matches the numpy reference, and
    greedy bf16 text equals float32 text.
"""
import os
import re
import subprocess

import numpy as np

import common
import reference

TOLERANCE = 1e-4  # relative, as tests/test_forward.py: max|a - b| / max|b| per position
STORY = os.path.join("tests", "story.txt")
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wno-unused-parameter",
          "-Wno-unknown-pragmas", "-D_POSIX_C_SOURCE=200809L", "-I."]


def check_kernel_tests(exe):
    """Runs a test_kernels binary; fails on any failing case, naming it."""
    p = subprocess.run([exe], capture_output=True, timeout=600)
    out = p.stdout.decode(errors="replace")
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert p.returncode == 0 and not fails and re.search(r"\d+ passed, 0 failed", out), (
        f"{exe} exited {p.returncode}: " + "; ".join(fails[:10]) + p.stderr.decode(errors="replace"))
    return out.splitlines()[0]  # "kernels: ..." names the paths it tested


def test_kernels_native():
    check_kernel_tests(os.path.join(common.BIN, "test_kernels"))


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_kernels_every_path():
    # -march=native only exercises this machine's best path; the others are compiled
    # explicitly so that each is held to the reference wherever the CPU can run it.
    flags = cpu_flags()
    variants = {"plain": [], "avx2": ["-mavx2", "-mfma"]}
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        variants["avx512novnni"] = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if "avx2" not in flags:
        del variants["avx2"]
    sanitize = ["-O1", "-g", "-fsanitize=address,undefined"] if "debug" in common.BIN else ["-O2"]
    for name, arch in variants.items():
        exe = common.tmp_path(f"test_kernels_{name}")
        sources = ["tests/test_kernels.c", "kernels.c", "attention.c", "matmul.c", "matmul_f32.c",
                   "matmul_bf16.c", "matmul_q8_0.c"]
        cmd = ["cc"] + CFLAGS + sanitize + arch + sources + ["-lm", "-o", exe]
        p = subprocess.run(cmd, capture_output=True, timeout=300)
        assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}"
        line = check_kernel_tests(exe)
        expect = {"plain": "f32:plain", "avx2": "f32:avx2", "avx512novnni": "q8_0:avx2"}[name]
        assert expect in line, f"{name} build tested '{line}', not the {name} path"


# ------------------------------------------------------------------------------------------
# Batched prefill against token by token

def logits_of(model, prompt, steps, *flags):
    path = common.tmp_path("speed.logits")
    common.run_ok([model, "-t", 0, "-n", steps, "-i", prompt, "--logits", path] + list(flags))
    return common.read_logits(path, reference.TllmFile(model).header["vocab_size"])


# dim, hidden, layers, heads, kv_heads, vocab, seq_len: multi-head; grouped-query with a
# hidden size that leaves short vector tails; multi-query with odd head_size 18 and widths
# that are no multiple of 32 (short last Q8_0 groups)
SHAPES = {"mha": "64,172,2,4,4,300,200", "gqa": "96,200,2,6,2,320,200",
          "mqa_odd": "90,150,3,5,1,301,200"}
PROMPT = ("The quick brown fox jumps over the lazy dog, and then it runs far away into the "
          "forest where the tall trees grow; nobody sees it again until the next morning.")


def test_prefill_matches_token_by_token():
    # The prompt spans several prefill chunks (64 tokens each); generation continues after it,
    # so the decode steps read a cache that prefill filled.
    for shape_name, shape in SHAPES.items():
        for dtype in ("f32", "bf16", "q8_0"):
            model = common.export(common.tmp_path(f"speed_{shape_name}_{dtype}.bin"), "--random",
                                  shape, "--dtype", dtype, "--seed", "5", timeout=300)
            batched = logits_of(model, PROMPT, 190)
            single = logits_of(model, PROMPT, 190, "--no-prefill")
            err = common.relative_errors(batched, single)
            assert len(batched) > 130, f"{shape_name}: only {len(batched)} positions ran"
            assert err.max() < TOLERANCE, (
                f"{shape_name} {dtype}: prefill differs from token by token at position "
                f"{int(err.argmax())}: relative error {err.max():.3g}")


def test_threads_give_the_same_logits():
    # Threads split the rows of each matrix, and a row is summed by one thread in one order,
    # so the number of threads cannot change a single bit.
    for dtype in ("f32", "q8_0"):
        model = common.export(common.tmp_path(f"speed_threads_{dtype}.bin"), "--random",
                              "256,688,2,8,4,1000,200", "--dtype", dtype, "--seed", "6",
                              timeout=300)
        one = logits_of(model, PROMPT, 160, "--threads", 1)
        two = logits_of(model, PROMPT, 160, "--threads", 2)
        assert np.array_equal(one, two), f"{dtype}: --threads 2 changed the logits"


def test_no_mmap_gives_the_same_logits():
    # --no-mmap copies the f32 and bf16 matrices into memory of the engine's own; the same
    # weights, read by the same kernels, must give the same bits.
    for dtype in ("f32", "bf16", "q8_0"):
        model = common.export(common.tmp_path(f"speed_mmap_{dtype}.bin"), "--random",
                              SHAPES["gqa"], "--dtype", dtype, "--seed", "7", timeout=300)
        mapped = logits_of(model, PROMPT, 190)
        copied = logits_of(model, PROMPT, 190, "--no-mmap")
        assert len(mapped) > 130 and np.array_equal(mapped, copied), (
            f"{dtype}: --no-mmap changed the logits")
    # and a llama2.c file (its classifier shared with the embedding, read from the mapping)
    model, tok = common.stories()
    texts = [common.run_ok([model, "-z", tok, "-t", 0, "-n", 120, "-i", "Once upon a time"]
                           + flags).stdout for flags in ([], ["--no-mmap"])]
    assert len(texts[0]) > 200 and texts[0] == texts[1], "--no-mmap changed stories260K's text"


# ------------------------------------------------------------------------------------------
# stories260K in three weight types

def stories_as(dtype):
    """stories260K as dtype: the llama2.c file itself for f32, else exported once."""
    model, tok = common.stories()
    if dtype == "f32":
        return model
    out = common.tmp_path(f"stories260K_{dtype}.bin")
    if not os.path.exists(out):
        common.export(out, "--llama2c", model, "--tokenizer", tok, "--dtype", dtype,
                      timeout=300)
    return out


def perplexity(model):
    """(tokens, nll, perplexity) that `run --ppl` prints for the story."""
    args = [model, "--ppl", STORY]
    if model.endswith("stories260K.bin"):
        args += ["-z", common.shared_model("tok512.bin")]
    out = common.run_ok(args).stdout.decode()
    m = re.fullmatch(r"ppl: tokens=(\d+) nll=([\d.]+) perplexity=([\d.]+)\n", out)
    assert m, f"--ppl printed {out!r}"
    return int(m[1]), float(m[2]), float(m[3])


def test_perplexity_f32_matches_reference():
    # The numpy reference scores the same tokens with the same windows: seq_len positions,
    # each window starting at position 0 on the last token of the one before.
    tokens_n, nll, ppl = perplexity(stories_as("f32"))
    with open(STORY, "rb") as f:
        text = f.read()
    text = text[:-1] if text.endswith(b"\n") else text  # --ppl reads files as -f does
    frame = str(len(text)).encode() + b"\n" + text
    p = subprocess.run([os.path.join(common.BIN, "tokenize"), "--bos",
                        common.shared_model("tok512.bin"), "512"], input=frame,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    ids = [int(x) for x in p.stdout.split()]
    config, weights = reference.read_llama2c(common.shared_model("stories260K.bin"))
    assert len(ids) > config.seq_len, "the story should be longer than one context window"
    total, count, start = 0.0, 0, 0
    while start < len(ids) - 1:
        model = reference.Transformer(config, weights)
        window = ids[start:start + config.seq_len]
        for pos in range(len(window) - 1):
            logits = model.forward(window[pos], pos)
            top = logits.max()
            total += top + np.log(np.exp(logits - top).sum()) - logits[window[pos + 1]]
            count += 1
        start += len(window) - 1
    assert tokens_n == count, f"engine scored {tokens_n} tokens, the reference {count}"
    assert abs(nll - total / count) < 1e-4 * total / count, (
        f"engine nll {nll} vs reference {total / count}")
    assert 1.0 < ppl < 20.0, f"perplexity {ppl} of a TinyStories model on a tiny story"


def test_perplexity_bf16_and_q8_0():
    n32, _, p32 = perplexity(stories_as("f32"))
    for dtype, bound in (("bf16", 0.005), ("q8_0", 0.02)):
        n, _, p = perplexity(stories_as(dtype))
        assert n == n32, f"{dtype}: {n} tokens scored, f32 {n32}"
        assert abs(p / p32 - 1) < bound, (
            f"{dtype} perplexity {p:.4f} is {100 * (p / p32 - 1):+.2f}% from f32's {p32:.4f} "
            f"(allowed {100 * bound}%)")


def test_greedy_bf16_equals_f32():
    texts = {}
    for dtype in ("f32", "bf16"):
        args = [stories_as(dtype), "-t", 0, "-n", 101]  # BOS, then 100 tokens
        if dtype == "f32":
            args += ["-z", common.shared_model("tok512.bin")]
        texts[dtype] = common.run_ok(args).stdout
    assert texts["bf16"] == texts["f32"], (
        f"bf16 greedy text differs:\n{texts['bf16'][:300]!r}\nf32:\n{texts['f32'][:300]!r}")
