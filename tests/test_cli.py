"""The command line on stories260K (../shared/models): --stop, -f, -k and --min-p end to end,
the -v statistics, --help and --version, and strict parsing of every flag value.

The greedy text is known (../shared/models/README.md; test_stories checks it), so each case
can say exactly which bytes it expects.
"""
import os
import re

import common
from test_bad_inputs import run_catalogue


def run_stories(*args, **kw):
    """Runs the engine on stories260K + tok512 with args; returns the CompletedProcess."""
    model, tok = common.stories()
    return common.run_ok([model, "-z", tok] + list(args), **kw)


def greedy_text():
    return run_stories("-t", "0", "-n", "200").stdout.decode()


# ---------------------------------------------------------------------------------------------
# --stop

def test_stop_strings():
    full = greedy_text()
    assert "a big, red ball" in full, full  # the cases below rely on it

    def stopped(*stops):
        args = ["-t", "0", "-n", "200"]
        for s in stops:
            args += ["--stop", s]
        return run_stories(*args).stdout.decode()

    # "red ball" spans the tokens " red" and " ball": " red" must be held back, then dropped
    assert stopped("red ball") == full[:full.index("red ball")] + "\n"
    # the stop string may begin inside a token: " red" is printed as " r"
    assert stopped("ed ball") == full[:full.index("ed ball")] + "\n"
    # a stop string the text only begins ("red ball" is not "red balloon"): the held text
    # comes out when it stops matching, and the output is the full text, byte for byte
    assert stopped("red balloon") == full
    assert stopped("wanted to fly") == full
    # several: the earliest occurrence in the text wins, whichever flag came first
    assert stopped("didn't", "park") == full[:full.index("park")] + "\n"
    # the prompt's own text is not searched: only what the model writes
    p = run_stories("-t", "0", "-n", "40", "-i", "Once upon a time", "--stop", "Once")
    assert p.stdout.decode().startswith("Once upon a time"), p.stdout


def test_stop_in_chat():
    """In chat a stop string ends the answer, and the chat goes on to the next turn."""
    def answers(*extra):
        p = run_stories("-m", "chat", "-t", "0", "-n", "30", *extra,
                    input=b"Once upon a time\nThe dog ran\n")
        found = re.findall(r"^Assistant: (.*)$", p.stdout.decode(), re.M)
        assert len(found) == 2, p.stdout
        return found
    full = answers()
    assert "day" in full[0] and len(full[0]) > 20, full  # the case below relies on it
    cut = answers("--stop", "day")
    assert cut[0] == full[0][:full[0].index("day")], (cut, full)
    assert len(cut[1]) > 0 and "day" not in cut[1], cut


# ---------------------------------------------------------------------------------------------
# -f

def test_prompt_from_file():
    prompt = "Once upon a time, a cat"
    want = run_stories("-t", "0", "-n", "60", "-i", prompt).stdout
    path = common.tmp_path("cli_prompt.txt")
    with open(path, "w") as f:
        f.write(prompt + "\n")  # one final newline, as an editor writes it, is dropped
    assert run_stories("-t", "0", "-n", "60", "-f", path).stdout == want
    assert run_stories("-t", "0", "-n", "60", "-f", "-",
                       input=(prompt + "\n").encode()).stdout == want
    # a prompt of several lines keeps its inner newlines
    with open(path, "w") as f:
        f.write("Once upon a time\nthere was a cat\n")
    out = run_stories("-t", "0", "-n", "60", "-f", path).stdout.decode()
    assert out.startswith("Once upon a time\nthere was a cat"), out
    # -f gives the first user turn in chat
    with open(path, "w") as f:
        f.write(prompt + "\n")
    out = run_stories("-m", "chat", "-t", "0", "-n", "5", "-f", path, input=b"").stdout.decode()
    assert out.startswith(f"User: {prompt}\nAssistant: "), out


# ---------------------------------------------------------------------------------------------
# -k and --min-p end to end

def test_top_k_and_min_p():
    greedy = greedy_text()
    # top-k 1 and min-p 1 keep only the most likely token: sampling becomes greedy
    assert run_stories("-t", "1", "-s", "5", "-k", "1", "-n", "200").stdout.decode() == greedy
    assert run_stories("-t", "1", "-s", "5", "--min-p", "1", "-n", "200").stdout.decode() == greedy
    # off by default: -k 0 and --min-p 0 are exactly the llama2.c draws
    plain = run_stories("-t", "1", "-s", "5", "-n", "200").stdout
    assert run_stories("-t", "1", "-s", "5", "-k", "0", "--min-p", "0", "-n", "200").stdout == plain
    # and they do change the draws when on
    assert run_stories("-t", "1.5", "-s", "5", "-k", "40", "-n", "200").stdout != \
        run_stories("-t", "1.5", "-s", "5", "-n", "200").stdout


# ---------------------------------------------------------------------------------------------
# Statistics

