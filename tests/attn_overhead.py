#!/usr/bin/env python3
"""What --attn costs when it is off: decode speed of two builds of `run`, measured in turns.

Usage: attn_overhead.py BASELINE_RUN NEW_RUN MODEL [MODEL ...] [--rounds N] [--steps N]

Each round runs the baseline, the new build, and the new build with --attn on, on every model
(greedy, no prompt, --steps positions), in a fresh random order each round so that a busy
machine slows all of them alike. Prints, for each, the median decode tok/s the engine reports (wall clock) and the
median CPU time per token of the whole process (user + sys, which a busy machine disturbs
less than the wall clock), with ratios to the baseline: 1.00 means no measurable cost.
Run it with OMP_NUM_THREADS=1 for steadier numbers. A model may be PATH or PATH:TOKENIZER.
"""
import argparse
import os
import random
import re
import statistics
import subprocess


def measure(cmd, steps):
    """(decode tok/s as the engine reports it, CPU milliseconds per position)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)  # the child's own CPU time, to the microsecond
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}: {err[-300:]!r}"
    cpu = usage.ru_utime + usage.ru_stime
    m = re.search(rb"achieved tok/s: ([0-9.]+)", err)
    assert m, f"no tok/s in the output of {cmd}: {err[-300:]!r}"
    return float(m.group(1)), 1000.0 * cpu / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("baseline")
    ap.add_argument("new")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=256)
    a = ap.parse_args()
    for spec in a.models:
        path, _, tok = spec.partition(":")
        args = [path, "-t", "0", "-n", str(a.steps)] + (["-z", tok] if tok else [])
        runs = {"baseline": [a.baseline] + args, "new, off": [a.new] + args,
                "new, --attn on": [a.new] + args + ["--attn", "/dev/null"]}
        speeds = {k: [] for k in runs}
        cpu = {k: [] for k in runs}
        rng = random.Random(1)
        for _ in range(a.rounds):
            for k in rng.sample(list(runs), len(runs)):
                s, c = measure(runs[k], a.steps)
                speeds[k].append(s)
                cpu[k].append(c)
        base, base_cpu = statistics.median(speeds["baseline"]), statistics.median(cpu["baseline"])
        print(f"{path} ({a.rounds} rounds of {a.steps} steps)")
        for k in runs:
            med, med_cpu = statistics.median(speeds[k]), statistics.median(cpu[k])
            print(f"  {k:15s} {med:9.1f} tok/s (min {min(speeds[k]):.1f}, max "
                  f"{max(speeds[k]):.1f}) ratio {med / base:.3f} | CPU {med_cpu:.3f} ms/token "
                  f"ratio {med_cpu / base_cpu:.3f}")


if __name__ == "__main__":
    main()
