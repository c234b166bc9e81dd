"""export.py --gguf: llama.cpp's real stories260K.gguf against the llama2.c checkpoint it was
made from, GGUF files of the llama, qwen2 and qwen3 architectures written by tests/gguf_writer.py
(F32, F16, BF16 and Q8_0 tensors, a SentencePiece vocabulary) against the Hugging Face
reference, byte-level BPE vocabularies (the real Qwen3 and Llama 3 tokenizers as llama.cpp's
converter writes them) against tokenizers.js, and broken files."""
import json
import os
import struct

import numpy as np

import common
import export_fixtures as fx
import gguf_writer as gw
import reference
import test_bpe_tokenizer as bpe
import test_families as tf
from common import read_bytes, shared_model, tmp_path
from hf_reference import hf_logits
from reference import TllmFile
from test_export import export_fails
from test_exported_models import engine

import export  # test_export put the project root on sys.path


def test_stories260k_gguf_same_as_llama2c():
    """llama.cpp's conversion of stories260K: the same greedy text for 200 steps and the same
    logits, bit for bit (F32 tensors, and llama's q and k rows already in adjacent pairs); its
    vocabulary becomes exactly tok512.bin; output.weight, a copy of the embedding, is shared."""
    out = tmp_path("s260k_gguf.bin")
    common.export(out, "--gguf", shared_model("stories260K.gguf"), "--seq-len", 512)
    f = TllmFile(out)
    assert f.tokenizer_section == struct.pack("<I", 512) + read_bytes(shared_model("tok512.bin"))
    assert f.header["shared_classifier"] == 1 and f.header["eos_ids"] == (2,)
    assert all(kind == 0 for kind, _, _ in f.tensors.values())
    text_a, logits_a = engine(shared_model("stories260K.bin"), "-z", shared_model("tok512.bin"),
                              steps=200)
    text_b, logits_b = engine(out, steps=200)
    assert text_a.startswith(b"Once upon a time, there was a little girl named Lily.")
    assert text_b == text_a, (text_a[-80:], text_b[-80:])
    assert np.array_equal(logits_a, logits_b), np.abs(logits_a - logits_b).max()


# The three architectures, small: config.json-like dicts for the HF reference.
ARCHS = {
    "llama": fx.hf_config(dim=64, hidden=128, layers=2, heads=4, kv_heads=2, theta=500000.0,
                          tied=False, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                    "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}),
    "qwen2": fx.hf_config(dim=64, hidden=128, layers=2, heads=4, kv_heads=2, theta=1e6,
                          tied=True, arch="Qwen2ForCausalLM", model_type="qwen2"),
    "qwen3": fx.hf_config(dim=64, hidden=128, layers=2, heads=4, kv_heads=2, theta=1e6,
                          tied=True, head_dim=32, arch="Qwen3ForCausalLM", model_type="qwen3"),
}
# Each matrix in another GGUF type (lossless ones), so one file covers them all.
MIXED = {"token_embd": gw.F16, "attn_q": gw.BF16, "attn_k": gw.F32, "attn_v": gw.F16,
         "attn_output": gw.BF16, "ffn_gate": gw.F32, "ffn_up": gw.F16, "ffn_down": gw.BF16,
         "output": gw.F32}
HF_TO_GGUF = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj.weight": "attn_output.weight",
              "post_attention_layernorm.weight": "ffn_norm.weight",
              "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
              "mlp.down_proj.weight": "ffn_down.weight", "self_attn.q_norm.weight":
              "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight"}


