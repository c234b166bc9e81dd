"""Tokenizer tests: tokenizer.c through the build/tokenize tool, against sentencepiece (the
Llama 2 tokenizer.model is the oracle for the ids), against a slow Python BPE written from the
algorithm's definition (for tok512.bin, which has no sentencepiece model), and against bad
files. The corpus is tests/tokenizer_corpus.json (regenerate with make_tokenizer_corpus.py)."""
import json
import math
import os
import random
import struct

import common
from common import frame, unframe, tokenize as tool, tokenize_ok as tool_ok
import reference

LLAMA_VOCAB = 32000
HERE = os.path.dirname(os.path.abspath(__file__))


def encode(tokenizer, vocab, texts, flags=()):
    """Ids for each text (str or bytes), and the encode time the tool reported."""
    recs = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    p = tool_ok(list(flags) + [tokenizer, vocab], frame(recs))
    lines = p.stdout.decode().split("\n")
    assert len(lines) == len(recs) + 1 and lines[-1] == "", "one line of ids per text expected"
    seconds = float(p.stderr.decode().split(" in ")[1].split()[0])
    return [[int(x) for x in line.split()] for line in lines[:-1]], seconds


def decode(tokenizer, vocab, id_lists, raw=False):
    """The bytes each list of ids decodes to, the first id following BOS."""
    stdin = "".join(" ".join(map(str, ids)) + "\n" for ids in id_lists).encode()
    p = tool_ok(["--decode"] + (["--raw"] if raw else []) + [tokenizer, vocab], stdin)
    out = unframe(p.stdout)
    assert len(out) == len(id_lists)
    return out


def stream(records):
    """For each record fed byte by byte to a Utf8Stream: (output, bytes returned per feed)."""
    p = tool_ok(["--stream"], frame(records))
    data, results, i = p.stdout, [], 0
    while i < len(data):
        nl = data.index(b"\n", i)
        n = int(data[i:nl])
        out = data[nl + 1:nl + 1 + n]
        end = data.index(b"\n", nl + 1 + n)
        counts = [int(x) for x in data[nl + 1 + n:end].split()]
        results.append((out, counts))
        i = end + 1
    return results


# ------------------------------------------------------------------------------------------
# References

def corpus():
    with open(os.path.join(HERE, "tokenizer_corpus.json"), encoding="utf-8") as f:
        texts = json.load(f)
    assert len(texts) >= 300
    return texts


