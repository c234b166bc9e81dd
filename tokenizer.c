/*
 * tokenizer.c - SentencePiece-style BPE over llama2.c's tokenizer.bin.
 *
 * A tokenizer is a table of pieces (byte strings) with scores. Encoding reproduces what
 * sentencepiece does with the model the table was exported from:
 *
 *   1. normalise: put a space (the "dummy prefix") in front of non-empty text, and read the
 *      character U+2581 as a space, since the exported pieces already turned U+2581 back
 *      into spaces and sentencepiece cannot tell the two apart;
 *   2. split the text into UTF-8 characters, one symbol each;
 *   3. repeatedly merge the adjacent pair of symbols whose concatenation is a piece with the
 *      highest score (ties go to the leftmost pair) until no pair forms a piece;
 *   4. emit each symbol's id, or, for a symbol that is not a piece, the byte-fallback pieces
 *      <0xXX> of its bytes.
 *
 * Step 3 is done with a max-heap of candidate pairs over a doubly linked list of symbols, so
 * encoding costs O(n log n) rather than the O(n^2) of rescanning the text after every merge.
 *
 * One deliberate difference from sentencepiece: it replaces every byte of invalid UTF-8 by
 * U+FFFD before encoding, losing the byte; we encode such a byte as its own <0xXX> token, so
 * any byte string survives encode and decode unchanged.
 *
 * Every file is treated as hostile: lengths are checked against the bytes that remain before
 * anything is read, and a bad file yields a one-line error, never a crash.
 *
 * This file also holds what both kinds share (the piece table and its hash, loading, decoding)
 * and sends the byte-level BPE kind to tokenizer_bpe.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokenizer.h"
#include "tokenizer_private.h"

/* A tokenizer.bin above MAX_TOKENIZER_FILE (2^20 pieces of 256 bytes) is refused before it is
 * read into memory. */
#define MAX_TOKENIZER_FILE ((size_t)1 << 28)

/* ------------------------------------------------------------------------------------------ */
/* Reading little-endian numbers from untrusted bytes */

