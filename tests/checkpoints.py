"""Random-weight checkpoints and tokenizers of any shape, for testing the engine.

A real checkpoint only tests one shape. These files let the tests try the shapes that break
index arithmetic (grouped-query attention, odd widths, a separate classifier) and they are
deterministic from a seed, so a failure can be reproduced. Our own format (TLLM) is written
by export.py alone; this file only draws the weights and hands them over.

  random_weights(config, seed)            weights whose activations and logits stay O(1)
  write_llama2c(path, config, weights)    llama2.c "version 0" checkpoint (llama2.c's format)
  export_tllm(path, config, weights, ...) TLLM file, written by export.py
  tokenizer_pieces(vocab_size, seed)      a byte-level tokenizer for any vocab >= 260
  tokenizer_bin(pieces, scores)           its bytes as llama2.c's tokenizer.bin
  write_tokenizer(path, vocab_size, seed) ... written to a file
  write_random_model(path, config, seed)  all of the above in one call, read back
  encode_prompt(text)                     the ids that tokenizer gives a prompt
"""
import os
import struct
import sys

import numpy as np

from reference import layer_shapes, read_llama2c, read_tllm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import export  # noqa: E402  (the project root's export.py)


def random_weights(c, seed):
    """Weights for config c, drawn from a seeded generator and rounded to float32 (the
    values a file can hold), returned as read_llama2c returns them.

    The scales matter: with every matrix at std 1/sqrt(cols), each projection keeps unit-size
    activations, so attention scores are O(1) and its softmax is neither flat nor one-hot;
    the embedding at std 2/sqrt(dim) gives logits of std about 2, so the argmax is clear but
    not certain. Norm weights near 1 (not exactly 1) make a missing norm weight visible."""
    rng = np.random.default_rng(seed)

    def normal(*shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32).astype(np.float64)

    def norm_weight():
        return (1.0 + 0.1 * rng.standard_normal(c.dim)).astype(np.float32).astype(np.float64)

    emb = normal(c.vocab_size, c.dim, std=2.0 / np.sqrt(c.dim))
    layers = []
    for _ in range(c.n_layers):
        layer = dict(attn_norm=norm_weight(), ffn_norm=norm_weight())
        for name, (rows, cols) in layer_shapes(c).items():
            layer[name] = normal(rows, cols, std=1.0 / np.sqrt(cols))
        layers.append(layer)
    final_norm = norm_weight()
    classifier = emb if c.shared_classifier else normal(c.vocab_size, c.dim,
                                                        std=2.0 / np.sqrt(c.dim))
    return dict(token_embedding=emb, layers=layers, final_norm=final_norm,
                classifier=classifier)


def rope_tables(c):
    """The cos and sin tables llama2.c's export wrote (run.c no longer reads them)."""
    i = np.arange(c.head_size // 2)
    angle = np.outer(np.arange(c.seq_len), c.rope_theta ** (-2.0 * i / c.head_size))
    return np.cos(angle), np.sin(angle)


def write_llama2c(path, c, w):
    """Writes a llama2.c "version 0" checkpoint: a 7 x int32 header, then float32 arrays, each
    kind of weight for all layers together. head_size must be dim / n_heads (the format has
    no field for it). This is llama2.c's own format, not ours: the engine reads it as a
    foreign input, and export.py converts from it, so the tests need files of it."""
    assert c.head_size * c.n_heads == c.dim, "llama2.c files need head_size = dim / n_heads"
    vocab = c.vocab_size if c.shared_classifier else -c.vocab_size  # llama2.c's flag
    arrays = [w["token_embedding"], [l["attn_norm"] for l in w["layers"]]]
    arrays += [[l[name] for l in w["layers"]] for name in ("wq", "wk", "wv", "wo")]
    arrays += [[l["ffn_norm"] for l in w["layers"]]]
    arrays += [[l[name] for l in w["layers"]] for name in ("w1", "w2", "w3")]
    arrays += [w["final_norm"], *rope_tables(c)]
    if not c.shared_classifier:
        arrays.append(w["classifier"])
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                            vocab, c.seq_len))
        for a in arrays:
            f.write(np.asarray(a, dtype="<f4").tobytes())


