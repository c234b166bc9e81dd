"""Sliding-window attention as Hugging Face defines it, from config.json to the engine's logits.

  mask          the engine's logits equal tests/hf_reference.py's (Hugging Face's mask, kv_idx >
                q_idx - window, written from masking_utils) and tests/reference.py's (the
                engine's convention with the window), within 1e-4: windows smaller than the
                prompt, and a window of 1; positions far past the ring, so that it wraps
                many times
  layers        which layers are windowed: Mistral all, Qwen2 from max_window_layers on (a
                Qwen2 model with a full layer and windowed ones, against Hugging Face), or an
                explicit layer_types; export.py's reading against hf_reference's
  metadata      export.py writes the keys; the loader refuses a window larger than the context
                and malformed layer flags, one line, exit 1
"""
import json
import os
import struct
import sys

import numpy as np

import common
import export_fixtures as fx
import reference
from hf_reference import hf_logits, layer_windows

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import export  # noqa: E402  (the exporter's own reading of config.json)

TOLERANCE = 1e-4
PROMPT = "Once upon a time, in a small village, a girl named Mia found a key."


def export_hf(label, config, seq_len):
    folder = common.tmp_path("win_" + label)
    stored = fx.write_hf_dir(folder, config, common.shared_model("tokenizer.model"), "F32",
                             seed=len(label))
    out = common.tmp_path("win_" + label + ".bin")
    common.export(out, "--hf", folder, "--seq-len", seq_len)
    return stored, out


def engine_vs_references(label, config, seq_len, steps, check_numpy=True):
    """Runs the exported model greedily for steps positions and holds every logits row to
    both references. Returns the TLLM header."""
    stored, out = export_hf(label, config, seq_len)
    logits_path = common.tmp_path("win_" + label + ".logits")
    common.run_ok([out, "-t", 0, "-n", steps, "-i", PROMPT, "--ignore-eos", "--logits",
                   logits_path, "--threads", 1], timeout=120)
    logits = common.read_logits(logits_path, 32000)
    tokens = [1] + common.sentencepiece().encode(PROMPT)
    assert len(logits) == steps and len(tokens) < steps, (len(logits), len(tokens))
    while len(tokens) < len(logits):
        tokens.append(int(np.argmax(logits[len(tokens) - 1])))
    hf = hf_logits(stored, config, tokens)
    err = common.relative_errors(logits, hf)
    assert err.max() < TOLERANCE, f"{label}: engine vs HF at position {err.argmax()}: {err.max():.2e}"
    # the mask must matter: full attention gives other logits past the window
    full = dict(config, sliding_window=None, layer_types=None, use_sliding_window=False)
    assert common.relative_errors(logits[:40], hf_logits(stored, full, tokens[:40])).max() > 1e-2
    if check_numpy:
        c, w, _ = reference.read_tllm(out)
        ours = reference.logits(c, w, tokens)
        err = common.relative_errors(logits, ours)
        assert err.max() < TOLERANCE, f"{label}: engine vs reference.py: {err.max():.2e}"
    return reference.TllmFile(out).header


def test_mistral_window_smaller_than_the_prompt():
    # a window of 5 over a prompt of 20 tokens, 200 positions: the ring of 5 + 63 slots turns
    # three times
    config = fx.hf_config(layers=2, heads=4, kv_heads=2, arch="MistralForCausalLM",
                          sliding_window=5)
    h = engine_vs_references("mistral5", config, 256, 200)
    assert h["sliding_window"] == 5 and "sliding_window_layers" not in h, h


def test_window_of_one():
    # each position attends to itself only; 450 positions turn the ring of 64 slots 7 times
    config = fx.hf_config(layers=2, heads=4, kv_heads=1, arch="MistralForCausalLM",
                          sliding_window=1)
    h = engine_vs_references("window1", config, 450, 450, check_numpy=False)
    assert h["sliding_window"] == 1


