"""Watching attention: `run --attn FILE`, `--attn-html FILE` and `--attn-top K`.

  rows            every recorded row sums to 1 and is pos + 1 long (nothing past its position)
  causal          the rows of a shared prefix do not change when later tokens change
  reference       every row equals the weights tests/reference.py computes, within 1e-5, on
                  random models with plain multi-head, grouped-query and multi-query attention
  unchanged       recording on or off: identical --logits files and identical text
  --attn-top      the ranking printed on stderr agrees with the recorded rows
  HTML            the page renders in headless Chromium without a script error

The recording's own token ids tell the reference which tokens to replay, and the test
checks those ids against the text the engine printed.
"""
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

import checkpoints
import common
import reference
from attnfile import read_attn
from reference import Config

TOLERANCE = 1e-5  # observed: 4e-7 on random models, 3e-6 on stories260K (sharper softmax)


def stories_args():
    model, tok = common.stories()
    return [model, "-z", tok]


def check_rows(rec, label):
    """Every row is a probability distribution over positions 0..pos."""
    for pos in range(rec.n):
        for l in range(rec.n_layers):
            for h in range(rec.n_heads):
                w = rec.weights(l, h, pos)
                assert w.size == pos + 1, f"{label}: row ({l}, {h}, {pos}) has {w.size} weights"
                assert np.all(w >= 0), f"{label}: negative weight in row ({l}, {h}, {pos})"
                total = float(np.sum(w, dtype=np.float64))
                assert abs(total - 1.0) < 1e-5, f"{label}: row ({l}, {h}, {pos}) sums to {total}"


def printed_text(rec):
    """The bytes the engine prints for the recorded positions: every piece after BOS."""
    return b"".join(rec.pieces[1:])


# ------------------------------------------------------------------------------------------
# stories260K: rows, text, causality

def test_rows_sum_to_one_stories():
    path = common.tmp_path("attn_stories.attn")
    p = common.run_ok(stories_args() + ["-t", 0, "-n", 120, "-i", "Once upon a time",
                                        "--attn", path])
    rec = read_attn(path)
    assert (rec.n_layers, rec.n_heads, rec.n_kv_heads) == (5, 8, 4), vars(rec)
    assert rec.kv_head == [0, 0, 1, 1, 2, 2, 3, 3], f"kv_head {rec.kv_head}"
    assert rec.n == 120, f"{rec.n} positions recorded for -n 120"
    assert rec.pieces[0] == b"<s>" and rec.tokens[0] == 1, (rec.pieces[0], rec.tokens[0])
    # the last generated token is printed but never run, so it is not in the recording
    assert p.stdout.startswith(printed_text(rec)), (p.stdout[:80], printed_text(rec)[:80])
    check_rows(rec, "stories260K")


def test_future_tokens_do_not_change_past_rows():
    # Two prompts that share their first words: the rows of the shared positions must be
    # bit-identical, whatever comes later. A leak from the future would show up here.
    recs = []
    for i, prompt in enumerate(["Once upon a time there was a dog", "Once upon a time the sun"]):
        path = common.tmp_path(f"attn_prefix{i}.attn")
        common.run_ok(stories_args() + ["-t", 0, "-n", 30, "-i", prompt, "--attn", path])
        recs.append(read_attn(path))
    a, b = recs
    shared = next(i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y)
    assert shared >= 4, f"the prompts should share at least 4 tokens, share {shared}"
    for pos in range(shared):
        for l in range(a.n_layers):
            for h in range(a.n_heads):
                assert np.array_equal(a.weights(l, h, pos), b.weights(l, h, pos)), (
                    f"row ({l}, {h}, {pos}) depends on tokens after position {shared - 1}")
    assert not np.array_equal(a.weights(0, 0, shared), b.weights(0, 0, shared))


