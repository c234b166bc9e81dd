/*
 * attnviz.c - recording attention weights, and writing them as a file, an HTML page or a
 * ranking (attnviz.h describes the hook and the file layout).
 *
 * Nothing here runs unless run.c hands attn_observe to model_observe_attention.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "attnviz.h"
#include "unicode.h"

/* The HTML viewer, attnviz.html, as a C string: the Makefile generates this header. */
#include "build/attnviz_html.h"

/* ------------------------------------------------------------------------------------------ */
/* Recording */

/* Floats in the rows of positions 0..n-1 of every layer and head: row lengths 1 + 2 + ... + n
 * per (layer, head). The block of position pos starts at rows_before(r, pos). */
static size_t rows_before(const AttnRecorder *r, int pos) {
    return (size_t)r->n_layers * r->n_heads * ((size_t)pos * (pos + 1) / 2);
}

int attn_recorder_init(AttnRecorder *r, const Config *c, int max_positions, int keep_all,
                       char err[ERR_MAX]) {
    memset(r, 0, sizeof *r);
    r->n_layers = c->n_layers;
    r->n_heads = c->n_heads;
    r->n_kv_heads = c->n_kv_heads;
    r->seq_len = c->seq_len;
    r->keep_all = keep_all;
    r->max_positions = max_positions < 1 ? 1 : max_positions; /* past seq_len: shifting */
    /* keep_all takes L * H * P * (P + 1) / 2 floats: refuse what would overflow size_t */
    double want = (double)r->n_layers * r->n_heads * r->max_positions *
                  (r->max_positions + 1.0) / 2 * sizeof(float);
    if (keep_all && want > (double)(SIZE_MAX / 2))
        return fail(err, "recording %d positions would take %.0f GB: record fewer with -n",
                    max_positions, want / 1e9);
    size_t floats = keep_all ? rows_before(r, r->max_positions)
                             : (size_t)c->n_layers * c->n_heads * c->seq_len;
    r->rows = calloc(floats, sizeof(float)); /* rows never recorded read as zeros */
    r->tokens = malloc((size_t)r->max_positions * sizeof(int));
    r->evicted_at = malloc((size_t)r->max_positions * sizeof(int));
    if (!r->rows || !r->tokens || !r->evicted_at) {
        attn_recorder_free(r);
        return fail(err, "cannot allocate %zu MB for the attention weights of %d positions: "
                    "record fewer with -n", (floats * sizeof(float)) >> 20, max_positions);
    }
    for (int i = 0; i < r->max_positions; i++) r->tokens[i] = r->evicted_at[i] = -1;
    return 0;
}

void attn_recorder_free(AttnRecorder *r) {
    free(r->rows);
    free(r->tokens);
    free(r->evicted_at);
    memset(r, 0, sizeof *r);
}

/* Where the row of (layer, head, pos) lives: position-major like the file when keeping all,
 * else one seq_len-long slot per (layer, head) that each new position overwrites. */
static float *row_slot(const AttnRecorder *r, int layer, int head, int pos) {
    if (!r->keep_all) return r->rows + ((size_t)layer * r->n_heads + head) * r->seq_len;
    return r->rows + rows_before(r, pos) + ((size_t)layer * r->n_heads + head) * (pos + 1);
}

/* The text position of cache position c. */
static long text_of(const AttnRecorder *r, int c) {
    return c < r->sinks ? c : c + r->dropped;
}

/* Only copies. Without keep_all only the newest position's rows are kept: the newest is the
 * last one attn_record_token was told about, which stays put while a forward pass runs. */
void attn_observe(void *recorder, int layer, int pos, const float *weights, int stride) {
    AttnRecorder *r = recorder;
    long text = text_of(r, pos);
    if (pos < 0 || text >= r->max_positions) return;
    if (!r->keep_all) {
        if (text != r->n_positions - 1) return;
        r->newest_cache = pos;
        for (int h = 0; h < r->n_heads; h++)
            memcpy(row_slot(r, layer, h, pos), weights + (size_t)h * stride,
                   (size_t)(pos + 1) * sizeof(float));
        return;
    }
    for (int h = 0; h < r->n_heads; h++) { /* spread over the text: evicted positions stay 0 */
        float *row = row_slot(r, layer, h, (int)text);
        memset(row, 0, (size_t)(text + 1) * sizeof(float));
        for (int c = 0; c <= pos; c++) row[text_of(r, c)] = weights[(size_t)h * stride + c];
    }
}

