/*
 * unicode.c - UTF-8 decoding and encoding, character classes, NFC, and the terminal filter.
 *
 * The tables (unicode_tables.h) are sorted arrays searched by bisection: a few hundred ranges
 * each, so a lookup is about ten comparisons, and ASCII never reaches them.
 */
#include <stdlib.h>
#include <string.h>

#include "unicode.h"

typedef struct {
    uint32_t first, last;
    uint32_t value;
} UnicodeRange;

typedef struct {
    uint32_t cp, first, second;
} UnicodeDecomposition;

typedef struct {
    uint32_t first, second, composite;
} UnicodeComposition;

#include "unicode_tables.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 */

/* Number of bytes in a UTF-8 sequence starting with c, or 0 if c cannot start one. */
static int utf8_lead_length(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* Whether c may be the second byte after the first byte lead: the range depends on the lead,
 * to refuse overlong forms (E0, F0), surrogates (ED) and values past U+10FFFF (F4). */
static int utf8_second_ok(unsigned char lead, unsigned char c) {
    unsigned char lo = 0x80, hi = 0xBF;
    if (lead == 0xE0) lo = 0xA0;
    else if (lead == 0xED) hi = 0x9F;
    else if (lead == 0xF0) lo = 0x90;
    else if (lead == 0xF4) hi = 0x8F;
    return c >= lo && c <= hi;
}

int utf8_valid_length(const unsigned char *s, size_t n) {
    int len = utf8_lead_length(s[0]);
    if (len <= 1) return len;
    if ((size_t)len > n || !utf8_second_ok(s[0], s[1])) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    int len = utf8_valid_length(s, n);
    switch (len) {
    case 1: *cp = s[0]; return 1;
    case 2: *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F); return 2;
    case 3: *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
            return 3;
    case 4: *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                  (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
            return 4;
    default: *cp = UNICODE_INVALID + s[0]; return 1;
    }
}

int utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp >= UNICODE_INVALID) {
        out[0] = (unsigned char)(cp - UNICODE_INVALID);
        return 1;
    }
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------------------------ */
/* Table lookups */

/* The value of the range holding cp in a sorted table of n ranges, or 0 if none does. */
static uint32_t range_value(const UnicodeRange *table, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < table[mid].first) hi = mid;
        else if (cp > table[mid].last) lo = mid + 1;
        else return table[mid].value;
    }
    return 0;
}

int unicode_class(uint32_t cp) {
    if (cp < 0x80) { /* the common case, without the search */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UNICODE_LETTER;
        if (cp >= '0' && cp <= '9') return UNICODE_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return UNICODE_SPACE;
        return UNICODE_OTHER;
    }
    return (int)range_value(unicode_classes, COUNT(unicode_classes), cp);
}

const char *unicode_version(void) {
    return UNICODE_VERSION;
}

/* Canonical combining class of cp; 0 for invalid bytes. Nothing below U+0300 has one. */
static int combining_class(uint32_t cp) {
    if (cp < 0x300) return 0;
    return (int)range_value(unicode_ccc, COUNT(unicode_ccc), cp);
}

/* ------------------------------------------------------------------------------------------ */
/* NFC: canonical decomposition, canonical ordering, canonical composition (UAX #15) */

/* Hangul syllables decompose and compose by arithmetic (Unicode chapter 3.12). */
enum {
    HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
    HANGUL_L_COUNT = 19, HANGUL_V_COUNT = 21, HANGUL_T_COUNT = 28,
    HANGUL_N_COUNT = HANGUL_V_COUNT * HANGUL_T_COUNT,
    HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_N_COUNT,
};

/* The one-level canonical decomposition of cp from the table, or NULL if it has none. */
static const UnicodeDecomposition *find_decomposition(uint32_t cp) {
    size_t lo = 0, hi = COUNT(unicode_decompositions);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < unicode_decompositions[mid].cp) hi = mid;
        else if (cp > unicode_decompositions[mid].cp) lo = mid + 1;
        else return &unicode_decompositions[mid];
    }
    return NULL;
}

/* Appends the full canonical decomposition of cp to out (room for UNICODE_MAX_DECOMPOSITION
 * more). Returns the number of code points appended. */
static int decompose(uint32_t cp, uint32_t *out) {
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / HANGUL_N_COUNT;
        out[1] = HANGUL_V + s % HANGUL_N_COUNT / HANGUL_T_COUNT;
        if (s % HANGUL_T_COUNT == 0) return 2;
        out[2] = HANGUL_T + s % HANGUL_T_COUNT;
        return 3;
    }
    const UnicodeDecomposition *d = cp < 0xC0 ? NULL : find_decomposition(cp);
    if (!d) {
        out[0] = cp;
        return 1;
    }
    /* only the first code point of a mapping decomposes further (the table's generator
     * checked the longest result fits UNICODE_MAX_DECOMPOSITION) */
    int n = decompose(d->first, out);
    if (d->second) out[n++] = d->second;
    return n;
}

/* The primary composite of the pair (a, b), or 0 if they do not compose. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_L_COUNT && b >= HANGUL_V &&
        b < HANGUL_V + HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_T_COUNT)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = COUNT(unicode_compositions);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const UnicodeComposition *c = &unicode_compositions[mid];
        if (a < c->first || (a == c->first && b < c->second)) hi = mid;
        else if (a > c->first || b > c->second) lo = mid + 1;
        else return c->composite;
    }
    return 0;
}

int unicode_is_nfc(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    int last_ccc = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) { /* ASCII: in NFC, and a starter */
            last_ccc = 0;
            i++;
            continue;
        }
        uint32_t cp;
        i += (size_t)utf8_decode(s + i, len - i, &cp);
        int ccc = combining_class(cp);
        if (ccc != 0 && last_ccc > ccc) return 0;
        if (cp >= 0x300 && cp < UNICODE_INVALID &&
            range_value(unicode_nfc_qc, COUNT(unicode_nfc_qc), cp) != 0)
            return 0;
        last_ccc = ccc;
    }
    return 1;
}

