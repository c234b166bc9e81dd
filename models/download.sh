#!/bin/sh
# download.sh - fetch a known checkpoint with curl and check its sha256.
#
#   models/download.sh NAME [DIR]    fetch NAME's files into DIR (default: this directory)
#   models/download.sh --list        the names and their files
#
# Each file is downloaded to FILE.part, checked, then renamed, so an interrupted or corrupted
# download never leaves a file that looks complete. A file already present is checked and
# kept if it matches. A file whose sha256 this script does not know is downloaded but
# reported as UNVERIFIED. Set MIRROR=URL to fetch every file as URL/FILE instead (a local
# copy, e.g. MIRROR=file:///path/to/dir). See models/README.md for what to run next.
set -eu

HF=https://huggingface.co
TINYLLAMAS=$HF/karpathy/tinyllamas/resolve/main
LLAMA2C=https://github.com/karpathy/llama2.c/raw/master
TINYLLAMA_CHAT=$HF/TinyLlama/TinyLlama-1.1B-Chat-v1.0/resolve/main
LLAMA68M=$HF/TheBlokeAI/JackFram-Llama-68M/resolve/5242736eefc966fe934ac4d02c676ce211c9bc02

# The files of a name, one per line: path under DIR, URL, sha256 ("-" when unknown).
files() {
    case "$1" in
    stories260K)
        echo "stories260K.bin $TINYLLAMAS/stories260K/stories260K.bin b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"
        echo "tok512.bin $TINYLLAMAS/stories260K/tok512.bin 037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312" ;;
    stories15M|stories42M|stories110M)
        echo "$1.bin $TINYLLAMAS/$1.bin -"
        files tokenizer ;;
    tokenizer)
        echo "tokenizer.bin $LLAMA2C/tokenizer.bin 50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361"
        echo "tokenizer.model $LLAMA2C/tokenizer.model 9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347" ;;
    tinyllama-chat)
        d=TinyLlama-1.1B-Chat-v1.0
        for f in config.json tokenizer_config.json tokenizer.model model.safetensors; do
            echo "$d/$f $TINYLLAMA_CHAT/$f -"
        done ;;
    llama-68m)
        d=JackFram-Llama-68M
        echo "$d/config.json $LLAMA68M/config.json -"
        echo "$d/tokenizer_config.json $LLAMA68M/tokenizer_config.json -"
        echo "$d/tokenizer.model $LLAMA68M/tokenizer.model 9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
        echo "$d/model.safetensors $LLAMA68M/model.safetensors 64a852aac17c1472c2e834d8ef6fbbdd7ba173a76cee10cc629be0bf3374079f" ;;
    *) return 1 ;;
    esac
}

NAMES="stories260K stories15M stories42M stories110M tokenizer tinyllama-chat llama-68m"

usage() {
    echo "usage: models/download.sh NAME [DIR]   (NAME: $NAMES)" >&2
    echo "       models/download.sh --list" >&2
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
if [ "$1" = "--list" ]; then
    for n in $NAMES; do
        echo "$n:"
        files "$n" | while read -r path url sum; do echo "  $path  $url"; done
    done
    exit 0
fi
case "$1" in -*) usage ;; esac
name=$1
dir=${2:-$(dirname "$0")}
list=$(files "$name") || { echo "download.sh: $name: unknown name (one of: $NAMES)" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "download.sh: curl is not installed" >&2; exit 1; }

echo "$list" | while read -r path url sum; do
    dest=$dir/$path
    [ -n "${MIRROR:-}" ] && url=$MIRROR/$(basename "$path")
    mkdir -p "$(dirname "$dest")"
    if [ -f "$dest" ] && [ "$sum" != "-" ] && [ "$(sha256_of "$dest")" = "$sum" ]; then
        echo "$dest: already here, sha256 ok"
        continue
    fi
    echo "$dest: fetching $url"
    if ! curl -fL --retry 3 --progress-bar -o "$dest.part" "$url"; then
        rm -f "$dest.part"
        echo "download.sh: $url: download failed" >&2
        exit 1
    fi
    if [ "$sum" = "-" ]; then
        mv "$dest.part" "$dest"
        echo "$dest: UNVERIFIED: this script knows no sha256 for it; its sha256 is $(sha256_of "$dest")"
    else
        got=$(sha256_of "$dest.part")
        if [ "$got" != "$sum" ]; then
            rm -f "$dest.part"
            echo "download.sh: $dest: sha256 mismatch: got $got, expected $sum; file removed" >&2
            exit 1
        fi
        mv "$dest.part" "$dest"
        echo "$dest: sha256 ok"
    fi
done