def test_qwen2_some_layers_windowed():
    # Qwen2 with use_sliding_window: only the layers from max_window_layers (1) on are
    # windowed, so the engine keeps a full cache for layer 0 and rings for layers 1 and 2;
    # Qwen2's q, k and v biases come along
    config = fx.hf_config(layers=3, heads=4, kv_heads=2, arch="Qwen2ForCausalLM")
    config.update(model_type="qwen2", use_sliding_window=True, max_window_layers=1,
                  sliding_window=7)
    h = engine_vs_references("qwen2", config, 128, 100)
    assert h["sliding_window"] == 7 and h["sliding_window_layers"] == (0, 1, 1), h


def test_which_layers_are_windowed():
    # export.py's reading of config.json against hf_reference's, written from Qwen2Config
    # (sliding_window only with use_sliding_window; layers i >= max_window_layers)
    qwen = dict(model_type="qwen2", num_hidden_layers=4, sliding_window=32)
    cases = [
        (dict(qwen, use_sliding_window=True, max_window_layers=2), (32, (0, 0, 1, 1))),
        (dict(qwen, use_sliding_window=True, max_window_layers=0), (32, (1, 1, 1, 1))),
        (dict(qwen, use_sliding_window=True, max_window_layers=4), (32, (0, 0, 0, 0))),
        (dict(qwen, use_sliding_window=False, max_window_layers=0), (0, ())),
        (dict(model_type="mistral", num_hidden_layers=4, sliding_window=4096), (4096, ())),
        (dict(model_type="mistral", num_hidden_layers=4, sliding_window=None), (0, ())),
        (dict(qwen, use_sliding_window=True, layer_types=["full_attention", "sliding_attention"]
              * 2), (32, (0, 1, 0, 1))),
    ]
    for config, want in cases:
        got = export.hf_sliding_window(config, config["model_type"], 4, "config.json")
        assert got == want, (config, got, want)
        hf = layer_windows(config)
        flags = want[1] or (1,) * 4 if want[0] else (0,) * 4
        assert hf == [want[0] if f else None for f in flags], (config, hf)


# ------------------------------------------------------------------------------------------
# The metadata

def patch_int(data, key, index, value):
    """data with value number `index` of an int32 metadata key replaced."""
    name = bytes([len(key)]) + key.encode() + b"\x01"
    at = data.index(name) + len(name) + 4 + 4 * index
    return data[:at] + struct.pack("<i", value) + data[at + 4:]


def test_window_metadata_refused():
    config = fx.hf_config(layers=2, heads=4, kv_heads=2, arch="MistralForCausalLM",
                          sliding_window=7, layer_types=["full_attention", "sliding_attention"])
    _, out = export_hf("meta", config, 64)
    data = common.read_bytes(out)
    cases = [
        (patch_int(data, "sliding_window", 0, 65), "larger than the context"),
        (patch_int(data, "sliding_window", 0, 0), "sliding_window"),
        (patch_int(data, "sliding_window_layers", 1, 2), "sliding_window_layers"),
    ]
    for i, (bad, words) in enumerate(cases):
        path = common.tmp_path(f"win_meta_bad{i}.bin")
        with open(path, "wb") as f:
            f.write(bad)
        p = common.run([path, "-n", 4])
        err = p.stderr.decode()
        assert p.returncode == 1 and err.count("\n") == 1 and words in err and path in err, err
    # a window at least as long as the context changes nothing: export.py leaves it out
    config = fx.hf_config(layers=1, arch="MistralForCausalLM", sliding_window=4096)
    _, out = export_hf("meta_long", config, 64)
    assert "sliding_window" not in reference.TllmFile(out).header
    # and a malformed layer_types is an export error
    folder = common.tmp_path("win_bad_types")
    fx.write_hf_dir(folder, fx.hf_config(layers=2, arch="MistralForCausalLM", sliding_window=4,
                                         layer_types=["sliding_attention"]),
                    common.shared_model("tokenizer.model"))
    p = common.subprocess.run([common.PY, "export.py", common.tmp_path("x.bin"), "--hf", folder],
                              capture_output=True, text=True)
    assert p.returncode == 1 and "layer_types" in p.stderr and p.stderr.count("\n") == 1, p.stderr