/* Sorts a run of n combining marks by combining class, keeping the order of equal classes:
 * insertion sort for the short runs real text has, a counting sort for long ones so that a
 * hostile run of thousands of marks stays linear. tmp has room for n. */
static void sort_marks(uint32_t *cps, unsigned char *ccc, size_t n, uint32_t *tmp) {
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            uint32_t cp = cps[i];
            unsigned char c = ccc[i];
            size_t j = i;
            for (; j > 0 && ccc[j - 1] > c; j--) {
                cps[j] = cps[j - 1];
                ccc[j] = ccc[j - 1];
            }
            cps[j] = cp;
            ccc[j] = c;
        }
        return;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[ccc[i] + 1]++;
    for (int c = 0; c < 256; c++) start[c + 1] += start[c];
    for (size_t i = 0; i < n; i++) tmp[start[ccc[i]]++] = cps[i];
    memcpy(cps, tmp, n * sizeof *cps);
    /* start[c] is now where class c ends */
    size_t i = 0;
    for (int c = 0; c < 256; c++)
        for (; i < start[c]; i++) ccc[i] = (unsigned char)c;
}

char *unicode_nfc(const char *text, size_t len, size_t *out_len) {
    const unsigned char *s = (const unsigned char *)text;
    /* a character of k bytes decomposes into at most UNICODE_MAX_DECOMPOSITION code points,
     * and k >= 1 */
    if (len > ((size_t)-1) / (2 * UNICODE_MAX_DECOMPOSITION * sizeof(uint32_t)) - 1)
        return NULL;
    size_t cap = len * UNICODE_MAX_DECOMPOSITION + 1;
    uint32_t *cps = malloc(2 * cap * sizeof *cps);
    unsigned char *ccc = malloc(cap);
    char *out = malloc(3 * len + 1);
    if (!cps || !ccc || !out) {
        free(cps);
        free(ccc);
        free(out);
        return NULL;
    }
    uint32_t *tmp = cps + cap;

    /* decompose, then put each run of combining marks in canonical order */
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)utf8_decode(s + i, len - i, &cp);
        int k = cp < UNICODE_INVALID ? decompose(cp, cps + n) : (cps[n] = cp, 1);
        for (int j = 0; j < k; j++, n++) ccc[n] = (unsigned char)combining_class(cps[n]);
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && ccc[j] != 0) j++;
        if (j - i > 1) sort_marks(cps + i, ccc + i, j - i, tmp);
        i = j + (j == i);
    }

    /* compose: a character joins the last starter unless something between them blocks it,
     * that is, has class 0 or a class not below its own */
    size_t w = 0, starter = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = cps[i];
        int c = ccc[i];
        if (starter != (size_t)-1) {
            int adjacent = w - 1 == starter;
            int last = ccc[w - 1];
            if (adjacent || (last != 0 && last < c)) {
                uint32_t composite = compose(cps[starter], cp);
                if (composite) {
                    cps[starter] = composite;
                    continue;
                }
            }
        }
        if (c == 0) starter = w;
        cps[w] = cp;
        ccc[w] = (unsigned char)c;
        w++;
    }

    size_t k = 0;
    for (size_t i = 0; i < w; i++) {
        unsigned char buf[4];
        int m = utf8_encode(cps[i], buf);
        if (k + (size_t)m > 3 * len) { /* NFC never grows text more than threefold */
            free(cps);
            free(ccc);
            free(out);
            return NULL;
        }
        memcpy(out + k, buf, (size_t)m);
        k += (size_t)m;
    }
    free(cps);
    free(ccc);
    *out_len = k;
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Streaming bytes to a terminal */

/* Feeds n bytes and writes to out (room for n + 4) what is safe to print: whitespace,
 * printable ASCII and complete valid UTF-8 sequences. The start of a sequence waits in the
 * stream for the rest, which may come with the next token. Returns the bytes written. */
size_t utf8_stream_feed(Utf8Stream *s, const char *in, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (s->n_pending > 0) {
            int ok = s->n_pending == 1 ? utf8_second_ok(s->pending[0], c) : (c & 0xC0) == 0x80;
            if (ok) {
                s->pending[s->n_pending++] = c;
                if (s->n_pending == utf8_lead_length(s->pending[0])) {
                    memcpy(out + k, s->pending, (size_t)s->n_pending);
                    k += (size_t)s->n_pending;
                    s->n_pending = 0;
                }
                continue;
            }
            /* The sequence broke off: drop it, then judge c on its own. */
            s->n_pending = 0;
        }
        int len = utf8_lead_length(c);
        if (len == 1) {
            if ((c >= 0x20 && c < 0x7F) || c == '\t' || c == '\n' || c == '\r') out[k++] = (char)c;
        } else if (len > 1) {
            s->pending[0] = c;
            s->n_pending = 1;
        }
        /* len 0: a stray continuation byte or a byte never valid in UTF-8, dropped */
    }
    return k;
}

/* Forgets a sequence left incomplete at the end of the text. */
void utf8_stream_reset(Utf8Stream *s) {
    s->n_pending = 0;
}
