"""Every SIMD kernel against its plain C reference: tests/test_kernels.c runs for the native
build and, compiled again, for the AVX2, AVX-512-without-VNNI and plain paths, each wherever
this CPU can run it."""
import os
import re
import subprocess

import common

# the Makefile's warnings and -ffp-contract=off (the references round as written, never fused
# into an FMA, whichever compiler cc is)
CFLAGS = ["-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Wshadow",
          "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-D_POSIX_C_SOURCE=200809L", "-I."]


def check_kernel_tests(exe, env=None):
    """Runs a test_kernels binary; fails on any failing case, naming it."""
    p = subprocess.run([exe], capture_output=True, timeout=600, env=env)
    out = p.stdout.decode(errors="replace")
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert p.returncode == 0 and not fails and re.search(r"\d+ passed, 0 failed", out), (
        f"{exe} exited {p.returncode}: " + "; ".join(fails[:10]) + p.stderr.decode(errors="replace"))
    return out.splitlines()[0]  # "kernels: ..." names the paths it tested


def test_kernels_native():
    check_kernel_tests(os.path.join(common.BIN, "test_kernels"))


def test_kernels_passive_threads():
    # OMP_WAIT_POLICY=passive: the team's threads sleep after every call instead of spinning
    # (team.c), so every call wakes them
    check_kernel_tests(os.path.join(common.BIN, "test_kernels"),
                       env=dict(os.environ, OMP_WAIT_POLICY="passive"))


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_kernels_every_path():
    # -march=native only exercises this machine's best path; the others are compiled
    # explicitly so that each is held to the reference wherever the CPU can run it.
    flags = cpu_flags()
    variants = {"plain": [], "avx2": ["-mavx2", "-mfma"]}
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        variants["avx512novnni"] = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]
    if "avx2" not in flags:
        del variants["avx2"]
    sanitize = ["-O1", "-g", "-fsanitize=address,undefined"] if "debug" in common.BIN else ["-O2"]
    for name, arch in variants.items():
        exe = common.tmp_path(f"test_kernels_{name}")
        sources = ["tests/test_kernels.c", "kernels.c", "attention.c", "matmul.c", "matmul_f32.c",
                   "matmul_bf16.c", "matmul_q8_0.c", "matmul_q4_0.c", "team.c"]
        cmd = ["cc"] + CFLAGS + sanitize + arch + sources + ["-lm", "-o", exe]
        p = subprocess.run(cmd, capture_output=True, timeout=300)
        assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}"
        line = check_kernel_tests(exe)
        expect = {"plain": "f32:plain", "avx2": "f32:avx2", "avx512novnni": "q8_0:avx2"}[name]
        assert expect in line, f"{name} build tested '{line}', not the {name} path"