def llama_cpp_permute(w, n_head):
    """llama.cpp's permutation of llama's q and k rows (gguf.md, tensor_data_layout), written
    from the specification: halves (i, i + hd/2) to adjacent pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def llama3_rope_factors(config, hd):
    """What llama.cpp stores as rope_freqs.weight for Llama 3.1's scaling: per pair, the
    divisor of its frequency."""
    s = config["rope_scaling"]
    freq = config["rope_theta"] ** (-np.arange(0, hd, 2) / hd)
    wavelength = 2 * np.pi / freq
    old, low, high, factor = (s["original_max_position_embeddings"], s["low_freq_factor"],
                              s["high_freq_factor"], s["factor"])
    smooth = (old / wavelength - low) / (high - low)
    return np.where(wavelength < old / high, 1.0, np.where(
        wavelength > old / low, factor, 1 / ((1 - smooth) / factor + smooth))).astype(np.float32)


def sentencepiece_vocab():
    """The Llama 2 tokenizer.model as llama.cpp's llama vocabulary: tokens, scores, types."""
    sp = common.sentencepiece()
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1
             for i in range(n)]
    return ([sp.id_to_piece(i) for i in range(n)],
            np.array([sp.get_score(i) for i in range(n)], np.float32), np.array(types, np.int32))


def gguf_from_hf(path, arch, seed, types=None, version=3, config=None, vocab=None,
                 **meta_changes):
    """Writes a GGUF of architecture arch from a random Hugging Face model (config, default
    ARCHS[arch]) with a vocabulary (tokenizer.* metadata, default the Llama 2 sentencepiece
    one); returns (config, {HF name: the values as stored}, writer's stored values, data
    start)."""
    config = config or ARCHS[arch]
    folder = tmp_path(f"gguf_src_{arch}")
    hf = fx.write_hf_dir(folder, config, None, "F32", seed=seed)
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or config["hidden_size"] // n_heads
    tensors, as_stored = [], {}

    def put(gguf_name, hf_name, kind):
        x = hf[hf_name]
        as_stored[hf_name] = gw.encode(x, kind if x.ndim == 2 else gw.F32)[1]  # HF row order
        if arch == "llama" and ("q_proj" in hf_name or "k_proj" in hf_name):
            x = llama_cpp_permute(x, n_heads if "q_proj" in hf_name else n_kv)
        tensors.append((gguf_name, kind if x.ndim == 2 else gw.F32, x))

    def kind_of(short):
        return (types or MIXED).get(short, gw.F32)

    put("token_embd.weight", "model.embed_tokens.weight", kind_of("token_embd"))
    put("output_norm.weight", "model.norm.weight", gw.F32)
    if not config["tie_word_embeddings"]:
        put("output.weight", "lm_head.weight", kind_of("output"))
    for i in range(config["num_hidden_layers"]):
        for name in hf:
            prefix = f"model.layers.{i}."
            if not name.startswith(prefix):
                continue
            part = name[len(prefix):]
            key = next(k for k in HF_TO_GGUF if part.startswith(k))
            gguf_name = f"blk.{i}." + HF_TO_GGUF[key] + part[len(key):]
            put(gguf_name, name, kind_of(gguf_name.split(".")[2]))
    if config.get("rope_scaling"):
        tensors.append(("rope_freqs.weight", gw.F32, llama3_rope_factors(config, hd)))
    tokens, scores, token_types = sentencepiece_vocab()
    meta = {"general.architecture": arch, "general.name": f"test {arch}",
            f"{arch}.context_length": 4096, f"{arch}.embedding_length": config["hidden_size"],
            f"{arch}.block_count": config["num_hidden_layers"],
            f"{arch}.feed_forward_length": config["intermediate_size"],
            f"{arch}.attention.head_count": n_heads, f"{arch}.attention.head_count_kv": n_kv,
            f"{arch}.attention.key_length": hd, f"{arch}.attention.value_length": hd,
            f"{arch}.rope.dimension_count": hd, f"{arch}.rope.freq_base": config["rope_theta"],
            f"{arch}.attention.layer_norm_rms_epsilon": config["rms_norm_eps"]}
    meta.update(vocab or {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": token_types,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}"})
    meta.update(meta_changes)
    stored, start = gw.write_gguf(path, [(k, v) for k, v in meta.items() if v is not None],
                                  tensors, version=version)
    return config, as_stored, stored, start


def sentencepiece_greedy(model):
    """test_families.engine_greedy for a model with the Llama 2 vocabulary."""
    prompt = [1] + common.sentencepiece().encode(tf.PROMPT)
    return tf.engine_greedy(model, prompt, 32000)


