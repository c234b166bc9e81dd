/*
 * tokenizer_bpe.c - byte-level BPE, as Hugging Face's tokenizers library runs a tokenizer.json
 * of GPT-2, Llama 3, Qwen2 or SmolLM2.
 *
 * Encoding a text (Hugging Face's encode(text)):
 *
 *   1. added tokens: the text of an added token (<|im_start|>, <|begin_of_text|>, ...) becomes
 *      that token wherever it appears, the leftmost and then the longest match first; the text
 *      between them goes on alone. Chat text skips special tokens here (they stay text) but
 *      still matches the others, as the Rust library does with encode_special_tokens;
 *   2. normalise each stretch between added tokens (Qwen2: NFC); added tokens marked
 *      "normalized" are matched now, in the normalised text;
 *   3. pre-tokenize: cut the text into pieces with the family's regex (pretokenizer.c);
 *   4. in each piece, start from one symbol per byte (a byte without a token is dropped, as
 *      the Rust library drops a character missing from the vocabulary) and repeatedly merge
 *      the adjacent pair that comes first in the list of merges (the lowest rank; ties go to
 *      the leftmost pair) until no pair is in the list. With ignore_merges (Llama 3) a piece
 *      that is a token as a whole is that token at once;
 *   5. add what the tokenizer puts around a text (Llama 3's <|begin_of_text|>).
 *
 * GPT-2's "byte-to-unicode alphabet", which spells each byte as a printable character so that
 * token strings in tokenizer.json are text, is undone by export.py: here tokens are their raw
 * bytes, so merges run on bytes and decoding is a copy.
 *
 * Step 4 keeps a min-heap of candidate pairs over a linked list of symbols, as the SentencePiece
 * encoder does, so a piece of n bytes costs O(n log n): at most n - 1 merges, each popping one
 * candidate and pushing two.
 *
 * The section is validated byte by byte before anything points into it (models/FORMAT.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pretokenizer.h"
#include "tokenizer.h"
#include "tokenizer_private.h"
#include "unicode.h"

/* flags of a token in the section */
enum {
    TOKEN_BPE = 1,        /* merges can make it (and, with ignore_merges, a whole piece) */
    TOKEN_ADDED = 2,      /* its text in the input becomes this token */
    TOKEN_SPECIAL = 4,    /* an added control token: never printed, never from chat text */
    TOKEN_NORMALIZED = 8, /* an added token matched after normalisation rather than before */
};
enum { OPTION_IGNORE_MERGES = 1, OPTION_SPLIT_SPECIAL = 2 };
enum { NORMALIZER_NONE = 0, NORMALIZER_NFC = 1 };

#define MAX_AFFIX  16        /* tokens encode(text) may add before or after a text */
#define MAX_MERGES (1 << 24) /* Llama 3 has 280147 */
#define HEADER_U32 7

/* One merge in the hash table: the pair of token ids, its rank, and the token it makes. */
typedef struct {
    uint64_t key; /* left << 32 | right; EMPTY_KEY for a free slot */
    int32_t rank, result;
} Merge;
#define EMPTY_KEY UINT64_MAX

/* A node of the trie of added tokens' texts: children are a linked list of siblings. */
typedef struct {
    int32_t first_child, next_sibling;
    int32_t token; /* the added token whose text ends here, or -1 */
    unsigned char byte;
} TrieNode;

struct ByteBpe {
    int n_tokens;            /* ids below it may have a token; the rest of vocab_size has none */
    unsigned char *flags;    /* (n_tokens) TOKEN_* bits; 0 = no token */
    int byte_token[256];     /* the one-byte token of each byte, or -1 */
    Merge *merges;           /* (merge_mask + 1) open-addressing table */
    size_t merge_mask;
    int merge_shift;         /* 64 - log2(table size), for the multiplicative hash */
    int pretokenizer, normalizer, options;
    int n_prefix, n_suffix;
    int prefix[MAX_AFFIX], suffix[MAX_AFFIX]; /* what encode(text) adds around a text */
    TrieNode *trie;          /* node 0 is the root */
    int n_trie;
    int any_normalized;      /* some added token is TOKEN_NORMALIZED */
};

/* ------------------------------------------------------------------------------------------ */
/* Merges */

/* The slot of a key: Fibonacci hashing spreads the pairs of small ids over the table. */
static size_t merge_slot(const ByteBpe *b, uint64_t key) {
    return (size_t)((key * 0x9E3779B97F4A7C15u) >> b->merge_shift);
}

