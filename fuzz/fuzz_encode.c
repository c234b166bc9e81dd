/*
 * fuzz_encode.c - libFuzzer target for the BPE encoder and the UTF-8 output filter.
 *
 * Arbitrary bytes (invalid UTF-8, NULs cut the text short, overlong forms, lone continuation
 * bytes) are encoded with the real Llama 2 vocabulary, every id is checked to be inside it,
 * and decoding the ids through the terminal filter must only ever emit valid UTF-8.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "tokenizer.h"

static Tokenizer tokenizer;
static int loaded;

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

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (!loaded) {
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

    /* the same text as a chat turn in every template, as system prompt and as user turn */
    for (int template_id = TEMPLATE_LLAMA2; template_id <= TEMPLATE_ZEPHYR; template_id++) {
        int n_turn;
        int *turn = chat_encode_turn(&tokenizer, template_id, size & 1 ? text : NULL, text,
                                     (size & 2) != 0, &n_turn);
        if (!turn) abort();
        for (int i = 0; i < n_turn; i++)
            if (turn[i] < 0 || turn[i] >= tokenizer.vocab_size) abort();
        free(turn);
    }
    free(text);
    free(tokens);
    return 0;
}
