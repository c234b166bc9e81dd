#!/usr/bin/env python3
"""Writes tests/tokenizer_corpus.json: the texts test_tokenizer.py encodes with both our
tokenizer and sentencepiece. Deterministic (fixed seed), so rerunning it reproduces the
committed file. Texts are valid UTF-8 without NUL (tokenizer_encode takes a C string); invalid
UTF-8 is tested separately with byte strings."""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

HANDWRITTEN = [
    # empty, single characters, whitespace
    "", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n", " \n ", "\t\t", " \t \n",
    "a", "A", "z", "0", "9", ".", ",", "!", "?", "'", '"', "-", "_", "~", "`", "@", "#", "$",
    "%", "^", "&", "*", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "|", ";", ":", "+",
    "=", "é", "ß", "ñ", "ж", "λ", "中", "あ", "한", "ع", "ש", "😀", "\u2581", "\ufffd",
    # English prose and punctuation
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "It's a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife.",
    "\"Quoted,\" she said; 'single quotes' too -- and an em—dash… and ellipsis...",
    "Wait... what?! No way!!! (Really?) [yes] {maybe} <never>",
    "I can't, won't, shouldn't've; y'all'd've.",
    "e.g. i.e. etc. Mr. Smith vs. Mrs. Jones & co.",
    "ALL CAPS SHOUTING TEXT AND MiXeD cAsE wOrDs",
    "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
    # digits and numbers
    "0123456789", "1234567890123456789", "3.14159265358979", "-42", "+1 (555) 123-4567",
    "1,000,000", "1.000.000,50", "2024-01-31T12:34:56Z", "0x1F 0b1010 0o777 1e-9 6.02e23",
    "Version 1.2.3-beta+build.45", "12:30pm, 7/4/1776, 50% off, $19.99, €5, £3, ¥100",
    "100000000000000000000000000000000000000000",
    # runs of spaces, tabs, newlines; leading and trailing whitespace
    "hello  world", "hello   world", "hello    world", "a     b", " leading space",
    "  two leading spaces", "trailing space ", "trailing spaces   ", "  both  ",
    "\tleading tab", "trailing tab\t", "tab\tseparated\tvalues", "line one\nline two",
    "windows\r\nline\r\nendings", "para one\n\npara two\n\n\npara three", "\n leading newline",
    "trailing newline\n", "mixed \t \n \r whitespace", "          ten spaces",
    "x" + " " * 40 + "y", "\t\t\tindented thrice", "a\u00a0b non-breaking", "a\u3000b ideographic",
    "a\u2003b em space", "a\u2009b thin space", "a\u200bb zero width", "\ufeffBOM first",
    # accented Latin
    "café naïve résumé coöperate façade", "Ångström Øresund Æsir œuvre", "Straße Größe Übung",
    "señor niño mañana", "Crème brûlée à la mode", "São Paulo, Português, ação",
    "Łódź Kraków Gdańsk żółć", "Dvořák Škoda čeština", "İstanbul ığdır şoför",
    "Vietnamese: Tiếng Việt có dấu", "e\u0301 (combining acute) vs é", "A\u030a\u0323 stacked marks",
    # Cyrillic, Greek
    "Привет, мир!", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Україна, Київ, їжак, ґанок", "Здравей, свят", "Γειά σου Κόσμε", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία",
    "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ", "Ἐν ἀρχῇ ἦν ὁ λόγος",
    # CJK
    "你好，世界！", "我爱自然语言处理。", "今日は良い天気ですね。", "カタカナとひらがなと漢字",
    "안녕하세요 세계", "한국어 문장입니다.", "東京都渋谷区", "繁體中文與简体中文",
    "中文English混合text", "𠀀𠀁𠀂 rare CJK extension B", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    # Arabic, Hebrew, other scripts
    "مرحبا بالعالم", "السلام عليكم ورحمة الله", "שלום עולם", "עברית עם ניקוד: שָׁלוֹם",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "Γεια σου 世界 Привет مرحبا שלום", "ሰላም ዓለም", "Բարեւ աշխարհ",
    "გამარჯობა მსოფლიო", "வணக்கம் உலகம்", "ᚠᚢᚦᚨᚱᚲ runes", "ꦲꦏ꧀ꦱꦫ Javanese",
    # emoji
    "😀😃😄😁", "I ❤️ you", "👍🏽 thumbs up medium skin", "👨‍👩‍👧‍👦 family ZWJ",
    "🏳️‍🌈 rainbow flag", "🇫🇷🇩🇪🇯🇵 flags", "🧑‍💻 technologist", "🤷‍♀️", "⭐️🌟✨",
    "emoji at end 🎉", "🎉 emoji at start", "a😀b😀c", "😀 😀  😀", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland tag sequence",
    # code
    "int main(void) {\n    printf(\"hello\\n\");\n    return 0;\n}",
    "def f(x):\n\treturn x ** 2  # square\n",
    "for (size_t i = 0; i < n; i++) y[i] += a * x[i];",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"k\": \"v\"}}",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "x = lambda a, b: (a << 2) | (b >> 1) ^ ~0",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))",
    "git commit -m \"fix: off-by-one\" && make -j8 test",
    "    indented code\n        more indented\n",
    "$ echo $HOME | grep -E '^/home/[a-z]+$'",
    "if a != b && c >= d || !e { return; }",
    # URLs and addresses
    "https://www.example.com/path/to/page?query=1&lang=en#section",
    "http://localhost:8080/api/v1/users/123",
    "mailto:someone@example.org", "ftp://files.example.net/pub/file.tar.gz",
    "Visit https://github.com/karpathy/llama2.c for details.",
    "user.name+tag@sub.domain.co.uk", "C:\\Program Files\\App\\app.exe", "/usr/local/bin/python3",
    # special-looking text that must stay plain text
    "<s>", "</s>", "<unk>", "<0x41>", "<0x0A>", "<s>hello</s>", "[INST] hi [/INST]",
    "<|im_start|>user\nhi<|im_end|>",
    # U+2581 (the escaped space) typed literally
    "x\u2581y", "\u2581\u2581", "a \u2581 b",
    # control characters and rare code points (byte fallback)
    "\x01\x02\x03", "bell\x07", "esc\x1b[31mred\x1b[0m", "del\x7f", "\x0b\x0c vertical tab form feed",
    "\x80\x85\x9f C1 controls", "\ue000\uf8ff private use", "\U000f0000\U0010fffd plane 15/16",
    "\U0001d11e musical", "\U0001f9ec dna", "\U00010000 linear b", "\U000e0041 tag A",
    "\ufdd0 noncharacter", "\uffff", "\U0010ffff", "\u0378 unassigned", "①②③ circled",
    "ﬁ ﬂ ligatures", "™ © ® ℃ ℉ № ℗", "∀x∈ℝ: x² ≥ 0 ∑∫∂√∞≈≠", "→ ← ↑ ↓ ⇒ ⇔",
    "½ ¼ ¾ ⅓", "♠♣♥♦ ♪♫", "░▒▓█ box ┌─┐│└┘", "\u00ad soft hyphen", "\u202eRTL override",
    "\u0000".replace("\u0000", "nul removed"),
]

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "tokenizer merge piece score byte fallback sentence encode decode transformer attention"
).split()

