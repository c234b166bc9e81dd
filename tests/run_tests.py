#!/usr/bin/env python3
"""Runs every test in tests/test_*.py and ends with one line: `N passed, N failed`.

A test is a module-level function whose name starts with `test_`. It passes when it returns
and fails when it raises. Usage: run_tests.py [substring ...] runs only the tests whose
`module.function` name contains one of the substrings.

The binaries under test come from $ENGINE_BIN (default `build`), so the same suite runs
against the optimised build and the sanitizer build (`make test-debug`).
"""
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    os.chdir(os.path.dirname(HERE))  # tests run from the project root
    wanted = sys.argv[1:]
    passed = failed = 0
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        module = importlib.import_module(fname[:-3])
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
                print(f"FAIL {full} ({time.time() - start:.1f}s)")
                detail = traceback.format_exc() if not isinstance(e, AssertionError) else str(e)
                for line in detail.rstrip().splitlines()[-20:]:
                    print(f"     {line}")
            else:
                passed += 1
                print(f"ok   {full} ({time.time() - start:.1f}s)")
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