/* The next four bytes as a little-endian int32 (two's complement, as the file stores it). */
static int32_t reader_i32(Reader *r) {
    uint32_t u = reader_u32(r);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The next four bytes as a little-endian IEEE float32. */
static float reader_f32(Reader *r) {
    uint32_t u = reader_u32(r);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* The piece hash table */

/* The FNV-1a hash of len bytes: simple, and good enough for a table kept at most half full. */
static uint32_t hash_bytes(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Id in the hash table with exactly these bytes, or -1. Linear probing ends at an empty slot,
 * which always exists because the table is at least twice as large as the vocabulary. */
int tokenizer_hash_find(const Tokenizer *t, const char *bytes, int len) {
    if (len < 0 || t->hash_table == NULL) return -1;
    size_t mask = t->hash_size - 1;
    for (size_t i = hash_bytes(bytes, (size_t)len) & mask;; i = (i + 1) & mask) {
        int id = t->hash_table[i];
        if (id < 0) return -1;
        if (t->piece_lens[id] == len && memcmp(t->pieces[id], bytes, (size_t)len) == 0) return id;
    }
}

/* Adds id under its piece's bytes unless an earlier id already has the same bytes: the lower
 * id wins, as it does in sentencepiece's own table. Returns 1 if added, 0 if not. */
int tokenizer_hash_insert(Tokenizer *t, int id) {
    if (tokenizer_hash_find(t, t->pieces[id], t->piece_lens[id]) >= 0) return 0;
    size_t mask = t->hash_size - 1;
    size_t i = hash_bytes(t->pieces[id], (size_t)t->piece_lens[id]) & mask;
    while (t->hash_table[i] >= 0) i = (i + 1) & mask;
    t->hash_table[i] = id;
    return 1;
}

/* Id of the piece with exactly these bytes, or -1: for byte-level BPE an added token's text
 * first, then a token merges make. */
int tokenizer_lookup(const Tokenizer *t, const char *bytes, int len) {
    if (len < 0) return -1;
    if (t->kind == TOKENIZER_BYTE_BPE) {
        int id = bpe_lookup_added(t, bytes, len);
        if (id >= 0) return id;
    }
    return tokenizer_hash_find(t, bytes, len);
}

/* The byte a piece of the form <0xXX> stands for, or -1 for any other piece. */
static int byte_piece_value(const char *s, int len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* Releases everything a load acquired and zeroes the struct. Safe on a zeroed Tokenizer. */
void tokenizer_free(Tokenizer *t) {
    bpe_free(t->bpe);
    free(t->pieces);
    free(t->piece_lens);
    free(t->scores);
    free(t->hash_table);
    free(t->arena);
    memset(t, 0, sizeof *t);
}

/* Walks the pieces of the tokenizer.bin body after max_token_length without keeping anything,
 * checking each against the bytes left and max_len. Stops after `want` pieces, at the end of
 * the data, or at the first bad piece. Sets *n_read to the pieces read and *bytes to their
 * total length. Returns 0 when all `want` pieces were read, 1 when the data ended cleanly at
 * a piece boundary before that, or -1 with the reason in err. */
static int scan_pieces(Reader r, int want, int max_len, int *n_read, size_t *bytes,
                       char err[ERR_MAX]) {
    *n_read = 0;
    *bytes = 0;
    for (int i = 0; i < want; i++) {
        if (reader_left(&r) == 0) return 1;
        if (reader_left(&r) < 8) {
            return fail(err, "truncated at piece %d", i);
        }
        float score = reader_f32(&r);
        int32_t len = reader_i32(&r);
        if (!isfinite(score)) {
            return fail(err, "piece %d has a score that is not a finite number", i);
        }
        if (len < 0) {
            return fail(err, "piece %d has a negative length (%d)", i, (int)len);
        }
        if (len > max_len) {
            return fail(err, "piece %d is %d bytes, longer than max_token_length %d", i,
                        (int)len, max_len);
        }
        if ((size_t)len > reader_left(&r)) {
            return fail(err, "truncated at piece %d", i);
        }
        r.off += (size_t)len;
        *bytes += (size_t)len;
        *n_read = i + 1;
    }
    return 0;
}

/* Sizes the piece table for vocab_size ids: pieces, piece_lens and an empty hash table at
 * least twice as large. Returns 0, or -1 if memory ran out (t is then freed). */
int tokenizer_alloc_pieces(Tokenizer *t, int vocab_size) {
    t->vocab_size = vocab_size;
    t->hash_size = 1;
    while (t->hash_size < 2 * (size_t)vocab_size) t->hash_size *= 2;
    t->pieces = malloc((size_t)vocab_size * sizeof *t->pieces);
    t->piece_lens = malloc((size_t)vocab_size * sizeof *t->piece_lens);
    t->hash_table = malloc(t->hash_size * sizeof *t->hash_table);
    if (!t->pieces || !t->piece_lens || !t->hash_table) {
        tokenizer_free(t);
        return -1;
    }
    for (size_t i = 0; i < t->hash_size; i++) t->hash_table[i] = -1;
    for (int b = 0; b < 256; b++) t->byte_fallback[b] = -1;
    return 0;
}

/* Builds the tokenizer from a body the caller has validated with scan_pieces: vocab_size
 * pieces totalling piece_bytes. Returns 0, or -1 if memory ran out. */
static int build_tokenizer(Tokenizer *t, Reader r, int vocab_size, int max_len,
                           size_t piece_bytes, char err[ERR_MAX]) {
    memset(t, 0, sizeof *t);
    t->kind = TOKENIZER_SENTENCEPIECE;
    t->max_token_length = max_len;
    t->bos_id = 1;
    t->eos_id = 2;

    /* The arena holds every piece NUL-terminated, then the 256 byte values, which
     * tokenizer_decode returns for <0xXX> pieces so they live as long as the tokenizer. */
    size_t arena_size = piece_bytes + (size_t)vocab_size + 256;
    if (tokenizer_alloc_pieces(t, vocab_size) == 0) {
        t->scores = malloc((size_t)vocab_size * sizeof *t->scores);
        t->arena = malloc(arena_size);
    }
    if (!t->pieces || !t->scores || !t->arena) {
        tokenizer_free(t);
        return fail(err, "out of memory for %d pieces", vocab_size);
    }

    char *dst = t->arena;
    for (int i = 0; i < vocab_size; i++) {
        t->scores[i] = reader_f32(&r);
        t->piece_lens[i] = reader_i32(&r);
        t->pieces[i] = dst;
        memcpy(dst, r.data + r.off, (size_t)t->piece_lens[i]);
        r.off += (size_t)t->piece_lens[i];
        dst += t->piece_lens[i];
        *dst++ = '\0';
        tokenizer_hash_insert(t, i);
        int b = byte_piece_value(t->pieces[i], t->piece_lens[i]);
        if (b >= 0 && t->byte_fallback[b] < 0) t->byte_fallback[b] = i;
    }
    for (int b = 0; b < 256; b++) dst[b] = (char)b;
    return 0;
}

/* Parses a tokenizer.bin body (int32 max_token_length, then pieces) holding `count` pieces, or
 * at least vocab_size pieces when count is -1 (llama2.c files carry no count and may hold more
 * pieces than the model uses). With a count, the body must end right after the last piece.
 * Returns 0, or -1 with the reason in err. */
static int parse_body(Tokenizer *t, const unsigned char *data, size_t size, int count,
                      int vocab_size, char err[ERR_MAX]) {
    memset(t, 0, sizeof *t);
    if (vocab_size <= 0) {
        return fail(err, "vocab_size %d is not positive", vocab_size);
    }
    if (count >= 0 && count != vocab_size) {
        return fail(err, "tokenizer has %d pieces but the model needs %d", count,
                    vocab_size);
    }
    Reader r = {data, size, 0};
    if (reader_left(&r) < 4) {
        return fail(err, "truncated before max_token_length");
    }
    int32_t max_len = reader_i32(&r);
    if (max_len < 0) {
        return fail(err, "max_token_length %d is negative", (int)max_len);
    }
    if (max_len > MAX_PIECE_LEN) {
        return fail(err, "max_token_length %d is above the limit of %d bytes",
                    (int)max_len, MAX_PIECE_LEN);
    }
    int n_read;
    size_t piece_bytes;
    int rc = scan_pieces(r, vocab_size, max_len, &n_read, &piece_bytes, err);
    if (rc < 0) return -1;
    if (rc == 1) {
        if (count >= 0) return fail(err, "truncated at piece %d", n_read);
        return fail(err, "tokenizer has %d pieces but the model needs %d", n_read, vocab_size);
    }
    size_t used = 4 + 8 * (size_t)vocab_size + piece_bytes;
    if (count >= 0 && used != size) {
        return fail(err, "%zu unexpected bytes after the last piece", size - used);
    }
    return build_tokenizer(t, r, vocab_size, max_len, piece_bytes, err);
}

/* Loads llama2.c's tokenizer.bin, using its first vocab_size pieces. Only a regular file is
 * read: a FIFO would block and /dev/zero would never end. Returns 0, or -1 with the reason in
 * err. */
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, int bos_id, int eos_id,
                   char err[ERR_MAX]) {
    memset(t, 0, sizeof *t);
    int fd = open(path, O_RDONLY | O_NONBLOCK); /* O_NONBLOCK: a FIFO is refused, not waited on */
    if (fd < 0) {
        return fail(err, "cannot open: %s", strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, "not a regular file");
    }
    if ((unsigned long long)st.st_size > MAX_TOKENIZER_FILE) {
        close(fd);
        return fail(err, "%lld bytes is too large for a tokenizer (limit %zu)",
                    (long long)st.st_size, MAX_TOKENIZER_FILE);
    }
    size_t size = (size_t)st.st_size, got = 0;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return fail(err, "out of memory reading the tokenizer file");
    }
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* an error, or the file shrank while we read it */
        got += (size_t)n;
    }
    close(fd);
    int rc;
    if (got < size) {
        rc = fail(err, "read error after %zu of %zu bytes", got, size);
    } else {
        rc = parse_body(t, buf, size, -1, vocab_size, err);
        t->bos_id = bos_id;
        t->eos_id = eos_id;
    }
    free(buf);
    return rc;
}

/* Loads a tokenizer section of the given kind. SentencePiece: a u32 piece count (which must
 * equal vocab_size), then the tokenizer.bin body, ending exactly at size. Byte-level BPE:
 * tokenizer_bpe.c. Returns 0, or -1 with the reason in err. */
int tokenizer_load_memory(Tokenizer *t, const void *data, size_t size, int kind, int vocab_size,
                          int bos_id, int eos_id, char err[ERR_MAX]) {
    memset(t, 0, sizeof *t);
    if (kind == TOKENIZER_BYTE_BPE) {
        if (vocab_size <= 0) return fail(err, "vocab_size %d is not positive", vocab_size);
        if (data == NULL) return fail(err, "tokenizer section is empty");
        if (bpe_load(t, data, size, vocab_size, err) != 0) return -1;
        /* the model's BOS and EOS must be tokens: an id without one could be neither
         * encoded nor recognised as special */
        const char *which = bos_id >= 0 && !bpe_has_token(t, bos_id)   ? "bos_id"
                            : eos_id >= 0 && !bpe_has_token(t, eos_id) ? "eos_id"
                                                                       : NULL;
        if (which) {
            int id = which[0] == 'b' ? bos_id : eos_id;
            tokenizer_free(t);
            return fail(err, "the model's %s %d is no token of its byte-level BPE tokenizer",
                        which, id);
        }
        t->bos_id = bos_id;
        t->eos_id = eos_id;
        return 0;
    }
    if (kind != TOKENIZER_SENTENCEPIECE)
        return fail(err, "tokenizer kind %d is unknown (1 = SentencePiece, 2 = byte-level BPE)",
                    kind);
    Reader r = {data, size, 0};
    if (data == NULL || reader_left(&r) < 4) {
        return fail(err, "tokenizer section is too short for its piece count");
    }
    uint32_t count = reader_u32(&r);
    if (count > (uint32_t)0x7fffffff) {
        return fail(err, "tokenizer has %u pieces but the model needs %d", (unsigned)count,
                    vocab_size);
    }
    if (parse_body(t, r.data + r.off, reader_left(&r), (int)count, vocab_size, err) != 0)
        return -1;
    t->bos_id = bos_id;
    t->eos_id = eos_id;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding */

/* A run of normalised text that is one token so far. Merging appends the right neighbour's
 * bytes to the left symbol (they are contiguous in the text) and unlinks the right one. */
typedef struct {
    size_t start; /* offset of its bytes in the normalised text */
    int len;      /* bytes; 0 once merged into its left neighbour */
    int prev, next;
    int raw;      /* an invalid UTF-8 byte: never merged, always a byte token */
} Symbol;

/* A pair of adjacent symbols whose concatenation is a piece. `len` is the concatenation's
 * length when the pair was found: if either symbol has grown or vanished since, the pair is
 * stale and skipped when it reaches the top of the heap (lazy invalidation). */
typedef struct {
    float score;
    int left, right;
    int len;
} Candidate;

/* Whether a should be merged before b: higher score first, then the leftmost, as in
 * sentencepiece (symbol indices grow from left to right and survive merges). */
static int candidate_before(const Candidate *a, const Candidate *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

/* Adds c to the heap of *n candidates (the array has room for it), sifting it up. */
static void heap_push(Candidate *heap, size_t *n, Candidate c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_before(&c, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = c;
}

/* Removes and returns the best candidate; the heap must not be empty. */
static Candidate heap_pop(Candidate *heap, size_t *n) {
    Candidate top = heap[0];
    Candidate last = heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && candidate_before(&heap[child + 1], &heap[child])) child++;
        if (!candidate_before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0) heap[i] = last;
    return top;
}

/* Id of the piece these text bytes may become, or -1. Control pieces (unknown, BOS, EOS) and
 * the byte pieces stand for no text: sentencepiece never produces them from text, so "<s>"
 * typed by a user stays three characters. */
static int text_piece_id(const Tokenizer *t, const char *s, int len, int unk_id) {
    int id = tokenizer_lookup(t, s, len);
    if (id < 0 || id == unk_id || id == t->bos_id || id == t->eos_id) return -1;
    int b = byte_piece_value(t->pieces[id], t->piece_lens[id]);
    if (b >= 0 && t->byte_fallback[b] == id) return -1;
    return id;
}

/* Pushes the pair (left, right) if both exist, may merge, and form a piece. */
static void push_pair(const Tokenizer *t, const char *text, const Symbol *sym, int left,
                      int right, int unk_id, Candidate *heap, size_t *n_heap) {
    if (left < 0 || right < 0 || sym[left].raw || sym[right].raw) return;
    int len = sym[left].len + sym[right].len;
    if (len > t->max_token_length) return; /* cannot be a piece: skip the lookup */
    int id = text_piece_id(t, text + sym[left].start, len, unk_id);
    if (id < 0) return;
    Candidate c = {t->scores[id], left, right, len};
    heap_push(heap, n_heap, c);
}

/* Writes the ids of one final symbol: its piece, or the byte pieces of its bytes (the unknown
 * piece for a byte without one). Returns the number of ids written. */
static int emit_symbol(const Tokenizer *t, const char *text, const Symbol *s, int unk_id,
                       int *out) {
    const char *bytes = text + s->start;
    int id = s->raw ? -1 : text_piece_id(t, bytes, s->len, unk_id);
    if (id >= 0) {
        out[0] = id;
        return 1;
    }
    int n = 0;
    for (int i = 0; i < s->len; i++) {
        int b = t->byte_fallback[(unsigned char)bytes[i]];
        if (b < 0) b = unk_id;
        if (b >= 0) out[n++] = b;
    }
    return n;
}

/* Encodes n bytes of text into tokens (room for n + 3 ids), with BOS and EOS when asked and
 * with the dummy-prefix space when `prefix` is set. Returns the number of ids, or -1 if memory
 * ran out or the text is too long for int ids. */
static int encode(const Tokenizer *t, const char *text, size_t n, int bos, int eos, int prefix,
                  int *tokens) {
    if (n > (size_t)0x7fffffff - 3) return -1;
    int n_tokens = 0;
    if (bos) tokens[n_tokens++] = t->bos_id;
    if (n == 0) { /* sentencepiece adds no dummy prefix to empty text */
        if (eos) tokens[n_tokens++] = t->eos_id;
        return n_tokens;
    }

    /* One allocation: the normalised text (at most n + 1 bytes), a symbol per byte at most,
     * and the heap, which holds at most the n initial pairs plus two per merge. */
    size_t max_syms = n + 1;
    size_t heap_cap = 3 * max_syms;
    if (max_syms > ((size_t)-1) / (sizeof(Symbol) + 3 * sizeof(Candidate) + 1)) return -1;
    char *block = malloc(max_syms * sizeof(Symbol) + heap_cap * sizeof(Candidate) + n + 1);
    if (!block) return -1;
    Symbol *sym = (Symbol *)block;
    Candidate *heap = (Candidate *)(block + max_syms * sizeof(Symbol));
    char *norm = block + max_syms * sizeof(Symbol) + heap_cap * sizeof(Candidate);

    /* Normalise: the dummy prefix, and U+2581 (the escaped space) read as a space. */
    size_t norm_len = 0;
    if (prefix) norm[norm_len++] = ' ';
    for (size_t i = 0; i < n; i++) {
        if (i + 2 < n && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
            norm[norm_len++] = ' ';
            i += 2;
        } else {
            norm[norm_len++] = text[i];
        }
    }

    /* One symbol per UTF-8 character; each byte of invalid UTF-8 is a symbol of its own. */
    int n_sym = 0;
    for (size_t i = 0; i < norm_len;) {
        int len = utf8_valid_length((const unsigned char *)norm + i, norm_len - i);
        Symbol s = {i, len > 0 ? len : 1, n_sym - 1, n_sym + 1, len == 0};
        sym[n_sym++] = s;
        i += (size_t)s.len;
    }
    sym[n_sym - 1].next = -1;

    int unk_id = tokenizer_lookup(t, "<unk>", 5);
    size_t n_heap = 0;
    for (int i = 0; i + 1 < n_sym; i++) push_pair(t, norm, sym, i, i + 1, unk_id, heap, &n_heap);

    while (n_heap > 0) {
        Candidate c = heap_pop(heap, &n_heap);
        Symbol *l = &sym[c.left], *r = &sym[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.len)
            continue; /* stale: one side merged elsewhere since this pair was found */
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = c.left;
        r->len = 0;
        push_pair(t, norm, sym, l->prev, c.left, unk_id, heap, &n_heap);
        push_pair(t, norm, sym, c.left, l->next, unk_id, heap, &n_heap);
    }

    /* The output fits: each symbol yields at most one id per byte, and the normalised text
     * is at most one byte (the dummy prefix) longer than the input. */
    for (int i = 0; i >= 0; i = sym[i].next)
        n_tokens += emit_symbol(t, norm, &sym[i], unk_id, tokens + n_tokens);
    if (eos) tokens[n_tokens++] = t->eos_id;
    free(block);
    return n_tokens;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *tokens) {
    if (t->kind != TOKENIZER_SENTENCEPIECE) return -1;
    return encode(t, text, strlen(text), bos, eos, 1, tokens);
}

int tokenizer_encode_continuation(const Tokenizer *t, const char *text, int *tokens) {
    if (t->kind != TOKENIZER_SENTENCEPIECE) return -1;
    return encode(t, text, strlen(text), 0, 0, 0, tokens);
}

/* The most ids an encoding of len bytes may need: SentencePiece, one per byte and the dummy
 * prefix, BOS and EOS. */
size_t tokenizer_max_tokens(const Tokenizer *t, size_t len) {
    if (t->kind == TOKENIZER_BYTE_BPE) return bpe_max_tokens(t, len);
    return len + 3;
}

/* SentencePiece's prompt is BOS and the text with its dummy prefix, as Hugging Face's Llama 2
 * tokenizer encodes it; chat text is a continuation, without either. */
int tokenizer_encode_text(const Tokenizer *t, const char *text, size_t len, int mode,
                          int *tokens) {
    if (t->kind == TOKENIZER_BYTE_BPE) return bpe_encode(t, text, len, mode, tokens);
    return mode == TOKENIZER_PROMPT ? encode(t, text, len, 1, 0, 1, tokens)
                                    : encode(t, text, len, 0, 0, 0, tokens);
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding */

/* The bytes token stands for after prev_token, with *len set: a byte piece is its byte, BOS
 * and EOS stand for nothing, and right after BOS a piece loses its leading space (the dummy
 * prefix the encoder added). Returns NULL, with *len 0, for an id outside the vocabulary. */
const char *tokenizer_decode(const Tokenizer *t, int prev_token, int token, int *len) {
    *len = 0;
    if (token < 0 || token >= t->vocab_size) return NULL;
    if (t->kind == TOKENIZER_BYTE_BPE) return bpe_decode(t, token, len);
    if (token == t->bos_id || token == t->eos_id) return "";
    const char *piece = t->pieces[token];
    int n = t->piece_lens[token];
    int b = byte_piece_value(piece, n);
    if (b >= 0 && t->byte_fallback[b] == token) {
        /* the 256 byte values sit after the last piece in the arena */
        const char *last = t->pieces[t->vocab_size - 1];
        *len = 1;
        return last + t->piece_lens[t->vocab_size - 1] + 1 + b;
    }
    if (prev_token == t->bos_id && n > 0 && piece[0] == ' ') {
        piece++;
        n--;
    }
    *len = n;
    return piece;
}

/* 1 for the tokens that print as nothing: byte-level BPE's special tokens, SentencePiece's
 * BOS and EOS. */
int tokenizer_is_special(const Tokenizer *t, int token) {
    if (t->kind == TOKENIZER_BYTE_BPE) return bpe_is_special(t, token);
    return token == t->bos_id || token == t->eos_id;
}
