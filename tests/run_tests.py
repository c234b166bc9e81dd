#!/usr/bin/env python3
"""Runs the tests and ends with one line: `N passed, N failed`.

A test is a module-level function whose name starts with `test_`. It passes when it returns
and fails when it raises.

  run_tests.py [substring ...]        the engine suite (tests/test_*.py) against $ENGINE_BIN
                                      (default `build`): `make test-fast`
  run_tests.py --all [substring ...]  everything, as `make test` and CI run it:
                                        1. the engine suite against build/ (release),
                                        2. the engine suite again against build/debug/
                                           (ASan + UBSan), its tests named `debug:...`,
                                           leaving out the modules that run no C code,
                                        3. once: tests/check_*.py, the fuzz targets for
                                           $FUZZ_SECONDS each and the valgrind runs;
                                      the last line sums all three. Step 2 runs in a child
                                      process beside 1 and 3 (most tests run one thread, and
                                      the sanitizer suite alone takes longer than the other
                                      two together); its lines are printed after theirs.
  run_tests.py --c-code-only ...      leaves out the modules that run no C code: those that
                                      say `C_CODE = False` (export.py's own tests, the
                                      include graph, ...); a sanitizer build has nothing to
                                      check there (`make test-debug`, and step 2 above)

Substrings select the tests whose `module.function` name contains one of them.
"""
import importlib
import os
import re
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def run_modules(prefix, wanted, label="", c_code_only=False):
    """Runs every test of the modules tests/<prefix>*.py in this process (with c_code_only,
    of those whose tests run C code). Returns (passed, failed)."""
    passed = failed = 0
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith(prefix) and fname.endswith(".py")):
            continue
        module = importlib.import_module(fname[:-3])
        if c_code_only and not getattr(module, "C_CODE", True):
            continue
        for name, fn in list(vars(module).items()):
            full = f"{fname[:-3]}.{name}"
            if not (name.startswith("test_") and callable(fn)):
                continue
            if wanted and not any(w in full for w in wanted):
                continue
            start = time.time()
            try:
                fn()
            except Exception as e:  # a failed assert or a crash: either way the test failed
                failed += 1
                print(f"FAIL {label}{full} ({time.time() - start:.1f}s)")
                detail = traceback.format_exc() if not isinstance(e, AssertionError) else str(e)
                for line in detail.rstrip().splitlines()[-20:]:
                    print(f"     {line}")
            else:
                passed += 1
                print(f"ok   {label}{full} ({time.time() - start:.1f}s)")
            sys.stdout.flush()
    return passed, failed


def start_debug_suite(wanted):
    """Starts the engine suite against the sanitizer build in a child process (the test
    modules read $ENGINE_BIN when imported), writing to a log; returns (child, log path)."""
    env = dict(os.environ, ENGINE_BIN=os.path.join("build", "debug"),
               ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    os.makedirs(os.path.join("build", "debug"), exist_ok=True)
    log = os.path.join("build", "debug", "tests.log")
    with open(log, "w") as out:  # a session of its own: stop() ends it with all it started
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--label", "debug:",
                                  "--c-code-only"] + wanted, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    return child, log


def stop(child):
    """Ends the child's whole process group (the engine runs, node and compilers it started,
    whose timeouts it was keeping), if it is still running."""
    if child.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
            child.wait(grace)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def finish_debug_suite(child, log):
    """Prints the child's lines as they come, with their `debug:` names, until it ends; its
    summary line is parsed instead. Returns (passed, failed)."""
    counts = None
    for line in follow(child, log):
        m = SUMMARY.match(line.strip())
        if m:
            counts = int(m.group(1)), int(m.group(2))
        else:
            print(line, end="")
            sys.stdout.flush()
    if counts is None:  # the child died before its summary: count that as a failure
        print(f"FAIL debug: the debug suite ended with status {child.returncode} and no summary")
        return 0, 1
    return counts


def follow(child, log):
    """The lines of log, as the running child writes them, until it has ended (read as bytes:
    a read may end inside a UTF-8 character, which only its whole line decodes)."""
    with open(log, "rb") as f:
        partial = b""
        while True:
            ended = child.poll() is not None  # read once more after the end
            chunk = f.read()
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            yield from (line.decode(errors="replace") + "\n" for line in lines)
            if ended and not chunk:
                if partial:
                    yield partial.decode(errors="replace") + "\n"
                return
            if not chunk:
                time.sleep(0.2)


def main():
    sys.path.insert(0, HERE)
    os.chdir(ROOT)  # tests run from the project root
    args = sys.argv[1:]
    run_all = "--all" in args
    label = ""
    if "--label" in args:  # internal: the child process of --all
        label = args[args.index("--label") + 1]
        del args[args.index("--label"):args.index("--label") + 2]
    wanted = [a for a in args if a not in ("--all", "--c-code-only")]

    debug = start_debug_suite(wanted) if run_all else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` runs
    try:
        passed, failed = run_modules("test_", wanted, label, "--c-code-only" in args)
        if run_all:
            for p, f in (run_modules("check_", wanted), finish_debug_suite(*debug)):
                passed, failed = passed + p, failed + f
    finally:
        if debug:  # interrupted: leave nothing running
            stop(debug[0])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