def test_gguf_architectures_match_hf():
    """llama (its q and k permuted by llama.cpp, llama3 scaling as rope_freqs), qwen2 (biases,
    unpermuted) and qwen3 (q/k norms, head_dim 32 with 4 heads of a 64-wide model), with F32,
    F16, BF16 matrices, each keeping its type (F16 widened to f32). The engine rounds the input
    of each BF16 matrix to bf16 (matmul_bf16.c), so: against tests/reference.py on the same file
    (which rounds alike) median within 1e-3 and every position within 1e-2 (measured: median
    3e-7 to 1.4e-4, worst 2.3e-3: where float32 and float64 put an activation on either side of
    a bf16 half step the two round it differently, and a position moves by ~1e-3), and the
    greedy continuation is the reference's; against the HF reference, which computes in
    float32 throughout, median within 0.01 and worst within 0.05 (measured 2.4e-3 to 5.6e-3
    and 2.8e-2)."""
    for version, arch in ((3, "llama"), (2, "qwen2"), (3, "qwen3")):
        path = tmp_path(f"test_{arch}.gguf")
        config, hf, _, _ = gguf_from_hf(path, arch, seed=len(arch), version=version)
        out = tmp_path(f"gguf_{arch}.bin")
        common.export(out, "--gguf", path, "--seq-len", 256)
        f = TllmFile(out)
        h = f.header
        assert h["chat_template"] == 2 and h["eos_ids"] == (2,), h
        assert f.tokenizer_section == struct.pack("<I", 32000) + \
            read_bytes(shared_model("tokenizer.bin")), arch
        assert (f.tensors["layers.1.wq"][0], f.tensors["layers.1.w1"][0],
                f.tensors["layers.1.wv"][0], f.tensors["token_embedding"][0]) == (1, 0, 0, 0)
        if arch == "llama":
            assert (h["rope_scaling"], h["rope_scaling_factor"], h["rope_original_context"]) \
                == ("llama3", 8.0, 8192), h
        _, logits, seq = sentencepiece_greedy(out)
        c, w, _ = reference.read_tllm(out)
        mirror = reference.logits(c, w, seq[:-1])
        err = common.relative_errors(logits, mirror)
        assert np.median(err) < 1e-3 and err.max() < 1e-2, (
            f"{arch}: vs reference.py: median {np.median(err):.2e}, max {err.max():.2e} at "
            f"{int(err.argmax())}")
        n_prompt = len(common.sentencepiece().encode(tf.PROMPT)) + 1
        assert seq[n_prompt:] == [int(np.argmax(r)) for r in mirror[n_prompt - 1:]], arch
        err = common.relative_errors(logits, hf_logits(hf, config, seq[:-1]))
        assert np.median(err) < 0.01 and err.max() < 0.05, (
            f"{arch}: vs HF: median {np.median(err):.2e}, max {err.max():.2e}")


