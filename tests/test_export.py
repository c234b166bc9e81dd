"""Tests of export.py alone: lossless llama2.c conversion, Hugging Face directories against an
independent numpy forward pass, bf16 and Q8_0 encodings, --pt, --random shapes, and its error
messages. Every file it writes is read back by tests/reference.py. (How the engine runs these
files: tests/test_exported_models.py.)"""
import json
import os
import struct
import subprocess
import sys

import numpy as np

import checkpoints
import common
import export_fixtures as fx
from common import PY, read_bytes, shared_model, tmp_path
import reference
from hf_reference import hf_logits
from reference import Config, TllmFile

sys.path.insert(0, os.getcwd())  # the project root, to test export.py's encoders directly
import export  # noqa: E402

# No test here runs the engine's C code: the sanitizer pass of `make test` skips this module.
C_CODE = False

PROMPT = "Once upon a time, there was a little"


def export_fails(args, path, words, env=None):
    """Asserts export.py exits 1 with one stderr line `export.py: path: ...` holding words."""
    p = subprocess.run([PY, "export.py"] + [str(a) for a in args], capture_output=True,
                       text=True, env=env, timeout=60)
    lines = p.stderr.splitlines()
    assert p.returncode == 1, f"export.py {args}: exit {p.returncode}, stderr {p.stderr!r}"
    assert len(lines) == 1, f"export.py {args}: want one stderr line, got {p.stderr!r}"
    assert lines[0].startswith(f"export.py: {path}: "), f"{args}: {lines[0]!r} does not name {path}"
    for w in words:
        assert w in lines[0], f"export.py {args}: {lines[0]!r} lacks {w!r}"
    assert not os.path.exists(args[0] + ".tmp"), "a failed export left its temporary file"


def reference_logits(path, tokens):
    """tests/reference.py's logits for tokens on a TLLM file, with the engine's convention:
    RoPE rotates adjacent pairs, and each matvec's input is rounded as the engine rounds it
    (int8 for Q8_0, bf16 for bf16)."""
    c, w, _ = reference.read_tllm(path)
    return reference.logits(c, w, tokens)


# ----------------------------------------------------------------------------------------------
# llama2.c checkpoints

def test_llama2c_tensors_identical():
    src, tok = shared_model("stories260K.bin"), shared_model("tok512.bin")
    out = tmp_path("s260k.bin")
    common.export(out, "--llama2c", src, "--tokenizer", tok)
    f = TllmFile(out)
    h = f.header
    want = dict(version=2, dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4,
                head_size=8, vocab_size=512, seq_len=512, shared_classifier=1, bos_id=1,
                eos_ids=(2,), chat_template=0, tokenizer_kind=1)
    for k, v in want.items():
        assert h[k] == v, f"header {k} = {h[k]}, expected {v}"
    assert all(f.tensors[name][0] == 0 for name in f.tensors), "a tensor is not f32"
    assert h["rope_theta"] == 10000.0 and h["norm_eps"] == np.float32(1e-5)
    # The tokenizer section is the piece count followed by tok512.bin itself.
    assert f.tokenizer_section == struct.pack("<I", 512) + read_bytes(tok)
    _, w = reference.read_llama2c(src, np.float32)
    assert f.tensors["token_embedding"][1].tobytes() == w["token_embedding"].tobytes()
    assert f.tensors["final_norm"][1].tobytes() == w["final_norm"].tobytes()
    for i in range(5):
        for name in ("attn_norm", "ffn_norm") + reference.LAYER_MATRICES:
            a = f.tensors[f"layers.{i}.{name}"][1]
            assert a.tobytes() == w["layers"][i][name].tobytes(), f"layer {i} {name} differs"
    # Without --tokenizer, tok512.bin beside the checkpoint is found: the same file results.
    out2 = tmp_path("s260k_auto.bin")
    common.export(out2, "--llama2c", src)
    assert read_bytes(out2) == f.data
    # --seq-len and --template change only their metadata.
    out3 = tmp_path("s260k_seq.bin")
    common.export(out3, "--llama2c", src, "--seq-len", 77, "--template", "chatml")
    g = TllmFile(out3)
    assert g.header["seq_len"] == 77 and g.header["chat_template"] == 2
    # (the chat_template entry makes the metadata longer, and moves what follows it)
    moved = ("seq_len", "chat_template", "file_size", "metadata_size", "tokenizer_offset",
             "directory_offset")
    assert {k: v for k, v in g.header.items() if k not in moved} == \
        {k: v for k, v in f.header.items() if k not in moved}
    assert g.tokenizer_section == f.tokenizer_section
    for name, (kind, stored, gs) in f.tensors.items():
        assert g.tensors[name][0] == kind and g.tensors[name][1].tobytes() == stored.tobytes()


