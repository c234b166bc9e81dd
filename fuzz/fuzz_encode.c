/*
 * fuzz_encode.c - libFuzzer target for both encoders and the UTF-8 output filter.
 *
 * Arbitrary bytes (invalid UTF-8, NULs cut the text short, overlong forms, lone continuation
 * bytes) are encoded with the real Llama 2 vocabulary, every id is checked to be inside it,
 * and decoding the ids through the terminal filter must only ever emit valid UTF-8.
 *
 * The same bytes go through byte-level BPE with the real tokenizers of Llama 3, Qwen3, SmolLM2
 * and GPT-2 (the sections fuzz/make_seeds.py exports with export.py into build/fuzz/bpe/).
 * Encoded as chat text and decoded, they must come back as they went in, less only what the
 * tokenizer changes on purpose (Qwen's NFC; the bytes SmolLM2 has no token for), with no
 * special token among the ids; a prompt's ids must lie inside the vocabulary; every
 * pre-tokenizer's pieces must cover the text in order. As a chat turn (and system prompt) of
 * a template (each input picks one), with either tokenizer kind, they must yield ids inside the vocabulary and
 * exactly the special tokens the template itself writes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "pretokenizer.h"
#include "tokenizer.h"

static Tokenizer tokenizer;
static int loaded;

static const struct {
    const char *name;
    int vocab_size;
} families[] = {{"llama3", 128256}, {"qwen3", 151936}, {"smollm2", 49152}, {"gpt2", 50257}};
#define N_FAMILIES 4
static Tokenizer tokenizers[N_FAMILIES];

/* Reads a whole file into memory; aborts (the run cannot start) if it cannot. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s is missing: fuzz/make_seeds.py writes it\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    *size = (size_t)n;
    return data;
}

/* Loads the four byte-level BPE sections; aborts (the run cannot start) if one fails. */
static void load_bpe(void) {
    for (int k = 0; k < N_FAMILIES; k++) {
        char path[256], err[ERR_MAX];
        snprintf(path, sizeof path, "build/fuzz/bpe/%s.bpe", families[k].name);
        size_t size;
        unsigned char *data = read_file(path, &size);
        if (tokenizer_load_memory(&tokenizers[k], data, size, TOKENIZER_BYTE_BPE,
                                  families[k].vocab_size, 0, 0, err) != 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            abort();
        }
        free(data);
    }
}

/* Aborts (a finding) unless out[0..n) is valid UTF-8 without stray control bytes. */
static void check_utf8(const unsigned char *out, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char b = out[i];
        int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n) abort();
        if (b < 0x20 && b != '\t' && b != '\n' && b != '\r') abort();
        for (int k = 1; k < len; k++) if ((out[i + k] & 0xC0) != 0x80) abort();
        i += len;
    }
}

/* Byte-level BPE family k on len bytes of text: a prompt's ids inside the vocabulary; chat
 * text without special tokens, decoding back to the text (less NFC, less missing bytes) and
 * through the terminal filter to valid UTF-8. */
static void byte_bpe(int k, const char *text, size_t len) {
    const Tokenizer *t = &tokenizers[k];
    size_t cap = tokenizer_max_tokens(t, len);
    int *ids = malloc((cap ? cap : 1) * sizeof *ids);
    char *back = malloc(3 * len + 1);
    if (!ids || !back) abort();

    int n = tokenizer_encode_text(t, text, len, TOKENIZER_PROMPT, ids);
    if (n < 0 || (size_t)n > cap) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();

    /* chat text: no special token, and it decodes back */
    n = tokenizer_encode_text(t, text, len, TOKENIZER_CHAT_TEXT, ids);
    if (n < 0 || (size_t)n > cap) abort();
    size_t m = 0;
    Utf8Stream s = {0};
    for (int i = 0; i < n; i++) {
        if (tokenizer_is_special(t, ids[i])) abort();
        int piece_len;
        const char *piece = tokenizer_decode(t, 0, ids[i], &piece_len);
        if (!piece || m + (size_t)piece_len > 3 * len) abort();
        memcpy(back + m, piece, (size_t)piece_len);
        unsigned char out[1024 + 4]; /* the loader refuses tokens above 1024 bytes */
        if (piece_len > 1024) abort();
        check_utf8(out, utf8_stream_feed(&s, piece, (size_t)piece_len, (char *)out));
        m += (size_t)piece_len;
    }
    size_t want_len = len;
    char *want = NULL;
    if (strcmp(families[k].name, "qwen3") == 0) {
        want = unicode_nfc(text, len, &want_len);
        if (!want) abort();
    } else {
        want = malloc(len + 1);
        if (!want) abort();
        want_len = 0;
        for (size_t i = 0; i < len; i++) /* SmolLM2's missing bytes are dropped */
            if (tokenizer_lookup(t, text + i, 1) >= 0) want[want_len++] = text[i];
    }
    if (m != want_len || memcmp(back, want, m) != 0) abort();
    free(want);
    free(ids);
    free(back);
}

