"""A GGUF writer for the tests, from the specification (ggml's docs/gguf.md): a 24-byte header
(magic, u32 version, u64 tensor count, u64 metadata count), typed key/value metadata, tensor
infos (name, dimensions fastest-varying first, ggml type, offset), then the data from the next
multiple of the alignment, each tensor aligned. Only what the tests need: scalars, strings,
arrays of numbers and strings; F32, F16, BF16, Q8_0 and Q4_0 tensors, or raw bytes of any
type."""
import struct

import numpy as np

F32, F16, Q4_0, Q8_0, Q4_K, BF16 = 0, 1, 2, 8, 12, 30


def _string(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(v):
    """(GGUF value type, encoded value) of a Python or numpy value."""
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return (5, struct.pack("<i", v)) if v < 0 else (4, struct.pack("<I", v))
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, (str, bytes)):
        return 8, _string(v)
    if isinstance(v, np.ndarray):
        kind = {np.dtype("<f4"): 6, np.dtype("<i4"): 5, np.dtype("<u4"): 4}[v.dtype]
        return 9, struct.pack("<IQ", kind, v.size) + v.tobytes()
    assert isinstance(v, list) and all(isinstance(x, str) for x in v), v
    return 9, struct.pack("<IQ", 8, len(v)) + b"".join(_string(x) for x in v)


def q8_0_blocks(x):
    """Q8_0 as ggml stores it: per 32 values along a row an fp16 scale max|x| / 127 and 32
    int8 round(x / scale). Returns (bytes, the values they stand for as float32)."""
    rows, cols = x.shape
    g = x.reshape(rows, cols // 32, 32).astype(np.float32)
    d = (np.abs(g).max(axis=2) / 127).astype(np.float16)
    df = d.astype(np.float32)[..., None]
    q = np.clip(np.rint(np.divide(g, df, out=np.zeros_like(g), where=df > 0)), -127,
                127).astype(np.int8)
    blocks = np.zeros((rows, cols // 32), dtype=[("d", "<f2"), ("q", "i1", 32)])
    blocks["d"], blocks["q"] = d, q
    return blocks.tobytes(), (q.astype(np.float32) * df).reshape(rows, cols)


def q4_0_blocks(x):
    """Q4_0 as ggml stores it (block_q4_0), with ggml's reference quantizer: per 32 values
    along a row, m the value of largest magnitude, d = m / -8 as fp16, and 16 bytes whose
    byte i holds min(15, trunc(x_i / d + 8.5)) in its low nibble and the same of x_{i+16} in
    its high one. Returns (bytes, the values they stand for as float32: (nibble - 8) d)."""
    rows, cols = x.shape
    g = x.reshape(rows, cols // 32, 32).astype(np.float32)
    m = np.take_along_axis(g, np.abs(g).argmax(axis=2)[..., None], axis=2)[..., 0]
    d = (m / np.float32(-8)).astype(np.float32)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    nib = np.minimum(15, (g * inv[..., None] + np.float32(8.5)).astype(np.int32))
    blocks = np.zeros((rows, cols // 32), dtype=[("d", "<f2"), ("qs", "u1", 16)])
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = (nib[..., :16] | nib[..., 16:] << 4).astype(np.uint8)
    values = (nib - 8).astype(np.float32) * blocks["d"].astype(np.float32)[..., None]
    return blocks.tobytes(), values.reshape(rows, cols)


def encode(x, kind):
    """(bytes, the values stored as float32) of array x as ggml type kind."""
    x = np.asarray(x, np.float32)
    if kind == F32:
        return x.astype("<f4").tobytes(), x
    if kind == F16:
        h = x.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    if kind == BF16:
        b = (x.view(np.uint32) >> 16).astype("<u2")  # truncation: any bf16 value will do
        return b.tobytes(), (b.astype(np.uint32) << 16).view(np.float32)
    if kind == Q4_0:
        return q4_0_blocks(x)
    assert kind == Q8_0
    return q8_0_blocks(x)


def write_gguf(path, metadata, tensors, version=3, alignment=32):
    """metadata: [(key, value)]; tensors: [(name, ggml type, array)] or (name, type, dims,
    raw bytes). Returns {name: the values stored as float32} of the encoded arrays."""
    head = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(metadata))]
    for key, value in metadata:
        kind, raw = _value(value)
        head.append(_string(key) + struct.pack("<I", kind) + raw)
    infos, blobs, stored, offset = [], [], {}, 0
    for t in tensors:
        if len(t) == 3:
            name, kind, x = t
            raw, stored[name] = encode(x, kind)
            dims = tuple(reversed(np.shape(x)))  # fastest-varying first
        else:
            name, kind, dims, raw = t
        offset = -(-offset // alignment) * alignment
        infos.append(_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind,
                                                 offset))
        blobs.append((offset, raw))
        offset += len(raw)
    out = b"".join(head + infos)
    out += bytes(-len(out) % alignment)
    start = len(out)
    data = bytearray(offset)
    for at, raw in blobs:
        data[at:at + len(raw)] = raw
    with open(path, "wb") as f:
        f.write(out + bytes(data))
    return stored, start
