/*
 * tokenizer_private.h - what tokenizer.c (the shared vocabulary and SentencePiece) and
 * tokenizer_bpe.c (byte-level BPE) share; not part of the library's API.
 */
#ifndef TOKENIZER_PRIVATE_H
#define TOKENIZER_PRIVATE_H

#include <stdint.h>
#include <string.h>

#include "tokenizer.h"

/* Real pieces are a few dozen bytes (Llama 2's longest is 16, Llama 3's 128), and callers may
 * put a piece on the stack (fuzz/fuzz_encode.c does), so a longer piece is refused. */
#define MAX_PIECE_LEN 1024

/* A cursor over untrusted bytes; every read first checks that the bytes are there. */
typedef struct {
    const unsigned char *data;
    size_t size;
    size_t off;
} Reader;

/* Bytes left after the cursor. */
static inline size_t reader_left(const Reader *r) {
    return r->size - r->off;
}

/* The next four bytes as a little-endian u32; the caller has checked that they exist. Built
 * from single bytes so the result does not depend on the host's byte order. */
static inline uint32_t reader_u32(Reader *r) {
    const unsigned char *p = r->data + r->off;
    r->off += 4;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Sizes the piece table of t for vocab_size ids: pieces, piece_lens and an empty hash_table
 * (hash_size set). Returns 0, or -1 if memory ran out (t is then freed). */
int tokenizer_alloc_pieces(Tokenizer *t, int vocab_size);

/* Adds id to the hash table under its piece's bytes unless an earlier id already has the same
 * bytes. Returns 1 if added, 0 if the bytes were taken. */
int tokenizer_hash_insert(Tokenizer *t, int id);

/* Id in the hash table with exactly these bytes, or -1. */
int tokenizer_hash_find(const Tokenizer *t, const char *bytes, int len);

/* Byte-level BPE (tokenizer_bpe.c), called by tokenizer.c for kind 2. */
int bpe_load(Tokenizer *t, const unsigned char *data, size_t size, int vocab_size,
             char err[ERR_MAX]);
void bpe_free(ByteBpe *b);
size_t bpe_max_tokens(const Tokenizer *t, size_t len);
int bpe_encode(const Tokenizer *t, const char *text, size_t len, int mode, int *tokens);
const char *bpe_decode(const Tokenizer *t, int token, int *len);
int bpe_is_special(const Tokenizer *t, int token);
int bpe_has_token(const Tokenizer *t, int token); /* 1 if the section gives token bytes */
int bpe_lookup_added(const Tokenizer *t, const char *bytes, int len);

#endif