SCRIPTS = [
    (0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x00FF), (0x0100, 0x017F), (0x0391, 0x03C9),
    (0x0410, 0x044F), (0x05D0, 0x05EA), (0x0621, 0x064A), (0x0905, 0x0939), (0x0E01, 0x0E2E),
    (0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1F64F),
    (0x2000, 0x206F), (0x2190, 0x22FF), (0x1D400, 0x1D7FF), (0x10000, 0x1007F),
]


def random_codepoint(rng):
    """Any Unicode scalar value except NUL and the surrogates (not encodable in UTF-8)."""
    while True:
        cp = rng.choice([rng.randint(1, 0x7F), rng.randint(0x80, 0xFFFF),
                         rng.randint(0x10000, 0x10FFFF)])
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def generated(rng):
    texts = []
    for _ in range(60):  # word salad with varied whitespace and punctuation
        parts = []
        for _ in range(rng.randint(1, 25)):
            w = rng.choice(WORDS)
            if rng.random() < 0.2:
                w = w.capitalize()
            if rng.random() < 0.1:
                w += rng.choice(",.;:!?")
            parts.append(w)
            parts.append(rng.choice([" "] * 12 + ["  ", "   ", "\t", "\n", "\n\n", " \n"]))
        texts.append("".join(parts).rstrip(" ") if rng.random() < 0.5 else "".join(parts))
    for _ in range(50):  # runs from one script, sometimes mixed with a second
        lo, hi = rng.choice(SCRIPTS)
        s = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 20)))
        if rng.random() < 0.4:
            lo, hi = rng.choice(SCRIPTS)
            s += rng.choice(["", " ", "  "]) + "".join(chr(rng.randint(lo, hi))
                                                        for _ in range(rng.randint(1, 10)))
        texts.append(s)
    for _ in range(40):  # arbitrary code points, including unassigned ones
        texts.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 12))))
    for _ in range(20):  # numbers
        texts.append(rng.choice(["", "-", "+", "$"]) + str(rng.randint(0, 10 ** rng.randint(1, 15)))
                     + rng.choice(["", ".5", ",000", "%", " km", "e10"]))
    for _ in range(15):  # whitespace soup
        texts.append("".join(rng.choice([" ", "\t", "\n", "\r", "a", "b"]) for _ in range(rng.randint(1, 16))))
    # a few long texts
    texts.append(" ".join(rng.choice(WORDS) for _ in range(400)))
    texts.append("".join(HANDWRITTEN[60:130]))
    texts.append("\n".join(HANDWRITTEN[100:200]))
    return texts


def main():
    rng = random.Random(20240131)
    texts = HANDWRITTEN + generated(rng)
    for t in texts:
        assert "\0" not in t
        t.encode("utf-8")  # no surrogates
    path = os.path.join(HERE, "tokenizer_corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{path}: {len(texts)} texts")


if __name__ == "__main__":
    main()
