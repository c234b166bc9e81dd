/*
 * attention.h - rotary position embeddings, the KV cache, and grouped-query attention.
 *
 * Attention is where tokens talk to each other. Each query head compares its query with the
 * keys of every earlier position, turns the scores into weights with a softmax, and takes the
 * weighted sum of their values. Keys and values of past positions never change, so they are
 * computed once and kept in the KV cache. Grouped-query attention lets n_heads / n_kv_heads
 * query heads share one key/value head: query head h reads KV head h / (n_heads / n_kv_heads).
 *
 * Two implementations compute the same thing (docs/ATTENTION.md, "The variants"):
 *   attention_ref      the definition, in two passes: every score of a query, the softmax,
 *                      then the weighted sum; plain C, one query head at a time. It is what
 *                      run --attn records (attention_weights) and what the tests hold the
 *                      fast one to.
 *   attention          what runs: the query heads of a group together against one pass over
 *                      their KV head's cache, tile by tile with a running softmax (the
 *                      "flash" formulation), never holding a whole row of scores.
 *
 * Positions are those of the cache. A layer may see only the last `window` positions (sliding
 * window attention, Mistral and Qwen2), and then keeps only those, in a ring of slots. When
 * the text outgrows the context, kv_cache_evict drops the oldest positions after the first
 * `sinks` ones (attention sinks) and renumbers the rest, so generation goes on.
 *
 * Installed with the library for the KvCache type that model.h uses; its functions are the
 * library's own (libtllm.a keeps them local): a program calls model.h's.
 */
#ifndef ATTENTION_H
#define ATTENTION_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* RoPE: position enters the model by rotating pairs of query and key components. */

/* How a model stretches RoPE to a longer context than it was trained on. */
enum { ROPE_PLAIN = 0, ROPE_LINEAR = 1, ROPE_LLAMA3 = 2 };
typedef struct {
    int type;              /* ROPE_* */
    float factor;          /* linear, llama3: how many times longer the context is */
    float low_freq_factor; /* llama3: wavelengths above original_context / low_freq_factor */
    float high_freq_factor; /* are slowed by factor, those below original_context /
                            * high_freq_factor are kept, and those between are blended */
    int original_context;  /* llama3: the context length of pretraining */
} RopeScaling;

/* freq (head_size / 2) = how fast each pair turns, in radians per position: pair i at
 * theta^(-2i / head_size), then scaled as `scaling` says (NULL or ROPE_PLAIN: not at all).
 * Computed once per model. */
void rope_frequencies(float *freq, int head_size, float theta, const RopeScaling *scaling);

/* cos, sin (n, head_size / 2) = the RoPE angles of positions pos .. pos + n - 1: pair i of
 * position p turns by p * freq[i]. Computed once per position, shared by every layer. A
 * negative pos turns backwards. */
void rope_angles(float *cos, float *sin, const float *freq, int pos, int n, int head_size);

/* Rotates each adjacent pair (2i, 2i+1) of every head of vec (n, n_heads, head_size), token t
 * by the angles of row t of cos and sin (n, head_size / 2). */
void rope(float *vec, const float *cos, const float *sin, int n, int n_heads, int head_size);

/* ------------------------------------------------------------------------------------------ */
/* The KV cache: the keys and values of the positions each layer can still see. */

/* How the cache stores a key or value vector of head_size numbers (run --kv-type) */
enum {
    KV_F32 = 0,  /* float32: exact */
    KV_BF16 = 1, /* the top half of the float32, rounded to nearest even: half the bytes */
    KV_Q8 = 2,   /* int8 steps of max|x| / 127, one float32 scale per vector: a quarter */
};

/* Where each position lives. Positions 0 .. sinks - 1 have slots of their own in every layer
 * (slot = position). The later positions share a ring of `ring` slots per layer: position p
 * is in slot sinks + (p - sinks + base) % ring. A full layer's ring holds every later
 * position of the context (ring = seq_len - sinks), a windowed layer's only its last window
 * positions and a prompt chunk (ring = window + chunk - 1), so its memory is O(window).
 * kv_cache_evict turns the rings instead of moving anything. */
