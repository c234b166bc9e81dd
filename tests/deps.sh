#!/bin/sh
# deps.sh - what `make test` needs, checked (and installed when it can be) before anything runs.
#
# `make test` runs this first; CI (.ci/run) runs only `make test`. When everything is there it
# prints nothing. When something is missing:
#   - Debian packages: as root with apt-get (a fresh Debian machine, a CI container) it installs
#     them; otherwise it prints the apt-get command to run;
#   - npm packages: installed into .deps/npm (git-ignored), where the tests look for them;
#   - a Python other than Debian's lacking a module: it names the command to run instead.
# Whatever it cannot install it names in one line, `make test: ...`, and exits 1, so make
# stops before building or running anything.
#
# Environment: PYTHON, the Python the tests run with (default /usr/bin/python3, Debian's,
# which apt-get can give numpy and sentencepiece); FUZZ_CC, the libFuzzer compiler (clang).
set -u
cd "$(dirname "$0")/.." || exit 1

PYTHON=${PYTHON:-/usr/bin/python3}
FUZZ_CC=${FUZZ_CC:-clang}
PY_MODULES="numpy sentencepiece"
# pinned: the versions the tests were written against
NPM_PACKAGES="@huggingface/tokenizers@0.2.0 @huggingface/jinja@0.5.11"
NPM_DIR=.deps/npm

say() {
    echo "make test: $*" >&2
}

# The modules of PY_MODULES that $PYTHON cannot import.
missing_modules() {
    for m in $PY_MODULES; do
        "$PYTHON" -c "import $m" >/dev/null 2>&1 || printf '%s ' "$m"
    done
}

# The Debian packages whose programs or modules are missing, space-separated.
missing_debs() {
    if [ "$system_python" = 1 ]; then
        for m in $(missing_modules); do printf 'python3-%s ' "$m"; done
    fi
    command -v git >/dev/null 2>&1 || printf 'git '
    command -v pkg-config >/dev/null 2>&1 || printf 'pkgconf '
    command -v tmux >/dev/null 2>&1 || printf 'tmux '
    command -v valgrind >/dev/null 2>&1 || printf 'valgrind '
    command -v npm >/dev/null 2>&1 || printf 'npm '
    # tests/test_attention.py renders the attention page
    command -v chromium >/dev/null 2>&1 || printf 'chromium '
    # tests/test_bpe_tokenizer.py: Oniguruma through jq, the Unicode Character Database
    command -v jq >/dev/null 2>&1 || printf 'jq '
    [ -f /usr/share/unicode/UnicodeData.txt ] || printf 'unicode-data '
    # libFuzzer: Debian 12's clang (14) ships it in libclang-rt-14-dev
    echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
        "$FUZZ_CC" -fsanitize=fuzzer,address,undefined -x c - -o /dev/null >/dev/null 2>&1 ||
        printf 'clang libclang-rt-14-dev '
}

# The pinned npm packages not installed in NPM_DIR at their version.
missing_npm() {
    for spec in $NPM_PACKAGES; do
        name=${spec%@*} version=${spec##*@}
        json=$NPM_DIR/node_modules/$name/package.json
        got=$(node -p "require('./$json').version" 2>/dev/null) || got=
        [ "$got" = "$version" ] || printf '%s ' "$spec"
    done
}

# 1. A Python of the user's own: apt-get cannot fix it, so nothing is installed.
system_python=0
[ "$(readlink -f "$(command -v "$PYTHON" 2>/dev/null || echo "$PYTHON")")" = \
  "$(readlink -f /usr/bin/python3 2>/dev/null)" ] && system_python=1
if [ "$system_python" = 0 ]; then
    if ! "$PYTHON" -c 'import sys' >/dev/null 2>&1; then
        say "PYTHON=$PYTHON does not run; run: make test PYTHON=/usr/bin/python3"
        exit 1
    fi
    modules=$(missing_modules)
    if [ -n "$modules" ]; then
        say "$PYTHON cannot import ${modules% }; run: make test PYTHON=/usr/bin/python3"
        exit 1
    fi
fi

# 2. Debian packages.
debs=$(missing_debs)
if [ -n "$debs" ]; then
    debs=${debs% }
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing Debian packages; run: sudo apt-get install -y $debs"
        exit 1
    fi
    say "installing $debs (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $debs \
           >/dev/null; }; then
        say "apt-get could not install them; run: apt-get update && apt-get install -y $debs"
        exit 1
    fi
    still=$(missing_debs)
    if [ -n "$still" ]; then
        say "still missing after apt-get: ${still% }; run: apt-get install -y ${still% }"
        exit 1
    fi
fi

# 3. npm packages, into NPM_DIR.
pkgs=$(missing_npm)
if [ -n "$pkgs" ]; then
    pkgs=${pkgs% }
    say "installing $pkgs into $NPM_DIR (npm)"
    if ! npm install --prefix "$NPM_DIR" --save-exact --no-audit --no-fund --silent $pkgs \
         >/dev/null 2>&1 || [ -n "$(missing_npm)" ]; then
        say "npm could not install them; run: npm install --prefix $NPM_DIR $pkgs"
        exit 1
    fi
fi
exit 0