def test_gguf_q8_0_copied_exactly():
    """Q8_0 matrices become the engine's Q8_0 with groups of 32, bit for bit (the fp16 scales
    widened), also in qwen3's permuted q and k rows; the engine then matches its mirror over
    the first 8 positions and the HF reference on the Q8_0 values within the bounds of
    test_families (median 0.07, worst 0.2)."""
    q8 = {k: gw.Q8_0 for k in MIXED}
    for arch in ("llama", "qwen3"):
        path = tmp_path(f"test_{arch}_q8.gguf")
        config, hf, stored, _ = gguf_from_hf(path, arch, seed=5, types=q8)
        out = tmp_path(f"gguf_{arch}_q8.bin")
        common.export(out, "--gguf", path, "--seq-len", 256)
        f = TllmFile(out)
        hd = config.get("head_dim") or 16
        for ours, theirs in (("layers.1.w2", "blk.1.ffn_down.weight"),
                             ("layers.0.wk", "blk.0.attn_k.weight"),
                             ("token_embedding", "token_embd.weight")):
            kind, (q, scales), gs = f.tensors[ours]
            assert (kind, gs) == (2, 32), (ours, kind, gs)
            want = stored[theirs]
            if arch == "qwen3" and ours.endswith("wk"):  # halves to pairs, head by head
                want = export.rope_halves_to_pairs(want, want.shape[0] // hd, hd)
            assert np.array_equal(f.value(ours), want), f"{arch} {ours} is not the GGUF's Q8_0"
        _, logits, seq = sentencepiece_greedy(out)
        c, w, _ = reference.read_tllm(out)
        mirror = reference.logits(c, w, seq[:8])  # Q8Matrix: rounds x as the engine
        assert common.relative_error(logits[:8], mirror) < 1e-5, arch  # 2.2e-7 seen
        errors = common.relative_errors(logits, hf_logits(hf, config, seq[:-1]))
        assert np.median(errors) < 0.07 and errors.max() < 0.2, (arch, errors.max())


def test_gguf_q4_0_copied_exactly():
    """Q4_0 matrices (every one, the embedding too) stay the engine's Q4_0, byte for byte (the
    GGUF's blocks are the file's), also in llama's and qwen3's permuted q and k rows; the
    engine then matches its mirror, tests/reference.py on the stored values with each input
    rounded to int8 per 32, over the first 8 positions (median within 1e-5, each within 3e-3,
    as test_families), and the HF reference on the Q4_0 values within median 0.06, worst 0.15
    (measured: 0.013-0.025 and 0.027-0.058 on these random models)."""
    q4 = {k: gw.Q4_0 for k in MIXED}
    for arch in ("llama", "qwen3"):
        path = tmp_path(f"test_{arch}_q4.gguf")
        config, hf, _, _ = gguf_from_hf(path, arch, seed=6, types=q4)
        out = tmp_path(f"gguf_{arch}_q4.bin")
        common.export(out, "--gguf", path, "--seq-len", 256)
        f = TllmFile(out)
        g = export.GgufFile(path)
        hd = config.get("head_dim") or 16
        for ours, theirs in (("layers.1.w2", "blk.1.ffn_down.weight"),
                             ("layers.0.wk", "blk.0.attn_k.weight"),
                             ("layers.1.wq", "blk.1.attn_q.weight"),
                             ("token_embedding", "token_embd.weight")):
            kind, (blocks, shape), gs = f.tensors[ours]
            assert (kind, gs) == (3, 32), (ours, kind, gs)
            want = export.gguf_bytes(g, theirs).view(export.Q4_0_BLOCK).reshape(shape[0], -1)
            if arch == "qwen3" and ours.endswith(("wq", "wk")):  # halves to pairs, by head
                want = want[export.rope_halves_to_pairs(np.arange(shape[0]), shape[0] // hd, hd)]
            assert blocks.tobytes() == want.tobytes(), f"{arch} {ours} is not the GGUF's Q4_0"
        _, logits, seq = sentencepiece_greedy(out)
        c, w, _ = reference.read_tllm(out)
        mirror = reference.logits(c, w, seq[:8])
        err = common.relative_errors(logits[:8], mirror)
        assert np.median(err) < 1e-5 and err.max() < 3e-3, (arch, np.median(err), err.max())
        errors = common.relative_errors(logits, hf_logits(hf, config, seq[:-1]))
        assert np.median(errors) < 0.06 and errors.max() < 0.15, (arch, errors.max())


def llama_cpp_vocab(tokenizer, vocab_size):
    """A tokenizer.json (../shared/tokenizers/NAME) as llama.cpp's convert_hf_to_gguf.py writes
    a byte-level BPE vocabulary (written from its description, not from export.py): one token
    for every id below the model's vocab_size; a vocabulary token as its text in GPT-2's byte
    alphabet, type 1 (normal); an added token as its text, type 3 (control) if it is special or
    looks special (<|...|>), else 4 (user-defined); an id without a token "[PAD<id>]", type 5
    (unused); merges as "left right". Returns (tokens, types, merges)."""
    with open(os.path.join(bpe.tokenizer_dir(tokenizer), "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    text_of = {i: text for text, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            text = added[i]["content"]
            looks_special = text.startswith("<|") and text.endswith("|>")
            types.append(3 if added[i]["special"] or looks_special else 4)
        elif i in text_of:
            text = text_of[i]
            types.append(1)
        else:
            text = f"[PAD{i}]"
            types.append(5)
        tokens.append(text)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return tokens, np.array(types, np.int32), merges


# name: (architecture, tokenizer, vocab_size, tokenizer.ggml.pre, add_bos, bos, eos, eot,
#        the chat template (tokenizer_config.json's) and its name)
BPE_GGUFS = {
    "qwen3": ("qwen3", "qwen3", 151936, "qwen2", False, 151643, 151645, None, "qwen3"),
    "llama3": ("llama", "llama3", 128256, "llama-bpe", True, 128000, 128001, 128009, "llama3"),
}


def bpe_gguf(name):
    """(GGUF path, its export's path) of a small random model of BPE_GGUFS[name] with the real
    tokenizer as llama.cpp writes it, made once and kept in build/tests/cache/ under a digest
    of what they depend on."""
    arch, tokenizer, vocab_size, pre, add_bos, bos, eos, eot, _ = BPE_GGUFS[name]
    key = tf.digest("export.py", os.path.join(bpe.HERE, "test_gguf.py"),
                    os.path.join(bpe.HERE, "gguf_writer.py"),
                    os.path.join(bpe.tokenizer_dir(tokenizer), "tokenizer.json"), name)
    path = common.cache_path(f"bpe-{name}-{key}.gguf")

    def write_gguf(where):
        tokens, types, merges = llama_cpp_vocab(tokenizer, vocab_size)
        with open(os.path.join(bpe.tokenizer_dir(tokenizer), "tokenizer_config.json"),
                  encoding="utf-8") as f:
            template = json.load(f)["chat_template"]
        vocab = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
                 "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                 "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": bos,
                 "tokenizer.ggml.eos_token_id": eos, "tokenizer.ggml.add_bos_token": add_bos,
                 "tokenizer.chat_template": template}
        if eot is not None:
            vocab["tokenizer.ggml.eot_token_id"] = eot
        config = dict(ARCHS[arch], hidden_size=32, intermediate_size=64, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, vocab_size=vocab_size,
                      tie_word_embeddings=True)
        gguf_from_hf(where, arch, seed=3, types={"token_embd": gw.F16}, config=config,
                     vocab=vocab)
    common.cache_entry(path, write_gguf)
    out = common.cache_entry(path[:-5] + ".bin",
                             lambda where: common.export(where, "--gguf", path, "--seq-len", 64))
    return path, out


def test_gguf_bpe_vocabulary():
    """A gpt2 vocabulary as llama.cpp writes it becomes the byte-level tokenizer: the real
    Qwen3 and Llama 3 vocabularies (pre-tokenizers qwen2 and llama-bpe) encode prompts exactly
    as tokenizers.js encodes them with tokenizer.json (add_bos_token puts Llama 3's
    <|begin_of_text|> first); the ids without a token (Qwen's rows past 151668) are left out;
    added tokens keep their kind; EOS, EOT and the chat template come from the metadata. (The
    one difference from tokenizer.json is llama.cpp's own: tokens that look special, such as
    Qwen's <|fim_prefix|>, are control tokens in GGUF.)"""
    texts = ["Hello world", "<|im_start|>user\nHi<|im_end|>", "na\u00efve caf\u00e9, 12345!",
             "  two  spaces\tand a tab\n\nx", "\u4f60\u597d\uff0c\u4e16\u754c"]
    for name, (_, tokenizer, vocab_size, _, _, bos, eos, eot, template) in BPE_GGUFS.items():
        _, out = bpe_gguf(name)
        f = TllmFile(out)
        h = f.header
        want_eos = (eos, eot) if eot is not None else (eos,)
        assert (h["tokenizer_kind"], h["vocab_size"], h["bos_id"], h["eos_ids"]) == \
            (2, vocab_size, bos, want_eos), (name, h)
        assert h["chat_template"] == reference.TEMPLATE_NUMBERS[template], (name, h)
        n_tokens = {"qwen3": 151669, "llama3": 128256}[name]
        assert f.bpe["n_tokens"] == n_tokens, (name, f.bpe["n_tokens"])
        assert f.bpe["prefix"] == ([128000] if name == "llama3" else []), f.bpe["prefix"]
        if name == "qwen3":
            assert f.bpe["tokens"][151667] == (2, b"<think>"), f.bpe["tokens"][151667]
            assert f.bpe["tokens"][151645] == (6, b"<|im_end|>"), f.bpe["tokens"][151645]
            assert f.bpe["normalizer"] == 1 and f.bpe["options"] == 0
        else:
            assert f.bpe["options"] == 1 and f.bpe["normalizer"] == 0  # ignore_merges
        want, _ = bpe.reference_cached(tokenizer, [t.encode() for t in texts], "generate")
        for text, ids in zip(texts, want):
            p = common.run_ok([out, "-i", text, "--print-tokens"])
            assert p.stdout.decode().split() == [str(i) for i in ids], (name, text, p.stdout, ids)


def test_gguf_bpe_bad_vocabularies():
    """An unknown or missing pre-tokenizer, a merge of unknown tokens, a token outside GPT-2's
    byte alphabet, an unknown token type and an EOS without a token are refused in one line
    naming the file and the problem."""
    tokens = [export.bytes_to_unicode()[b] for b in range(256)] + ["he", "ll", "<|end|>"]
    types = np.array([1] * 258 + [3], np.int32)
    merges = ["h e", "l l"]
    config = dict(ARCHS["qwen2"], vocab_size=len(tokens), hidden_size=32, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    good = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.eos_token_id": 258}
    path, out = tmp_path("bpe_bad.gguf"), tmp_path("bpe_bad.bin")
    gguf_from_hf(path, "qwen2", seed=1, config=config, vocab=good)
    common.export(out, "--gguf", path)
    assert TllmFile(out).bpe["n_tokens"] == 259
    os.remove(out)
    cases = [
        ({"tokenizer.ggml.pre": "falcon"}, ["tokenizer.ggml.pre 'falcon'", "not supported"]),
        ({"tokenizer.ggml.pre": None}, ["tokenizer.ggml.pre is missing"]),
        ({"tokenizer.ggml.merges": merges + ["x yz"]}, ["merges[2]", "'x yz'"]),
        ({"tokenizer.ggml.tokens": tokens[:257] + ["l\u00001"] + tokens[258:]},
         ["token 257", "byte alphabet"]),
        ({"tokenizer.ggml.token_type": np.array([1] * 258 + [2], np.int32)},
         ["token 258", "token type 2"]),
        ({"tokenizer.ggml.eos_token_id": 400}, ["eos_token_id 400"]),
    ]
    for change, words in cases:
        vocab = {k: v for k, v in dict(good, **change).items() if v is not None}
        gguf_from_hf(path, "qwen2", seed=1, config=config, vocab=vocab)
        export_fails([out, "--gguf", path], path, words)
    assert not os.path.exists(out)


def test_gguf_bad_files():
    """Truncated at every section, lying counts, lengths and offsets, unknown architecture,
    tensor type, tensor name, version and magic: one line `export.py: PATH: reason`, exit 1."""
    good = tmp_path("good_small.gguf")
    config, _, _, start = gguf_from_hf(good, "qwen2", seed=1)
    data = read_bytes(good)
    bad, out = tmp_path("bad.gguf"), tmp_path("bad_gguf.bin")

    def fails(content, words):
        with open(bad, "wb") as f:
            f.write(content)
        export_fails([out, "--gguf", bad], bad, words)

    for cut in (0, 10, 23, 24, 30, 200, 5000, 300000, start - 1, start + 5, len(data) - 1):
        fails(data[:cut], ["truncated"] if cut < start else ["past the end"])
    fails(b"GGUG" + data[4:], ["not a GGUF file"])
    for version in (1, 4, 3 << 24):
        fails(data[:4] + struct.pack("<I", version) + data[8:], [f"version {version}"])
    # 2^40 tensors: the infos after the real ones are read from the padding and data
    fails(data[:8] + struct.pack("<Q", 1 << 40) + data[16:], ["tensor", "dimensions"])
    fails(data[:16] + struct.pack("<Q", 1 << 62) + data[24:], ["truncated"])     # metadata
    fails(data[:24] + struct.pack("<Q", 1 << 50) + data[32:], ["string"])        # key length
    # a metadata array that claims more items than the file holds
    at = data.index(b"tokenizer.ggml.scores") + len("tokenizer.ggml.scores") + 8
    fails(data[:at] + struct.pack("<Q", 1 << 40) + data[at + 8:], ["array", "past the end"])
    for name, words in ((b"qwen2", ["architecture 'qwen9'", "llama, qwen2, qwen3"]),):
        fails(data.replace(b"\x05\x00\x00\x00\x00\x00\x00\x00" + name,
                           b"\x05\x00\x00\x00\x00\x00\x00\x00qwen9", 1), words)
    # tensor infos: a Q4_K type, an unknown type, an offset past the end, a misaligned one
    info = data.index(b"blk.0.ffn_up.weight") + len("blk.0.ffn_up.weight")
    n_dims = struct.unpack_from("<I", data, info)[0]
    kind_at = info + 4 + 8 * n_dims
    fails(data[:kind_at] + struct.pack("<I", gw.Q4_K) + data[kind_at + 4:],
          ["blocks of 256"])  # ffn_up's 64-value rows are not whole Q4_K blocks
    fails(data[:kind_at] + struct.pack("<I", 99) + data[kind_at + 4:], ["ggml type 99"])
    fails(data[:kind_at + 4] + struct.pack("<Q", 1 << 40) + data[kind_at + 12:], ["past the end"])
    offset = struct.unpack_from("<Q", data, kind_at + 4)[0]
    fails(data[:kind_at + 4] + struct.pack("<Q", offset + 4) + data[kind_at + 12:],
          ["misaligned"])
    fails(data[:info] + struct.pack("<I", 7) + data[info + 4:], ["7 dimensions"])
    # a whole Q4_K tensor is refused by name, naming the supported types
    path = tmp_path("q4k.gguf")
    meta = dict(gguf_meta_of(good))
    raw = bytes(144 * 64 * 128 // 256)
    tensors = [(n, k, x) for n, k, x in gguf_tensors_of(good) if n != "blk.0.ffn_up.weight"]
    tensors.append(("blk.0.ffn_up.weight", gw.Q4_K, (256, 32), raw))
    gw.write_gguf(path, list(meta.items()), tensors)
    export_fails([out, "--gguf", path], path, ["Q4_K", "F32, F16, BF16, Q8_0"])
    # an unknown tensor name and a missing tensor
    gw.write_gguf(path, list(meta.items()), gguf_tensors_of(good) + [
        ("blk.0.attn_output.bias", gw.F32, np.zeros(64, np.float32))])
    export_fails([out, "--gguf", path], path, ["blk.0.attn_output.bias"])
    gw.write_gguf(path, list(meta.items()), [t for t in gguf_tensors_of(good)
                                             if t[0] != "blk.1.attn_k.bias"])
    export_fails([out, "--gguf", path], path, ["blk.1.attn_k.bias", "missing"])
    gw.write_gguf(path, list(dict(meta, **{"qwen2.rope.scaling.type": "yarn"}).items()),
                  gguf_tensors_of(good))
    export_fails([out, "--gguf", path], path, ["yarn"])
    assert not os.path.exists(out)


def gguf_meta_of(path):
    """The metadata of a GGUF file, as (key, value) pairs the writer takes again."""
    g = export.GgufFile(path)
    out = []
    for k, v in g.metadata.items():
        if isinstance(v, np.ndarray):
            v = v.astype(v.dtype.newbyteorder("<"))
        out.append((k, v))
    return out


def gguf_tensors_of(path):
    """The tensors of a GGUF file of F32 / F16 / BF16 tensors as (name, type, float32 values)."""
    g = export.GgufFile(path)
    kinds = {"F32": gw.F32, "F16": gw.F16, "BF16": gw.BF16}
    return [(name, kinds[t[0]], np.asarray(g.read(name), np.float32))
            for name, t in g.tensors.items()]