void attn_record_evict(AttnRecorder *r, int sinks, int drop) {
    r->sinks = sinks;
    for (long t = sinks + r->dropped; t < sinks + r->dropped + drop; t++)
        if (t < r->max_positions) r->evicted_at[t] = r->n_positions;
    r->dropped += drop;
}

/* Makes room for the tokens of positions up to pos in a recorder of the newest rows only,
 * whose rows take the same memory however long the text grows. Returns 0, or -1 when it
 * cannot (then the position goes unrecorded). */
static int grow_tokens(AttnRecorder *r, int pos) {
    int cap = r->max_positions;
    while (cap <= pos) cap = cap > INT_MAX / 2 ? INT_MAX : 2 * cap;
    int *tokens = realloc(r->tokens, (size_t)cap * sizeof(int));
    if (tokens) r->tokens = tokens;
    int *evicted = tokens ? realloc(r->evicted_at, (size_t)cap * sizeof(int)) : NULL;
    if (!evicted) return -1;
    r->evicted_at = evicted;
    for (int i = r->max_positions; i < cap; i++) r->tokens[i] = r->evicted_at[i] = -1;
    r->max_positions = cap;
    return 0;
}

void attn_record_token(AttnRecorder *r, int pos, int token) {
    if (pos >= r->max_positions && !r->keep_all) grow_tokens(r, pos);
    if (pos < 0 || pos >= r->max_positions) return;
    r->tokens[pos] = token;
    if (pos + 1 > r->n_positions) r->n_positions = pos + 1;
}

const float *attn_row(const AttnRecorder *r, int layer, int head, int pos) {
    return row_slot(r, layer, head, pos);
}

int attn_kv_head(const AttnRecorder *r, int head) {
    return head / (r->n_heads / r->n_kv_heads);
}

int attn_top(const AttnRecorder *r, int layer, int pos, int k, int *positions, float *weights) {
    if (pos < 0 || pos >= r->n_positions || pos >= r->max_positions) return 0; /* unrecorded */
    /* a kept row is by text position; the newest row alone is by cache position */
    int last = r->keep_all ? pos : r->newest_cache;
    if (k > last + 1) k = last + 1;
    int n = 0;
    for (int j = 0; j <= last; j++) {
        float mean = 0.0f;
        for (int h = 0; h < r->n_heads; h++) mean += attn_row(r, layer, h, pos)[j];
        mean /= (float)r->n_heads;
        int t = r->keep_all ? j : (int)text_of(r, j);
        /* insertion into the sorted list of the best k so far; k is small */
        int i = n < k ? n++ : k;
        while (i > 0 && weights[i - 1] < mean) {
            if (i < k) positions[i] = positions[i - 1], weights[i] = weights[i - 1];
            i--;
        }
        if (i < k) positions[i] = t, weights[i] = mean;
    }
    return n;
}

const char *attn_piece(const AttnRecorder *r, const Tokenizer *t, int pos, int *len) {
    *len = 0;
    if (pos < 0 || pos >= r->n_positions || r->tokens[pos] < 0) return NULL;
    int token = r->tokens[pos];
    if (token == t->bos_id) return *len = 3, "<s>";
    if (token == t->eos_id) return *len = 4, "</s>";
    return tokenizer_decode(t, pos > 0 ? r->tokens[pos - 1] : -1, token, len);
}

/* ------------------------------------------------------------------------------------------ */
/* --attn-top: one line of text per generated token */

/* A line of text being built in a caller's buffer; appends past its end are dropped. */
typedef struct {
    char *buf;
    size_t size, used;
} Line;

static void line_printf(Line *l, const char *fmt, ...) {
    if (l->used + 1 >= l->size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->buf + l->used, l->size - l->used, fmt, ap);
    va_end(ap);
    if (n > 0) l->used += (size_t)n;
    if (l->used >= l->size) l->used = l->size - 1;
}

/* Appends bytes in single quotes, with control bytes, quotes, backslashes and invalid UTF-8
 * escaped, so that a token's text cannot upset the terminal or the layout of the line. */
