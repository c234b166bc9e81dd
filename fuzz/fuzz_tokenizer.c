/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer section loaders, both kinds.
 *
 * The first two bytes choose the kind (the top bit of the second byte: 0 SentencePiece,
 * 1 byte-level BPE) and the vocabulary size the model would ask for (the other 15 bits); the
 * rest is a tokenizer section of that kind (models/FORMAT.md). A tokenizer that loads must
 * then encode and decode without touching memory it does not own. A byte-level BPE one
 * encodes a text that reaches every stage (added tokens, NFC, each pre-tokenizer's classes,
 * invalid UTF-8) as a prompt and as chat text; its ids must lie inside the vocabulary, and
 * chat text must give no special token unless merges make that token from its bytes, as the
 * Rust library would (the real tokenizers' pre-tokenizers never leave such a piece, which
 * fuzz_bpe_encode checks).
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_private.h"

/* SentencePiece: encode and decode a short text with BOS and EOS. */
static void sentencepiece(const Tokenizer *t) {
    int tokens[64 + 3];
    int n = tokenizer_encode(t, "Hello, w\xc3\xb6rld! \xf0\x9f\x98\x80 \xff\n", 1, 1, tokens);
    Utf8Stream s = {0};
    for (int i = 1; i < n; i++) {
        int len;
        const char *piece = tokenizer_decode(t, tokens[i - 1], tokens[i], &len);
        if (!piece) continue;
        char *out = malloc((size_t)len + 8);
        if (out) utf8_stream_feed(&s, piece, (size_t)len, out);
        free(out);
    }
}

static const char text[] = "Hello, w\xc3\xb6rld! it's IT'S 12345 \xc2\xbd e\xcc\x81 \xea\xb0\x80\xe1\x86\xa8 "
                           "<s>ab</s><t> \t\n\r\n  \xc2\x85\xef\xbb\xbf \xf0\x9f\x98\x80 \xff\x80 abc";

/* Byte-level BPE: the text in both modes, every id decoded. */
static void byte_bpe(const Tokenizer *t) {
    size_t len = sizeof text - 1, cap = tokenizer_max_tokens(t, len);
    int *ids = malloc(cap * sizeof *ids);
    if (!ids) abort();
    for (int mode = TOKENIZER_PROMPT; mode <= TOKENIZER_CHAT_TEXT; mode++) {
        int n = tokenizer_encode_text(t, text, len, mode, ids);
        if (n < 0 || (size_t)n > cap) abort();
        Utf8Stream s = {0};
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
            if (mode == TOKENIZER_CHAT_TEXT && tokenizer_is_special(t, ids[i]) &&
                tokenizer_hash_find(t, t->pieces[ids[i]], t->piece_lens[ids[i]]) != ids[i])
                abort();
            int piece_len;
            const char *piece = tokenizer_decode(t, 0, ids[i], &piece_len);
            if (!piece) abort();
            char *out = malloc((size_t)piece_len + 4);
            if (!out) abort();
            utf8_stream_feed(&s, piece, (size_t)piece_len, out);
            free(out);
        }
    }
    tokenizer_lookup(t, "<s>", 3);
    tokenizer_lookup(t, "ab", 2);
    free(ids);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 2) return 0;
    int kind = data[1] & 0x80 ? TOKENIZER_BYTE_BPE : TOKENIZER_SENTENCEPIECE;
    int choice = data[0] | (data[1] & 0x7F) << 8;
    int vocab_size = 1 + (kind == TOKENIZER_SENTENCEPIECE ? choice % 1024 : choice);
    size -= 2;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data + 2, size);
    Tokenizer t;
    char err[ERR_MAX];
    if (tokenizer_load_memory(&t, buf, size, kind, vocab_size,
                              kind == TOKENIZER_SENTENCEPIECE ? 1 : -1,
                              kind == TOKENIZER_SENTENCEPIECE ? 2 : -1, err) == 0) {
        free(buf); /* the tokenizer must not point into the section */
        buf = NULL;
        if (kind == TOKENIZER_SENTENCEPIECE) sentencepiece(&t);
        else byte_bpe(&t);
        tokenizer_free(&t);
    }
    free(buf);
    return 0;
}
