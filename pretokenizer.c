/*
 * pretokenizer.c - the pre-tokenizers' regexes as plain C matchers.
 *
 * A regex alternation takes, at each position, the first alternative that matches, each
 * quantifier as long as the rest still matches. Written out by hand, each alternative below is
 * one test on the classes of the next characters: a matcher returns where the match that
 * starts at character i ends, and the text is cut there and matched again. Every character is
 * a letter, a number, a space or "other" (unicode.h), and each class starts some alternative,
 * so a match is never empty and never missing.
 *
 * The regexes' white-space tests are on \s, the White_Space property, which holds \r and \n;
 * a space is the character U+0020 alone (the " ?" of the regexes).
 */
#include <stdint.h>
#include <stdlib.h>

#include "pretokenizer.h"
#include "unicode.h"

/* The text decoded: code points, their classes, and where each starts in the bytes. */
typedef struct {
    const uint32_t *cp;     /* (n) code points (UNICODE_INVALID + byte for invalid bytes) */
    const unsigned char *cls; /* (n) unicode_class of each */
} Chars;

/* The end of the run of characters of class cls that starts at i (at most at n). */
static size_t run(const Chars *c, size_t i, size_t n, int cls) {
    while (i < n && c->cls[i] == cls) i++;
    return i;
}

/* The end of the contraction 's 't 're 've 'm 'll 'd at i (where c->cp[i] is an apostrophe),
 * or i if there is none. With fold, letters match in either case, and U+017F (long s) as s:
 * Oniguruma's (?i) compares Unicode case foldings, and long s folds to s. */
static size_t contraction(const Chars *c, size_t i, size_t n, int fold) {
    uint32_t a = i + 1 < n ? c->cp[i + 1] : 0, b = i + 2 < n ? c->cp[i + 2] : 0;
    if (fold) {
        if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
        if (b >= 'A' && b <= 'Z') b += 'a' - 'A';
        if (a == 0x17F) a = 's';
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (((a == 'r' || a == 'v') && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
}

/* The end of white space at i by \s+(?!\S)|\s+ : a run of spaces, less its last character
 * when a non-space follows (that one goes with the next word), unless the run is that one
 * character alone. */
static size_t spaces(const Chars *c, size_t i, size_t n) {
    size_t e = run(c, i, n, UNICODE_SPACE);
    return e == n || e - i == 1 ? e : e - 1;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const Chars *c, size_t i, size_t n) {
    if (c->cp[i] == '\'') {
        size_t e = contraction(c, i, n, 0);
        if (e > i) return e;
    }
    /* " ?X+" takes the space only when an X follows it */
    size_t j = c->cp[i] == ' ' && i + 1 < n && c->cls[i + 1] != UNICODE_SPACE ? i + 1 : i;
    if (c->cls[j] != UNICODE_SPACE) return run(c, j, n, c->cls[j]);
    return spaces(c, i, n);
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const Chars *c, size_t i, size_t n, size_t max_digits) {
    uint32_t cp = c->cp[i];
    int cls = c->cls[i];
    if (cp == '\'') {
        size_t e = contraction(c, i, n, 1);
        if (e > i) return e;
    }
    /* letters, after at most one character that is no CR, LF, letter or number */
    if (cls == UNICODE_LETTER) return run(c, i, n, UNICODE_LETTER);
    if (cp != '\r' && cp != '\n' && cls != UNICODE_NUMBER && i + 1 < n &&
        c->cls[i + 1] == UNICODE_LETTER)
        return run(c, i + 1, n, UNICODE_LETTER);
    if (cls == UNICODE_NUMBER) {
        size_t e = i;
        while (e < n && e - i < max_digits && c->cls[e] == UNICODE_NUMBER) e++;
        return e;
    }
    /* others, after an optional space, then any CRs and LFs */
    size_t j = cp == ' ' && i + 1 < n && c->cls[i + 1] == UNICODE_OTHER ? i + 1 : i;
    if (c->cls[j] == UNICODE_OTHER) {
        size_t e = run(c, j, n, UNICODE_OTHER);
        while (e < n && (c->cp[e] == '\r' || c->cp[e] == '\n')) e++;
        return e;
    }
    /* white space: \s*[\r\n]+ ends after the run's last CR or LF, if it has one */
    size_t e = run(c, i, n, UNICODE_SPACE), last = i;
    for (size_t k = i; k < e; k++)
        if (c->cp[k] == '\r' || c->cp[k] == '\n') last = k + 1;
    if (last > i) return last;
    return spaces(c, i, n);
}

/* Appends the piece boundaries of chars [i, n) cut by the matcher of `kind` (GPT-2, Llama 3 or
 * Qwen2) to ends, as character indices. */
static void cut(int kind, const Chars *c, size_t i, size_t n, size_t *ends, size_t *n_pieces) {
    while (i < n) {
        i = kind == PRETOKENIZER_GPT2 ? match_gpt2(c, i, n)
          : match_llama3(c, i, n, kind == PRETOKENIZER_LLAMA3 ? 3 : 1);
        ends[(*n_pieces)++] = i;
    }
}

const char *pretokenizer_name(int kind) {
    switch (kind) {
    case PRETOKENIZER_GPT2: return "gpt2";
    case PRETOKENIZER_LLAMA3: return "llama3";
    case PRETOKENIZER_QWEN2: return "qwen2";
    case PRETOKENIZER_SMOLLM2: return "smollm2";
    default: return NULL;
    }
}

int pretokenize(int kind, const char *text, size_t len, size_t *ends, size_t *n_pieces) {
    *n_pieces = 0;
    if (!pretokenizer_name(kind)) return -1;
    if (len == 0) return 0;
    /* one allocation: byte offsets (one more, for the end), code points, classes */
    if (len > ((size_t)-1) / (sizeof(uint32_t) + sizeof(size_t) + 1) - 1) return -1;
    size_t *offset = malloc((len + 1) * sizeof(size_t) + len * sizeof(uint32_t) + len);
    if (!offset) return -1;
    uint32_t *cp = (uint32_t *)(offset + len + 1);
    unsigned char *cls = (unsigned char *)(cp + len);

    const unsigned char *s = (const unsigned char *)text;
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        offset[n] = i;
        i += (size_t)utf8_decode(s + i, len - i, &cp[n]);
        cls[n] = (unsigned char)unicode_class(cp[n]);
    }
    offset[n] = len;

    Chars c = {cp, cls};
    if (kind == PRETOKENIZER_SMOLLM2) {
        /* each number alone, GPT-2's regex inside the runs between them */
        for (size_t i = 0; i < n;) {
            size_t e = i + 1;
            if (cls[i] == UNICODE_NUMBER) {
                ends[(*n_pieces)++] = e;
            } else {
                while (e < n && cls[e] != UNICODE_NUMBER) e++;
                cut(PRETOKENIZER_GPT2, &c, i, e, ends, n_pieces);
            }
            i = e;
        }
    } else {
        cut(kind, &c, 0, n, ends, n_pieces);
    }
    for (size_t k = 0; k < *n_pieces; k++) ends[k] = offset[ends[k]];
    free(offset);
    return 0;
}