static void line_quoted(Line *l, const char *bytes, int len) {
    const unsigned char *s = (const unsigned char *)bytes;
    line_printf(l, "'");
    for (int i = 0; i < len;) {
        int n = utf8_valid_length(s + i, (size_t)(len - i));
        if (n > 1) line_printf(l, "%.*s", n, bytes + i); /* one whole multi-byte character */
        else if (n == 1 && s[i] == '\n') line_printf(l, "\\n");
        else if (n == 1 && (s[i] == '\'' || s[i] == '\\')) line_printf(l, "\\%c", s[i]);
        else if (n == 1 && s[i] >= 0x20 && s[i] != 0x7F) line_printf(l, "%c", s[i]);
        else line_printf(l, "\\x%02x", s[i]);
        i += n > 0 ? n : 1;
    }
    line_printf(l, "'");
}

int attn_format_top(char *out, size_t size, const AttnRecorder *r, const Tokenizer *t,
                    int layer, int pos, int next, int k) {
    Line l = {.buf = out, .size = size};
    if (size == 0) return 0;
    out[0] = '\0';
    if (pos < 0 || pos >= r->n_positions || pos >= r->max_positions) {
        line_printf(&l, "attn L%d %d: not recorded (the recorder holds positions 0..%d)",
                    layer, pos, r->max_positions - 1);
        return (int)l.used;
    }
    if (k > pos + 1) k = pos + 1;
    int positions[k], len;
    float weights[k];
    int n = attn_top(r, layer, pos, k, positions, weights);
    /* "attn L4 16:' little' -> ' girl' | '<s>'@0 0.41 ' little'@16 0.22 ..." */
    line_printf(&l, "attn L%d %d:", layer, pos);
    const char *piece = attn_piece(r, t, pos, &len);
    if (piece) line_quoted(&l, piece, len);
    line_printf(&l, " -> ");
    piece = tokenizer_decode(t, r->tokens[pos], next, &len);
    if (piece) line_quoted(&l, piece, len);
    line_printf(&l, " |");
    for (int i = 0; i < n; i++) {
        line_printf(&l, " ");
        if ((piece = attn_piece(r, t, positions[i], &len))) line_quoted(&l, piece, len);
        line_printf(&l, "@%d %.2f", positions[i], weights[i]);
    }
    return (int)l.used;
}

/* ------------------------------------------------------------------------------------------ */
/* The binary file */

static void put_u32(FILE *f, uint32_t v) {
    unsigned char b[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
    fwrite(b, 1, 4, f);
}

static void put_u64(FILE *f, uint64_t v) {
    put_u32(f, (uint32_t)v);
    put_u32(f, (uint32_t)(v >> 32));
}

/* Closes f and turns any write error into err. */
static int finish(FILE *f, char err[ERR_MAX]) {
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return fail(err, "write failed: %s", strerror(errno));
    return 0;
}

int attn_write(const AttnRecorder *r, const Tokenizer *t, const char *path, char err[ERR_MAX]) {
    if (!r->keep_all) return fail(err, "the recorder kept only the newest rows");
    int n = r->n_positions;
    /* the size of the token table decides where the rows start */
    uint64_t at = 32 + 4 * (uint64_t)r->n_heads;
    for (int pos = 0; pos < n; pos++) {
        int len;
        attn_piece(r, t, pos, &len);
        at += 8 + (uint64_t)len;
    }
    uint64_t rows_offset = (at + 3) / 4 * 4;

    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, "cannot write: %s", strerror(errno));
    fwrite("ATTN", 1, 4, f);
    put_u32(f, 1);
    put_u32(f, (uint32_t)r->n_layers);
    put_u32(f, (uint32_t)r->n_heads);
    put_u32(f, (uint32_t)r->n_kv_heads);
    put_u32(f, (uint32_t)n);
    put_u64(f, rows_offset);
    for (int h = 0; h < r->n_heads; h++) put_u32(f, (uint32_t)attn_kv_head(r, h));
    for (int pos = 0; pos < n; pos++) {
        int len;
        const char *piece = attn_piece(r, t, pos, &len);
        put_u32(f, (uint32_t)r->tokens[pos]);
        put_u32(f, (uint32_t)len);
        fwrite(piece, 1, (size_t)len, f);
    }
    for (; at < rows_offset; at++) fputc(0, f);
    /* the rows are already in file order; floats are written as this machine stores them,
     * which is little-endian on every machine the engine targets (as the model loader) */
    fwrite(r->rows, sizeof(float), rows_before(r, n), f);
    return finish(f, err);
}

