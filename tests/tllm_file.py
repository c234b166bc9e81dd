"""Reads a TLLM model file back with numpy, written from models/FORMAT.md alone (not from
export.py), so the tests check the exporter against the specification."""
import struct

import numpy as np

from common import read_bytes

FIELDS = [("magic", "4s"), ("version", "I"), ("dim", "I"), ("hidden_dim", "I"),
          ("n_layers", "I"), ("n_heads", "I"), ("n_kv_heads", "I"), ("head_size", "I"),
          ("vocab_size", "I"), ("seq_len", "I"), ("rope_theta", "f"), ("norm_eps", "f"),
          ("shared_classifier", "I"), ("bos_id", "i"), ("eos_id", "i"), ("weight_type", "I"),
          ("group_size", "I"), ("chat_template", "I"), ("tokenizer_kind", "I"),
          ("reserved", "I"), ("tokenizer_offset", "Q"), ("tokenizer_size", "Q"),
          ("weights_offset", "Q"), ("file_size", "Q")]


def align64(n):
    return (n + 63) // 64 * 64


class TllmFile:
    """header (dict), tokenizer_section (bytes), pieces [(bytes, score)], and per tensor name
    the raw stored arrays; value(name) gives the dequantised float32 tensor."""

    def __init__(self, path):
        data = read_bytes(path)
        self.data = data
        values = struct.unpack_from("<" + "".join(f for _, f in FIELDS), data, 0)
        h = self.header = dict(zip((n for n, _ in FIELDS), values))
        assert h["magic"] == b"TLLM" and h["version"] == 1, f"{path}: bad magic/version"
        assert data[112:256] == bytes(144), f"{path}: header padding is not zero"
        assert h["file_size"] == len(data), f"{path}: file_size {h['file_size']} != {len(data)}"
        assert h["tokenizer_offset"] == 256 and h["weights_offset"] % 64 == 0
        assert h["weights_offset"] == align64(256 + h["tokenizer_size"])
        self.tokenizer_section = data[256:256 + h["tokenizer_size"]]
        self.pieces = self._parse_tokenizer(self.tokenizer_section)
        assert len(self.pieces) == h["vocab_size"]
        self.tensors = {}
        pos = h["weights_offset"]
        for name, shape, is_norm in self.layout():
            wt = 0 if is_norm else h["weight_type"]
            n = int(np.prod(shape))
            assert pos % 64 == 0
            if wt == 0:
                self.tensors[name] = (0, np.frombuffer(data, "<f4", n, pos).reshape(shape))
                pos += 4 * n
            elif wt == 1:
                self.tensors[name] = (1, np.frombuffer(data, "<u2", n, pos).reshape(shape))
                pos += 2 * n
            else:
                gs = h["group_size"]
                assert gs in (32, 64)
                q = np.frombuffer(data, "<i1", n, pos).reshape(shape)
                pos = align64(pos + n)
                per_row = -(-shape[1] // gs)  # the last group of a row may be shorter
                scales = np.frombuffer(data, "<f4", shape[0] * per_row, pos) \
                    .reshape(shape[0], per_row)
                pos += 4 * scales.size
                self.tensors[name] = (2, (q, scales))
            if name != self.layout()[-1][0]:
                pos = align64(pos)
            else:
                end = pos
        assert end == len(data), f"{path}: tensors end at {end}, file is {len(data)} bytes"

    @staticmethod
    def _parse_tokenizer(section):
        n, max_len = struct.unpack_from("<II", section, 0)
        pos, pieces = 8, []
        for _ in range(n):
            score, length = struct.unpack_from("<fI", section, pos)
            pos += 8
            assert length <= max_len
            pieces.append((section[pos:pos + length], score))
            pos += length
        assert pos == len(section), "tokenizer section has trailing bytes"
        assert max_len == max(len(p) for p, _ in pieces)
        return pieces

    def layout(self):
        h = self.header
        d, hid = h["dim"], h["hidden_dim"]
        qd, kvd = h["n_heads"] * h["head_size"], h["n_kv_heads"] * h["head_size"]
        out = [("token_embedding", (h["vocab_size"], d), False)]
        for i in range(h["n_layers"]):
            out += [(f"layers.{i}.attn_norm", (d,), True), (f"layers.{i}.wq", (qd, d), False),
                    (f"layers.{i}.wk", (kvd, d), False), (f"layers.{i}.wv", (kvd, d), False),
                    (f"layers.{i}.wo", (d, qd), False), (f"layers.{i}.ffn_norm", (d,), True),
                    (f"layers.{i}.w1", (hid, d), False), (f"layers.{i}.w2", (d, hid), False),
                    (f"layers.{i}.w3", (hid, d), False)]
        out.append(("final_norm", (d,), True))
        if not h["shared_classifier"]:
            out.append(("classifier", (h["vocab_size"], d), False))
        return out

    def value(self, name):
        kind, stored = self.tensors[name]
        if kind == 0:
            return np.array(stored, dtype=np.float32)
        if kind == 1:
            return (stored.astype(np.uint32) << 16).view(np.float32)
        q, scales = stored
        group = np.arange(q.shape[1]) // self.header["group_size"]  # scale of each column
        return q.astype(np.float32) * scales[:, group]

    def classifier(self):
        return self.value("token_embedding" if self.header["shared_classifier"] else "classifier")
