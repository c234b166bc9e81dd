/*
 * pretokenizer.h - the pre-tokenizers of byte-level BPE: how text is cut into pieces before
 * merges run inside each piece (never across two).
 *
 * Hugging Face tokenizers describe these as regexes run by Oniguruma; each family's is written
 * out here as a matcher in plain C (pretokenizer.c), with Unicode classes from unicode.h:
 *
 *   GPT-2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   Llama 3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   Qwen2    Llama 3's with \p{N} instead of \p{N}{1,3}: single digits
 *   SmolLM2  every \p{N} character a piece of its own (the Digits pre-tokenizer with
 *            individual_digits), then GPT-2's regex inside each of the other pieces
 *
 * The pieces are everything the regex matches and nothing else: these regexes match at every
 * position, so no text falls between two matches.
 */
#ifndef PRETOKENIZER_H
#define PRETOKENIZER_H

#include <stddef.h>

/* The pre-tokenizer ids stored in a byte-level BPE tokenizer section (models/FORMAT.md). */
enum {
    PRETOKENIZER_GPT2 = 1,
    PRETOKENIZER_LLAMA3 = 2,
    PRETOKENIZER_QWEN2 = 3,
    PRETOKENIZER_SMOLLM2 = 4,
};

/* The name of a pre-tokenizer id ("gpt2", ...), or NULL for an unknown id. */
const char *pretokenizer_name(int kind);

/* Cuts text[0..len) into pieces with pre-tokenizer `kind`: writes the end offset of each
 * piece, in order, to ends (room for len entries: every piece holds at least one byte) and
 * their number to *n_pieces. Returns 0, or -1 if memory ran out or kind is unknown. */
int pretokenize(int kind, const char *text, size_t len, size_t *ends, size_t *n_pieces);

#endif