def test_llama2c_untied_classifier():
    src = tmp_path("untied_l2c.bin")
    c = Config(dim=32, hidden_dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
               seq_len=16, shared_classifier=False)
    checkpoints.write_llama2c(src, c, checkpoints.random_weights(c, 3))
    _, w = reference.read_llama2c(src, np.float32)
    out = tmp_path("untied.bin")
    common.export(out, "--llama2c", src, "--tokenizer", shared_model("tok512.bin"))
    f = TllmFile(out)
    assert f.header["shared_classifier"] == 0 and f.header["n_kv_heads"] == 2
    assert f.tensors["classifier"][1].tobytes() == w["classifier"].tobytes()
    assert f.tensors["layers.1.wk"][1].tobytes() == w["layers"][1]["wk"].tobytes()


# ----------------------------------------------------------------------------------------------
# Hugging Face directories

# name: (config, source dtype, shards, chat template text)
HF_CASES = {
    "gqa_tied_f32": (fx.hf_config(heads=4, kv_heads=2, tied=True), "F32", 1, None),
    "mha_untied_theta5e5_sharded": (fx.hf_config(heads=4, kv_heads=4, theta=500000.0), "F32", 3,
                                    "{{ '[INST] ' + m + ' [/INST]' }}"),
    "mistral_bf16_gqa": (fx.hf_config(heads=8, kv_heads=2, theta=500000.0,
                                      arch="MistralForCausalLM"), "BF16", 1,
                         "{{ '<|im_start|>' + role }}"),
    "f16_head_dim32_sharded": (fx.hf_config(heads=4, kv_heads=2, head_dim=32, tied=True,
                                            layers=3), "F16", 2, "<|user|>\n{{ m }}"),
}
HF_TEMPLATES = {"gqa_tied_f32": 0, "mha_untied_theta5e5_sharded": 1, "mistral_bf16_gqa": 2,
                "f16_head_dim32_sharded": 3}


def hf_export(name):
    """Writes HF case `name` and exports it; returns (config, stored weights, output path)."""
    config, dtype, shards, template = HF_CASES[name]
    folder = tmp_path("hf_" + name)
    stored = fx.write_hf_dir(folder, config, shared_model("tokenizer.model"), dtype, shards,
                             seed=len(name), chat_template=template)
    out = tmp_path("hf_" + name + ".bin")
    common.export(out, "--hf", folder, "--seq-len", 64)
    return config, stored, out


def prompt_tokens():
    """BOS and the prompt as sentencepiece encodes it (the engine adds the same dummy prefix)."""
    return [1] + common.sentencepiece().encode(PROMPT)


