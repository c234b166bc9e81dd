/*
 * fuzz_bpe_encode.c - libFuzzer target for the byte-level BPE encoder, with the real
 * tokenizers of Llama 3, Qwen3, SmolLM2 and GPT-2.
 *
 * The first byte chooses the tokenizer, the rest is the text: any bytes. Encoded as chat text
 * and decoded, it must come back as it went in, less only what the tokenizer changes on
 * purpose (Qwen's NFC; the bytes SmolLM2 has no token for); a prompt's ids must lie inside the
 * vocabulary; the pre-tokenizers' pieces must cover the text in order; and what the terminal
 * filter lets through must be valid UTF-8. The sections are the ones fuzz/make_seeds.py writes
 * with export.py into build/fuzz/bpe/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pretokenizer.h"
#include "tokenizer.h"

static const struct {
    const char *name;
    int vocab_size;
} families[] = {{"llama3", 128256}, {"qwen3", 151936}, {"smollm2", 49152}, {"gpt2", 50257}};
#define N_FAMILIES 4
static Tokenizer tokenizers[N_FAMILIES];
static int loaded;

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

static void load(void) {
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
    loaded = 1;
}

/* Aborts unless out[0..n) is valid UTF-8 without stray control bytes. */
static void check_utf8(const unsigned char *out, size_t n) {
    for (size_t i = 0; i < n;) {
        int len = utf8_valid_length(out + i, n - i);
        if (len == 0) abort();
        if (out[i] < 0x20 && out[i] != '\t' && out[i] != '\n' && out[i] != '\r') abort();
        i += (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (!loaded) load();
    if (size < 1) return 0;
    int k = data[0] % N_FAMILIES;
    const Tokenizer *t = &tokenizers[k];
    const char *text = (const char *)data + 1;
    size_t len = size - 1, cap = tokenizer_max_tokens(t, len);
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

    /* every pre-tokenizer's pieces cover the text in order */
    size_t *ends = malloc((len ? len : 1) * sizeof *ends), n_pieces;
    if (!ends) abort();
    for (int kind = 1; pretokenizer_name(kind); kind++) {
        if (pretokenize(kind, text, len, ends, &n_pieces) != 0) abort();
        for (size_t i = 0; i < n_pieces; i++)
            if (ends[i] <= (i ? ends[i - 1] : 0) || ends[i] > len) abort();
        if (len > 0 && (n_pieces == 0 || ends[n_pieces - 1] != len)) abort();
    }
    free(ends);
    free(ids);
    free(back);
    return 0;
}
