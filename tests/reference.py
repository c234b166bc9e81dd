"""The reference forward pass in numpy, and readers for the files the engine reads.

This is the oracle the C engine is tested against, so it is written to be obviously right
rather than fast: one small function per step of the model, everything in float64, one token
at a time with a KV cache, exactly as model.h describes the model. If the engine and this file
disagree, read this file first: it is short enough to check line by line.

Contents:
  Config, read_llama2c, read_tllm      the hyperparameters and the weights of a checkpoint
  TllmFile                             a TLLM file, every byte checked against FORMAT.md: the
                                       one Python reader of the format (export.py is its one
                                       writer)
  field_offsets, TLLM_FIELDS, ...      where each header field lies, for tests that break it
  read_tokenizer, decode               llama2.c's tokenizer.bin, and its decoding rules
  read_byte_bpe_section                the byte-level BPE tokenizer section (kind 2)
  rmsnorm, rope, attention, swiglu     the steps of the model
  Q8Matrix, BF16Matrix                 Q8_0/Q4_0 and bf16 matrices, whose products round x as
                                       the engine's do
  Transformer.forward(token, pos)      the whole forward pass, returning the logits
  StreamingTransformer                 the same past the context: attention sinks, eviction
  logits(config, weights, tokens)      the logits of every position of a token sequence
  greedy, Sampler                      choosing the next token exactly as llama2.c does
"""
import struct

import numpy as np

from common import read_bytes


# ------------------------------------------------------------------------------------------
# Checkpoints

class Config:
    """The hyperparameters, with the same names as the Config struct in model.h."""

    def __init__(self, dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
                 head_size=None, rope_theta=10000.0, norm_eps=1e-5, shared_classifier=True,
                 bos_id=1, eos_id=2, sliding_window=0, windowed=None):
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        # llama2.c files do not store head_size: there it is always dim / n_heads.
        self.head_size = head_size if head_size is not None else dim // n_heads
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.rope_theta = rope_theta
        self.norm_eps = norm_eps
        self.shared_classifier = shared_classifier
        self.bos_id = bos_id
        self.eos_id = eos_id
        # RoPE scaling as FORMAT.md's metadata keys give it: None, or a dict with "type"
        # ("linear" or "llama3"), "factor" and for llama3 "low_freq_factor",
        # "high_freq_factor", "original_context".
        self.rope_scaling = None
        # Sliding-window attention: a windowed layer's query at pos sees pos - window + 1..pos.
        self.sliding_window = sliding_window
        self.windowed = list(windowed) if windowed is not None else [1] * n_layers

    def first_seen(self, layer, pos):
        """The first position the query at pos sees in a layer: Hugging Face's mask keeps
        kv > q - window, so a window of w sees w positions, the query's own included."""
        if self.sliding_window and self.windowed[layer]:
            return max(0, pos - self.sliding_window + 1)
        return 0

    def __repr__(self):
        return "Config(" + ", ".join(f"{k}={v}" for k, v in vars(self).items()) + ")"


# The order of the weights inside every layer, shared by both file formats.
LAYER_MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def layer_shapes(c):
    """(rows, cols) of each layer matrix: one row per output, as in model.h."""
    q_rows, kv_rows = c.n_heads * c.head_size, c.n_kv_heads * c.head_size
    return {"wq": (q_rows, c.dim), "wk": (kv_rows, c.dim), "wv": (kv_rows, c.dim),
            "wo": (c.dim, q_rows), "w1": (c.hidden_dim, c.dim), "w2": (c.dim, c.hidden_dim),
            "w3": (c.hidden_dim, c.dim)}