/* The merge of tokens (left, right), or NULL if they do not merge. */
static const Merge *find_merge(const ByteBpe *b, int left, int right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = merge_slot(b, key);; i = (i + 1) & b->merge_mask) {
        const Merge *m = &b->merges[i];
        if (m->key == key) return m;
        if (m->key == EMPTY_KEY) return NULL;
    }
}

/* Records a merge. A pair listed twice keeps its later rank, as the Rust library's hash map of
 * merges does. */
static void add_merge(ByteBpe *b, int left, int right, int rank, int result) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = merge_slot(b, key);
    while (b->merges[i].key != key && b->merges[i].key != EMPTY_KEY) i = (i + 1) & b->merge_mask;
    b->merges[i].key = key;
    b->merges[i].rank = rank;
    b->merges[i].result = result;
}

/* ------------------------------------------------------------------------------------------ */
/* Added tokens */

/* The child of node with this byte, or -1. */
static int trie_child(const ByteBpe *b, int node, unsigned char byte) {
    for (int c = b->trie[node].first_child; c >= 0; c = b->trie[c].next_sibling)
        if (b->trie[c].byte == byte) return c;
    return -1;
}

/* Adds the text of added token id. The trie has room for the node it may need. Returns 0, or
 * -1 if another added token has the same text (its id in *other). */
static int trie_insert(ByteBpe *b, const char *text, int len, int id, int *other) {
    int node = 0;
    for (int i = 0; i < len; i++) {
        unsigned char byte = (unsigned char)text[i];
        int c = trie_child(b, node, byte);
        if (c < 0) {
            c = b->n_trie++;
            b->trie[c] = (TrieNode){-1, b->trie[node].first_child, -1, byte};
            b->trie[node].first_child = c;
        }
        node = c;
    }
    if (b->trie[node].token >= 0) {
        *other = b->trie[node].token;
        return -1;
    }
    b->trie[node].token = id;
    return 0;
}

/* The longest added token whose text starts at s (n bytes), among those matched before
 * normalisation (normalized = 0) or after it (1): its id with *match_len set, or -1. */
static int added_at(const ByteBpe *b, const unsigned char *s, size_t n, int normalized,
                    size_t *match_len) {
    int best = -1;
    int node = 0;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(b, node, s[i]);
        if (node < 0) break;
        int id = b->trie[node].token;
        if (id >= 0 && ((b->flags[id] & TOKEN_NORMALIZED) != 0) == normalized) {
            best = id;
            *match_len = i + 1;
        }
    }
    return best;
}

