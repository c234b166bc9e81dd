"""Generation past the context: attention sinks, eviction, and --ppl's ways to read a long text.

  reference     the logits of a generation four times the context, and of one with a sliding
                window layer, equal tests/reference.py's StreamingTransformer, which keeps keys
                before RoPE and rotates them by their place in the cache (the engine instead
                rotates them back when it evicts)
  perplexity    --ppl-mode stream and recompute against numpy; on a text that fits the context
                every mode gives the chunks number
  long runs     5000 tokens of stories260K and a 300-turn chat through a pipe finish, with the
                same peak memory as a run that just fills the context
  the page      --attn-html and --attn of a run past the context mark sinks and evicted positions
  bad input     --sinks at least the context, --kv-type and --ppl-mode unknown: one line, exit 1
"""
import json
import os
import re

import numpy as np

import checkpoints
import common
import reference
from attnfile import read_attn
from reference import Config

TOLERANCE = 1e-4  # relative, as tests/test_forward.py


def greedy_tokens(logits, prompt_ids):
    """The tokens the engine ran: the prompt, then the argmax of each row before."""
    tokens = list(prompt_ids)
    while len(tokens) < len(logits):
        tokens.append(int(np.argmax(logits[len(tokens) - 1])))
    return tokens


def replay_streaming(config, weights, tokens, sinks, evict):
    """The StreamingTransformer's logits for tokens, evicting `evict` entries after the
    sinks whenever the cache is full, as run does."""
    model, rows = reference.StreamingTransformer(config, weights), []
    for token in tokens:
        if len(model.raw_keys[0]) == config.seq_len:
            model.evict(sinks, evict)
        rows.append(model.forward(token))
    return np.array(rows)


def check_stream(label, config, sinks, evict, steps, seed, extra=()):
    args, config, weights = checkpoints.write_random_model(
        common.tmp_path(f"past_{label}.bin"), config, seed)
    logits_path = common.tmp_path(f"past_{label}.logits")
    prompt = "the cat sat on the mat"
    common.run_ok(args + ["-t", 0, "-n", steps, "-i", prompt, "--ignore-eos", "--logits",
                          logits_path, "--sinks", sinks, "--evict", evict, *extra])
    logits = common.read_logits(logits_path, config.vocab_size)
    assert len(logits) == steps, f"{label}: {len(logits)} rows for -n {steps}"
    tokens = greedy_tokens(logits, checkpoints.encode_prompt(prompt))
    ref = replay_streaming(config, weights, tokens, sinks, evict)
    errors = common.relative_errors(logits, ref)
    worst = int(np.argmax(errors))
    assert errors[worst] < TOLERANCE, (f"{label}: position {worst} (of {len(tokens)}, context "
                                       f"{config.seq_len}) off by {errors[worst]:.3g}")


def test_sinks_match_streaming_reference():
    # 4 sinks, 7 positions evicted at a time: the context of 32 overflows 17 times in 150
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
               seq_len=32)
    check_stream("sinks", c, 4, 7, 150, seed=21)


def test_window_only_and_token_eviction_match_reference():
    # no sinks (a plain sliding window over the text), and one position at a time
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=1, vocab_size=300,
               seq_len=24)
    check_stream("nosinks", c, 0, 5, 100, seed=22)
    check_stream("evict1", c, 3, 1, 80, seed=23, extra=["--no-prefill"])


# ------------------------------------------------------------------------------------------
# Perplexity

def write_text(path, n_words, seed):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "ran", "to", "big", "red", "dog"]
    with open(path, "w") as f:
        f.write(" ".join(rng.choice(words, n_words)))
    return path


def ppl(args, *extra):
    p = common.run_ok(args + ["--ppl", *extra])
    m = re.match(rb"ppl: tokens=(\d+) nll=([0-9.]+) perplexity=([0-9.]+)", p.stdout)
    assert m, p.stdout
    return int(m.group(1)), float(m.group(2))