def test_stories_rows_match_reference():
    path = common.tmp_path("attn_stories_ref.attn")
    common.run_ok(stories_args() + ["-t", 0, "-n", 40, "--attn", path])
    rec = read_attn(path)
    config, weights = reference.read_llama2c(common.stories()[0])
    compare_with_reference(rec, reference.Transformer(config, weights), "stories260K")


# ------------------------------------------------------------------------------------------
# Random models against the numpy reference

def compare_with_reference(rec, model, label):
    """Replays the recorded tokens through the reference and compares every row."""
    worst = 0.0
    for pos, token in enumerate(rec.tokens):
        model.forward(token, pos)
        for l in range(rec.n_layers):
            for h in range(rec.n_heads):
                ref = model.attention_weights[pos][l][h]
                err = float(np.max(np.abs(rec.weights(l, h, pos) - ref)))
                worst = max(worst, err)
                assert err < TOLERANCE, (f"{label}: row (layer {l}, head {h}, pos {pos}) differs "
                                         f"from the reference by {err:.3g}")
    return worst


def run_random(label, config, prompt, steps, seed, tllm=False):
    """Writes a random checkpoint of this shape (checkpoints.write_random_model), samples from
    it with --attn and checks every recorded row against the reference. Returns the recording."""
    args, config, weights = checkpoints.write_random_model(
        common.tmp_path(f"attn_{label}.bin"), config, seed, tllm)
    attn_path = common.tmp_path(f"attn_{label}.attn")
    common.run_ok(args + ["-t", 0.9, "-s", seed, "-n", steps, "-i", prompt, "--attn", attn_path])
    rec = read_attn(attn_path)
    prompt_ids = checkpoints.encode_prompt(prompt)
    assert rec.tokens[:len(prompt_ids)] == prompt_ids, f"{label}: prompt ids {rec.tokens[:10]}"
    group = config.n_heads // config.n_kv_heads
    assert rec.kv_head == [h // group for h in range(config.n_heads)], rec.kv_head
    check_rows(rec, label)
    compare_with_reference(rec, reference.Transformer(config, weights), label)
    return rec


def test_reference_multi_head():
    c = Config(dim=64, hidden_dim=172, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=300,
               seq_len=64)
    run_random("mha", c, "once upon a time", 48, seed=11)


def test_reference_grouped_query_8_2():
    c = Config(dim=64, hidden_dim=128, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=320,
               seq_len=64)
    rec = run_random("gqa82", c, "the cat sat on the mat", 56, seed=12)
    assert rec.kv_head == [0, 0, 0, 0, 1, 1, 1, 1]


def test_reference_multi_query_tllm_head_size_10():
    # TLLM with head_size 10 and 6 query heads over one KV head: q_dim 60 != dim 48.
    c = Config(dim=48, hidden_dim=100, n_layers=2, n_heads=6, n_kv_heads=1, vocab_size=290,
               seq_len=40, head_size=10)
    run_random("mqa_tllm", c, "hello world", 40, seed=13, tllm=True)


# ------------------------------------------------------------------------------------------
# Recording must not change what the engine computes

def same_output(label, args):
    """Runs args with every attention option and without; the logits and text must match."""
    plain_logits = common.tmp_path(f"attn_off_{label}.logits")
    rec_logits = common.tmp_path(f"attn_on_{label}.logits")
    off = common.run_ok(args + ["--logits", plain_logits])
    on = common.run_ok(args + ["--logits", rec_logits, "--attn", common.tmp_path("on.attn"),
                               "--attn-html", common.tmp_path("on.html"), "--attn-top", 3])
    with open(plain_logits, "rb") as f1, open(rec_logits, "rb") as f2:
        a, b = f1.read(), f2.read()
    assert len(a) > 0 and a == b, f"{label}: --logits files differ with recording on"
    assert off.stdout == on.stdout, f"{label}: text differs:\n{off.stdout!r}\n{on.stdout!r}"


def test_recording_changes_nothing_stories():
    same_output("stories", stories_args() + ["-t", 0.8, "-p", 0.9, "-s", 7, "-n", 150,
                                             "-i", "One day"])


def test_recording_changes_nothing_gqa():
    c = Config(dim=64, hidden_dim=128, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=320,
               seq_len=64)
    args, _, _ = checkpoints.write_random_model(common.tmp_path("attn_same.bin"), c, 5)
    same_output("gqa", args + ["-t", 1.0, "-s", 3, "-n", 64, "-i", "abc"])


def test_recording_changes_nothing_chat():
    args = stories_args() + ["-m", "chat", "-y", "", "-i", "Hello", "-t", 0, "-n", 80]
    plain = common.run_ok(args, input=b"")
    recorded = common.run_ok(args + ["--attn", common.tmp_path("chat.attn")], input=b"")
    assert plain.stdout == recorded.stdout
    rec = read_attn(common.tmp_path("chat.attn"))
    check_rows(rec, "chat")


# ------------------------------------------------------------------------------------------
# --attn-top on the terminal

TOP_LINE = re.compile(r"^attn L(\d+) (\d+):'.*' -> '.*' \|(?: '.*'@\d+ \d\.\d\d)+$")
TOP_ENTRY = re.compile(r"@(\d+) (\d\.\d\d)")


def check_top_lines(stderr, rec, layer, k, n_prompt):
    lines = [s for s in stderr.decode().splitlines() if s.startswith("attn ")]
    # one line per generated token: from the last prompt position to the last recorded one
    assert len(lines) == rec.n - n_prompt + 1, f"{len(lines)} lines for {rec.n} positions"
    for line in lines:
        m = TOP_LINE.match(line)
        assert m, f"malformed --attn-top line: {line!r}"
        assert int(m.group(1)) == layer, line
        pos = int(m.group(2))
        mean = np.mean([rec.weights(layer, h, pos) for h in range(rec.n_heads)], axis=0)
        entries = [(int(p), float(w)) for p, w in TOP_ENTRY.findall(line.split("|", 1)[1])]
        assert len(entries) == min(k, pos + 1), line
        best = np.sort(mean)[::-1][:len(entries)]
        for (p, w), expect in zip(entries, best):
            assert abs(mean[p] - w) <= 0.005 + 1e-6, f"{line}: position {p} has {mean[p]:.4f}"
            assert abs(mean[p] - expect) < 1e-6, f"{line}: {p} is not the next best ({expect})"


def test_attn_top_agrees_with_recording():
    path = common.tmp_path("attn_top.attn")
    prompt = "Once upon a time"
    p = common.run_ok(stories_args() + ["-t", 0, "-n", 50, "-i", prompt, "--attn", path,
                                        "--attn-top", 4])
    rec = read_attn(path)
    # the prompt's tokens: BOS, then the pieces that spell the prompt
    n_prompt = next(k for k in range(1, rec.n) if b"".join(rec.pieces[1:k]) == prompt.encode())
    check_top_lines(p.stderr, rec, 4, 4, n_prompt)
    p = common.run_ok(stories_args() + ["-t", 0, "-n", 30, "-i", prompt, "--attn", path,
                                        "--attn-top", 2, "--attn-layer", 1])
    check_top_lines(p.stderr, read_attn(path), 1, 2, n_prompt)


def test_attn_top_alone_keeps_only_the_newest_rows():
    # Without --attn the recorder keeps one row per head; the lines must not change.
    args = stories_args() + ["-t", 0.8, "-s", 3, "-n", 60, "-i", "A cat", "--attn-top", 5]
    alone = common.run_ok(args)
    with_file = common.run_ok(args + ["--attn", common.tmp_path("top_alone.attn")])
    lines = [s for s in alone.stderr.decode().splitlines() if s.startswith("attn ")]
    assert len(lines) > 40, alone.stderr[-300:]
    assert lines == [s for s in with_file.stderr.decode().splitlines() if s.startswith("attn ")]


def test_attn_options_refuse_bad_values():
    p = common.run(stories_args() + ["-n", 5, "--attn-top", 2, "--attn-layer", 5])
    assert p.returncode == 1 and b"--attn-layer: 5 is out of range" in p.stderr, p.stderr
    p = common.run(stories_args() + ["-n", 5, "--attn-top", 0])
    assert p.returncode == 1 and b"--attn-top" in p.stderr, p.stderr
    p = common.run(stories_args() + ["-n", 5, "--attn", "/nonexistent/dir/x.attn"])
    assert p.returncode == 1 and b"/nonexistent/dir/x.attn: cannot write" in p.stderr, p.stderr
    assert p.stdout == b"", "the error must come before any generation"


# ------------------------------------------------------------------------------------------
# The HTML page in a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium(page, *args, timeout=60):
    """Runs headless Chromium on a page with a fresh profile; returns the CompletedProcess.
    The flags keep it from reaching for the network, which would hang on a closed one."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (Debian: apt-get install chromium; .ci/run does)"
    profile = tempfile.mkdtemp(prefix="attn-chromium-")
    try:
        return subprocess.run([exe] + CHROMIUM_FLAGS + [f"--user-data-dir={profile}"] +
                              list(args) + ["file://" + os.path.abspath(page)],
                              capture_output=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_html_renders_in_chromium():
    page = common.tmp_path("attn_stories.html")
    attn = common.tmp_path("attn_stories_page.attn")
    common.run_ok(stories_args() + ["-t", 0, "-n", 300, "--attn-html", page, "--attn", attn])
    with open(page, encoding="utf-8") as f:
        html = f.read()
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "external reference"
    assert "@import" not in html and "url(" not in html
    if common.SANITIZED:  # the engine's part is checked; what the same page does in Chromium
        return            # is the release half's (it took this test from 16-28 s to 2 s here)
    p = chromium(page, "--dump-dom", "--virtual-time-budget=10000")
    dom = p.stdout.decode("utf-8", errors="replace")
    assert 'data-ready="1"' in dom, ("the page's script did not finish (an error?):\n" +
                                     p.stderr.decode(errors="replace")[-2000:])
    assert "300 positions" in dom and "5 layers" in dom, "the page does not describe the model"
    # the text is there token by token, and the grid has 5 x 8 heatmaps
    for word in ["Once", " upon", " Lily"]:
        assert f">{word}</span>" in dom, f"token {word!r} is not in the page"
    assert dom.count("<canvas") >= 5 * 8 + 2, "the layer x head grid is incomplete"
    # the page's own reading of a row (opened on layer 1, head 3, query 57) agrees with the file
    rec = read_attn(attn)
    w = rec.weights(1, 3, 57)
    best = int(np.argmax(w))
    p = chromium(page + "#layer=1&head=3&query=57", "--dump-dom", "--virtual-time-budget=10000")
    dom = p.stdout.decode("utf-8", errors="replace")
    detail = re.search(r'<div id="detail">(.*?)</div>', dom, re.S)
    assert detail, "no detail panel in the page"
    expect = f'attends to: <code>"{rec.pieces[best].decode()}"</code>@{best} {w[best]:.3f}'
    assert expect in detail.group(1), f"expected {expect!r} in {detail.group(1)!r}"
    shot = common.tmp_path("attn_stories.png")
    if os.path.exists(shot):
        os.remove(shot)
    chromium(page, f"--screenshot={os.path.abspath(shot)}", "--window-size=1200,900",
             "--hide-scrollbars")
    assert os.path.getsize(shot) > 20000, "the screenshot is (nearly) empty"


def test_html_template_alone_renders():
    # The template itself, opened without data, must explain itself rather than fail.
    p = chromium("attnviz.html", "--dump-dom")
    dom = p.stdout.decode("utf-8", errors="replace")
    assert 'data-ready="1"' in dom and "viewer template" in dom, dom[-500:]