typedef struct {
    int type;        /* KV_* */
    int n_layers, n_kv_heads, head_size;
    int seq_len;     /* positions the cache holds: the context */
    int sinks;       /* positions with slots of their own, kept when the context overflows */
    int *window;     /* (n_layers) how many positions a query sees, itself included; 0: all */
    int *ring;       /* (n_layers) slots for the positions from `sinks` on */
    int *base;       /* (n_layers) how far the ring has turned (kv_cache_evict) */
    size_t *first;   /* (n_layers) the index of the layer's first value */
    size_t *first_key; /* (n_layers) the index of the layer's first key */
    size_t *first_slot; /* (n_layers) the index of the layer's first slot in shift */
    int *shift;      /* (for each layer, sinks + ring[layer]) positions the key in each slot
                      * has moved down since it was stored; the same for every KV head */
    float *freq;     /* (head_size / 2) RoPE's turn per position of each pair */
    float *turns;    /* (seq_len, head_size) cos and sin of the angles of shift s (row s: head_size
                      * / 2 cosines, then the sines), where turned[s] says they are filled */
    unsigned char *turned;
    int moved;       /* 1 once kv_cache_evict has moved a key: until then every shift is 0 */
    /* The vectors, of `type`: one head's slots are contiguous, so attention streams through
     * them in order. values (for each layer: n_kv_heads, sinks + ring[layer], head_size).
     * keys (for each layer: n_kv_heads, the slots rounded up to blocks of 16 (blocks,
     * head_size, 16)): number d of 16 keys in a row, so that q . k of 16 positions is one
     * vector of 16 lanes, each its own sum, with nothing to add across lanes. */
    void *keys, *values;   /* each in pages of its own (kv_cache_init) */
    size_t keys_bytes, values_bytes;
    float *key_scales, *value_scales; /* KV_Q8: one per vector, else NULL */
    /* attention's working memory: threads blocks of scratch_floats (attention.c) */
    float *scratch;
    int threads, max_rows;
    size_t scratch_floats;
} KvCache;

/* Allocates a cache of `type` for seq_len positions, zeroed. window (n_layers) gives each
 * layer's sliding window (0: none), or is NULL for none at all; chunk is the most positions
 * one call stores (model_forward's chunk); sinks as above, below seq_len; freq (head_size / 2)
 * is the model's rope_frequencies, copied. Returns 0, or -1 if memory ran out. */
int kv_cache_init(KvCache *c, int type, int n_layers, int n_kv_heads, int head_size,
                  int seq_len, const int *window, int chunk, int sinks, const float *freq);
void kv_cache_free(KvCache *c);

/* Bytes the keys and values take. */
size_t kv_cache_bytes(const KvCache *c);

/* Bytes one key and one value of one head take, scales included. */
size_t kv_vector_bytes(int type, int head_size);

/* Stores the keys and values of n positions pos .. pos + n - 1 of one layer, k and v
 * (n, n_kv_heads, head_size), converted to the cache's type. */
void kv_cache_store(KvCache *c, int layer, const float *k, const float *v, int n, int pos);

/* The key or value (head_size) of position pos of a layer's KV head, as a float vector:
 * what attention reads (converted back from the cache's type; a key rotated back by its
 * slot's shift). */
void kv_cache_read(float *out, const KvCache *c, int layer, int head, int pos, int value);

/* The cache holds positions 0 .. len - 1. Drops positions sinks .. sinks + drop - 1 of every
 * layer and renumbers the later ones drop lower: their keys are from now on read rotated
 * back by drop more positions (RoPE rotations compose, so a key then looks as if computed at
 * its new position). The cache then holds len - drop positions, and the next one goes at
 * len - drop. Nothing is moved or rounded again: a bf16 or Q8 key stays as it was stored.
 * Returns 0, or -1 (and changes nothing) if drop is not in 1 .. len - sinks or len is more
 * than the cache has held. */
int kv_cache_evict(KvCache *c, int drop, int len);

/* ------------------------------------------------------------------------------------------ */
/* Attention */

/* out (n, n_heads, head_size) = causal attention of the queries q (n, n_heads, head_size) at
 * positions pos .. pos + n - 1 over one layer of the cache, after storing their keys and
 * values k and v (n, n_kv_heads, head_size) as kv_cache_store does (NULL, NULL: the cache
 * already holds them): the query at position p sees positions 0..p only, or with a window w
 * the last w of them. The tiled one-pass formulation, the query heads of a group together;
 * work is shared among the threads when that pays. The result for a position does not
 * depend on n. */
void attention(float *out, const float *q, const float *k, const float *v, KvCache *c,
               int layer, int n, int pos, int n_heads);

/* The same numbers up to float rounding, from the definition: for each query and head all
 * pos + 1 scores, their softmax, then the weighted sum of the values; plain C, on the calling
 * thread. att (n_heads, seq_len) receives the weights of the last query: head h's pos + 1
 * weights at att + h * seq_len (0 outside a window). */
void attention_ref(float *out, float *att, const float *q, const KvCache *c, int layer, int n,
                   int pos, int n_heads);

/* attention_ref for the one query at position pos, leaving each head's weights in att as
 * above, for whoever wants to look at them (run --attn). out (n_heads, head_size) may be NULL
 * when only the weights are wanted. */
void attention_weights(float *out, float *att, const float *q, const KvCache *c, int layer,
                       int pos, int n_heads);

#endif
