#!/usr/bin/env python3
"""The numbers quoted in docs/WATCHING_ATTENTION.md, computed from a real recording.

Usage (from the project root, after `make`):
    /usr/bin/python3 docs/attention_facts.py [RECORDING.attn]

Without an argument it records stories260K itself, greedy with no prompt for 200 steps:
    ./run ../shared/models/stories260K.bin -z ../shared/models/tok512.bin -t 0 -n 200 \\
          --attn build/stories.attn
and prints, per layer and head: the mean entropy of its rows, the mean weight on the previous
token, on the first token (BOS) and on the token itself; then how alike the heads that share
a key/value head are, compared with heads that do not.

Every mean is over query positions 1..n-1 (position 0 can only read itself).
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from attnfile import read_attn  # noqa: E402

MODELS = os.path.join("..", "shared", "models")


def record():
    path = os.path.join("build", "stories.attn")
    subprocess.run(["./run", os.path.join(MODELS, "stories260K.bin"), "-z",
                    os.path.join(MODELS, "tok512.bin"), "-t", "0", "-n", "200", "--attn", path],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def entropy_bits(w):
    w = w[w > 0]
    return float(-np.sum(w * np.log2(w)))


def head_stats(rec, l, h):
    ent, prev, first, self_ = [], [], [], []
    for pos in range(1, rec.n):
        w = rec.weights(l, h, pos).astype(np.float64)
        ent.append(entropy_bits(w))
        prev.append(w[pos - 1])
        first.append(w[0])
        self_.append(w[pos])
    return dict(ent=np.mean(ent), prev=np.mean(prev), first=np.mean(first), self=np.mean(self_))


def distance(rec, l, a, b):
    """Mean total-variation distance between the rows of heads a and b of layer l: 0 when
    they attend identically, 1 when they never read the same positions."""
    return float(np.mean([0.5 * np.sum(np.abs(rec.weights(l, a, p) - rec.weights(l, b, p)))
                          for p in range(1, rec.n)]))


def word_start(pieces, pos):
    """The position of the first piece of the word the piece at pos belongs to: step back
    while this piece continues the letters of the one before (no leading space)."""
    while (pos > 1 and pieces[pos][:1].isalpha() and pieces[pos - 1][-1:].isalpha()):
        pos -= 1
    return pos


def deep_pieces(rec, layer, head):
    """For pieces that are the third or later of a word (tok512 spells 'girl' as ' g' 'ir'
    'l'), how often the head's strongest weight is on the previous piece and how often on the
    word's first piece. Returns (count, share on previous, share on the word start)."""
    pieces = [p.decode("utf-8", errors="replace") for p in rec.pieces]
    deep = [p for p in range(2, rec.n) if word_start(pieces, p) < p - 1]
    best = [int(np.argmax(rec.weights(layer, head, p))) for p in deep]
    prev = np.mean([b == p - 1 for b, p in zip(best, deep)])
    start = np.mean([b == word_start(pieces, p) for b, p in zip(best, deep)])
    return len(deep), prev, start


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else record()
    rec = read_attn(path)
    print(f"{path}: {rec.n} positions, {rec.n_layers} layers, {rec.n_heads} query heads, "
          f"{rec.n_kv_heads} KV heads; kv_head = {rec.kv_head}")
    uniform = np.mean([np.log2(p + 1) for p in range(1, rec.n)])
    print(f"a uniform row would have {uniform:.2f} bits on average over these positions\n")
    print("layer head kv  entropy  prev  first  self   pattern")
    for l in range(rec.n_layers):
        for h in range(rec.n_heads):
            s = head_stats(rec, l, h)
            kind = ("previous token" if s["prev"] > 0.5 else "first token" if s["first"] > 0.5
                    else "itself" if s["self"] > 0.5 else "")
            print(f"{l:5d} {h:4d} {rec.kv_head[h]:2d}  {s['ent']:7.2f}  {s['prev']:.2f}  "
                  f"{s['first']:.2f}   {s['self']:.2f}   {kind}")
        print()
    print("layer  mean entropy  sharpest head  most diffuse head")
    for l in range(rec.n_layers):
        ents = [head_stats(rec, l, h)["ent"] for h in range(rec.n_heads)]
        print(f"{l:5d}  {np.mean(ents):12.2f}  {int(np.argmin(ents)):4d} ({min(ents):.2f})"
              f"      {int(np.argmax(ents)):4d} ({max(ents):.2f})")
    print("\nWeight on the first token (BOS) by query position: mean over heads, and the "
          "largest head")
    ranges = [(1, 8), (8, 32), (32, rec.n)]
    print("layer  " + "  ".join(f"pos {a:3d}-{b - 1:<3d}     " for a, b in ranges))
    for l in range(rec.n_layers):
        cells = []
        for a, b in ranges:
            per_head = [np.mean([rec.weights(l, h, p)[0] for p in range(a, b)])
                        for h in range(rec.n_heads)]
            cells.append(f"{np.mean(per_head):.2f} (H{int(np.argmax(per_head))} "
                         f"{max(per_head):.2f})")
        print(f"{l:5d}  " + "  ".join(f"{c:16s}" for c in cells))
    uniform = [np.mean([1.0 / (p + 1) for p in range(a, b)]) for a, b in ranges]
    print("a uniform row would give  " + "  ".join(f"{u:.2f}" + " " * 14 for u in uniform))
    print("\nPieces deep inside a word: where does the strongest weight go? (layer 1)")
    for h in range(rec.n_heads):
        n, prev, start = deep_pieces(rec, 1, h)
        print(f"  head {h} (kv {rec.kv_head[h]}): {n} pieces, previous piece {prev:.2f}, "
              f"first piece of the word {start:.2f}")
    print("\nHow alike are heads that share keys and values? (mean total-variation distance)")
    print("layer  same KV head  different KV heads")
    for l in range(rec.n_layers):
        same, other = [], []
        for a in range(rec.n_heads):
            for b in range(a + 1, rec.n_heads):
                (same if rec.kv_head[a] == rec.kv_head[b] else other).append(distance(rec, l, a, b))
        print(f"{l:5d}  {np.mean(same):12.2f}  {np.mean(other):18.2f}")


if __name__ == "__main__":
    main()