def export_tllm(path, c, w, pieces, scores, dtype="f32", group_size=None, chat_template="none",
                format_version=2, overrides=()):
    """Writes weights w (as random_weights returns them) for config c, with the tokenizer
    (pieces, scores) embedded, as a TLLM file. export.py writes it: it is the one writer of
    the format, so these files are exactly what users get. dtype, group_size, format_version
    and overrides ((glob, dtype) pairs) are export.py's --dtype, --group-size,
    --format-version and --tensor-dtype; chat_template is a name ("none", "llama2", ...)."""
    cfg = export.Config(
        dim=c.dim, hidden_dim=c.hidden_dim, n_layers=c.n_layers, n_heads=c.n_heads,
        n_kv_heads=c.n_kv_heads, head_size=c.head_size, vocab_size=c.vocab_size,
        seq_len=c.seq_len, rope_theta=c.rope_theta, norm_eps=c.norm_eps,
        shared_classifier=int(c.shared_classifier), bos_id=c.bos_id,
        eos_ids=tuple(getattr(c, "eos_ids", (c.eos_id,))),
        chat_template=export.TEMPLATES[chat_template])
    arrays = {"token_embedding": w["token_embedding"], "final_norm": w["final_norm"]}
    for i, layer in enumerate(w["layers"]):
        arrays.update({f"layers.{i}.{name}": a for name, a in layer.items()})
    if not c.shared_classifier:
        arrays["classifier"] = w["classifier"]
    export.write_model(path, cfg, list(zip(pieces, scores)), arrays, dtype, group_size,
                       format_version, overrides)


# ------------------------------------------------------------------------------------------
# A byte-level tokenizer whose encoding is easy to predict

def tokenizer_pieces(vocab_size, seed):
    """The pieces and scores of a tokenizer for any vocab_size >= 260: <unk>, <s>, </s>, the
    256 byte pieces <0x00>..<0xFF>, the piece " " (id 259), then made-up multi-byte pieces to
    fill the vocabulary.

    " " is there because real vocabularies have it (Llama 2's id 29871, tok512's 410) and
    llama2.c's encoder looks it up for the dummy prefix without a fallback. Every made-up
    piece holds an uppercase letter, so a prompt without uppercase letters is spelled with
    byte pieces and " " only: no BPE merge can build a made-up piece from it, and
    encode_prompt knows its ids without running BPE. The made-up pieces still give generated
    text something multi-byte to decode."""
    assert vocab_size >= 260
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)]
    pieces.append(b" ")
    scores = [0.0] * len(pieces)
    rng = np.random.default_rng(seed)
    upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lower = b"abcdefghijklmnopqrstuvwxyz"
    seen = set(pieces)
    while len(pieces) < vocab_size:
        n = int(rng.integers(2, 8))  # at least two bytes
        word = bytes(int(b) for b in rng.choice(list(lower), n - 1))
        cap = bytes([upper[int(rng.integers(26))]])
        piece = (b" " if rng.random() < 0.5 else b"") + cap + word
        if piece not in seen:
            seen.add(piece)
            scores.append(-float(len(pieces) - 260))  # earlier pieces merge first, as in SP
            pieces.append(piece)
    return pieces, scores


def tokenizer_bin(pieces, scores):
    """llama2.c's tokenizer.bin: the longest piece's length, then per piece its score, its
    length and its bytes. A TLLM tokenizer section is the same with a u32 count in front."""
    return struct.pack("<i", max(len(p) for p in pieces)) + \
        b"".join(struct.pack("<fi", s, len(p)) + p for p, s in zip(pieces, scores))


def write_tokenizer(path, vocab_size, seed=0):
    """Writes tokenizer_pieces as llama2.c's tokenizer.bin; returns (pieces, scores)."""
    pieces, scores = tokenizer_pieces(vocab_size, seed)
    with open(path, "wb") as f:
        f.write(tokenizer_bin(pieces, scores))
    return pieces, scores


def write_random_model(path, config, seed, tllm=False, dtype="f32", group_size=None,
                       tweak=None, format_version=2, overrides=()):
    """Writes random_weights(config, seed), changed by tweak(weights) if given, to path: as a
    llama2.c checkpoint with write_tokenizer's file beside it (PATH_tok.bin), or with tllm as
    a TLLM file (export_tllm: dtype, group_size, format_version, overrides) with the
    tokenizer inside. Returns (the engine's arguments for the model, config, weights), config
    and weights read back from the file, so that the reference runs on exactly what the
    engine reads (bf16 and Q8_0 dequantised, Q8_0 matrices as reference.Q8Matrix)."""
    weights = random_weights(config, seed)
    if tweak:
        tweak(weights)
    if tllm:
        pieces, scores = tokenizer_pieces(config.vocab_size, seed)
        export_tllm(path, config, weights, pieces, scores, dtype, group_size,
                    format_version=format_version, overrides=overrides)
        config, weights, _ = read_tllm(path)
        return [path], config, weights
    tok_path = path[:-len(".bin")] + "_tok.bin"
    write_llama2c(path, config, weights)
    write_tokenizer(tok_path, config.vocab_size, seed)
    config, weights = read_llama2c(path)
    return [path, "-z", tok_path], config, weights


SPACE_ID = 259


def encode_prompt(text, bos_id=1):
    """The ids the engine gives a prompt with the tokenizer above: BOS, then per byte of the
    text with SentencePiece's dummy space in front, the piece " " for a space and the byte
    piece (id byte + 3) for anything else."""
    data = text.encode()
    assert not any(65 <= b <= 90 for b in data), "uppercase could merge into a made-up piece"
    if not data:
        return [bos_id]
    return [bos_id] + [SPACE_ID if b == 32 else b + 3 for b in b" " + data]