def read_llama2c(path, dtype=np.float64):
    """Reads a llama2.c "version 0" checkpoint. Returns (Config, weights), where weights is a
    dict of arrays of dtype (np.float32: the values exactly as stored): token_embedding
    (vocab, dim), final_norm (dim), classifier (vocab, dim), and layers, a list of dicts with
    attn_norm, ffn_norm and the matrices."""
    data = read_bytes(path)
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = \
        struct.unpack_from("<7i", data, 0)
    # llama2.c's flag: a negative vocab_size means the classifier is stored separately.
    shared = vocab_size > 0
    vocab_size = abs(vocab_size)
    c = Config(dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
               shared_classifier=shared)
    floats = np.frombuffer(data, dtype="<f4", offset=7 * 4).astype(dtype)
    at = 0

    def take(*shape):
        # The file is one run of float32 arrays; take the next one of this shape.
        nonlocal at
        n = int(np.prod(shape))
        assert at + n <= floats.size, f"{path}: file too short for {c}"
        out = floats[at:at + n].reshape(shape)
        at += n
        return out

    L, shapes = n_layers, layer_shapes(c)
    # llama2.c stores each kind of weight for all layers together, not layer by layer.
    emb = take(vocab_size, dim)
    attn_norm = take(L, dim)
    stacked = {}
    for name in ("wq", "wk", "wv", "wo"):
        stacked[name] = take(L, *shapes[name])
    ffn_norm = take(L, dim)
    for name in ("w1", "w2", "w3"):
        stacked[name] = take(L, *shapes[name])
    final_norm = take(dim)
    # Two legacy RoPE tables (cos and sin, seq_len * head_size / 2 each): nobody reads them,
    # RoPE is computed from pos and theta.
    take(2, seq_len * c.head_size // 2)
    classifier = emb if shared else take(vocab_size, dim)
    assert at == floats.size, f"{path}: {floats.size - at} floats left over after the weights"
    layers = [dict(attn_norm=attn_norm[l], ffn_norm=ffn_norm[l],
                   **{name: stacked[name][l] for name in LAYER_MATRICES}) for l in range(L)]
    return c, dict(token_embedding=emb, layers=layers, final_norm=final_norm,
                   classifier=classifier)


WEIGHT_F32, WEIGHT_BF16, WEIGHT_Q8_0, WEIGHT_Q4_0 = 0, 1, 2, 3
# Q4_0's block of 32 weights along a row: an fp16 scale d, then 16 bytes whose byte i holds
# weight i in its low nibble and weight i + 16 in its high one; a weight is (nibble - 8) d.
Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
# The per-layer vectors of FORMAT.md (one row, always f32), the optional ones after the norms.
VECTORS = ("attn_norm", "ffn_norm", "final_norm", "bq", "bk", "bv", "q_norm", "k_norm")
OPTIONAL_LAYER_TENSORS = ("bq", "bk", "bv", "q_norm", "k_norm")


# chat.h's numbers of the chat_template names (version 1 stores 0..3)
TEMPLATE_NUMBERS = {None: 0, "llama2": 1, "chatml": 2, "zephyr": 3, "llama3": 4, "llama3.1": 5,
                    "llama3.2": 6, "qwen2.5": 7, "qwen3": 8, "smollm2": 9}


def align64(n):
    return (n + 63) // 64 * 64


# Version 1's 256-byte header, field by field (FORMAT.md); zero padding follows file_size.
TLLM_FIELDS = [("magic", "4s"), ("version", "I"), ("dim", "I"), ("hidden_dim", "I"),
               ("n_layers", "I"), ("n_heads", "I"), ("n_kv_heads", "I"), ("head_size", "I"),
               ("vocab_size", "I"), ("seq_len", "I"), ("rope_theta", "f"), ("norm_eps", "f"),
               ("shared_classifier", "I"), ("bos_id", "i"), ("eos_id", "i"),
               ("weight_type", "I"), ("group_size", "I"), ("chat_template", "I"),
               ("tokenizer_kind", "I"), ("reserved", "I"), ("tokenizer_offset", "Q"),
               ("tokenizer_size", "Q"), ("weights_offset", "Q"), ("file_size", "Q")]
# Version 2's 64-byte header.
TLLM_V2_FIELDS = [("magic", "4s"), ("version", "I"), ("file_size", "Q"),
                  ("metadata_offset", "Q"), ("metadata_size", "Q"), ("tokenizer_offset", "Q"),
                  ("tokenizer_size", "Q"), ("directory_offset", "Q"), ("directory_size", "Q")]
# A directory entry after its name.
DIRECTORY_FIELDS = [("type", "I"), ("group_size", "I"), ("rows", "I"), ("cols", "I"),
                    ("offset", "Q"), ("size", "Q")]
DIRECTORY_ENTRY = "<" + "".join(f for _, f in DIRECTORY_FIELDS)
METADATA_TYPES = {1: "i", 2: "f"}  # 3: a UTF-8 string


def field_offsets(fields):
    """{name: (offset, struct format)} of a header's fields: where tests that break a field
    find it."""
    out, at = {}, 0
    for name, fmt in fields:
        out[name] = (at, "<" + fmt)
        at += struct.calcsize("<" + fmt)
    return out


class TllmFile:
    """A TLLM file (models/FORMAT.md), version 2 or 1, read from the specification alone (not
    from export.py), so the tests check the exporter against it. Every byte must be where the
    format puts it.

    header (dict: every header field, the hyperparameters by their FORMAT.md names, eos_id
    being the first of eos_ids, shared_classifier, chat_template as its number and
    tokenizer_kind), data (the whole file), tokenizer_section (bytes), pieces [(bytes,
    score)] of a kind-1 tokenizer or bpe (read_byte_bpe_section's dict) of a kind-2 one, and
    tensors: per name, (weight type, the stored arrays, group size); value(name) gives the
    tensor dequantised. For version 2 also metadata_entries and directory_entries: where each
    entry lies in the file (dicts, in file order), for tests that break one."""

    def __init__(self, path):
        data = self.data = read_bytes(path)
        assert data[:4] == b"TLLM", f"{path}: bad magic"
        version = struct.unpack_from("<I", data, 4)[0]
        if version == 2:
            self._read_v2(path, data)
        else:
            assert version == 1, f"{path}: version {version}"
            self._read_v1(path, data)
        section = self.tokenizer_section
        h = self.header
        self.pieces = self.bpe = None
        if h.get("tokenizer_kind", 1) == 2:
            self.bpe = read_byte_bpe_section(section, h["vocab_size"])
            for i in (h["bos_id"],) + tuple(h["eos_ids"]):  # the model's ids must be tokens
                assert i < self.bpe["n_tokens"] and self.bpe["tokens"][i][0], \
                    f"{path}: special id {i} is no token of the section"
            return
        assert h.get("tokenizer_kind", 1) == 1, f"{path}: tokenizer_kind {h['tokenizer_kind']}"
        n, max_len = struct.unpack_from("<II", section, 0)
        assert n == h["vocab_size"], f"{path}: {n} pieces for vocab_size {h['vocab_size']}"
        pieces, scores = read_tokenizer(section, n, counted=True)
        assert 8 + sum(8 + len(p) for p in pieces) == len(section), \
            "tokenizer section has trailing bytes"
        assert max_len == max(len(p) for p in pieces)
        self.pieces = list(zip(pieces, scores))

    def _read_v1(self, path, data):
        values = struct.unpack_from("<" + "".join(f for _, f in TLLM_FIELDS), data, 0)
        h = self.header = dict(zip((n for n, _ in TLLM_FIELDS), values))
        h["eos_ids"] = (h["eos_id"],)
        assert data[112:256] == bytes(144), f"{path}: header padding is not zero"
        assert h["file_size"] == len(data), f"{path}: file_size {h['file_size']} != {len(data)}"
        assert h["tokenizer_offset"] == 256 and h["weights_offset"] % 64 == 0
        assert h["weights_offset"] == align64(256 + h["tokenizer_size"])
        self.tokenizer_section = data[256:256 + h["tokenizer_size"]]
        self.tensors = {}
        pos = h["weights_offset"]
        for name, shape, is_norm in self.layout():
            wt, gs = (WEIGHT_F32, 0) if is_norm else (h["weight_type"], h["group_size"])
            pos = align64(pos)  # every tensor starts 64-aligned
            self.tensors[name] = (wt, self._stored(data, pos, shape, wt, gs), gs)
            pos += tensor_bytes(shape, wt, gs)
        # ... but the file ends right after the last one.
        assert pos == len(data), f"{path}: tensors end at {pos}, file is {len(data)} bytes"

    def _read_v2(self, path, data):
        values = struct.unpack_from("<" + "".join(f for _, f in TLLM_V2_FIELDS), data, 0)
        h = self.header = dict(zip((n for n, _ in TLLM_V2_FIELDS), values))
        file_size, meta_at, meta_len = h["file_size"], h["metadata_offset"], h["metadata_size"]
        tok_at, tok_len = h["tokenizer_offset"], h["tokenizer_size"]
        dir_at, dir_len = h["directory_offset"], h["directory_size"]
        assert file_size == len(data), f"{path}: file_size {file_size} != {len(data)}"
        # export.py writes the sections in order, right after the 64-byte header
        assert meta_at == 64 and tok_at == meta_at + meta_len and dir_at == tok_at + tok_len
        # Where each metadata entry and directory entry lies (self.metadata_entries and
        # self.directory_entries, in file order): for tests that break one of them.
        self.metadata_entries, self.directory_entries = [], []
        pos, end = meta_at + 4, meta_at + meta_len
        for _ in range(struct.unpack_from("<I", data, meta_at)[0]):
            at = pos
            key = data[pos + 1:pos + 1 + data[pos]].decode()
            pos += 1 + data[pos]
            kind, count = struct.unpack_from("<BI", data, pos)
            pos += 5
            value_at = pos
            if kind == 3:
                value = data[pos:pos + count].decode()
                pos += count
            else:
                value = struct.unpack_from(f"<{count}{METADATA_TYPES[kind]}", data, pos)
                pos += 4 * count
                value = value if key in ("eos_ids", "sliding_window_layers") else value[0]
            assert key not in h, f"{path}: metadata key {key} twice"
            h[key] = value
            self.metadata_entries.append(dict(key=key, at=at, kind_at=value_at - 5,
                                              count_at=value_at - 4, value_at=value_at,
                                              end=pos, kind=kind, count=count))
        assert pos == end, f"{path}: metadata ends at {pos}, its section at {end}"
        h["eos_id"] = h["eos_ids"][0]
        h["chat_template"] = TEMPLATE_NUMBERS[h.get("chat_template")]
        self.tokenizer_section = data[tok_at:tok_at + tok_len]
        self.tensors, entries = {}, []
        pos, end = dir_at + 4, dir_at + dir_len
        for _ in range(struct.unpack_from("<I", data, dir_at)[0]):
            at = pos
            name = data[pos + 1:pos + 1 + data[pos]].decode()
            pos += 1 + data[pos]
            wt, gs, rows, cols, off, size = struct.unpack_from(DIRECTORY_ENTRY, data, pos)
            self.directory_entries.append(dict(name=name, at=at, fields_at=pos,
                                               end=pos + struct.calcsize(DIRECTORY_ENTRY),
                                               type=wt, group_size=gs, rows=rows, cols=cols,
                                               offset=off, size=size))
            pos += struct.calcsize(DIRECTORY_ENTRY)
            entries.append((off, size, name))
            vector = name.split(".")[-1] in VECTORS
            shape = (cols,) if rows == 1 and vector else (rows, cols)
            assert size == tensor_bytes(shape, wt, gs), f"{path}: {name}: size {size}"
            self.tensors[name] = (wt, self._stored(data, off, shape, wt, gs), gs)
        assert pos == end, f"{path}: directory ends at {pos}, its section at {end}"
        h["shared_classifier"] = int("classifier" not in self.tensors)
        assert [(n, tuple(self.shape(n))) for n, _, _ in self.layout()] == \
            [(n, tuple(shape)) for n, shape, _ in self.layout()], f"{path}: tensor shapes"
        assert sorted(self.tensors) == sorted(n for n, _, _ in self.layout())
        # tensors in layout order, each at the next multiple of 64 after the one before
        pos = align64(end)
        for off, size, name in sorted(entries):
            assert off == align64(pos), f"{path}: {name} at {off}, expected {align64(pos)}"
            pos = off + size
        assert pos == len(data), f"{path}: tensors end at {pos}, file is {len(data)} bytes"

    @staticmethod
    def _stored(data, pos, shape, wt, gs):
        """The arrays a tensor is stored as: its values (and Q8_0's scales); Q4_0's blocks (rows,
        ceil(cols / 32)) with the shape."""
        n = int(np.prod(shape))
        if wt == WEIGHT_F32:
            return np.frombuffer(data, "<f4", n, pos).reshape(shape)
        if wt == WEIGHT_BF16:
            return np.frombuffer(data, "<u2", n, pos).reshape(shape)
        if wt == WEIGHT_Q4_0:
            assert gs == 32, f"Q4_0 with group size {gs}"
            blocks = -(-shape[1] // 32)  # the last may be partly past the row's end
            return np.frombuffer(data, Q4_0_BLOCK, shape[0] * blocks, pos).reshape(
                shape[0], blocks), shape
        assert wt == WEIGHT_Q8_0 and gs in (32, 64), f"weight type {wt}, group size {gs}"
        q = np.frombuffer(data, "<i1", n, pos).reshape(shape)
        per_row = -(-shape[1] // gs)  # the last group of a row may be shorter
        scales = np.frombuffer(data, "<f4", shape[0] * per_row, align64(pos + n))
        return q, scales.reshape(shape[0], per_row)

    def shape(self, name):
        kind, stored, _ = self.tensors[name]
        if kind == WEIGHT_Q4_0:
            return stored[1]
        return (stored[0] if kind == WEIGHT_Q8_0 else stored).shape

    def layout(self):
        """(name, shape, is_norm) of each tensor, in file order."""
        h = self.header
        d, hid = h["dim"], h["hidden_dim"]
        qd, kvd = h["n_heads"] * h["head_size"], h["n_kv_heads"] * h["head_size"]
        # FORMAT.md's optional tensors, in every layer or in none: present if in layer 0
        tensors = getattr(self, "tensors", {})
        bias, qk_norm = "layers.0.bq" in tensors, "layers.0.q_norm" in tensors
        out = [("token_embedding", (h["vocab_size"], d), False)]
        for i in range(h["n_layers"]):
            out += [(f"layers.{i}.attn_norm", (d,), True), (f"layers.{i}.wq", (qd, d), False),
                    (f"layers.{i}.wk", (kvd, d), False), (f"layers.{i}.wv", (kvd, d), False)]
            if bias:
                out += [(f"layers.{i}.bq", (qd,), True), (f"layers.{i}.bk", (kvd,), True),
                        (f"layers.{i}.bv", (kvd,), True)]
            if qk_norm:
                out += [(f"layers.{i}.q_norm", (h["head_size"],), True),
                        (f"layers.{i}.k_norm", (h["head_size"],), True)]
            out += [(f"layers.{i}.wo", (d, qd), False), (f"layers.{i}.ffn_norm", (d,), True),
                    (f"layers.{i}.w1", (hid, d), False), (f"layers.{i}.w2", (d, hid), False),
                    (f"layers.{i}.w3", (hid, d), False)]
        out.append(("final_norm", (d,), True))
        if not h["shared_classifier"]:
            out.append(("classifier", (h["vocab_size"], d), False))
        return out

    def value(self, name, dtype=np.float32):
        """The numbers a stored tensor stands for, as dtype. bf16 is the top half of a float32:
        shifted back into place. Q8_0: each run of group_size values along a row shares one
        scale, so value j of a row uses that row's scale number j // group_size (in float64
        the product q * scale is exact)."""
        kind, stored, gs = self.tensors[name]
        if kind == WEIGHT_F32:
            return np.array(stored, dtype=dtype)
        if kind == WEIGHT_BF16:
            return (stored.astype(np.uint32) << 16).view(np.float32).astype(dtype)
        if kind == WEIGHT_Q4_0:  # nibbles 0..15 of each block in weight order, minus 8, times d
            blocks, (rows, cols) = stored
            qs = blocks["qs"].astype(np.int16)
            q = np.concatenate([qs & 15, qs >> 4], axis=2) - 8
            w = q.astype(dtype) * blocks["d"].astype(dtype)[:, :, None]
            return w.reshape(rows, -1)[:, :cols]
        q, scales = stored
        group = np.arange(q.shape[1]) // gs  # scale of each column
        return q.astype(dtype) * scales[:, group]


def tensor_bytes(shape, wt, gs):
    """Bytes of a stored tensor (FORMAT.md, "How a tensor is stored")."""
    n = int(np.prod(shape))
    if wt == WEIGHT_F32:
        return 4 * n
    if wt == WEIGHT_BF16:
        return 2 * n
    if wt == WEIGHT_Q4_0:
        return 18 * shape[0] * -(-shape[1] // 32)
    return align64(n) + 4 * shape[0] * -(-shape[1] // gs)


def read_tllm(path):
    """Reads a TLLM file (through TllmFile) of any weight types, dequantised to float64.
    Returns (Config, weights, tokenizer_section) with weights as read_llama2c returns them,
    except that each matrix whose type rounds the input of its product (Q8_0 and Q4_0 to
    int8, bf16 to bf16) is a Q8Matrix or a BF16Matrix that does so as the engine does,, and the tokenizer section as raw bytes (a u32 count, then the tokenizer.bin body).
    The Config also has the token embedding's weight_type and group_size, and the file's
    chat_template and eos_ids."""
    f = TllmFile(path)
    h = f.header
    c = Config(h["dim"], h["hidden_dim"], h["n_layers"], h["n_heads"], h["n_kv_heads"],
               h["vocab_size"], h["seq_len"], head_size=h["head_size"],
               rope_theta=h["rope_theta"], norm_eps=h["norm_eps"],
               shared_classifier=bool(h["shared_classifier"]), bos_id=h["bos_id"],
               eos_id=h["eos_id"])
    kind, _, gs = f.tensors["token_embedding"]
    c.weight_type, c.group_size, c.chat_template = kind, gs, h["chat_template"]
    c.sliding_window = h.get("sliding_window", 0)
    c.windowed = list(h.get("sliding_window_layers", [1] * c.n_layers))
    c.eos_ids = h["eos_ids"]
    if "rope_scaling" in h:
        c.rope_scaling = {"type": h["rope_scaling"], "factor": h["rope_scaling_factor"]}
        if h["rope_scaling"] == "llama3":
            c.rope_scaling.update(low_freq_factor=h["rope_low_freq_factor"],
                                  high_freq_factor=h["rope_high_freq_factor"],
                                  original_context=h["rope_original_context"])

    def value(name):
        return f.value(name, np.float64)

    def matrix(name):
        kind, _, group_size = f.tensors[name]
        if kind in (WEIGHT_Q8_0, WEIGHT_Q4_0):
            return Q8Matrix(value(name), group_size)
        return BF16Matrix(value(name)) if kind == WEIGHT_BF16 else value(name)

    # The embedding is only looked up, a row at a time, so it stays an array; as the shared
    # classifier it is a matrix like any other.
    emb = value("token_embedding")
    layers = [{name: matrix(f"layers.{i}.{name}") if name in LAYER_MATRICES else
               value(f"layers.{i}.{name}")
               for name in ("attn_norm", "ffn_norm") + LAYER_MATRICES + OPTIONAL_LAYER_TENSORS
               if f"layers.{i}.{name}" in f.tensors}
              for i in range(c.n_layers)]
    classifier = matrix("token_embedding" if c.shared_classifier else "classifier")
    return c, dict(token_embedding=emb, layers=layers, final_norm=value("final_norm"),
                   classifier=classifier), f.tokenizer_section


# ------------------------------------------------------------------------------------------
# Tokenizer (decoding only: the tests know which ids they feed in)

def read_tokenizer(path_or_bytes, vocab_size, counted=False):
    """Reads llama2.c's tokenizer.bin (or, with counted=True, a TLLM tokenizer section, which
    has a u32 piece count in front). Returns (pieces as bytes, scores as floats)."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        data = read_bytes(path_or_bytes)
    at = 4 if counted else 0
    at += 4  # max_token_length: only a hint for the C code's buffer sizes
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, at)
        assert at + 8 + n <= len(data), "tokenizer data ends inside a piece"
        pieces.append(data[at + 8:at + 8 + n])
        scores.append(score)
        at += 8 + n
    return pieces, scores


def read_byte_bpe_section(section, vocab_size):
    """A byte-level BPE tokenizer section (FORMAT.md, "Tokenizer section, kind 2"), every field
    checked: {"n_tokens", "pre_tokenizer", "normalizer", "options", "prefix", "suffix", "tokens":
    [(flags, bytes)] per id, "merges": [(left, right)] in rank order}."""
    n_tokens, n_merges, pre, normalizer, options, n_prefix, n_suffix = \
        struct.unpack_from("<7I", section, 0)
    assert 1 <= n_tokens <= vocab_size, f"n_tokens {n_tokens} for vocab_size {vocab_size}"
    assert 1 <= pre <= 4 and normalizer <= 1 and options & ~3 == 0, (pre, normalizer, options)
    assert n_prefix <= 16 and n_suffix <= 16 and n_merges <= 1 << 24
    pos = 28
    affix = struct.unpack_from(f"<{n_prefix + n_suffix}I", section, pos)
    pos += 4 * (n_prefix + n_suffix)
    tokens = []
    for _ in range(n_tokens):
        flags, length = struct.unpack_from("<2I", section, pos)
        raw = section[pos + 8:pos + 8 + length]
        assert len(raw) == length <= 1024 and flags < 16, (flags, length)
        assert (flags == 0) == (length == 0), f"token {len(tokens)}: flags {flags}, {length} bytes"
        assert flags & 12 == 0 or flags & 2, f"token {len(tokens)}: special or normalized, not added"
        tokens.append((flags, raw))
        pos += 8 + length
    assert len(section) == pos + 8 * n_merges, "the merges do not end the section"
    merges = [tuple(m) for m in np.frombuffer(section, "<u4", 2 * n_merges, pos).reshape(-1, 2)
              .tolist()]
    bpe = {raw: i for i, (flags, raw) in enumerate(tokens) if flags & 1}
    for left, right in merges:
        assert tokens[left][0] & 1 and tokens[right][0] & 1 and \
            tokens[left][1] + tokens[right][1] in bpe, f"merge {left} {right}"
    assert all(i < n_tokens and tokens[i][0] for i in affix), f"prefix/suffix {affix}"
    return {"n_tokens": n_tokens, "pre_tokenizer": pre, "normalizer": normalizer,
            "options": options, "prefix": list(affix[:n_prefix]),
            "suffix": list(affix[n_prefix:]), "tokens": tokens, "merges": merges}


def decode(pieces, prev_token, token, bos_id=1):
    """The bytes llama2.c prints for token after prev_token: the piece `<0xXX>` is the byte
    0xXX, and a piece right after BOS loses its leading space (SentencePiece's dummy prefix)."""
    piece = pieces[token]
    if prev_token == bos_id and piece.startswith(b" "):
        piece = piece[1:]
    if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece


# ------------------------------------------------------------------------------------------
# The steps of the model

def rmsnorm(x, weight, eps):
    """Scales x to unit root-mean-square, then by a learned weight per channel."""
    return x * weight / np.sqrt(np.mean(x * x) + eps)


def rope_frequencies(head_size, theta, scaling=None):
    """The angle per position of each pair i: theta^(-2i / head_size), stretched as
    FORMAT.md's RoPE scaling says: linear divides every one by the factor; llama3 divides the
    slow ones (wavelength 2 pi / freq above original_context / low_freq_factor), keeps the fast
    ones (below original_context / high_freq_factor) and blends those between."""
    freq = theta ** (-2.0 * np.arange(head_size // 2) / head_size)
    if scaling is None:
        return freq
    factor = scaling["factor"]
    if scaling["type"] == "linear":
        return freq / factor
    assert scaling["type"] == "llama3", scaling
    context, low, high = (scaling["original_context"], scaling["low_freq_factor"],
                          scaling["high_freq_factor"])
    out = []
    for f in freq:
        wavelength = 2 * np.pi / f
        if wavelength > context / low:
            out.append(f / factor)
        elif wavelength < context / high:
            out.append(f)
        else:
            smooth = (context / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def rope(x, pos, head_size, theta, scaling=None):
    """Rotates each adjacent pair (2i, 2i+1) of every head of x by the angle
    pos * freq_i (rope_frequencies). x is (n_heads * head_size); returns a new array.
    A dot product of two rotated vectors depends only on the difference of their positions,
    which is how the position of a token reaches attention."""
    heads = x.reshape(-1, head_size // 2, 2)
    angle = pos * rope_frequencies(head_size, theta, scaling)
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = heads[..., 0], heads[..., 1]
    return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(-1)


def softmax(x):
    e = np.exp(x - np.max(x))  # subtracting the max keeps exp from overflowing
    return e / np.sum(e)


def attention(q, keys, values, c, record=None, first=0):
    """Grouped-query attention of the current position over positions first..pos.
    q is (n_heads * head_size); keys and values are (pos + 1 - first, n_kv_heads * head_size),
    only the positions seen, which is what makes it causal (and windowed when first > 0).
    Returns (n_heads * head_size). If record is a list, each head's weights over positions
    0..pos are appended to it, 0 before first."""
    hs = c.head_size
    group = c.n_heads // c.n_kv_heads  # query heads sharing one key/value head
    out = np.empty(c.n_heads * hs)
    for h in range(c.n_heads):
        kv = h // group
        qh = q[h * hs:(h + 1) * hs]
        kh = keys[:, kv * hs:(kv + 1) * hs]      # (pos + 1, head_size)
        vh = values[:, kv * hs:(kv + 1) * hs]
        weights = softmax(kh @ qh / np.sqrt(hs))  # one weight per earlier position
        if record is not None:
            record.append(np.concatenate([np.zeros(first), weights]))
        out[h * hs:(h + 1) * hs] = weights @ vh
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def swiglu(x, layer, matvec):
    """The feedforward: a gated projection up to hidden_dim and back down to dim."""
    return matvec(layer["w2"], silu(matvec(layer["w1"], x)) * matvec(layer["w3"], x))


def matvec(w, x):
    """y = W x: row i of W gives y[i]."""
    return w @ x


def quantize_groups(x, group_size):
    """x rounded as the engine's Q8_0 kernel rounds its input: per group of group_size values
    (the last may be shorter), to int8 steps of max|x| / 127, half away from zero like C's
    roundf. Returns the rounded values as floats."""
    out = np.zeros_like(x)
    for start in range(0, x.size, group_size):
        g = x[start:start + group_size]
        step = np.max(np.abs(g)) / 127.0
        if step > 0:
            v = g / step
            out[start:start + group_size] = np.sign(v) * np.floor(np.abs(v) + 0.5) * step
    return out


class Q8Matrix:
    """A Q8_0 or Q4_0 matrix as the engine multiplies it: an integer dot product of the int8
    (or 4-bit) weights with the input quantized to int8 per group (matmul_q8_0.c,
    matmul_q4_0.c). values is already q * scale, so quantizing x is the only extra rounding,
    and `W @ x` gives the engine's sum up to float32 rounding."""

    def __init__(self, values, group_size):
        self.values, self.group_size = values, group_size
        self.shape = values.shape

    def __matmul__(self, x):
        return self.values @ quantize_groups(x, self.group_size)


def round_bf16(x):
    """x rounded as the engine's bf16 kernel rounds its input (matmul_bf16.c): to bf16, to
    nearest with ties to even on the float32 bits; zeros and denormals become zero."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    r[(u & 0x7F800000) == 0] = 0
    return r.view(np.float32).astype(np.float64)


class BF16Matrix:
    """A bf16 matrix as the engine multiplies it: its input rounded to bf16 as well as the
    weights (matmul_bf16.c), so every product is exact and the engine's sum differs by float32
    rounding only."""

    def __init__(self, values):
        self.values = values
        self.shape = values.shape

    def __matmul__(self, x):
        return self.values @ round_bf16(x)


class Transformer:
    """A checkpoint plus its KV cache. forward(token, pos) must be called with pos = 0, 1, 2...
    in order, as the engine is; it returns the logits, (vocab_size) float64.

    matvec computes every W x: the plain product by default, which on a Q8Matrix or a
    BF16Matrix (matrices of read_tllm) also rounds x as the engine does.

    After each forward, attention_weights[pos][layer][head] holds that head's weights over
    positions 0..pos."""

    def __init__(self, config, weights, matvec=matvec):
        self.c, self.w, self.matvec = config, weights, matvec
        self.attention_weights = []
        kv_dim = config.n_kv_heads * config.head_size
        self.key_cache = np.zeros((config.n_layers, config.seq_len, kv_dim))
        self.value_cache = np.zeros((config.n_layers, config.seq_len, kv_dim))

    def forward(self, token, pos):
        c, w, mv = self.c, self.w, self.matvec
        assert 0 <= token < c.vocab_size and 0 <= pos < c.seq_len
        x = w["token_embedding"][token].copy()  # the residual stream
        del self.attention_weights[pos:]  # a position run again replaces its weights
        self.attention_weights.append([])
        for l, layer in enumerate(w["layers"]):
            # Attention block, pre-norm: normalise a copy, add the result back to x.
            xb = rmsnorm(x, layer["attn_norm"], c.norm_eps)
            q, k, v = mv(layer["wq"], xb), mv(layer["wk"], xb), mv(layer["wv"], xb)
            if "bq" in layer:  # Qwen2: biases on q, k and v
                q, k, v = q + layer["bq"], k + layer["bk"], v + layer["bv"]
            if "q_norm" in layer:  # Qwen3: each query and key head normalised on its own
                q = np.concatenate([rmsnorm(h, layer["q_norm"], c.norm_eps)
                                    for h in q.reshape(-1, c.head_size)])
                k = np.concatenate([rmsnorm(h, layer["k_norm"], c.norm_eps)
                                    for h in k.reshape(-1, c.head_size)])
            q = rope(q, pos, c.head_size, c.rope_theta, c.rope_scaling)
            k = rope(k, pos, c.head_size, c.rope_theta, c.rope_scaling)
            self.key_cache[l, pos] = k
            self.value_cache[l, pos] = v
            heads = []
            lo = c.first_seen(l, pos)
            att = attention(q, self.key_cache[l, lo:pos + 1], self.value_cache[l, lo:pos + 1], c,
                            heads, lo)
            self.attention_weights[pos].append(heads)
            x = x + mv(layer["wo"], att)
            # Feedforward block, also pre-norm with a residual connection.
            xb = rmsnorm(x, layer["ffn_norm"], c.norm_eps)
            x = x + swiglu(xb, layer, mv)
        x = rmsnorm(x, w["final_norm"], c.norm_eps)
        return mv(w["classifier"], x)


class StreamingTransformer(Transformer):
    """The model past its context as StreamingLLM defines it (Xiao et al. 2023), written apart
    from the engine's way of doing it: the cache keeps keys before RoPE, and every step
    rotates each cached key by its index in the cache, the query by its own. evict(sinks,
    drop) forgets cached entries sinks .. sinks + drop - 1; what was computed for the others
    stays, and they simply sit drop places lower. forward(token) runs at the next index.
    (The engine instead keeps keys rotated and rotates them back by drop when evicting; RoPE
    rotations compose, so the two agree up to rounding.)"""

    def __init__(self, config, weights, matvec=matvec):
        super().__init__(config, weights, matvec)
        self.raw_keys = [[] for _ in range(config.n_layers)]  # per layer: (head dims) each
        self.values = [[] for _ in range(config.n_layers)]

    def evict(self, sinks, drop):
        for l in range(self.c.n_layers):
            del self.raw_keys[l][sinks:sinks + drop]
            del self.values[l][sinks:sinks + drop]

    def forward(self, token):
        c, w, mv = self.c, self.w, self.matvec
        pos = len(self.raw_keys[0])
        assert pos < c.seq_len, "the cache is full: evict first"
        x = w["token_embedding"][token].copy()
        for l, layer in enumerate(w["layers"]):
            xb = rmsnorm(x, layer["attn_norm"], c.norm_eps)
            q, k, v = mv(layer["wq"], xb), mv(layer["wk"], xb), mv(layer["wv"], xb)
            if "bq" in layer:
                q, k, v = q + layer["bq"], k + layer["bk"], v + layer["bv"]
            if "q_norm" in layer:
                q = np.concatenate([rmsnorm(h, layer["q_norm"], c.norm_eps)
                                    for h in q.reshape(-1, c.head_size)])
                k = np.concatenate([rmsnorm(h, layer["k_norm"], c.norm_eps)
                                    for h in k.reshape(-1, c.head_size)])
            q = rope(q, pos, c.head_size, c.rope_theta, c.rope_scaling)
            self.raw_keys[l].append(k)
            self.values[l].append(v)
            lo = c.first_seen(l, pos)
            keys = np.array([rope(k, i, c.head_size, c.rope_theta, c.rope_scaling)
                             for i, k in enumerate(self.raw_keys[l])][lo:])
            att = attention(q, keys, np.array(self.values[l][lo:]), c, None, lo)
            x = x + mv(layer["wo"], att)
            xb = rmsnorm(x, layer["ffn_norm"], c.norm_eps)
            x = x + swiglu(xb, layer, mv)
        x = rmsnorm(x, w["final_norm"], c.norm_eps)
        return mv(w["classifier"], x)


def logits(config, weights, tokens, matvec=matvec):
    """Transformer.forward over tokens from position 0: one row of logits per position."""
    model = Transformer(config, weights, matvec)
    return np.array([model.forward(token, pos) for pos, token in enumerate(tokens)])


# ------------------------------------------------------------------------------------------
# Choosing the next token, as llama2.c's sampler does (bit for bit: float32 and its RNG)

def greedy(logits):
    """Temperature 0: the id of the largest logit, the first one on a tie."""
    return int(np.argmax(logits))


class Sampler:
    """llama2.c's sampler: temperature, optional top-p (nucleus), and an xorshift64* RNG.
    Everything is float32 like the C code, so a logits row from the engine picks the same
    token here as there."""

    MASK = (1 << 64) - 1

    def __init__(self, vocab_size, temperature, topp, seed):
        self.vocab_size, self.temperature, self.topp = vocab_size, temperature, topp
        self.state = seed & self.MASK

    def random_u32(self):
        # xorshift64*: three shifts, then a multiply; the top 32 bits are the output.
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & self.MASK
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & self.MASK) >> 32

    def random_f32(self):
        # 24 random bits make a float32 in [0, 1) exactly.
        return np.float32((self.random_u32() >> 8) / np.float32(16777216.0))

    def sample(self, logits):
        logits = np.asarray(logits, dtype=np.float32)
        if self.temperature == 0.0:
            return greedy(logits)
        x = logits / np.float32(self.temperature)
        # expf rounds exp correctly (nearly always); so does exp in float64 rounded to float32.
        probs = np.exp((x - np.max(x)).astype(np.float64)).astype(np.float32)
        probs = probs / running_sum(probs)[-1]
        # One coin per token, drawn before deciding how to use it.
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_cdf(probs, coin)
        return sample_topp(probs, np.float32(self.topp), coin)


def running_sum(x):
    """Float32 running totals in order, as a C loop `sum += x[i]` computes them (np.sum would
    add pairwise and round differently)."""
    return np.cumsum(x, dtype=np.float32)


def sample_cdf(probs, coin):
    """The first index whose running total exceeds the coin."""
    above = np.nonzero(coin < running_sum(probs))[0]
    return int(above[0]) if above.size else len(probs) - 1  # rounding left the total short


def sample_topp(probs, topp, coin):
    """Nucleus sampling: draws from the smallest set of most likely tokens whose probability
    exceeds topp. Tokens below (1 - topp) / (n - 1) cannot be in that set, so llama2.c drops
    them before sorting to save time; the result is the same."""
    n = len(probs)
    cutoff = (np.float32(1.0) - topp) / np.float32(n - 1)
    ids = np.nonzero(probs >= cutoff)[0]
    # Most likely first. llama2.c sorts with qsort, which is not stable; exactly equal
    # probabilities are rare enough in real logits that their order does not come up.
    ids = ids[np.argsort(-probs[ids], kind="stable")]
    cdf = running_sum(probs[ids])
    over = np.nonzero(cdf > topp)[0]
    last = int(over[0]) if over.size else len(ids) - 1
    r = np.float32(coin * cdf[last])  # the coin, scaled to the kept probability mass
    hit = np.nonzero(r < cdf[:last + 1])[0]
    return int(ids[hit[0]]) if hit.size else int(ids[last])