def test_hf_export_header_tensors_and_numpy_forward():
    tokens = prompt_tokens()
    tokenizer_bin = struct.pack("<I", 32000) + read_bytes(shared_model("tokenizer.bin"))
    for name in HF_CASES:
        config, stored, out = hf_export(name)
        f = TllmFile(out)
        h = f.header
        hd = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        assert (h["dim"], h["hidden_dim"], h["n_layers"], h["n_heads"], h["n_kv_heads"],
                h["head_size"], h["vocab_size"], h["seq_len"]) == (
            config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"], hd, 32000, 64), name
        assert h["rope_theta"] == config["rope_theta"] and h["norm_eps"] == np.float32(1e-5)
        assert h["shared_classifier"] == int(config["tie_word_embeddings"]), name
        assert h["chat_template"] == HF_TEMPLATES[name], (name, h["chat_template"])
        assert (h["bos_id"], h["eos_id"]) == (1, 2)
        # Exactly what llama2.c's tokenizer.py made of the same tokenizer.model.
        assert f.tokenizer_section == tokenizer_bin, f"{name}: tokenizer differs from tokenizer.bin"
        # v and the MLP are copied; q and k rows are permuted within each head.
        assert np.array_equal(f.value("layers.0.wv"),
                              stored["model.layers.0.self_attn.v_proj.weight"])
        assert np.array_equal(f.value("layers.1.w2"), stored["model.layers.1.mlp.down_proj.weight"])
        k = stored["model.layers.1.self_attn.k_proj.weight"]
        wk = f.value("layers.1.wk")
        for head in range(config["num_key_value_heads"]):
            for i in range(hd // 2):
                assert np.array_equal(wk[head * hd + 2 * i], k[head * hd + i])
                assert np.array_equal(wk[head * hd + 2 * i + 1], k[head * hd + i + hd // 2])
        # The permuted file under the engine's convention computes what Hugging Face computes.
        ref = hf_logits(stored, config, tokens)
        ours = reference_logits(out, tokens)
        err = common.relative_error(ours, ref)
        assert err < 1e-5, f"{name}: numpy TLLM forward vs HF reference: rel error {err}"
        assert ref.std() > 0.5, f"{name}: degenerate logits (std {ref.std()})"


# ----------------------------------------------------------------------------------------------
# bf16 and Q8_0

def test_bf16_round_to_nearest_even():
    cases = {  # float32 bits -> bf16 bits
        0x3F800000: 0x3F80,  # 1.0 exactly
        0x3F808000: 0x3F80,  # half-way, even below: stays
        0x3F818000: 0x3F82,  # half-way, odd below: rounds up to even
        0x3F808001: 0x3F81,  # just above half-way: up
        0x3F807FFF: 0x3F80,  # just below half-way: down
        0xBF818000: 0xBF82,  # negative half-way, odd: away to even
        0x7F7FFFFF: 0x7F80,  # largest float rounds to infinity
        0x7F800000: 0x7F80, 0xFF800000: 0xFF80,  # infinities
        0x00000001: 0x0000, 0x80000000: 0x8000,  # tiny denormal, negative zero
        0x0001C000: 0x0002,  # denormal half-way, odd below
    }
    bits = np.array(list(cases), dtype=np.uint32)
    got = export.to_bf16(bits.view(np.float32))
    assert [int(g) for g in got] == list(cases.values()), [hex(g) for g in got]
    nan = export.to_bf16(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan((nan.astype(np.uint32) << 16).view(np.float32)).all(), nan


def nearest_bf16(x):
    """An independent reference: of the two bf16 neighbours pick the nearer, ties to even."""
    u = x.view(np.uint32)
    lo = u >> 16
    hi = lo + 1
    vlo = (lo << 16).view(np.float32).astype(np.float64)
    vhi = (hi << 16).view(np.float32).astype(np.float64)
    dlo, dhi = np.abs(x - vlo), np.abs(vhi - x)
    return np.where((dhi < dlo) | ((dhi == dlo) & (lo % 2 == 1)), hi, lo).astype(np.uint16)


def test_bf16_export_error():
    src = shared_model("stories260K.bin")
    out = tmp_path("s260k_bf16.bin")
    common.export(out, "--llama2c", src, "--dtype", "bf16")
    f = TllmFile(out)
    for name, (kind, _, gs) in f.tensors.items():
        assert (kind, gs) == ((0, 0) if name.endswith("norm") else (1, 0)), name
    _, w = reference.read_llama2c(src, np.float32)
    pairs = [("token_embedding", w["token_embedding"])] + \
        [(f"layers.{i}.{n}", w["layers"][i][n]) for i in range(5) for n in ("wq", "wo", "w2")]
    for name, x in pairs:
        stored = f.tensors[name][1]
        assert np.array_equal(stored, nearest_bf16(np.ascontiguousarray(x))), name
        err = np.abs(f.value(name) - x)
        assert (err <= np.abs(x) * 2.0 ** -8).all(), f"{name}: bf16 error above 2^-8 relative"
    # Norms stay float32, bit for bit.
    assert f.tensors["layers.2.ffn_norm"][0] == 0
    assert f.tensors["layers.2.ffn_norm"][1].tobytes() == w["layers"][2]["ffn_norm"].tobytes()


def check_q8_0(f, name, x, gs):
    """Scales are max|x| / 127 per group (a row's last group may be shorter) and every
    dequantised value is within half a step of the source."""
    q, scales = f.tensors[name][1]
    rows, cols = x.shape
    per_row = -(-cols // gs)
    assert scales.shape == (rows, per_row), f"{name}: {scales.shape} scales"
    for g in range(per_row):
        part = x[:, g * gs:(g + 1) * gs]
        want = (np.abs(part).max(axis=1) / np.float32(127)).astype(np.float32)
        assert np.array_equal(scales[:, g], want), f"{name}: scales of group {g}"
        err = np.abs(f.value(name)[:, g * gs:(g + 1) * gs] - part)
        assert (err <= scales[:, g:g + 1] / 2 * (1 + 1e-5)).all(), f"{name}: error > scale/2"
    assert np.abs(q).max() == 127


def test_q8_0_export_error():
    src = tmp_path("q8_src.bin")
    c = Config(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512,
               seq_len=32)
    w = checkpoints.random_weights(c, 5)
    w["layers"][1]["w1"][3, 32:64] = 0  # an all-zero group
    w["token_embedding"][7, :] *= 1000  # large and small rows
    w["token_embedding"][8, :] *= 1e-6
    checkpoints.write_llama2c(src, c, w)
    _, w = reference.read_llama2c(src, np.float32)  # the values as stored
    tok = shared_model("tok512.bin")
    for requested, gs in ((None, 32), (64, 64)):  # hidden_dim 96: by default 32
        out = tmp_path("q8.bin")
        args = [out, "--llama2c", src, "--tokenizer", tok, "--dtype", "q8_0"]
        common.export(*(args + (["--group-size", requested] if requested else [])))
        f = TllmFile(out)
        for name, (kind, _, group) in f.tensors.items():
            assert (kind, group) == ((0, 0) if name.endswith("norm") else (2, gs)), name
        for name, x in [("token_embedding", w["token_embedding"]),
                        ("layers.1.w1", w["layers"][1]["w1"]),
                        ("layers.0.w2", w["layers"][0]["w2"]),
                        ("layers.1.wk", w["layers"][1]["wk"])]:
            check_q8_0(f, name, x, gs)
        q, scales = f.tensors["layers.1.w1"][1]  # (96, 64)
        assert scales[3, 32 // gs] == (0 if gs == 32 else scales[3, 0]) and not q[3, 32:].any()
        assert f.tensors["final_norm"][0] == 0  # norms stay f32
    # stories260K: hidden_dim 172 ends every w2 row with a 12-value group (172 = 5 * 32 + 12).
    out = tmp_path("s260k_q8.bin")
    common.export(out, "--llama2c", shared_model("stories260K.bin"), "--dtype", "q8_0")
    f = TllmFile(out)
    _, stories_w = reference.read_llama2c(shared_model("stories260K.bin"), np.float32)
    assert f.tensors["layers.0.w2"][2] == 32
    for i in range(5):
        check_q8_0(f, f"layers.{i}.w2", stories_w["layers"][i]["w2"], 32)
        check_q8_0(f, f"layers.{i}.w1", stories_w["layers"][i]["w1"], 32)
    # Widths that all allow 64 get 64 by default.
    out = tmp_path("q8_64.bin")
    common.export(out, "--random", "64,128,1,4,4,300,16", "--dtype", "q8_0")
    assert TllmFile(out).tensors["layers.0.w1"][2] == 64


# ----------------------------------------------------------------------------------------------
# --pt and --random

def with_pythonpath(folder):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(os.path.join("tests", folder))
    return env


def test_pt_matches_llama2c():
    # PyTorch is not installed here, so tests/fake_torch stands in for torch.load.
    src = shared_model("stories260K.bin")
    _, w = reference.read_llama2c(src, np.float32)
    pt = tmp_path("s260k.pt")
    args = dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, multiple_of=4,
                norm_eps=1e-5, max_seq_len=512, dropout=0.0)
    fx.write_fake_pt(pt, args, fx.llama2c_to_state(w))
    out_pt, out_c = tmp_path("from_pt.bin"), tmp_path("from_l2c.bin")
    common.export(out_pt, "--pt", pt, "--tokenizer", shared_model("tok512.bin"),
              env=with_pythonpath("fake_torch"))
    common.export(out_c, "--llama2c", src)
    assert read_bytes(out_pt) == read_bytes(out_c), "--pt and --llama2c exports differ"
    # Without PyTorch: one clear line.
    export_fails([tmp_path("x.bin"), "--pt", pt, "--tokenizer", shared_model("tok512.bin")],
                 pt, ["PyTorch", "import torch"], env=with_pythonpath("no_torch"))


def test_without_numpy():
    # A Python without numpy (pyenv's, say) gets one line naming the package, not a traceback.
    p = subprocess.run([PY, "export.py", tmp_path("x.bin"), "--random", "260K"],
                       capture_output=True, text=True, env=with_pythonpath("no_numpy"), timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, f"exit {p.returncode}: {p.stderr!r}"
    assert p.stderr.startswith("export.py: needs numpy") and "python3-numpy" in p.stderr, p.stderr


def test_random_shapes():
    out = tmp_path("r260k.bin")
    common.export(out, "--random", "260K", "--seed", 7)
    f = TllmFile(out)
    h = f.header
    assert (h["dim"], h["hidden_dim"], h["n_layers"], h["n_heads"], h["n_kv_heads"],
            h["head_size"], h["vocab_size"], h["seq_len"], h["shared_classifier"]) == \
        (64, 172, 5, 8, 4, 8, 512, 512, 1)
    # The generated tokenizer: specials, 256 byte pieces at 3..258, unique pieces.
    pieces = [p for p, _ in f.pieces]
    assert pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert pieces[3:259] == [f"<0x{b:02X}>".encode() for b in range(256)]
    assert len(set(pieces)) == 512 and b" " in pieces and b"a" in pieces
    assert any(len(p) > 1 for p in pieces[259:])
    # Deterministic for a seed, different for another.
    again, other = tmp_path("r260k_again.bin"), tmp_path("r260k_other.bin")
    common.export(again, "--random", "260K", "--seed", 7)
    common.export(other, "--random", "260K", "--seed", 8)
    assert read_bytes(again) == f.data and read_bytes(other) != f.data
    # Logits are neither flat nor one-hot, and vary with the token.
    logits = reference_logits(out, [1, 300, 301, 302, 303, 304])
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert 0.5 < logits.std() < 10, logits.std()
    assert probs.max() < 0.9 and probs.max(axis=1).min() > 5 / 512, probs.max(axis=1)
    assert len(set(np.argmax(logits, axis=1))) > 1
    # An explicit shape with a given tokenizer, and 15M (about 60 MB) with a short context.
    out = tmp_path("r_explicit.bin")
    common.export(out, "--random", "48,80,2,6,2,512,40", "--tokenizer", shared_model("tok512.bin"))
    g = TllmFile(out)
    assert (g.header["dim"], g.header["hidden_dim"], g.header["n_layers"], g.header["n_heads"],
            g.header["n_kv_heads"], g.header["head_size"], g.header["seq_len"]) == \
        (48, 80, 2, 6, 2, 8, 40)
    assert g.tokenizer_section == struct.pack("<I", 512) + read_bytes(shared_model("tok512.bin"))
    out = tmp_path("r15m.bin")
    common.export(out, "--random", "15M", "--seq-len", 32)
    h = TllmFile(out).header
    assert (h["dim"], h["hidden_dim"], h["n_layers"], h["n_heads"], h["n_kv_heads"],
            h["vocab_size"], h["seq_len"]) == (288, 768, 6, 6, 6, 32000, 32)
    os.remove(out)
    # The larger named shapes, checked without generating them.
    for name, values in {"42M": (512, 1376, 8, 8, 8, 32000, 1024),
                         "110M": (768, 2048, 12, 12, 12, 32000, 1024),
                         "135M": (576, 1536, 30, 9, 3, 49152, 2048)}.items():
        c = export.parse_shape(name)
        assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                c.seq_len) == values and c.head_size == values[0] // values[3], name


# ----------------------------------------------------------------------------------------------
# Bad input

def test_export_errors_llama2c_and_tokenizer():
    src, tok = shared_model("stories260K.bin"), shared_model("tok512.bin")
    out = tmp_path("bad.bin")
    if os.path.exists(out):
        os.remove(out)
    data = read_bytes(src)
    export_fails([out, "--llama2c", tmp_path("missing.bin")], tmp_path("missing.bin"),
                 ["no such file"])
    for cut in (10, 28 + 1000, len(data) - 4):
        bad = tmp_path(f"cut{cut}.bin")
        with open(bad, "wb") as f:
            f.write(data[:cut])
        export_fails([out, "--llama2c", bad, "--tokenizer", tok], bad, ["truncated"])
    bad = tmp_path("long.bin")  # the header disagrees with the size the other way
    with open(bad, "wb") as f:
        f.write(data + bytes(8))
    export_fails([out, "--llama2c", bad, "--tokenizer", tok], bad, ["implies", str(len(data))])
    bad = tmp_path("garbage.bin")  # a header that is not a llama2.c header at all
    with open(bad, "wb") as f:
        f.write(b"\x7fELF" + bytes(24) + data[28:])
    export_fails([out, "--llama2c", bad, "--tokenizer", tok], bad, ["implausible header"])
    tllm = tmp_path("s260k_again.bin")  # a TLLM file is not a llama2.c checkpoint
    common.export(tllm, "--llama2c", src)
    export_fails([out, "--llama2c", tllm], tllm, ["already a TLLM"])
    tokdata = read_bytes(tok)
    bad_tok = tmp_path("cut_tok.bin")
    with open(bad_tok, "wb") as f:
        f.write(tokdata[:-3])
    export_fails([out, "--llama2c", src, "--tokenizer", bad_tok], bad_tok, ["truncated"])
    export_fails([out, "--llama2c", src, "--tokenizer", shared_model("tokenizer.bin")], src,
                 ["32000 pieces", "vocab_size is 512"])
    for shape, words in (("12M", ["not a shape"]), ("1,2,3", ["not a shape"]),
                         ("64,172,5,7,4,512,512", ["does not divide"]),
                         ("64,172,5,8,3,512,512", ["n_kv_heads"]),
                         ("64,172,0,8,4,512,512", ["n_layers"]),
                         ("64,172,5,8,4,100,512", ["259"]),
                         ("64,172,5,8,4,600,512", ["pieces"])):
        args = [out, "--random", shape] + (["--tokenizer", tok] if "600" in shape else [])
        export_fails(args, shape, words)
    assert not os.path.exists(out), "a failed export wrote its output"


def test_export_errors_hf():
    out = tmp_path("bad.bin")
    if os.path.exists(out):
        os.remove(out)
    model = shared_model("tokenizer.model")
    folder = tmp_path("hf_bad")
    cfg_path = os.path.join(folder, "config.json")
    unsupported = [
        ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "yarn"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "dynamic"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}, "architectures"),
        ({"model_type": "gemma"}, "model_type"),
    ]
    for extra, key in unsupported:
        fx.write_hf_dir(folder, fx.hf_config(layers=1, vocab=32000, **extra), model)
        export_fails([out, "--hf", folder], cfg_path, [key])
    # A window that is not a positive integer (tests/test_sliding_window.py has the rest).
    fx.write_hf_dir(folder, fx.hf_config(layers=1, arch="MistralForCausalLM",
                                         sliding_window="4096"), model)
    export_fails([out, "--hf", folder], cfg_path, ["sliding_window"])
    # No tokenizer at all; a tokenizer.json (byte-level BPE, read without tokenizer.model)
    # that lacks its vocabulary.
    fx.write_hf_dir(folder, fx.hf_config(layers=1), None)
    export_fails([out, "--hf", folder], folder, ["no tokenizer.model or tokenizer.json"])
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "BPE"}}, f)
    export_fails([out, "--hf", folder], os.path.join(folder, "tokenizer.json"),
                 ["model has no \"vocab\""])
    # Broken safetensors: truncated data, a header length past the end, a bad dtype.
    fx.write_hf_dir(folder, fx.hf_config(layers=1), model)
    st = os.path.join(folder, "model.safetensors")
    data = read_bytes(st)
    with open(st, "wb") as f:
        f.write(data[:-100])
    export_fails([out, "--hf", folder], st, ["truncated"])
    with open(st, "wb") as f:
        f.write(struct.pack("<Q", len(data)) + data[8:])
    export_fails([out, "--hf", folder], st, ["header length"])
    with open(st, "wb") as f:
        f.write(data.replace(b'"F32"', b'"I64"', 1))
    export_fails([out, "--hf", folder], st, ["I64"])
    os.remove(st)
    export_fails([out, "--hf", folder], folder, ["model.safetensors"])
    export_fails([out, "--hf", tmp_path("no_such_dir")], tmp_path("no_such_dir"), ["no such"])
    # A missing tensor in a shard.
    fx.write_hf_dir(folder, fx.hf_config(layers=1), model, shards=2)
    index = os.path.join(folder, "model.safetensors.index.json")
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    moved = next(n for n, shard in weight_map.items() if shard.startswith("model-00002"))
    weight_map[moved] = "model-00001-of-00002.safetensors"  # the index points to the wrong shard
    with open(index, "w") as f:
        json.dump({"weight_map": weight_map}, f)
    export_fails([out, "--hf", folder], os.path.join(folder, "model-00001-of-00002.safetensors"),
                 [moved, "missing"])
    # A tokenizer.model that is not one.
    fx.write_hf_dir(folder, fx.hf_config(layers=1), shared_model("tok512.bin"))
    export_fails([out, "--hf", folder], os.path.join(folder, "tokenizer.model"),
                 ["not a sentencepiece model"])
    assert not os.path.exists(out), "a failed export wrote its output"


def test_hf_special_ids_come_from_the_tokenizer():
    """A config.json naming <unk> (0) as BOS, as some published ones do, must not make every
    text start from <unk>: the ids are the sentencepiece model's own (1 and 2 for Llama 2)."""
    folder = tmp_path("hf_bad_bos")
    fx.write_hf_dir(folder, fx.hf_config(layers=1, bos_token_id=0, eos_token_id=0),
                    shared_model("tokenizer.model"))
    out = tmp_path("hf_bad_bos.bin")
    common.export(out, "--hf", folder)
    h = TllmFile(out).header
    assert (h["bos_id"], h["eos_id"]) == (1, 2), f"bos/eos = {h['bos_id']}/{h['eos_id']}"


def test_export_refuses_what_the_loader_refuses():
    """export.py holds every model to the loader's limits, so it never writes a file that `run`
    would then refuse."""
    out = tmp_path("limits.bin")
    export_fails([out, "--random", "70000,8,1,1,1,300,8"], "70000,8,1,1,1,300,8", ["dim"])
    folder = tmp_path("hf_limits")
    for key, value in (("rms_norm_eps", 1.5), ("rope_theta", 1.0), ("rope_theta", float("nan"))):
        fx.write_hf_dir(folder, fx.hf_config(layers=1, **{key: value}),
                        shared_model("tokenizer.model"))
        name = "norm_eps" if key == "rms_norm_eps" else key
        export_fails([out, "--hf", folder], folder, [name])