def test_ppl_modes_against_reference():
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
               seq_len=24)
    args, c, w = checkpoints.write_random_model(common.tmp_path("ppl_modes.bin"), c, 24)
    short = write_text(common.tmp_path("ppl_short.txt"), 4, 1)  # fits the context
    base = ppl(args, short)
    for mode in ("stream", "recompute"):
        assert ppl(args, short, "--ppl-mode", mode) == base, f"{mode} differs on a short text"

    text = write_text(common.tmp_path("ppl_long.txt"), 24, 2)  # about 4 contexts
    with open(text, "rb") as f:
        ids = checkpoints.encode_prompt(f.read().decode())

    def nll(rows, targets):
        rows = np.asarray(rows, np.float64)
        top = rows.max(axis=1)
        lse = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
        return float(np.mean(lse - rows[np.arange(len(targets)), targets]))

    n, got = ppl(args, text, "--ppl-mode", "recompute")
    L = c.seq_len
    rows = list(reference.logits(c, w, ids[:L]))[:L - 1]
    for target in range(L, len(ids)):  # each from the L tokens before it, afresh
        rows.append(reference.logits(c, w, ids[target - L:target])[-1])
    assert n == len(ids) - 1 and abs(got - nll(rows, ids[1:])) < 1e-4, (n, got)

    for sinks in (0, 4):
        n, got = ppl(args, text, "--ppl-mode", "stream", "--sinks", sinks, "--evict", 5)
        rows = replay_streaming(c, w, ids[:-1], sinks, 5)
        assert n == len(ids) - 1 and abs(got - nll(rows, ids[1:])) < 1e-4, (sinks, n, got)


# ------------------------------------------------------------------------------------------
# Long runs: nothing grows

def peak_rss(stderr):
    return float(re.search(rb"peak_rss_mb: ([0-9.]+)", stderr).group(1))


# How much a peak may differ and still be flat: AddressSanitizer's allocator (the debug
# build) keeps freed chunks of every size class it has seen, about a megabyte more over a
# long chat; the release build's stays within a few pages.
SLACK_MB = 2.0 if "debug" in common.BIN else 0.5


def run_flat(args, **kw):
    """run_ok, with AddressSanitizer (the debug build) told to hand freed memory back at once
    rather than keep it in quarantine, which would look like growth."""
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0")
    p = common.subprocess.run([common.RUN] + [str(a) for a in args], capture_output=True,
                              env=env, **kw)
    assert p.returncode == 0, f"run {args} exited {p.returncode}: {p.stderr[-500:]}"
    return p


def test_5000_tokens_with_sinks_memory_flat():
    model, tok = common.stories()
    runs = {}
    for n in (600, 5000):
        # one thread: stories260K is too small to share, and the machine may be busy
        p = run_flat([model, "-z", tok, "-t", 1, "-s", 5, "-n", n, "--ignore-eos", "-v",
                      "--threads", 1], timeout=120)
        generated = int(re.search(rb"generated_tokens: (\d+)", p.stderr).group(1))
        assert generated == n, f"-n {n}: {generated} tokens generated"
        runs[n] = peak_rss(p.stderr)
    print(f"     peak RSS: {runs[600]:.1f} MB after 600 tokens, {runs[5000]:.1f} MB after 5000")
    assert runs[5000] <= runs[600] + SLACK_MB, f"memory grew: {runs}"


def test_300_turn_chat_through_a_pipe():
    model, tok = common.stories()
    runs = {}
    for turns in (60, 300):  # about 28 positions a turn: the context overflows from turn 19 on
        lines = "".join(f"the dog {i}\n" for i in range(turns)).encode()
        p = run_flat([model, "-z", tok, "-m", "chat", "-t", 0.8, "-s", 3, "-n", 4, "-v",
                      "--threads", 1], input=lines, timeout=120)
        answers = p.stdout.count(b"Assistant: ")
        assert answers == turns, f"{answers} answers to {turns} turns"
        assert b"full" not in p.stderr, p.stderr[-300:]
        runs[turns] = peak_rss(p.stderr)
    print(f"     peak RSS: {runs[60]:.1f} MB after 60 turns, {runs[300]:.1f} MB after 300")
    assert runs[300] <= runs[60] + SLACK_MB, f"memory grew: {runs}"


# ------------------------------------------------------------------------------------------
# What the attention page shows

def test_attention_records_sinks_and_evictions():
    model, tok = common.stories()
    attn, page = common.tmp_path("past.attn"), common.tmp_path("past.html")
    common.run_ok([model, "-z", tok, "-t", 0, "-n", 700, "--ignore-eos", "--evict", 100,
                   "--attn", attn, "--attn-html", page, "--threads", 1], timeout=120)
    rec = read_attn(attn)
    assert rec.n == 700, rec.n
    # the cache of 512 filled at text position 512: positions 4..103 went, then 104..203
    for pos in (511, 512, 650):
        gone = range(4, 104) if pos < 612 else range(4, 204)
        for l, h in ((0, 0), (4, 7)):
            w = rec.weights(l, h, pos)
            assert abs(float(np.sum(w, dtype=np.float64)) - 1) < 1e-5
            if pos >= 512:
                assert not np.any(w[list(gone)]), f"row {pos} reads evicted positions"
                assert np.all(w[:4] > 0), f"row {pos} does not read the sinks"
            else:
                assert np.all(w > 0), f"row {pos}: nothing is evicted yet"
    with open(page, encoding="utf-8") as f:
        html = f.read()
    data = json.loads(re.search(r'"sinks": \d+, "evicted_at": \[[^\]]*\]', html).group(0)
                      .join(["{", "}"]))
    evicted = data["evicted_at"]
    assert data["sinks"] == 4 and evicted[3] == -1 and evicted[4] == 512 and evicted[103] == 512
    assert evicted[104] == 612 and evicted[204] == -1 and len(evicted) == 700, evicted[100:110]


