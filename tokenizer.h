/*
 * tokenizer.h - text to token ids and back.
 *
 * A tokenizer is a table of pieces (byte strings); encoding splits text into pieces, decoding
 * prints them. Two kinds:
 *
 *   TOKENIZER_SENTENCEPIECE (1)  SentencePiece-style BPE over pieces with scores: llama2.c's
 *                                tokenizer.bin, or the same section embedded in a model file
 *                                (tokenizer.c says how encoding works).
 *   TOKENIZER_BYTE_BPE (2)       byte-level BPE as Hugging Face's tokenizer.json describes it
 *                                (GPT-2, Llama 3, Qwen2, SmolLM2): ranked merges over bytes
 *                                inside the pieces of a pre-tokenizer, plus added tokens such
 *                                as <|im_start|> (tokenizer_bpe.c; its section's layout is in
 *                                models/FORMAT.md).
 *
 * Encoding, for both kinds: tokenizer_encode_text with
 *   TOKENIZER_PROMPT     a generate-mode prompt, as Hugging Face's encode(text) with
 *                        add_special_tokens=True: the text of an added token (special or not)
 *                        becomes that token, and what the tokenizer adds around a text (Llama
 *                        3's <|begin_of_text|>; SentencePiece: BOS) is added;
 *   TOKENIZER_CHAT_TEXT  text inside a chat template (a user's line, a role name): the text of
 *                        a special token stays text, so no one can type `<|im_end|>` to end a
 *                        turn or start a role, and nothing is added (HF's encode with
 *                        add_special_tokens=False and split_special_tokens=True).
 * and tokenizer_lookup for the id of a special token by its text (chat templates need them).
 *
 * Decoding: tokenizer_decode gives the bytes of one token. Special tokens (and SentencePiece's
 * BOS and EOS) decode to no bytes, so printing the decoded stream never shows them;
 * tokenizer_is_special tells a caller that needs to know, for instance to stop at one.
 */
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stddef.h>

#include "error.h"
#include "unicode.h"

enum { TOKENIZER_SENTENCEPIECE = 1, TOKENIZER_BYTE_BPE = 2 };
enum { TOKENIZER_PROMPT = 0, TOKENIZER_CHAT_TEXT = 1 };

typedef struct ByteBpe ByteBpe; /* the byte-level BPE kind's own tables (tokenizer_bpe.c) */

typedef struct {
    int kind;             /* TOKENIZER_SENTENCEPIECE or TOKENIZER_BYTE_BPE */
    int vocab_size;       /* the model's: every id the model can produce is below it */
    int max_token_length;
    char **pieces;        /* (vocab_size) NUL-terminated piece strings (byte-level BPE: the
                             token's bytes; an id without a token has "") */
    int *piece_lens;      /* (vocab_size) byte length of each piece (pieces may hold NUL) */
    float *scores;        /* (vocab_size) merge priority: higher merges first (SentencePiece) */
    int *hash_table;      /* open-addressing table from piece bytes to id, -1 = empty (byte-level
                             BPE: the tokens merges make, not the added tokens) */
    size_t hash_size;     /* power of two, at least twice vocab_size */
    int byte_fallback[256]; /* id of the piece <0xXX> for each byte, or -1 (SentencePiece) */
    int bos_id, eos_id;   /* the model's beginning and end of sequence ids */
    char *arena;          /* one allocation holding every piece's bytes */
    ByteBpe *bpe;         /* byte-level BPE only, else NULL */
} Tokenizer;

/* Loads llama2.c's tokenizer.bin (SentencePiece kind). vocab_size is the model's: the file
 * must hold at least that many pieces; bos_id and eos_id are the model's. Returns 0, or -1
 * with the reason in err. */
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, int bos_id, int eos_id,
                   char err[ERR_MAX]);

/* Loads a tokenizer section of a model file, of the given kind (models/FORMAT.md):
 * TOKENIZER_SENTENCEPIECE, a u32 piece count (which must equal vocab_size) then the
 * tokenizer.bin layout; or TOKENIZER_BYTE_BPE, whose tokens may be fewer than vocab_size (the
 * rest of the model's ids have no text), and where bos_id and eos_id, unless -1, must be
 * tokens. Every byte is validated; the data can be freed after the call. Returns 0, or -1
 * with the reason in err. */
int tokenizer_load_memory(Tokenizer *t, const void *data, size_t size, int kind, int vocab_size,
                          int bos_id, int eos_id, char err[ERR_MAX]);

/* Releases everything a load acquired and zeroes the struct. Safe on a zeroed Tokenizer. */
void tokenizer_free(Tokenizer *t);

/* The most ids tokenizer_encode_text writes for len bytes of text (NFC may lengthen text
 * threefold, and a token holds at least one byte). */
size_t tokenizer_max_tokens(const Tokenizer *t, size_t len);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is encoded byte by byte and decodes back
 * unchanged) in mode TOKENIZER_PROMPT or TOKENIZER_CHAT_TEXT (above) into tokens, which has
 * room for tokenizer_max_tokens(t, len) ids. Returns the number of ids, or -1 if memory ran
 * out or the text is too long for int ids. */
int tokenizer_encode_text(const Tokenizer *t, const char *text, size_t len, int mode,
                          int *tokens);

/* SentencePiece only (-1 for byte-level BPE, which has tokenizer_encode_text): encodes UTF-8
 * text (invalid UTF-8 falls back to byte tokens) into ids, with BOS and/or EOS when asked.
 * tokens must have room for strlen(text) + 3 ids. Returns the number of ids written, or -1 if
 * memory ran out. */
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *tokens);

/* SentencePiece only (-1 for byte-level BPE): encodes text that continues after a special
 * token, such as a chat template's <|user|>: the same as tokenizer_encode without BOS, EOS and
 * the dummy-prefix space, which sentencepiece puts only at the start of a text. Returns the
 * number of ids, or -1 if memory ran out. */
int tokenizer_encode_continuation(const Tokenizer *t, const char *text, int *tokens);

/* The bytes token stands for when it follows prev_token. SentencePiece: a <0xXX> piece is its
 * byte, BOS and EOS are empty, and the leading space of a piece right after BOS is dropped.
 * Byte-level BPE: the token's bytes whatever came before; a special token, or a model id
 * without a token, is empty. Sets *len; the result may hold any byte and lives as long as the
 * tokenizer. Returns NULL for an id outside the vocabulary. */
const char *tokenizer_decode(const Tokenizer *t, int prev_token, int token, int *len);

/* 1 if token prints as nothing because it is a control token: a special added token of
 * byte-level BPE, or SentencePiece's BOS or EOS; else 0. */
int tokenizer_is_special(const Tokenizer *t, int token);

/* Id of the piece with exactly these bytes, or -1. Byte-level BPE looks among the added tokens
 * first (so "<|im_start|>" finds that special token), then among the tokens merges make. */
int tokenizer_lookup(const Tokenizer *t, const char *bytes, int len);

#endif
