"""Reads the attention recording `run --attn FILE` writes (layout: attnviz.h, docs/ATTENTION.md).

    rec = read_attn(path)
    rec.weights(layer, head, pos)     float32 array (pos + 1): what the query at pos read
    rec.matrix(layer, head)           (n, n) array, zeros above the diagonal (the future)
    rec.tokens, rec.pieces, rec.kv_head, rec.n_layers, rec.n_heads, rec.n_kv_heads, rec.n

The reader checks the file as it goes: the magic, the version, that the rows start where the
header says and that the file ends exactly after the last row.
"""
import struct

import numpy as np


class Recording:
    def __init__(self, n_layers, n_heads, n_kv_heads, kv_head, tokens, pieces, rows):
        self.n_layers, self.n_heads, self.n_kv_heads = n_layers, n_heads, n_kv_heads
        self.kv_head, self.tokens, self.pieces = kv_head, tokens, pieces
        self.n = len(tokens)
        self.rows = rows  # all rows, position-major, then layer, then head

    def start(self, layer, head, pos):
        """Index of the first weight of (layer, head, pos) in rows: all rows of positions
        before pos come first, 1 + 2 + ... + pos weights for each (layer, head)."""
        before = self.n_layers * self.n_heads * (pos * (pos + 1) // 2)
        return before + (layer * self.n_heads + head) * (pos + 1)

    def weights(self, layer, head, pos):
        at = self.start(layer, head, pos)
        return self.rows[at:at + pos + 1]

    def matrix(self, layer, head):
        m = np.zeros((self.n, self.n), dtype=np.float64)
        for pos in range(self.n):
            m[pos, :pos + 1] = self.weights(layer, head, pos)
        return m


def read_attn(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"ATTN", f"{path}: magic {data[:4]!r}, expected b'ATTN'"
    version, n_layers, n_heads, n_kv_heads, n, rows_offset = struct.unpack_from("<5IQ", data, 4)
    assert version == 1, f"{path}: version {version}"
    kv_head = list(struct.unpack_from(f"<{n_heads}i", data, 32))
    at = 32 + 4 * n_heads
    tokens, pieces = [], []
    for _ in range(n):
        token, length = struct.unpack_from("<iI", data, at)
        tokens.append(token)
        pieces.append(data[at + 8:at + 8 + length])
        at += 8 + length
    assert rows_offset == (at + 3) // 4 * 4, f"{path}: rows_offset {rows_offset}, table ends at {at}"
    assert data[at:rows_offset] == bytes(rows_offset - at), f"{path}: padding is not zero"
    floats = n_layers * n_heads * n * (n + 1) // 2
    assert len(data) == rows_offset + 4 * floats, (
        f"{path}: {len(data)} bytes, expected {rows_offset + 4 * floats} for {n} positions")
    rows = np.frombuffer(data, dtype="<f4", count=floats, offset=rows_offset)
    return Recording(n_layers, n_heads, n_kv_heads, kv_head, tokens, pieces, rows)