int bpe_lookup_added(const Tokenizer *t, const char *bytes, int len) {
    const ByteBpe *b = t->bpe;
    int node = 0;
    for (int i = 0; i < len && node >= 0; i++) node = trie_child(b, node, (unsigned char)bytes[i]);
    return node >= 0 ? b->trie[node].token : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

void bpe_free(ByteBpe *b) {
    if (!b) return;
    free(b->flags);
    free(b->merges);
    free(b->trie);
    free(b);
}

/* Checks the token records (u32 flags, u32 length, bytes) that start at r, n_tokens of them,
 * without keeping anything. Sets *bytes to their total length, *added_bytes to the total of
 * the added tokens' and *max_len to the longest. Returns 0, or -1 with the reason in err. */
static int scan_tokens(Reader r, int n_tokens, size_t *bytes, size_t *added_bytes, int *max_len,
                       char err[ERR_MAX]) {
    *bytes = *added_bytes = 0;
    *max_len = 0;
    for (int i = 0; i < n_tokens; i++) {
        if (reader_left(&r) < 8) return fail(err, "truncated at token %d", i);
        uint32_t flags = reader_u32(&r), len = reader_u32(&r);
        if (flags & ~(uint32_t)(TOKEN_BPE | TOKEN_ADDED | TOKEN_SPECIAL | TOKEN_NORMALIZED))
            return fail(err, "token %d has unknown flags 0x%x", i, (unsigned)flags);
        if ((flags & (TOKEN_SPECIAL | TOKEN_NORMALIZED)) && !(flags & TOKEN_ADDED))
            return fail(err, "token %d is special or normalized but not an added token", i);
        if (flags == 0 && len != 0)
            return fail(err, "token %d has %u bytes but no flags", i, (unsigned)len);
        if (flags != 0 && len == 0) return fail(err, "token %d is empty", i);
        if (len > MAX_PIECE_LEN)
            return fail(err, "token %d is %u bytes, above the limit of %d", i, (unsigned)len,
                        MAX_PIECE_LEN);
        if (len > reader_left(&r)) return fail(err, "truncated at token %d", i);
        r.off += len;
        *bytes += len;
        if (flags & TOKEN_ADDED) *added_bytes += len;
        if ((int)len > *max_len) *max_len = (int)len;
    }
    return 0;
}

/* Fills the piece table and the flags from the validated token records at *r, advancing it.
 * Returns 0, or -1 with the reason in err (two tokens with the same bytes, an added token
 * that is not UTF-8 or, with NFC, not in NFC). */
static int read_tokens(Tokenizer *t, Reader *r, char err[ERR_MAX]) {
    ByteBpe *b = t->bpe;
    char *dst = t->arena;
    for (int i = 0; i < b->n_tokens; i++) {
        uint32_t flags = reader_u32(r), len = reader_u32(r);
        b->flags[i] = (unsigned char)flags;
        t->pieces[i] = dst;
        t->piece_lens[i] = (int)len;
        memcpy(dst, r->data + r->off, len);
        r->off += len;
        dst += len;
        *dst++ = '\0';
        if ((flags & TOKEN_BPE) && !tokenizer_hash_insert(t, i))
            return fail(err, "tokens %d and %d have the same bytes",
                        tokenizer_hash_find(t, t->pieces[i], (int)len), i);
        if (flags & TOKEN_ADDED) {
            const unsigned char *s = (const unsigned char *)t->pieces[i];
            for (size_t k = 0; k < len;) {
                int n = utf8_valid_length(s + k, len - k);
                if (n == 0) return fail(err, "added token %d is not valid UTF-8", i);
                k += (size_t)n;
            }
            if ((flags & TOKEN_NORMALIZED) && b->normalizer == NORMALIZER_NFC &&
                !unicode_is_nfc(t->pieces[i], len)) {
                size_t n;
                char *nfc = unicode_nfc(t->pieces[i], len, &n);
                int same = nfc && n == len && memcmp(nfc, t->pieces[i], len) == 0;
                free(nfc);
                if (!same) return fail(err, "added token %d is normalized but not in NFC", i);
            }
            int other;
            if (trie_insert(b, t->pieces[i], (int)len, i, &other) != 0)
                return fail(err, "added tokens %d and %d have the same text", other, i);
            if (flags & TOKEN_NORMALIZED) b->any_normalized = 1;
        }
    }
    /* ids the model has beyond the tokens decode to nothing */
    for (int i = b->n_tokens; i < t->vocab_size; i++) {
        t->pieces[i] = dst;
        t->piece_lens[i] = 0;
    }
    *dst = '\0';
    return 0;
}

/* Reads the n_merges (left, right) pairs at *r into the merge table, checking that each names
 * two tokens merges can make and that their bytes together are such a token. Returns 0, or
 * -1 with the reason in err. */
static int read_merges(Tokenizer *t, Reader *r, int n_merges, char err[ERR_MAX]) {
    ByteBpe *b = t->bpe;
    char joined[2 * MAX_PIECE_LEN];
    for (int i = 0; i < n_merges; i++) {
        uint32_t ids[2];
        ids[0] = reader_u32(r); /* two statements: an initializer list's order is unspecified */
        ids[1] = reader_u32(r);
        for (int k = 0; k < 2; k++) {
            if (ids[k] >= (uint32_t)b->n_tokens)
                return fail(err, "merge %d names token %u, outside the %d tokens", i,
                            (unsigned)ids[k], b->n_tokens);
            if (!(b->flags[ids[k]] & TOKEN_BPE))
                return fail(err, "merge %d names token %u, which merges cannot make", i,
                            (unsigned)ids[k]);
        }
        int left = (int)ids[0], right = (int)ids[1];
        int n_left = t->piece_lens[left], n_right = t->piece_lens[right];
        memcpy(joined, t->pieces[left], (size_t)n_left);
        memcpy(joined + n_left, t->pieces[right], (size_t)n_right);
        int result = tokenizer_hash_find(t, joined, n_left + n_right);
        if (result < 0)
            return fail(err, "merge %d joins tokens %d and %d into bytes that are no token", i,
                        left, right);
        add_merge(b, left, right, i, result);
    }
    return 0;
}

int bpe_load(Tokenizer *t, const unsigned char *data, size_t size, int vocab_size,
             char err[ERR_MAX]) {
    memset(t, 0, sizeof *t);
    Reader r = {data, size, 0};
    if (reader_left(&r) < 4 * HEADER_U32)
        return fail(err, "byte-level BPE section of %zu bytes is too short for its header", size);
    uint32_t n_tokens = reader_u32(&r), n_merges = reader_u32(&r), pre = reader_u32(&r),
             normalizer = reader_u32(&r), options = reader_u32(&r), n_prefix = reader_u32(&r),
             n_suffix = reader_u32(&r);
    if (n_tokens == 0 || n_tokens > (uint32_t)vocab_size)
        return fail(err, "n_tokens = %u is outside 1..vocab_size (%d)", (unsigned)n_tokens,
                    vocab_size);
    if (n_merges > MAX_MERGES)
        return fail(err, "n_merges = %u is above the limit of %d", (unsigned)n_merges,
                    MAX_MERGES);
    if (pre > 0xFF || !pretokenizer_name((int)pre))
        return fail(err, "pre_tokenizer = %u is unknown (1 gpt2, 2 llama3, 3 qwen2, 4 smollm2)",
                    (unsigned)pre);
    if (normalizer > NORMALIZER_NFC)
        return fail(err, "normalizer = %u is unknown (0 none, 1 NFC)", (unsigned)normalizer);
    if (options & ~(uint32_t)(OPTION_IGNORE_MERGES | OPTION_SPLIT_SPECIAL))
        return fail(err, "options = 0x%x has unknown bits", (unsigned)options);
    if (n_prefix > MAX_AFFIX || n_suffix > MAX_AFFIX)
        return fail(err, "n_prefix = %u and n_suffix = %u: at most %d each", (unsigned)n_prefix,
                    (unsigned)n_suffix, MAX_AFFIX);
    if (reader_left(&r) / 4 < n_prefix + n_suffix) return fail(err, "truncated in the prefix");
    uint32_t affix[2 * MAX_AFFIX];
    for (uint32_t i = 0; i < n_prefix + n_suffix; i++) affix[i] = reader_u32(&r);

    size_t token_bytes, added_bytes;
    int max_len;
    if (scan_tokens(r, (int)n_tokens, &token_bytes, &added_bytes, &max_len, err) != 0) return -1;
    size_t merges_at = r.off + 8 * (size_t)n_tokens + token_bytes;
    if (size - merges_at < 8 * (size_t)n_merges)
        return fail(err, "truncated in the merges: %zu bytes for %u merges", size - merges_at,
                    (unsigned)n_merges);
    if (size - merges_at > 8 * (size_t)n_merges)
        return fail(err, "%zu unexpected bytes after the last merge",
                    size - merges_at - 8 * (size_t)n_merges);

    /* allocate everything, then fill and check what needs the tables */
    ByteBpe *b = t->bpe = calloc(1, sizeof *b);
    t->kind = TOKENIZER_BYTE_BPE;
    t->max_token_length = max_len;
    size_t merge_size = 16;
    int bits = 4;
    while (merge_size < (size_t)n_merges + n_merges / 2) merge_size *= 2, bits++;
    if (b) {
        b->n_tokens = (int)n_tokens;
        b->pretokenizer = (int)pre;
        b->normalizer = (int)normalizer;
        b->options = (int)options;
        b->merge_mask = merge_size - 1;
        b->merge_shift = 64 - bits;
        b->flags = malloc(n_tokens);
        b->merges = malloc(merge_size * sizeof *b->merges);
        b->trie = malloc((added_bytes + 1) * sizeof *b->trie);
        t->arena = malloc(token_bytes + n_tokens + 1);
    }
    if (!b || tokenizer_alloc_pieces(t, vocab_size) != 0 || !b->flags || !b->merges ||
        !b->trie || !t->arena) {
        tokenizer_free(t);
        return fail(err, "out of memory for %u tokens and %u merges", (unsigned)n_tokens,
                    (unsigned)n_merges);
    }
    for (size_t i = 0; i < merge_size; i++) b->merges[i].key = EMPTY_KEY;
    b->trie[0] = (TrieNode){-1, -1, -1, 0};
    b->n_trie = 1;

    if (read_tokens(t, &r, err) != 0 || read_merges(t, &r, (int)n_merges, err) != 0) {
        tokenizer_free(t);
        return -1;
    }
    for (uint32_t i = 0; i < n_prefix + n_suffix; i++) {
        if (affix[i] >= n_tokens || b->flags[affix[i]] == 0) {
            int id = (int)affix[i];
            tokenizer_free(t);
            return fail(err, "%s token %d is no token", i < n_prefix ? "prefix" : "suffix", id);
        }
        if (i < n_prefix) b->prefix[b->n_prefix++] = (int)affix[i];
        else b->suffix[b->n_suffix++] = (int)affix[i];
    }
    for (int byte = 0; byte < 256; byte++) {
        char c = (char)byte;
        b->byte_token[byte] = tokenizer_hash_find(t, &c, 1);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Merging inside one piece */

/* A symbol of the piece: a token, linked to its neighbours. Merging keeps the left symbol,
 * gives it the merged token and unlinks the right one (its id becomes -1). */
typedef struct {
    int id;
    int prev, next;
} Symbol;

/* A pair of adjacent symbols that merges: it is stale, and skipped when it reaches the top of
 * the heap, if either symbol has changed since (lazy invalidation). */
typedef struct {
    int rank;
    int pos;           /* the left symbol; ties in rank go to the leftmost */
    int left, right;   /* the two tokens when the pair was found */
    int result;
} Candidate;

/* Whether a merges before b: lower rank first, then the leftmost. */
static int candidate_before(const Candidate *a, const Candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
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

/* Removes and returns the first candidate; the heap must not be empty. */
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

/* Pushes the pair of symbols (pos, its next) if their tokens merge. */
static void push_pair(const ByteBpe *b, const Symbol *sym, int pos, Candidate *heap, size_t *n) {
    int next = sym[pos].next;
    if (next < 0) return;
    const Merge *m = find_merge(b, sym[pos].id, sym[next].id);
    if (!m) return;
    Candidate c = {m->rank, pos, sym[pos].id, sym[next].id, m->result};
    heap_push(heap, n, c);
}

/* Where ids go: tokens has room for cap of them. */
typedef struct {
    int *tokens;
    size_t n, cap;
} Output;

/* Appends id. Returns 0, or -1 if the output is full (tokenizer_max_tokens makes that
 * impossible; the check keeps a mistake there from writing past the caller's array). */
static int emit(Output *out, int id) {
    if (out->n >= out->cap) return -1;
    out->tokens[out->n++] = id;
    return 0;
}

/* Merges the n bytes of one piece and appends its tokens. sym has room for n symbols and heap
 * for 3 n candidates (n - 1 pairs at first, then at most two per merge). Returns 0 or -1. */
static int merge_piece(const Tokenizer *t, const unsigned char *p, size_t n, Symbol *sym,
                       Candidate *heap, Output *out) {
    const ByteBpe *b = t->bpe;
    if ((b->options & OPTION_IGNORE_MERGES) && n <= MAX_PIECE_LEN) {
        int id = tokenizer_hash_find(t, (const char *)p, (int)n);
        if (id >= 0) return emit(out, id);
    }
    int n_sym = 0;
    for (size_t i = 0; i < n; i++) {
        int id = b->byte_token[p[i]];
        if (id < 0) continue; /* no token for this byte: dropped */
        sym[n_sym] = (Symbol){id, n_sym - 1, n_sym + 1};
        n_sym++;
    }
    if (n_sym == 0) return 0;
    sym[n_sym - 1].next = -1;

    size_t n_heap = 0;
    for (int i = 0; i + 1 < n_sym; i++) push_pair(b, sym, i, heap, &n_heap);
    while (n_heap > 0) {
        Candidate c = heap_pop(heap, &n_heap);
        Symbol *l = &sym[c.pos];
        if (l->id != c.left || l->next < 0 || sym[l->next].id != c.right) continue; /* stale */
        int r = l->next;
        l->id = c.result;
        l->next = sym[r].next;
        if (l->next >= 0) sym[l->next].prev = c.pos;
        sym[r].id = -1;
        if (l->prev >= 0) push_pair(b, sym, l->prev, heap, &n_heap);
        push_pair(b, sym, c.pos, heap, &n_heap);
    }
    for (int i = 0; i >= 0; i = sym[i].next)
        if (emit(out, sym[i].id) != 0) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding */

/* Pre-tokenizes normalised text without added tokens and merges each piece. The merge buffers
 * are sized for the longest piece, not the whole text. Returns 0 or -1. */
static int encode_pieces(const Tokenizer *t, const char *text, size_t len, Output *out) {
    if (len == 0) return 0;
    size_t *ends = malloc(len * sizeof *ends), n_pieces = 0, longest = 0;
    if (!ends || pretokenize(t->bpe->pretokenizer, text, len, ends, &n_pieces) != 0) {
        free(ends);
        return -1;
    }
    for (size_t i = 0; i < n_pieces; i++)
        if (ends[i] - (i ? ends[i - 1] : 0) > longest) longest = ends[i] - (i ? ends[i - 1] : 0);
    Symbol *sym = malloc(longest * sizeof *sym);
    Candidate *heap = malloc(3 * longest * sizeof *heap);
    int rc = sym && heap ? 0 : -1;
    for (size_t i = 0, start = 0; rc == 0 && i < n_pieces; start = ends[i++])
        rc = merge_piece(t, (const unsigned char *)text + start, ends[i] - start, sym, heap, out);
    free(ends);
    free(sym);
    free(heap);
    return rc;
}

static int encode_stretch(const Tokenizer *t, const char *text, size_t len, int skip_special,
                          Output *out);

/* Finds the added tokens of one pass (normalized = 0: in the raw text; 1: in normalised text)
 * and encodes the text between them: the raw stretches are normalised first, the normalised
 * ones pre-tokenized. A special token found when skip_special is set stays text, and the
 * search goes on after it. Returns 0 or -1. */
static int split_added(const Tokenizer *t, const char *text, size_t len, int normalized,
                       int skip_special, Output *out) {
    const ByteBpe *b = t->bpe;
    const unsigned char *s = (const unsigned char *)text;
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        size_t match_len;
        int id = added_at(b, s + i, len - i, normalized, &match_len);
        if (id < 0) {
            i++;
            continue;
        }
        if (!(skip_special && (b->flags[id] & TOKEN_SPECIAL))) {
            int rc = normalized ? encode_pieces(t, text + start, i - start, out)
                                : encode_stretch(t, text + start, i - start, skip_special, out);
            if (rc != 0 || emit(out, id) != 0) return -1;
            start = i + match_len;
        }
        i += match_len;
    }
    return normalized ? encode_pieces(t, text + start, len - start, out)
                      : encode_stretch(t, text + start, len - start, skip_special, out);
}

/* Encodes raw text between two added tokens: normalise, then match the normalized added
 * tokens if there are any, then pre-tokenize and merge. Returns 0 or -1. */
static int encode_stretch(const Tokenizer *t, const char *text, size_t len, int skip_special,
                          Output *out) {
    const ByteBpe *b = t->bpe;
    if (len == 0) return 0;
    char *nfc = NULL;
    if (b->normalizer == NORMALIZER_NFC && !unicode_is_nfc(text, len)) {
        nfc = unicode_nfc(text, len, &len);
        if (!nfc) return -1;
        text = nfc;
    }
    int rc = b->any_normalized ? split_added(t, text, len, 1, skip_special, out)
                               : encode_pieces(t, text, len, out);
    free(nfc);
    return rc;
}

size_t bpe_max_tokens(const Tokenizer *t, size_t len) {
    const ByteBpe *b = t->bpe;
    size_t growth = b->normalizer == NORMALIZER_NFC ? 3 : 1;
    if (len > ((size_t)-1 - 2 * MAX_AFFIX) / growth) return (size_t)-1;
    return growth * len + (size_t)b->n_prefix + (size_t)b->n_suffix;
}

int bpe_encode(const Tokenizer *t, const char *text, size_t len, int mode, int *tokens) {
    const ByteBpe *b = t->bpe;
    Output out = {tokens, 0, bpe_max_tokens(t, len)};
    if (out.cap > 0x7fffffff) return -1; /* the count must fit an int */
    int prompt = mode == TOKENIZER_PROMPT;
    int skip_special = !prompt || (b->options & OPTION_SPLIT_SPECIAL);
    for (int i = 0; prompt && i < b->n_prefix; i++) emit(&out, b->prefix[i]);
    if (split_added(t, text, len, 0, skip_special, &out) != 0) return -1;
    for (int i = 0; prompt && i < b->n_suffix; i++) emit(&out, b->suffix[i]);
    return (int)out.n;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding */

const char *bpe_decode(const Tokenizer *t, int token, int *len) {
    const ByteBpe *b = t->bpe;
    if (token >= b->n_tokens || (b->flags[token] & TOKEN_SPECIAL)) {
        *len = 0;
        return "";
    }
    *len = t->piece_lens[token];
    return t->pieces[token];
}

int bpe_has_token(const Tokenizer *t, int token) {
    const ByteBpe *b = t->bpe;
    return token >= 0 && token < b->n_tokens && b->flags[token] != 0;
}

int bpe_is_special(const Tokenizer *t, int token) {
    const ByteBpe *b = t->bpe;
    return token >= 0 && token < b->n_tokens && (b->flags[token] & TOKEN_SPECIAL) != 0;
}
