#!/usr/bin/env python3
"""make bench: the engine's speed on random-weight models of real shapes (see BENCHMARKS.md).

For each case, one line on stdout:

  bench model=NAME dtype=DTYPE threads=T prefill_tok_s=X decode_tok_s=Y ttft_ms=Z ...
        stream_gb_s=S fma_gflop_s=F decode_bw=B decode_ideal=I prefill_fma=P

prefill_tok_s: a 256-token prompt, timed alone (the classifier runs for its last position
only); decode_tok_s: the 128 tokens generated after it, one at a time (greedy). Both come from
`run -v` (its `key: value` lines on stderr), as do ttft_ms (start of the prompt to the first
generated token; load_ms + ttft_ms is the time from start to first token), weights_gb_s
(weight bytes per token x decode tok/s) and peak_rss_mb. stream_gb_s is the machine's read
bandwidth with T threads (`build/machine_limits --stream T`), probed before each run and after
the last: on a shared machine it drifts, on this one it switches between about 35 and 60 GB/s
within seconds, and decoding a large model is bound by it. A run is held to the higher of the
two probes around it, and stream_gb_s is that bound for the run decode_bw reports (the run
with the best ratio, not always the one with the best decode_tok_s).
fma_gflop_s is the machine's float32 multiply-add peak (`--fma T`), which bounds a prompt.
Each number is then put as the fraction of its bound it reached, so that a regression shows
as a ratio whatever the machine's mood:
  decode_bw    (weight bytes + KV cache bytes read per token) x decode tok/s / stream_gb_s;
               the KV cache's bytes (4, 2 or 1 per value for --kv-type f32, bf16,
               q8), read at the positions of the generated tokens (256-383: 320 on
               average, after a 256-token prompt)
  decode_ideal the same bytes x decode tok/s against what an ideal decoder reads per second
               in the same sitting: `build/machine_limits --products`, which reads a token's
               bytes product by product in the engine's order (per layer q, k and v; the
               cache; wo; w1 and w3; w2; then the classifier), each product one parallel
               pass, with no arithmetic. It runs before each run and after the last, and a run
               is held to the higher of the two around it. Handing over from one product to
               the next costs even this reader part of the stream in some hours
               (BENCHMARKS.md, "What an ideal decoder reaches"), so decode_bw moves with the
               machine's mood where decode_ideal moves much less: what is left below 1 is
               the engine's own
  prefill_fma  FLOP per prompt token (2 per weight of the layers, the attention scores and
               weighted sums at the prompt's positions, the classifier once per prompt) x prefill
               tok/s / fma_gflop_s. Q8_0 and Q4_0 prompts do their multiply-adds in int8
               (VNNI: four per lane per instruction), so theirs can pass 1.
Each case runs --repeat times and reports the best run of each number (decode_bw: the best
run's against its own bound): the machine is shared, and interference only ever slows a run
down.

Models come from `export.py --random SHAPE --dtype DTYPE --seq-len 512` (SHAPE also one of
the family shapes smollm2-135M, qwen2.5-0.5B, llama3.2-1B) and are cached under
build/bench/ (delete them to regenerate). A case NAME:DTYPE:no-mmap runs with `--no-mmap`
(weights no kernel rearranges copied into memory: only the plain C build has any); its line
ends with `mmap=no`. A case NAME:DTYPE:sample samples with llama2.c's default temperature and
top-p, seed 1 (`-t 1 -p 0.9 -s 1`), instead of decoding greedily; its line ends with `sampling=t1,p0.9`.

First, one line for the tokenizer: `bench tokenizer=llama2 bytes=N encode_ms=X mb_s=Y`, the
best of --repeat encodings (build/tokenize, as tests/test_tokenizer.py runs it) of 100 KB of
tests/tokenizer_corpus.json, 100 KB of 'a' and 100 KB of spaces: inputs that a merge loop
quadratic in the length would make slow.

Long contexts: a case NAME:DTYPE:long runs prompts of 256, 1024 and 3072 tokens (a line each,
ending with `prompt=N`), each followed by 128 generated tokens, on a model with a context of
4096 (the TL7 shape: TinyLlama's attention, 32 query heads sharing 4 KV heads of 64, in 7
layers). :kv-bf16 and :kv-q8 add `--kv-type bf16` or `q8` (`kv=bf16`, `kv=q8`); variants
combine (TL7:q8_0:long:kv-q8).

With --against OTHER_RUN, each case instead runs ./run and OTHER_RUN alternately, --repeat
times each, and prints the medians, their ratio, and the median ratio of neighbouring runs
(paired): the way to tell whether a change made the engine faster on a machine whose speed
drifts.

Usage: bench.py [--threads 1,2] [--repeat 3] [--cases 15M:f32,110M:q8_0:no-mmap,...]
                [--against OTHER_RUN]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # export.py: the shapes of --random and the bytes of their tensors
BENCH_DIR = os.path.join(ROOT, "build", "bench")
RUN = os.path.join(ROOT, "run")
PYTHON = "/usr/bin/python3"
CASES = ["15M:f32", "15M:bf16", "15M:q8_0", "15M:q4_0", "110M:f32", "110M:bf16", "110M:q8_0",
         "110M:q4_0", "135M:q8_0", "15M:q8_0:sample",
         # today's families (export.py's FAMILY_SHAPES): large tied vocabularies, Qwen2's
         # biases, Llama 3.2's RoPE scaling; the sampled case weighs top-p over 151936 logits
         "smollm2-135M:q8_0", "smollm2-135M:bf16", "qwen2.5-0.5B:q8_0", "qwen2.5-0.5B:bf16",
         "qwen2.5-0.5B:q8_0:sample", "llama3.2-1B:q8_0", "llama3.2-1B:bf16",
         # long contexts: TinyLlama's attention at 256, 1024 and 3072 positions, per KV type
         "TL7:q8_0:long", "TL7:q8_0:long:kv-bf16", "TL7:q8_0:long:kv-q8"]
VARIANTS = {"no-mmap": (["--no-mmap"], " mmap=no"),
            "sample": (["-t", "1", "-p", "0.9", "-s", "1"], " sampling=t1,p0.9"),
            "kv-bf16": (["--kv-type", "bf16"], " kv=bf16"),
            "kv-q8": (["--kv-type", "q8"], " kv=q8"),
            "long": ([], "")}
SEQ_LEN = 512
LONG_SEQ_LEN = 4096
LONG_PROMPTS = (256, 1024, 3072)
PROMPT_TOKENS = 256
NEW_TOKENS = 128
def prompt(tokens):
    """tokens - 2 lone UTF-8 continuation bytes: invalid as text, so each one becomes its own
    byte-fallback token, whatever merges the model's tokenizer has. With BOS and the leading
    space that SentencePiece-style encoding adds, exactly `tokens` tokens (checked against -v
    below)."""
    return bytes(0x80 + i % 64 for i in range(tokens - 2))


def tokenizer_line(repeat):
    """The tokenizer's encoding speed on 3 x 100 KB with the Llama 2 vocabulary, as one line."""
    with open(os.path.join(ROOT, "tests", "tokenizer_corpus.json"), encoding="utf-8") as f:
        text = "\n".join(json.load(f)).encode()
    texts = [(text * (100_000 // len(text) + 1))[:100_000], b"a" * 100_000, b" " * 100_000]
    frame = b"".join(b"%d\n" % len(t) + t for t in texts)
    exe = os.path.join(ROOT, "build", "tokenize")
    vocab = os.path.join(ROOT, "..", "shared", "models", "tokenizer.bin")
    best = None
    for _ in range(repeat):
        p = subprocess.run([exe, vocab, "32000"], input=frame, capture_output=True, timeout=600)
        if p.returncode != 0:
            sys.exit(f"bench: tokenize exited {p.returncode}: {p.stderr.decode(errors='replace')}")
        seconds = float(p.stderr.decode().split(" in ")[1].split()[0])  # "encoded N bytes in S s"
        best = seconds if best is None else min(best, seconds)
    n = sum(len(t) for t in texts)
    return f"bench tokenizer=llama2 bytes={n} encode_ms={best * 1000:.1f} mb_s={n / best / 1e6:.1f}"


def model_path(name, dtype, seq_len=SEQ_LEN):
    """The cached random model, exported first if missing."""
    path = os.path.join(BENCH_DIR, f"{name}-{dtype}" + (f"-{seq_len}" if seq_len != SEQ_LEN else "")
                        + ".bin")
    if not os.path.exists(path):
        os.makedirs(BENCH_DIR, exist_ok=True)
        tmp = path + ".tmp"
        p = subprocess.run([PYTHON, os.path.join(ROOT, "export.py"), tmp, "--random", name,
                            "--dtype", dtype, "--seq-len", str(seq_len)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:  # export.py's own one-line reason (numpy missing, say)
            sys.exit(f"bench: making {path}: {p.stderr.strip()}")
        os.replace(tmp, path)
    return path


def run_once(path, threads, flags, run=RUN, prompt_tokens=PROMPT_TOKENS):
    """One generation with -v; returns its statistics as a dict of floats."""
    args = [run, path, "-t", "0", "-n", str(prompt_tokens + NEW_TOKENS), "-i",
            prompt(prompt_tokens), "-v", "--threads", str(threads)] + flags
    p = subprocess.run(args, capture_output=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"bench: {path}: run exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    stats = {}
    for line in p.stderr.decode().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            try:
                stats[key] = float(value)
            except ValueError:
                pass
    if stats.get("prompt_tokens") != prompt_tokens:
        sys.exit(f"bench: {path}: the prompt was {stats.get('prompt_tokens')} tokens, "
                 f"not {prompt_tokens}")
    return stats


def stream_gb_s(threads):
    """The machine's read bandwidth right now (build/machine_limits --stream), or 0."""
    exe = os.path.join(ROOT, "build", "machine_limits")
    try:
        p = subprocess.run([exe, "--stream", str(threads)], capture_output=True, timeout=120)
        return float(p.stdout)
    except (OSError, ValueError):  # not built (make bench builds it), or no AVX
        return 0.0


def fma_gflop_s(threads):
    """The machine's float32 FMA peak right now (build/machine_limits --fma), or 0."""
    exe = os.path.join(ROOT, "build", "machine_limits")
    try:
        p = subprocess.run([exe, "--fma", str(threads)], capture_output=True, timeout=120)
        return float(p.stdout)
    except (OSError, ValueError):
        return 0.0


def ideal_gb_s(threads, products):
    """What an ideal decoder of these products reads per second right now (build/machine_limits
    --products, as many tokens as make about 16 GB, 8 to 128), or 0 (said on stderr)."""
    layers, sizes, last = products
    token = layers * sum(sizes) + last
    tokens = max(8, min(128, int(16e9 // token)))
    exe = os.path.join(ROOT, "build", "machine_limits")
    try:
        p = subprocess.run([exe, "--products", str(threads), str(layers),
                            ",".join(map(str, sizes)), str(last), str(tokens)],
                           capture_output=True, text=True, timeout=600)
        return float(p.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:  # not built, no AVX, refused
        why = p.stderr.strip() if isinstance(e, ValueError) and p.stderr else e
        print(f"bench: no ideal decoder reading: {why}", file=sys.stderr)
        return 0.0


def decode_products(name, dtype, kv_bytes):
    """The bytes one generated token reads, product by product, as machine_limits --products
    takes them: (layers, [q k v, the cache, wo, w1 w3, w2] of one layer, the classifier), each
    matrix in its bytes in the file export.py writes for `--random name --dtype dtype` (the
    classifier is the token embedding when the model shares it); kv_bytes is the whole
    cache's, work_per_token's."""
    import export
    c = export.parse_shape(name)
    types = export.tensor_types(c, dtype, None, [])
    shapes = {n: shape for n, shape, _ in export.tensor_layout(c)}
    def size(*names):
        return sum(export.stored_size(shapes[n], *types[n]) for n in names)
    layer = [size("layers.0.wq", "layers.0.wk", "layers.0.wv"), int(kv_bytes // c.n_layers),
             size("layers.0.wo"), size("layers.0.w1", "layers.0.w3"), size("layers.0.w2")]
    return c.n_layers, layer, size("token_embedding" if c.shared_classifier else "classifier")


def work_per_token(name, prompt_tokens, kv_value_bytes):
    """(KV cache bytes a generated token reads, FLOP per prompt token) of a model shape, after
    a prompt of prompt_tokens, with a KV cache of kv_value_bytes per value (Q8's scales
    left out)."""
    import export  # the shapes of --random
    c = export.parse_shape(name)
    q_dim, kv_dim = c.n_heads * c.head_size, c.n_kv_heads * c.head_size
    layer_weights = c.dim * (2 * q_dim + 2 * kv_dim) + 3 * c.dim * c.hidden_dim
    mean_decode_pos = prompt_tokens + NEW_TOKENS / 2
    kv_bytes = 2 * c.n_layers * kv_dim * kv_value_bytes * mean_decode_pos
    mean_prompt_pos = (prompt_tokens + 1) / 2  # positions attended per prompt query
    flop = (2 * c.n_layers * layer_weights + 4 * c.n_layers * q_dim * mean_prompt_pos
            + 2 * c.vocab_size * c.dim / prompt_tokens)
    return kv_bytes, flop


def compare(path, threads, flags, other, repeat, prompt_tokens=PROMPT_TOKENS):
    """--against: ./run and another binary, alternately, repeat times each; the medians and
    their ratio, and the median of the ratios of each pair of neighbouring runs ("paired"),
    as one line. Both see the same drift of the machine; a pair, the same few seconds of it,
    which keeps a change of a few per cent visible when the machine changes phase from run
    to run. The pairs take turns at going first."""
    ours, theirs = [], []
    for i in range(repeat):
        for us in ((True, False) if i % 2 == 0 else (False, True)):
            if us:
                ours.append(run_once(path, threads, flags, prompt_tokens=prompt_tokens))
            else:
                theirs.append(run_once(path, threads, flags, other, prompt_tokens))
    line = []
    for key in ("prefill_tok_s", "decode_tok_s"):
        a = statistics.median(r[key] for r in ours)
        b = statistics.median(r[key] for r in theirs)
        paired = statistics.median(x[key] / y[key] for x, y in zip(ours, theirs))
        line.append(f"{key}={a:.1f} against={b:.1f} ratio={a / b:.3f} paired={paired:.3f}")
    return " ".join(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is kept")
    ap.add_argument("--cases", default=",".join(CASES), help="NAME:DTYPE,...")
    ap.add_argument("--against", metavar="RUN", help="another build of run to compare with")
    opts = ap.parse_args()
    if not os.path.exists(RUN):
        sys.exit("bench: ./run is missing: run `make` first")
    print(tokenizer_line(opts.repeat), flush=True)
    for case in opts.cases.split(","):
        name, dtype, *variants = case.split(":")
        if any(v not in VARIANTS for v in variants):
            sys.exit(f"bench: {case}: the variants are {', '.join(VARIANTS)}")
        flags, suffix = [], ""
        for v in variants:
            flags, suffix = flags + VARIANTS[v][0], suffix + VARIANTS[v][1]
        long = "long" in variants
        path = model_path(name, dtype, LONG_SEQ_LEN if long else SEQ_LEN)
        for threads, tokens in [(int(t), n) for t in opts.threads.split(",")
                                for n in (LONG_PROMPTS if long else (PROMPT_TOKENS,))]:
            tail = suffix + (f" prompt={tokens}" if long else "")
            if opts.against:
                print(f"compare model={name} dtype={dtype} threads={threads} "
                      + compare(path, threads, flags, opts.against, opts.repeat, tokens) + tail,
                      flush=True)
                continue
            kv_value = 2 if "kv-bf16" in variants else 1 if "kv-q8" in variants else 4
            kv_bytes, flop = work_per_token(name, tokens, kv_value)
            products = decode_products(name, dtype, kv_bytes)
            # a stream probe and an ideal decoder before every run and after the last: this
            # machine's bandwidth can change within seconds, so each run is held to the higher
            # of the two readings around it, which a change of phase during a run can only
            # make stricter
            fma, streams, runs = fma_gflop_s(threads), [stream_gb_s(threads)], []
            ideals = [ideal_gb_s(threads, products)]
            for _ in range(opts.repeat):
                runs.append(run_once(path, threads, flags, prompt_tokens=tokens))
                streams.append(stream_gb_s(threads))
                ideals.append(ideal_gb_s(threads, products))
            best = {k: max(r[k] for r in runs) for k in ("prefill_tok_s", "decode_tok_s",
                                                           "weights_gb_s")}
            best["ttft_ms"] = min(r["ttft_ms"] for r in runs)
            best["load_ms"] = min(r["load_ms"] for r in runs)
            best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            generated = min(r["generated_tokens"] for r in runs)
            # weights_gb_s is weight bytes per token x decode tok/s; decode_bw and
            # decode_ideal are the best run's, each run against the bounds around it
            decode_bw, decode_ideal, stream = 0.0, 0.0, streams[0]
            for i, r in enumerate(runs):
                moved = r["weights_gb_s"] + kv_bytes * r["decode_tok_s"] / 1e9  # GB/s
                bound, ideal = max(streams[i], streams[i + 1]), max(ideals[i], ideals[i + 1])
                if bound and moved / bound > decode_bw:
                    decode_bw, stream = moved / bound, bound
                if ideal:
                    decode_ideal = max(decode_ideal, moved / ideal)
            prefill_fma = flop * best["prefill_tok_s"] / (fma * 1e9) if fma else 0.0
            print(f"bench model={name} dtype={dtype} threads={threads} "
                  f"prefill_tok_s={best['prefill_tok_s']:.1f} "
                  f"decode_tok_s={best['decode_tok_s']:.1f} "
                  f"ttft_ms={best['ttft_ms']:.1f} load_ms={best['load_ms']:.1f} "
                  f"weights_gb_s={best['weights_gb_s']:.2f} "
                  f"peak_rss_mb={best['peak_rss_mb']:.1f} generated={int(generated)} "
                  f"stream_gb_s={stream:.1f} fma_gflop_s={fma:.1f} decode_bw={decode_bw:.2f} "
                  f"decode_ideal={decode_ideal:.2f} prefill_fma={prefill_fma:.2f}" + tail,
                  flush=True)


if __name__ == "__main__":
    main()
