"""The libFuzzer targets (fuzz/), run once per `make test`: a replay and a short run.

Each test first replays the saved findings of its target (tests/regressions/NAME.TARGET), then
fuzzes for $FUZZ_SECONDS (default 6) from the seed corpus (fuzz/make_seeds.py, written by
`make test` into build/fuzz/seeds) and the corpus grown by earlier runs (build/fuzz/corpus,
kept between runs), which libFuzzer first runs input by input. Longer campaigns are `make
fuzz` (60 s per target by default). Any crash,
sanitizer report or undefined behaviour fails the test, naming the input libFuzzer saved under
build/fuzz/artifacts/. The number of inputs executed goes to build/fuzz/executions.log, which
TESTING.md's totals are summed from.
"""
import glob
import os
import re
import subprocess
import time

FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "6"))
FUZZ_DIR = os.path.join("build", "fuzz")


def fuzz(target):
    binary = os.path.join(FUZZ_DIR, target)
    seeds = os.path.join(FUZZ_DIR, "seeds", target)
    assert os.path.exists(binary), f"{binary} is missing: `make test` builds it (needs clang)"
    assert os.path.isdir(seeds), f"{seeds} is missing: `make test` writes it (fuzz/make_seeds.py)"
    findings = sorted(glob.glob(os.path.join("tests", "regressions", f"*.{target}")))
    if findings:  # libFuzzer runs each file given by name once and exits
        p = subprocess.run([binary] + findings, capture_output=True, timeout=120)
        assert p.returncode == 0, ("a saved finding fails again:\n"
                                   + p.stderr.decode(errors="replace")[-3000:])

    corpus = os.path.join(FUZZ_DIR, "corpus", target)
    artifacts = os.path.join(FUZZ_DIR, "artifacts")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    # -close_fd_mask=1: the args target prints --help to stdout, thousands of times
    p = subprocess.run([binary, f"-max_total_time={FUZZ_SECONDS}", "-print_final_stats=1",
                        "-close_fd_mask=1",
                        f"-artifact_prefix={artifacts}/{target}-", corpus, seeds],
                       capture_output=True, timeout=FUZZ_SECONDS + 300)
    log = p.stderr.decode(errors="replace")
    with open(os.path.join(FUZZ_DIR, f"{target}.log"), "w") as f:
        f.write(log)
    m = re.search(r"^stat::number_of_executed_units:\s*(\d+)", log, re.M)
    report = [line for line in log.splitlines()
              if re.search(r"ERROR|runtime error|SUMMARY|Test unit written|deadly signal", line)]
    assert p.returncode == 0 and m and not report, (
        f"{target}: exit status {p.returncode}\n" + "\n".join(report[:20] or log.splitlines()[-20:]))
    execs = int(m.group(1))
    with open(os.path.join(FUZZ_DIR, "executions.log"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {target} {execs} {FUZZ_SECONDS}\n")
    print(f"     {target}: {execs} inputs in {FUZZ_SECONDS} s, no finding")


def test_checkpoint_llama2c():
    fuzz("checkpoint_llama2c")


def test_checkpoint_tllm():
    fuzz("checkpoint_tllm")


def test_tokenizer():
    fuzz("tokenizer")


def test_encode():
    fuzz("encode")


def test_args():
    fuzz("args")

