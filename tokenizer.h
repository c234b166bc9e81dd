/*
 * tokenizer.h - text to token ids and back.
 *
 * A tokenizer is a table of pieces (byte strings); encoding splits text into pieces, decoding
 * prints them. Today's kind is SentencePiece-style BPE over a table of pieces with scores
 * (llama2.c's tokenizer.bin, or the same section embedded in a model file; tokenizer.c says
 * how encoding works).
 */
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stddef.h>

#include "error.h"

typedef struct {
    int vocab_size;
    int max_token_length;
    char **pieces;        /* (vocab_size) NUL-terminated piece strings */
    int *piece_lens;      /* (vocab_size) byte length of each piece (pieces may hold NUL) */
    float *scores;        /* (vocab_size) merge priority: higher merges first */
    int *hash_table;      /* open-addressing table from piece bytes to id, -1 = empty */
    size_t hash_size;     /* power of two, at least twice vocab_size */
    int byte_fallback[256]; /* id of the piece <0xXX> for each byte, or -1 */
    int bos_id, eos_id;   /* the model's beginning and end of sequence ids */
    char *arena;          /* one allocation holding every piece's bytes */
} Tokenizer;

/* Loads llama2.c's tokenizer.bin. vocab_size is the model's: the file must hold at least that
 * many pieces; bos_id and eos_id are the model's. Returns 0, or -1 with the reason in err. */
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, int bos_id, int eos_id,
                   char err[ERR_MAX]);

/* Loads a tokenizer from memory: a u32 piece count, then the tokenizer.bin layout (the
 * section embedded in a TLLM file). Returns 0, or -1 with the reason in err. */
int tokenizer_load_memory(Tokenizer *t, const void *data, size_t size, int vocab_size,
                          int bos_id, int eos_id, char err[ERR_MAX]);

/* Releases everything a load acquired and zeroes the struct. Safe on a zeroed Tokenizer. */
void tokenizer_free(Tokenizer *t);

/* Encodes UTF-8 text (any bytes: invalid UTF-8 falls back to byte tokens) into ids, with BOS
 * and/or EOS when asked. tokens must have room for strlen(text) + 3 ids. Returns the number
 * of ids written, or -1 if memory ran out. */
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *tokens);

/* Encodes text that continues after a special token, such as a chat template's <|user|>:
 * the same as tokenizer_encode without BOS, EOS and the dummy-prefix space, which sentencepiece
 * puts only at the start of a text. Returns the number of ids, or -1 if memory ran out. */
int tokenizer_encode_continuation(const Tokenizer *t, const char *text, int *tokens);

/* The bytes token stands for when it follows prev_token: a <0xXX> piece is its byte, and the
 * leading space of a piece right after BOS is dropped. Sets *len; the result may hold any
 * byte and lives as long as the tokenizer. Returns NULL for an id outside the vocabulary. */
const char *tokenizer_decode(const Tokenizer *t, int prev_token, int token, int *len);

/* Id of the piece with exactly these bytes, or -1. */
int tokenizer_lookup(const Tokenizer *t, const char *bytes, int len);

/* ------------------------------------------------------------------------------------------ */
/* Printing decoded text safely */

/* Streams decoded bytes to a terminal safely: passes on complete, valid UTF-8 sequences and
 * whitespace, holds back the start of a sequence until it is complete, drops invalid bytes
 * and ASCII control bytes other than \t, \n and \r. */
typedef struct {
    unsigned char pending[4];
    int n_pending;
} Utf8Stream;

/* Feeds n bytes to the stream and writes what is safe to print to out (room for n + 4 bytes).
 * Returns the number of bytes written. */
size_t utf8_stream_feed(Utf8Stream *s, const char *in, size_t n, char *out);

/* Drops a sequence left incomplete at the end of the text. */
void utf8_stream_reset(Utf8Stream *s);

#endif