/* ------------------------------------------------------------------------------------------ */
/* The HTML page: the viewer with the recording as one JavaScript object literal in place of
 * the marker. Weights travel as base64 of 16-bit fixed point (w * 65535, rounded): half the
 * size of float32, and a step of 1.5e-5 is far finer than any colour difference. */

static const char DATA_MARKER[] = "/*ATTN_DATA*/null";

/* Writes bytes as a JSON string that is also safe inside <script>: no raw '<', and any byte
 * that is not valid UTF-8 becomes U+FFFD. */
static void put_json_string(FILE *f, const char *bytes, int len) {
    const unsigned char *s = (const unsigned char *)bytes;
    fputc('"', f);
    for (int i = 0; i < len;) {
        int n = utf8_valid_length(s + i, (size_t)(len - i));
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
        } else if (n > 1) {
            fwrite(s + i, 1, (size_t)n, f);
            i += n;
        } else {
            unsigned char c = s[i++];
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c == '\n') fputs("\\n", f);
            else if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7F)
                fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
    }
    fputc('"', f);
}

/* Streams base64 (RFC 4648, with padding) of a byte sequence fed a few bytes at a time. */
typedef struct {
    FILE *f;
    unsigned char held[3];
    int n_held;
} Base64;

static void base64_emit(Base64 *b, int n) {
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned v = (unsigned)b->held[0] << 16 | (unsigned)b->held[1] << 8 | b->held[2];
    char out[4] = {abc[v >> 18], abc[(v >> 12) & 63], abc[(v >> 6) & 63], abc[v & 63]};
    if (n < 3) out[3] = '=';
    if (n < 2) out[2] = '=';
    fwrite(out, 1, 4, b->f);
}

static void base64_byte(Base64 *b, unsigned char c) {
    b->held[b->n_held++] = c;
    if (b->n_held == 3) {
        base64_emit(b, 3);
        b->n_held = 0;
    }
}

static void base64_end(Base64 *b) {
    if (b->n_held == 0) return;
    for (int i = b->n_held; i < 3; i++) b->held[i] = 0;
    base64_emit(b, b->n_held);
    b->n_held = 0;
}

int attn_write_html(const AttnRecorder *r, const Tokenizer *t, const char *path,
                    char err[ERR_MAX]) {
    if (!r->keep_all) return fail(err, "the recorder kept only the newest rows");
    const char *marker = strstr(attnviz_html, DATA_MARKER);
    if (!marker) return fail(err, "the built-in viewer lacks its data marker (a build problem)");
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, "cannot write: %s", strerror(errno));

    fwrite(attnviz_html, 1, (size_t)(marker - attnviz_html), f);
    int n = r->n_positions;
    fprintf(f, "{\"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"positions\": %d,\n",
            r->n_layers, r->n_heads, r->n_kv_heads, n);
    fputs("\"kv_head\": [", f);
    for (int h = 0; h < r->n_heads; h++) fprintf(f, "%s%d", h ? ", " : "", attn_kv_head(r, h));
    fputs("],\n\"tokens\": [", f);
    for (int pos = 0; pos < n; pos++) fprintf(f, "%s%d", pos ? ", " : "", r->tokens[pos]);
    fputs("],\n\"pieces\": [", f);
    for (int pos = 0; pos < n; pos++) {
        int len;
        const char *piece = attn_piece(r, t, pos, &len);
        if (pos) fputs(", ", f);
        put_json_string(f, piece ? piece : "?", piece ? len : 1);
    }
    fprintf(f, "],\n\"sinks\": %d, \"evicted_at\": [", r->dropped ? r->sinks : 0);
    for (int pos = 0; pos < n; pos++) fprintf(f, "%s%d", pos ? ", " : "", r->evicted_at[pos]);
    fputs("],\n\"weights_u16\": \"", f);
    Base64 b64 = {.f = f};
    size_t total = rows_before(r, n);
    for (size_t i = 0; i < total; i++) {
        float w = r->rows[i];
        unsigned v = (unsigned)lrintf((w < 0.0f ? 0.0f : w > 1.0f ? 1.0f : w) * 65535.0f);
        base64_byte(&b64, (unsigned char)(v & 255)); /* little-endian, as Uint16Array reads */
        base64_byte(&b64, (unsigned char)(v >> 8));
    }
    base64_end(&b64);
    fputs("\"}", f);
    fputs(marker + strlen(DATA_MARKER), f);
    return finish(f, err);
}
