"""The engine runs what export.py writes: stories260K converted gives llama2.c's text and
logits bit for bit, Hugging Face directories give the logits of an independent numpy forward
pass written from HF's modelling code (tests/hf_reference.py), random models in every weight
type give reference.py's logits, and broken conversions of stories260K are refused."""
import os
import struct

import numpy as np

import common
import reference
from common import RUN, read_bytes, read_logits, run, run_ok, shared_model, tmp_path
from hf_reference import hf_logits
from reference import TllmFile
from test_export import HF_CASES, PROMPT, hf_export, prompt_tokens, reference_logits


def engine(model, *extra, steps=40):
    """Runs build/run greedily with --logits; returns (stdout bytes, logits array)."""
    assert os.path.isfile(RUN), f"{RUN} is missing: build the engine (make) before these tests"
    out = tmp_path("logits.f32")
    if os.path.exists(out):
        os.remove(out)
    p = run_ok([model, "-t", "0", "-n", steps, "--logits", out] + list(extra))
    vocab = TllmFile(model).header["vocab_size"] if read_bytes(model)[:4] == b"TLLM" \
        else reference.read_llama2c(model)[0].vocab_size
    return p.stdout, read_logits(out, vocab)


def test_engine_llama2c_same_as_original():
    src, tok = shared_model("stories260K.bin"), shared_model("tok512.bin")
    out = tmp_path("s260k_engine.bin")
    common.export(out, "--llama2c", src)
    text_a, logits_a = engine(src, "-z", tok)
    text_b, logits_b = engine(out, "-z", tok)
    text_c, logits_c = engine(out)  # the embedded tokenizer
    assert logits_a.shape[0] >= 39, f"only {logits_a.shape[0]} logits rows"
    assert text_a.startswith(b"Once upon a time"), text_a[:80]
    assert text_b == text_a and text_c == text_a, (text_a[:80], text_b[:80], text_c[:80])
    assert np.array_equal(logits_a, logits_b) and np.array_equal(logits_a, logits_c), \
        f"max logit difference {np.abs(logits_a - logits_b).max()}"


def test_engine_hf_matches_reference():
    tokens = prompt_tokens()
    for name in HF_CASES:
        config, stored, out = hf_export(name)
        _, logits = engine(out, "-i", PROMPT)
        rows = logits.shape[0]
        assert rows >= len(tokens), f"{name}: {rows} logits rows for a {len(tokens)}-token prompt"
        seq = list(tokens)
        while len(seq) < rows:
            seq.append(int(np.argmax(logits[len(seq) - 1])))  # greedy: argmax of the last row
        ref = hf_logits(stored, config, seq)
        err = common.relative_error(logits, ref)
        # observed at most 1.6e-6 (theta 5e5, three shards of F32)
        assert err < 1e-5, f"{name}: engine vs HF reference: rel error {err:.2e}"


def test_engine_runs_random_q8_and_bf16():
    # The same random model in three encodings: the engine's greedy text should agree.
    outs = {}
    for dtype in ("f32", "bf16", "q8_0"):
        out = tmp_path(f"r_{dtype}.bin")
        common.export(out, "--random", "64,128,2,4,2,512,64", "--dtype", dtype, "--seed", 3)
        outs[dtype] = engine(out, steps=20)[1]
    # The engine's Q8_0 path also rounds activations to int8; reference_logits mirrors that.
    for dtype, what in (("f32", "a random f32 model"), ("bf16", "the bf16 model"),
                        ("q8_0", "the q8_0 model")):
        seq = [1] + [int(np.argmax(r)) for r in outs[dtype][:-1]]
        ref = reference_logits(tmp_path(f"r_{dtype}.bin"), seq)
        err = common.relative_error(outs[dtype], ref)
        assert err < 1e-5, f"engine vs reference.py on {what}: rel error {err:.2e}"  # 2e-7 seen


def test_engine_rejects_broken_tllm():
    good = tmp_path("s260k_broken_src.bin")
    common.export(good, "--llama2c", shared_model("stories260K.bin"))
    data = read_bytes(good)
    assert os.path.isfile(RUN), f"{RUN} is missing: build the engine (make) before these tests"
    variants = {f"cut at {n}": data[:n] for n in (3, 100, 256, 300, 4096, len(data) - 1)}
    variants["bad magic"] = b"TLLX" + data[4:]
    fields = reference.field_offsets(reference.TLLM_V2_FIELDS)

    def changed(name, delta):
        at, fmt = fields[name]
        return data[:at] + struct.pack(fmt, struct.unpack_from(fmt, data, at)[0] + delta) + \
            data[at + struct.calcsize(fmt):]

    variants["file_size + 64"] = changed("file_size", 64)
    variants["file_size - 4"] = changed("file_size", -4)
    variants["tokenizer_size + 1"] = changed("tokenizer_size", 1)  # into the directory
    variants["directory_offset + 4"] = changed("directory_offset", 4)
    variants["extra bytes"] = data + bytes(64)
    for what, content in variants.items():
        bad = tmp_path("broken.bin")
        with open(bad, "wb") as f:
            f.write(content)
        p = run([bad, "-t", "0", "-n", 4])
        err = p.stderr.decode(errors="replace").splitlines()
        assert p.returncode == 1, f"{what}: run exited {p.returncode}, stderr {err}"
        assert len(err) == 1 and bad in err[0], f"{what}: want one line naming {bad}: {err}"