def test_attn_top_in_a_chat_past_the_context():
    """A chat runs past seq_len: --attn-top alone follows it (its recorder keeps only the
    newest rows, so its token list grows), while with --attn, whose file holds the first
    seq_len positions, the lines past them say so (a review found the reader going past the
    recorder's buffers here)."""
    model = "models/stories260K.tllm"
    args = [model, "-m", "chat", "-t", 0, "-n", 600, "--ignore-eos", "--attn-top", 2]
    p = common.run_ok(args, input=b"Hello\n", timeout=120)
    tops = [l for l in p.stderr.decode().splitlines() if l.startswith("attn L4 ")]
    positions = [int(l.split()[2].split(":")[0]) for l in tops]
    later = [l for l, pos in zip(tops, positions) if pos >= 512]
    assert max(positions) > 600 and all("@" in l for l in later), tops[-3:]
    with_file = args + ["--attn", common.tmp_path("chat_past.attn")]
    err = common.run_ok(with_file, input=b"Hello\n", timeout=120).stderr.decode()
    past = [l for l in err.splitlines() if l.startswith("attn L4 ") and "not recorded" in l]
    assert past and all(int(l.split()[2].split(":")[0]) >= 512 for l in past), past[:2]


def test_attn_of_too_many_positions_refused():
    """The recorder's size would overflow size_t: refused in one line before anything runs."""
    p = common.run(["models/stories260K.tllm", "-n", 960383883, "--attn",
                    common.tmp_path("huge.attn")])
    err = p.stderr.decode()
    assert p.returncode == 1 and err.count("\n") == 1 and "--attn" in err, err


# ------------------------------------------------------------------------------------------
# Bad input

def test_bad_flags_one_line():
    model, tok = common.stories()
    cases = [(["--sinks", "512"], "sink"), (["--sinks", "9999"], "sink"),
             (["--kv-type", "f16"], "--kv-type"), (["--ppl-mode", "slide"], "--ppl-mode"),
             (["--evict", "0"], "--evict"), (["--sinks", "-1"], "--sinks")]
    for extra, name in cases:
        p = common.run([model, "-z", tok, "-n", 10, *extra])
        err = p.stderr.decode()
        assert p.returncode == 1 and err.count("\n") == 1 and name in err, (extra, p.returncode, err)


def test_attention_page_shows_sinks_and_evicted():
    from test_attention import chromium
    c = Config(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
               seq_len=32)
    args, _, _ = checkpoints.write_random_model(common.tmp_path("past_page.bin"), c, 25)
    page = common.tmp_path("past_page.html")
    common.run_ok(args + ["-t", 0.9, "-s", 2, "-n", 90, "-i", "the cat", "--ignore-eos",
                          "--attn-html", page])
    p = chromium(page + "#layer=1&head=2&query=80", "--dump-dom", "--virtual-time-budget=10000")
    dom = p.stdout.decode("utf-8", errors="replace")
    assert 'data-ready="1"' in dom, p.stderr.decode(errors="replace")[-2000:]
    # 4 sinks; the cache of 32 is full at text positions 32, 39, ..., 88 and forgets 7 each
    # time: 63 in all, and by query 80 positions 4..52, while it sees 53..80 and the sinks
    assert "past the context: 4 sinks, 63 positions evicted" in dom, dom[:2000]
    classes = {}
    for attrs in re.findall(r"<span ([^>]*)>", dom):
        pos, cls = re.search(r'title="position (\d+)', attrs), re.search(r'class="([^"]*)"', attrs)
        if pos:
            classes[int(pos.group(1))] = cls.group(1) if cls else ""
    assert all("sink" in classes.get(p, "") for p in range(4)), classes
    assert all("evicted" in classes.get(p, "") for p in range(4, 53)), classes
    assert not any("evicted" in classes.get(p, "") for p in range(53, 81)), classes
    assert "no longer sees 49 evicted positions" in dom
