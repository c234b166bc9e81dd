/*
 * fuzz_bpe_section.c - libFuzzer target for the byte-level BPE section loader.
 *
 * The first two bytes choose the vocabulary size the model would ask for; the rest is a
 * byte-level BPE tokenizer section (models/FORMAT.md). A section that loads must then encode a
 * text that reaches every stage (added tokens, NFC, each pre-tokenizer's classes, invalid
 * UTF-8) in both modes, give ids inside the vocabulary and no special token from chat text,
 * and decode each id, all without touching memory it does not own. (A special token that is
 * also one merges make may come out of chat text when its bytes are a piece, as in the Rust
 * library; the real tokenizers' pre-tokenizers never leave such a piece, which
 * fuzz_bpe_encode checks.)
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_private.h"

static const char text[] = "Hello, w\xc3\xb6rld! it's IT'S 12345 \xc2\xbd e\xcc\x81 \xea\xb0\x80\xe1\x86\xa8 "
                           "<s>ab</s><t> \t\n\r\n  \xc2\x85\xef\xbb\xbf \xf0\x9f\x98\x80 \xff\x80 abc";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 2) return 0;
    int vocab_size = 1 + (data[0] | data[1] << 8);
    size -= 2;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data + 2, size);
    Tokenizer t;
    char err[ERR_MAX];
    if (tokenizer_load_memory(&t, buf, size, TOKENIZER_BYTE_BPE, vocab_size, 0, 0, err) == 0) {
        free(buf); /* the tokenizer must not point into the section */
        buf = NULL;
        size_t len = sizeof text - 1, cap = tokenizer_max_tokens(&t, len);
        int *ids = malloc(cap * sizeof *ids);
        if (!ids) abort();
        for (int mode = TOKENIZER_PROMPT; mode <= TOKENIZER_CHAT_TEXT; mode++) {
            int n = tokenizer_encode_text(&t, text, len, mode, ids);
            if (n < 0 || (size_t)n > cap) abort();
            Utf8Stream s = {0};
            for (int i = 0; i < n; i++) {
                if (ids[i] < 0 || ids[i] >= vocab_size) abort();
                if (mode == TOKENIZER_CHAT_TEXT && tokenizer_is_special(&t, ids[i]) &&
                    tokenizer_hash_find(&t, t.pieces[ids[i]], t.piece_lens[ids[i]]) != ids[i])
                    abort();
                int piece_len;
                const char *piece = tokenizer_decode(&t, 0, ids[i], &piece_len);
                if (!piece) abort();
                char *out = malloc((size_t)piece_len + 4);
                if (!out) abort();
                utf8_stream_feed(&s, piece, (size_t)piece_len, out);
                free(out);
            }
        }
        tokenizer_lookup(&t, "<s>", 3);
        tokenizer_lookup(&t, "ab", 2);
        free(ids);
        tokenizer_free(&t);
    }
    free(buf);
    return 0;
}