/* The number of special tokens among ids[0..n). */
static int count_special(const Tokenizer *t, const int *ids, int n) {
    int count = 0;
    for (int i = 0; i < n; i++) count += tokenizer_is_special(t, ids[i]);
    return count;
}

/* text (NUL-terminated) as the user turn, and on odd sizes the system prompt too, of one
 * template: every id inside the vocabulary, and no more special tokens than the template
 * writes around a plain "x", so typed text never became a marker. */
static void chat_turn(const Tokenizer *t, int template_id, const char *text, size_t size) {
    ChatSettings s = {.template_id = template_id, .system = size & 1 ? text : NULL,
                      .think = (size & 4) != 0, .date = size & 8 ? text : NULL};
    ChatSettings plain = s;
    if (plain.system && plain.system[0]) plain.system = "x"; /* "" is no system prompt */
    if (plain.date) plain.date = "x";
    int first = (size & 2) != 0, n_turn, n_plain;
    int *turn = chat_encode_turn(t, &s, text, first, &n_turn);
    int *base = chat_encode_turn(t, &plain, "x", first, &n_plain);
    if (!turn || !base) abort();
    for (int i = 0; i < n_turn; i++)
        if (turn[i] < 0 || turn[i] >= t->vocab_size) abort();
    if (count_special(t, turn, n_turn) != count_special(t, base, n_plain)) abort();
    free(turn);
    free(base);
}

/* Every pre-tokenizer cuts text into non-empty pieces that cover it in order. */
static void check_pieces(const char *text, size_t len) {
    size_t *ends = malloc((len ? len : 1) * sizeof *ends), n_pieces;
    if (!ends) abort();
    for (int kind = 1; pretokenizer_name(kind); kind++) {
        if (pretokenize(kind, text, len, ends, &n_pieces) != 0) abort();
        for (size_t i = 0; i < n_pieces; i++)
            if (ends[i] <= (i ? ends[i - 1] : 0) || ends[i] > len) abort();
        if (len > 0 && (n_pieces == 0 || ends[n_pieces - 1] != len)) abort();
    }
    free(ends);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (!loaded) {
        load_bpe();
        char err[ERR_MAX];
        if (tokenizer_load(&tokenizer, "../shared/models/tokenizer.bin", 32000, 1, 2, err) != 0) {
            fprintf(stderr, "../shared/models/tokenizer.bin: %s\n", err);
            abort();
        }
        loaded = 1;
    }
    char *text = malloc(size + 1);
    int *tokens = malloc((size + 3) * sizeof(int));
    if (!text || !tokens) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    int n = tokenizer_encode(&tokenizer, text, 1, 0, tokens);
    Utf8Stream s = {0};
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= tokenizer.vocab_size) abort();
        if (i == 0) continue;
        int len;
        const char *piece = tokenizer_decode(&tokenizer, tokens[i - 1], tokens[i], &len);
        if (!piece) abort();
        unsigned char out[len + 8];
        check_utf8(out, utf8_stream_feed(&s, piece, (size_t)len, (char *)out));
    }

    /* the same text as a chat turn (and system prompt) of one template, chosen by the size
     * so each input costs one rendering per tokenizer */
    int template_id = TEMPLATE_LLAMA2 + (int)(size / 16 % (TEMPLATE_COUNT - TEMPLATE_LLAMA2));
    chat_turn(&tokenizer, template_id, text, size);
    for (int k = 0; k < N_FAMILIES; k++) {
        byte_bpe(k, (const char *)data, size);
        chat_turn(&tokenizers[k], template_id, text, size);
    }
    check_pieces((const char *)data, size);
    free(text);
    free(tokens);
    return 0;
}