def reference_bpe(pieces, text):
    """sentencepiece's BPE, written the slow obvious way: dummy prefix, U+2581 read as a space,
    one symbol per character, merge the best-scoring pair (leftmost on ties) until none forms
    a piece, then byte fallback. Control and byte pieces are not text."""
    if not text:
        return []
    normal = {}
    for i, (p, s) in enumerate(pieces):
        is_byte = len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">")
        if i > 2 and not is_byte and p not in normal:
            normal[p] = (i, s)
    byte_id = {int(p[3:5], 16): i for i, (p, _) in enumerate(pieces)
               if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">")}
    syms = [c.encode() for c in " " + text.replace("\u2581", " ")]
    while True:
        best = None
        for i in range(len(syms) - 1):
            hit = normal.get(syms[i] + syms[i + 1])
            if hit and (best is None or hit[1] > best[0]):
                best = (hit[1], i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    ids = []
    for s in syms:
        ids.extend([normal[s][0]] if s in normal else [byte_id[b] for b in s])
    return ids


def expected_text(s):
    """What decoding sentencepiece's ids gives back for s: U+2581 comes back as a space."""
    return s.replace("\u2581", " ").encode("utf-8")


def terminal_safe(data):
    """What Utf8Stream should let through: valid UTF-8 (maximal invalid subparts dropped, as
    Python's decoder drops them) without ASCII controls other than \\t \\n \\r."""
    text = data.decode("utf-8", "ignore")
    return "".join(c for c in text if c in "\t\n\r" or not (ord(c) < 0x20 or ord(c) == 0x7F)).encode()


def mismatches(texts, got, want, limit=8):
    bad = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    lines = [f"{len(bad)} of {len(texts)} differ"]
    for t, g, w in bad[:limit]:
        lines.append(f"  {t!r}: got {g}, want {w}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Encoding

def test_encode_matches_sentencepiece():
    sp = common.sentencepiece()
    texts = corpus()
    got, _ = encode(common.shared_model("tokenizer.bin"), LLAMA_VOCAB, texts)
    want = [sp.encode(t) for t in texts]
    assert got == want, mismatches(texts, got, want)


def test_encode_bos_eos():
    sp = common.sentencepiece()
    texts = ["", "Hello world", " x", "😀"]
    got, _ = encode(common.shared_model("tokenizer.bin"), LLAMA_VOCAB, texts, ["--bos", "--eos"])
    want = [[1] + sp.encode(t) + [2] for t in texts]
    assert got == want, mismatches(texts, got, want)


def test_reference_bpe_agrees_with_sentencepiece():
    # The Python reference is the oracle for tok512.bin, so first show it matches sentencepiece.
    sp = common.sentencepiece()
    pieces = list(zip(*reference.read_tokenizer(common.shared_model("tokenizer.bin"),
                                                LLAMA_VOCAB)))
    texts = [t for t in corpus() if len(t) < 200][::3]
    got = [reference_bpe(pieces, t) for t in texts]
    want = [sp.encode(t) for t in texts]
    assert got == want, mismatches(texts, got, want)


def test_invalid_utf8_becomes_byte_tokens():
    # Deliberately unlike sentencepiece, which turns each bad byte into U+FFFD: a bad byte is
    # encoded as its own <0xXX> token (id byte + 3), so the text survives decoding unchanged.
    sp = common.sentencepiece()
    b = lambda *xs: [x + 3 for x in xs]
    cases = [
        (b"a\xffb", sp.encode("a") + b(0xFF) + [29890]),              # 29890 = "b", no prefix
        (b"\xe2\x82", [29871] + b(0xE2, 0x82)),                        # truncated sequence
        (b"\xed\xa0\x80", [29871] + b(0xED, 0xA0, 0x80)),              # surrogate U+D800
        (b"\xc0\xaf", [29871] + b(0xC0, 0xAF)),                        # overlong "/"
        (b"\xf4\x90\x80\x80", [29871] + b(0xF4, 0x90, 0x80, 0x80)),    # above U+10FFFF
        (b"\x80", [29871] + b(0x80)),                                  # lone continuation
        (b"\xe2\x96", [29871] + b(0xE2, 0x96)),                        # start of U+2581, cut
        (b"ok\xe2\x82\xac\xe2\x82", sp.encode("ok€") + b(0xE2, 0x82)),  # valid then cut
    ]
    texts = [c[0] for c in cases]
    tok = common.shared_model("tokenizer.bin")
    got, _ = encode(tok, LLAMA_VOCAB, texts)
    want = [c[1] for c in cases]
    assert got == want, mismatches(texts, got, want)
    assert decode(tok, LLAMA_VOCAB, got, raw=True) == texts
    assert decode(tok, LLAMA_VOCAB, got) == [terminal_safe(t) for t in texts]


def test_random_bytes_round_trip():
    # Fuzz: arbitrary bytes never crash the encoder (run this against the sanitizer build
    # too), come back exactly from a raw decode, and the stream passes only what is safe.
    rng = random.Random(7)
    texts = []
    for _ in range(1500):
        n = rng.randint(0, 40)
        alphabet = rng.choice([range(1, 256), range(0x80, 0x100), b"\xe2\x82\xac\xf0\x9f\x98\x80 a\n"])
        texts.append(bytes(rng.choice(alphabet) for _ in range(n)))
    tok = common.shared_model("tokenizer.bin")
    ids, _ = encode(tok, LLAMA_VOCAB, texts)
    for t, i in zip(texts, ids):
        assert len(i) <= len(t) + 1, f"{t!r}: {len(i)} ids for {len(t)} bytes"
    raw = decode(tok, LLAMA_VOCAB, ids, raw=True)
    assert raw == texts, mismatches(texts, raw, texts)
    safe = decode(tok, LLAMA_VOCAB, ids)
    want = [terminal_safe(t) for t in texts]
    assert safe == want, mismatches(texts, safe, want)


def test_encode_100kb_matches_sentencepiece():
    # Inputs that are slow for a quadratic merge loop: one long word, one long run of spaces.
    # How fast they encode is tests/bench.py's business (make bench), not a test's.
    sp = common.sentencepiece()
    tok = common.shared_model("tokenizer.bin")
    texts = long_texts()
    got, _ = encode(tok, LLAMA_VOCAB, texts)
    assert got[0] == sp.encode(texts[0]), "100 KB text differs from sentencepiece"
    assert got[1] == sp.encode(texts[1]) and got[2] == sp.encode(texts[2])


def long_texts():
    """100 KB of the corpus, then 100 KB of 'a' and 100 KB of spaces."""
    text = "\n".join(corpus())
    text = (text * (100_000 // len(text.encode()) + 1)).encode()[:100_000].decode("utf-8", "ignore")
    return [text, "a" * 100_000, " " * 100_000]


# ------------------------------------------------------------------------------------------
# Decoding and the terminal stream

def test_decode_round_trip():
    texts = corpus()
    tok = common.shared_model("tokenizer.bin")
    ids, _ = encode(tok, LLAMA_VOCAB, texts)
    got = decode(tok, LLAMA_VOCAB, ids)
    want = [terminal_safe(expected_text(t)) for t in texts]
    assert got == want, mismatches(texts, got, want)
    # Texts without control characters come back exactly.
    plain = [i for i, t in enumerate(texts) if terminal_safe(expected_text(t)) == expected_text(t)]
    assert len(plain) > 300
    assert all(got[i] == expected_text(texts[i]) for i in plain)
    # A raw decode (no stream) gives back every text, controls included.
    raw = decode(tok, LLAMA_VOCAB, ids, raw=True)
    want = [expected_text(t) for t in texts]
    assert raw == want, mismatches(texts, raw, want)


def test_decode_matches_sentencepiece():
    sp = common.sentencepiece()
    texts = [t for t in corpus() if "\u2581" not in t]
    tok = common.shared_model("tokenizer.bin")
    ids = [sp.encode(t) for t in texts]
    got = decode(tok, LLAMA_VOCAB, ids, raw=True)
    want = [sp.decode(i).encode() for i in ids]
    assert got == want, mismatches(texts, got, want)


def test_decode_special_cases():
    tok = common.shared_model("tokenizer.bin")
    # "😀" is four byte tokens after the dummy-prefix piece; BOS and EOS stand for no text;
    # only the first piece after BOS loses its space.
    got = decode(tok, LLAMA_VOCAB, [[29871, 243, 162, 155, 131], [1, 22172, 2, 22172],
                                    [22172, 22172], [1, 1, 22172]])
    assert got == ["😀".encode(), b"hello hello", b"hello hello", b"hello"], got
    p = tool(["--decode", tok, LLAMA_VOCAB], b"32000\n")
    assert p.returncode == 1 and b"outside the vocabulary" in p.stderr


def test_utf8_stream():
    emoji = "😀".encode()
    cases = [
        (emoji, emoji, [0, 0, 0, 4]),                       # held back until complete
        (b"a\xffb", b"ab", [1, 0, 1]),                      # invalid byte dropped
        (b"\x07bell\x1b[31m", b"bell[31m", [0, 1, 1, 1, 1, 0, 1, 1, 1, 1]),  # controls dropped
        (b"\t\n\r x", b"\t\n\r x", [1, 1, 1, 1, 1]),      # whitespace kept
        (b"\xe2\x82a", b"a", [0, 0, 1]),                    # broken sequence dropped, 'a' kept
        (b"\xe2\xe2\x82\xac", "€".encode(), [0, 0, 0, 3]),  # a new start byte restarts
        (b"\xc3\xa9\x7f\x00", "é".encode(), [0, 2, 0, 0]),  # DEL and NUL dropped
        (b"\xed\xa0\x80", b"", [0, 0, 0]),                  # surrogate refused
        (b"\xe0\x80\x80", b"", [0, 0, 0]),                  # overlong refused
        (b"\xf4\x90\x80\x80", b"", [0, 0, 0, 0]),          # above U+10FFFF refused
        (b"\xf4\x8f\xbf\xbf", "\U0010ffff".encode(), [0, 0, 0, 4]),  # the last code point
        (b"\xf0\x9f\x98", b"", [0, 0, 0]),                  # incomplete at the end
        ("👨‍👩‍👧".encode(), "👨‍👩‍👧".encode(), None),           # ZWJ sequence intact
    ]
    got = stream([c[0] for c in cases])
    for (inp, out, counts), (g_out, g_counts) in zip(cases, got):
        assert g_out == out, f"{inp!r}: got {g_out!r}, want {out!r}"
        if counts is not None:
            assert g_counts == counts, f"{inp!r}: feeds returned {g_counts}, want {counts}"


# ------------------------------------------------------------------------------------------
# Loading, including hostile files

def llama_body():
    return common.read_bytes(common.shared_model("tokenizer.bin"))


def write_tmp(name, data):
    path = common.tmp_path(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def piece_offset(body, i):
    """Offset of piece i's score in a tokenizer.bin body."""
    off = 4
    for _ in range(i):
        off += 8 + struct.unpack_from("<i", body, off + 4)[0]
    return off


def test_bad_tokenizer_files():
    body = llama_body()
    p17 = piece_offset(body, 17)
    neg = bytearray(body)
    struct.pack_into("<i", neg, p17 + 4, -5)
    long_piece = bytearray(body)
    struct.pack_into("<i", long_piece, p17 + 4, 1000)
    nan = bytearray(body)
    struct.pack_into("<f", nan, p17, float("nan"))
    huge = bytearray(body)
    struct.pack_into("<i", huge, p17 + 4, 0x7FFFFFFF)
    cases = [
        ("empty", b"", 32000, "truncated before max_token_length"),
        ("three", b"\x1b\x00\x00", 32000, "truncated before max_token_length"),
        ("cut17", body[:p17 + 10], 32000, "truncated at piece 17"),
        ("cut17b", body[:p17 + 5], 32000, "truncated at piece 17"),
        ("neg17", bytes(neg), 32000, "piece 17 has a negative length (-5)"),
        ("long17", bytes(long_piece), 32000, "piece 17 is 1000 bytes, longer than max_token_length 27"),
        ("huge17", bytes(huge), 32000, "longer than max_token_length"),
        ("nan17", bytes(nan), 32000, "piece 17 has a score that is not a finite number"),
        ("negmax", struct.pack("<i", -1) + body[4:], 32000, "max_token_length -1 is negative"),
        ("few", body[:p17], 32000, "tokenizer has 17 pieces but the model needs 32000"),
        ("vocab0", body, 0, "vocab_size 0 is not positive"),
    ]
    for name, data, vocab, message in cases:
        p = tool([write_tmp(f"bad_{name}.bin", data), vocab], b"")
        err = p.stderr.decode(errors="replace")
        assert p.returncode == 1 and message in err, f"{name}: exit {p.returncode}, stderr {err!r}"
        assert err.count("\n") == 1, f"{name}: want one line, got {err!r}"
    p = tool([common.shared_model("tok512.bin"), 32000], b"")
    assert p.returncode == 1 and b"tokenizer has 512 pieces but the model needs 32000" in p.stderr, p.stderr
    p = tool([common.tmp_path("does_not_exist.bin"), 32000], b"")
    assert p.returncode == 1 and b"cannot open" in p.stderr, p.stderr
    # A file with more pieces than the model uses is fine (llama2.c allows it).
    got, _ = encode(common.shared_model("tokenizer.bin"), 300, ["hello"])
    assert all(i < 300 for i in got[0])


def test_load_memory_section():
    body = llama_body()
    section = struct.pack("<I", LLAMA_VOCAB) + body
    texts = corpus()[:100]
    good = write_tmp("section.bin", section)
    got, _ = encode(good, LLAMA_VOCAB, texts, ["--memory"])
    want, _ = encode(common.shared_model("tokenizer.bin"), LLAMA_VOCAB, texts)
    assert got == want
    cases = [
        ("count", struct.pack("<I", 31999) + body, "tokenizer has 31999 pieces but the model needs 32000"),
        ("bigcount", struct.pack("<I", 0xFFFFFFFF) + body, "pieces but the model needs 32000"),
        ("short", b"\x00\x7d", "too short for its piece count"),
        ("trailing", section + b"xyz", "3 unexpected bytes after the last piece"),
        ("cut", section[:-3], "truncated at piece 31999"),
        ("cutend", section[:4 + piece_offset(body, 31999)], "truncated at piece 31999"),
    ]
    for name, data, message in cases:
        p = tool(["--memory", write_tmp(f"section_{name}.bin", data), LLAMA_VOCAB], b"")
        err = p.stderr.decode(errors="replace")
        assert p.returncode == 1 and message in err, f"{name}: exit {p.returncode}, stderr {err!r}"


def loads(data, vocab_size):
    """Whether a tokenizer.bin body is one the loader must accept, by the rules TESTING.md
    lists: max_token_length 0..1024, then at least vocab_size pieces, each with a finite
    score and a length from 0 to max_token_length that fits in the data (bytes after them
    are allowed in a file)."""
    if len(data) < 4:
        return False
    (max_len,) = struct.unpack_from("<i", data, 0)
    if not 0 <= max_len <= 1024:
        return False
    at = 4
    for _ in range(vocab_size):
        if len(data) - at < 8:
            return False
        score, n = struct.unpack_from("<fi", data, at)
        at += 8
        if not math.isfinite(score) or not 0 <= n <= max_len or n > len(data) - at:
            return False
        at += n
    return True


def test_fuzzed_tokenizer_files():
    # Random corruption of a small tokenizer: each file must load exactly when loads() says
    # it is valid (then encode to ids inside the vocabulary), and otherwise be refused with
    # one line naming the file; never a crash (the sanitizer build turns silent overreads
    # into failures).
    body = common.read_bytes(common.shared_model("tok512.bin"))
    rng = random.Random(11)
    outcomes = set()
    for k in range(60):
        data = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        path = write_tmp("fuzz.bin", bytes(data))
        p = tool([path, 512], frame([b"Once upon a time"]))
        valid = loads(bytes(data), 512)
        outcomes.add(valid)
        assert p.returncode == (0 if valid else 1), \
            f"fuzz case {k}: exit {p.returncode}, the file is {'' if valid else 'not '}valid"
        if valid:
            ids = p.stdout.split()
            assert ids and all(0 <= int(i) < 512 for i in ids), f"fuzz case {k}: {p.stdout!r}"
        else:
            lines = p.stderr.decode(errors="replace").splitlines()
            assert len(lines) == 1 and path in lines[0], f"fuzz case {k}: {lines}"
    assert outcomes == {True, False}, "the corruptions should give valid and invalid files"


# ------------------------------------------------------------------------------------------
# tok512.bin, the stories260K tokenizer

def test_tok512():
    path = common.shared_model("tok512.bin")
    pieces = list(zip(*reference.read_tokenizer(path, 512)))
    texts = corpus()
    ids, _ = encode(path, 512, texts)
    assert all(0 <= i < 512 for line in ids for i in line)
    # Sensible: common English compresses, and matches the slow reference BPE.
    story = "Once upon a time, there was a little girl named Lily."
    (story_ids,), _ = encode(path, 512, [story])
    assert len(story_ids) < len(story) / 2, story_ids
    assert story_ids == reference_bpe(pieces, story), story_ids
    short = [t for t in texts if len(t) < 300]
    want = [reference_bpe(pieces, t) for t in short]
    got = [ids[i] for i, t in enumerate(texts) if len(t) < 300]
    assert got == want, mismatches(short, got, want)
    # Round trip, byte fallback included.
    raw = decode(path, 512, ids, raw=True)
    want = [expected_text(t) for t in texts]
    assert raw == want, mismatches(texts, raw, want)


def test_control_pieces_are_not_text():
    # sentencepiece never produces <unk>, <s>, </s> or a byte piece from text, even when merges
    # spell one out. A made-up vocabulary where they can be spelled: "<s" + ">" is "<s>" (BOS)
    # and "<0x41" + ">" is "<0x41>" (the byte A).
    normal = [" ", "<", "s", ">", "/", "0", "x", "4", "1", "u", "n", "k", "<s", "</", "</s",
              "<0", "<0x", "<0x4", "<0x41", "<u", "<un", "<unk", " <"]
    pieces = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % b for b in range(256)]
    pieces += [p.encode() for p in normal]
    scores = [0.0] * 259 + [-float(i) for i in range(len(normal))]
    body = struct.pack("<i", max(len(p) for p in pieces))
    body += b"".join(struct.pack("<fi", s, len(p)) + p for p, s in zip(pieces, scores))
    path = write_tmp("control.bin", body)
    texts = ["<s>", "</s>", "<0x41>", "<unk>", "a<s>b", "<s><s>"]
    got, _ = encode(path, len(pieces), texts)
    want = [reference_bpe(list(zip(pieces, scores)), t) for t in texts]
    assert got == want, mismatches(texts, got, want)
    assert all(i > 2 for ids in got for i in ids)
