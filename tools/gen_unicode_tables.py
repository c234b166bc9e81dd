#!/usr/bin/env python3
"""Writes unicode_tables.h: the Unicode data the byte-level BPE tokenizer needs, as compact
sorted range tables for unicode.c, from the Unicode Character Database as Debian's
unicode-data package installs it (apt-get install unicode-data; /usr/share/unicode).

  gen_unicode_tables.py [UCD_DIR] > unicode_tables.h

The tables:
  classes        what the pre-tokenizers' regexes ask of a character: a letter (\\p{L}: general
                 categories Lu Ll Lt Lm Lo), a number (\\p{N}: Nd Nl No) or white space (\\s in
                 Oniguruma, the Rust library's regex engine: the White_Space property of
                 PropList.txt). The three are disjoint; everything else is "other".
  ccc            canonical combining classes other than 0 (UnicodeData.txt field 3)
  nfc_qc         code points whose NFC_Quick_Check is Maybe or No (DerivedNormalizationProps.txt)
  decompositions the canonical decomposition mapping of every code point that has one (one
                 or two code points; unicode.c applies it recursively); Hangul syllables are
                 left to the algorithm of Unicode chapter 3.12
  compositions   the primary composites: canonical pairs (first, second) -> composite, without
                 the Full_Composition_Exclusion code points

This is a development tool, not part of the build: the generated header is committed, and
tests/test_unicode_tables.py checks that it is what this script writes from the installed data.
It lives in tools/ because it produces source code rather than testing anything.
"""
import os
import re
import sys

LETTER, NUMBER, SPACE = 1, 2, 3


def ucd_lines(path):
    """The data lines of a UCD file: comments and blank lines dropped, fields split on ';'."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield [field.strip() for field in line.split(";")]


def code_range(field):
    """'0041' or '0041..005A' as (first, last)."""
    first, _, last = field.partition("..")
    return int(first, 16), int(last or first, 16)


def unicode_data(ucd):
    """{code point: (general category, ccc, decomposition field)} from UnicodeData.txt, with
    the First/Last ranges (CJK ideographs, Hangul syllables, ...) expanded."""
    chars = {}
    first = None
    for fields in ucd_lines(os.path.join(ucd, "UnicodeData.txt")):
        cp, name, category, ccc, decomposition = (int(fields[0], 16), fields[1], fields[2],
                                                  int(fields[3]), fields[5])
        if name.endswith(", First>"):
            first = cp
            continue
        if name.endswith(", Last>"):
            for c in range(first, cp + 1):
                chars[c] = (category, ccc, "")
            continue
        chars[cp] = (category, ccc, decomposition)
    return chars


def ranges(values):
    """[(first, last, value)] merging runs of consecutive code points with equal values, from
    a {code point: value} dict."""
    out = []
    for cp in sorted(values):
        v = values[cp]
        if out and out[-1][1] == cp - 1 and out[-1][2] == v:
            out[-1][1] = cp
        else:
            out.append([cp, cp, v])
    return out


def version(ucd):
    """The Unicode version the ReadMe or DerivedAge.txt names."""
    with open(os.path.join(ucd, "DerivedAge.txt"), encoding="utf-8") as f:
        m = re.search(r"DerivedAge-(\d+\.\d+\.\d+)\.txt", f.readline())
    if not m:
        sys.exit(f"gen_unicode_tables.py: {ucd}/DerivedAge.txt: no version in its first line")
    return m.group(1)


def main(ucd):
    chars = unicode_data(ucd)
    classes = {}
    for cp, (category, _, _) in chars.items():
        if category[0] == "L":
            classes[cp] = LETTER
        elif category[0] == "N":
            classes[cp] = NUMBER
    for fields in ucd_lines(os.path.join(ucd, "PropList.txt")):
        if fields[1] == "White_Space":
            first, last = code_range(fields[0])
            for cp in range(first, last + 1):
                assert cp not in classes, f"U+{cp:04X} is white space and a letter or number"
                classes[cp] = SPACE
    ccc = {cp: c for cp, (_, c, _) in chars.items() if c}

    nfc_qc, exclusions = {}, set()
    for fields in ucd_lines(os.path.join(ucd, "DerivedNormalizationProps.txt")):
        first, last = code_range(fields[0])
        if fields[1] == "NFC_QC":
            for cp in range(first, last + 1):
                nfc_qc[cp] = {"M": 1, "N": 2}[fields[2]]
        elif fields[1] == "Full_Composition_Exclusion":
            exclusions.update(range(first, last + 1))

    canonical = {}
    for cp, (_, _, d) in chars.items():
        if d and not d.startswith("<"):
            canonical[cp] = [int(x, 16) for x in d.split()]
            assert len(canonical[cp]) <= 2, f"U+{cp:04X} decomposes into more than two"

    def full(cp):
        return [x for c in canonical[cp] for x in (full(c) if c in canonical else [c])]

    compositions = sorted((pair[0], pair[1], cp) for cp, pair in canonical.items()
                          if len(pair) == 2 and cp not in exclusions)

    w = sys.stdout.write
    w(f"/* unicode_tables.h - generated by tools/gen_unicode_tables.py from the Unicode Character\n"
      f" * Database {version(ucd)} (Debian's unicode-data). Do not edit: rerun the script. */\n\n")
    w(f'#define UNICODE_VERSION "{version(ucd)}"\n')
    w(f"/* the longest full canonical decomposition, in code points */\n")
    w(f"#define UNICODE_MAX_DECOMPOSITION {max(len(full(cp)) for cp in canonical)}\n\n")

    def table(ctype, name, comment, rows, fmt, per_line):
        w(f"/* {comment} */\n")
        w(f"static const {ctype} {name}[{len(rows)}] = {{\n")
        for i in range(0, len(rows), per_line):
            w("    " + " ".join("{" + fmt(*r) + "}," for r in rows[i:i + per_line]) + "\n")
        w("};\n\n")

    def hex_hex_int(a, b, c):
        return f"0x{a:X}, 0x{b:X}, {c}"

    def hex3(a, b, c):
        return f"0x{a:X}, 0x{b:X}, 0x{c:X}"

    table("UnicodeRange", "unicode_classes", "(first, last, class): 1 letter, 2 number, "
          "3 white space", ranges(classes), hex_hex_int, 4)
    table("UnicodeRange", "unicode_ccc", "(first, last, canonical combining class)",
          ranges(ccc), hex_hex_int, 4)
    table("UnicodeRange", "unicode_nfc_qc", "(first, last, NFC_Quick_Check): 1 Maybe, 2 No",
          ranges(nfc_qc), hex_hex_int, 4)
    table("UnicodeDecomposition", "unicode_decompositions", "(code point, first, second): "
          "the canonical decomposition, one level (second is 0 for a singleton)",
          [(cp, d[0], d[1] if len(d) > 1 else 0) for cp, d in sorted(canonical.items())],
          hex3, 4)
    table("UnicodeComposition", "unicode_compositions", "(first, second, composite), sorted "
          "by (first, second)", compositions, hex3, 4)


if __name__ == "__main__":
    ucd_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    if not os.path.isfile(os.path.join(ucd_dir, "UnicodeData.txt")):
        sys.exit(f"gen_unicode_tables.py: {ucd_dir}/UnicodeData.txt is missing "
                 f"(apt-get install unicode-data)")
    main(ucd_dir)