STATS_KEYS = ["load_ms", "prompt_tokens", "prefill_tok_s", "generated_tokens", "decode_tok_s",
              "decode_ms_per_token", "ttft_ms", "weights_gb_s", "peak_rss_mb", "kv_cache_mb"]


def test_stats():
    p = run_stories("-t", "0", "-n", "50", "-i", "Once upon a time")
    assert re.fullmatch(rb"achieved tok/s: [0-9.]+\n", p.stderr), p.stderr
    p = run_stories("-t", "0", "-n", "50", "-i", "Once upon a time", "-v")
    lines = p.stderr.decode().splitlines()
    stats = dict(line.split(": ", 1) for line in lines if not line.startswith("achieved"))
    assert list(stats) == STATS_KEYS, lines
    values = {k: float(v) for k, v in stats.items()}
    n_prompt = len(run_stories("--print-tokens", "-i", "Once upon a time").stdout.split())
    assert values["prompt_tokens"] == n_prompt, values
    assert values["generated_tokens"] == 50 - n_prompt + 1, values  # -n counts positions
    assert values["decode_tok_s"] > 0 and values["prefill_tok_s"] > 0, values
    # the inverse, up to the 3 decimals printed
    assert abs(values["decode_ms_per_token"] * values["decode_tok_s"] / 1000 - 1) < 0.02, values
    assert values["ttft_ms"] > 0, values  # how long is for make bench, not a test
    assert 0 < values["peak_rss_mb"] < 1000, values
    # f32 keys and values of 5 layers x 4 KV heads x 512 positions x 8 numbers
    assert values["kv_cache_mb"] == 0.625, values
    # GB/s is bytes per token times tokens per second: 260K float32 weights is ~1 MB a token
    ratio = values["weights_gb_s"] * 1e9 / values["decode_tok_s"]
    assert 0.5e6 < ratio < 1.5e6, values


# ---------------------------------------------------------------------------------------------
# --help, --version and strict parsing

def test_help_and_version():
    p = common.run_ok(["--help"])
    text = p.stdout.decode()
    for group in ("Generation:", "Sampling", "Chat", "Model:", "Diagnostics:"):
        assert group in text, f"--help lacks the group {group}"
    for flag in ("-i", "-f", "-n", "--stop", "-m", "-t", "-k", "--min-p", "-p", "-s", "-y",
                 "--template", "-z", "-v", "--logits", "--print-tokens", "--version",
                 "--threads", "--no-mmap", "--ppl", "--no-prefill", "--attn", "--attn-html",
                 "--attn-top", "--attn-layer"):
        assert re.search(rf"^\s+{re.escape(flag)}[ ,]", text, re.M), f"--help lacks {flag}"
    assert "temperature, top-k, min-p, top-p" in text  # the order of the filters
    assert re.fullmatch(rb"run \d+\.\d+\.\d+\n", common.run_ok(["--version"]).stdout)


def test_strict_flag_values():
    model, tok = common.stories()
    base = [model, "-z", tok]
    missing = common.tmp_path("cli_no_such_prompt.txt")
    if os.path.exists(missing):
        os.remove(missing)
    cases = [
        ("-n with trailing junk", base + ["-n", "12abc"], ["-n"]),
        ("-k negative", base + ["-k", "-1"], ["-k"]),
        ("-k not a number", base + ["-k", "ten"], ["-k"]),
        ("-k fraction", base + ["-k", "2.5"], ["-k"]),
        ("--min-p above 1", base + ["--min-p", "1.5"], ["--min-p"]),
        ("--min-p negative", base + ["--min-p", "-0.1"], ["--min-p"]),
        ("--min-p junk", base + ["--min-p", "0.1x"], ["--min-p"]),
        ("-t nan", base + ["-t", "nan"], ["-t"]),
        ("-t inf", base + ["-t", "inf"], ["-t"]),
        ("-p empty", base + ["-p", ""], ["-p"]),
        ("-s negative", base + ["-s", "-5"], ["-s"]),
        ("--stop without value", base + ["--stop"], ["--stop"]),
        ("--stop empty", base + ["--stop", ""], ["--stop"]),
        ("--template unknown", base + ["--template", "alpaca"], ["--template"]),
        ("--template without value", base + ["--template"], ["--template"]),
        ("-m unknown", base + ["-m", "talk"], ["-m"]),
        ("-f missing file", base + ["-f", missing], ["-f"]),
        ("-f and -i", base + ["-f", "-", "-i", "x"], ["-f"]),
        ("-f without value", base + ["-f"], ["-f"]),
        ("unknown long flag", base + ["--top-k", "5"], ["--top-k"]),
        ("unknown short flag", base + ["-q"], ["-q"]),
        ("-n shorter than the prompt", base + ["-n", "3", "-i", "Once upon a time"], ["-n"]),
    ]
    run_catalogue(cases)
