/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer loader.
 *
 * The first two bytes choose the vocabulary size the model would ask for; the rest is a
 * tokenizer section (u32 count, u32 max_token_length, then score/length/bytes records). A
 * tokenizer that loads must then encode and decode without touching memory it does not own.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 2) return 0;
    int vocab_size = 1 + (data[0] | data[1] << 8) % 1024;
    size -= 2;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data + 2, size);
    Tokenizer t;
    char err[ERR_MAX];
    if (tokenizer_load_memory(&t, buf, size, TOKENIZER_SENTENCEPIECE, vocab_size, 1, 2, err) == 0) {
        int tokens[64 + 3];
        int n = tokenizer_encode(&t, "Hello, w\xc3\xb6rld! \xf0\x9f\x98\x80 \xff\n", 1, 1, tokens);
        Utf8Stream s = {0};
        for (int i = 1; i < n; i++) {
            int len;
            const char *piece = tokenizer_decode(&t, tokens[i - 1], tokens[i], &len);
            if (!piece) continue;
            char *out = malloc((size_t)len + 8);
            if (out) utf8_stream_feed(&s, piece, (size_t)len, out);
            free(out);
        }
        tokenizer_free(&t);
    }
    free(buf);
    return 0;
}
