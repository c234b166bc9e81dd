/*
 * attention.h - rotary position embeddings, the KV cache, and grouped-query attention.
 *
 * Attention is where tokens talk to each other. Each query head compares its query with the
 * keys of every earlier position, turns the scores into weights with a softmax, and takes the
 * weighted sum of their values. Keys and values of past positions never change, so they are
 * computed once and kept in the KV cache. Grouped-query attention lets n_heads / n_kv_heads
 * query heads share one key/value head: query head h reads KV head h / (n_heads / n_kv_heads).
 */
#ifndef ATTENTION_H
#define ATTENTION_H

#include <stddef.h>

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
 * position p turns by p * freq[i]. Computed once per position, shared by every layer. */
void rope_angles(float *cos, float *sin, const float *freq, int pos, int n, int head_size);

/* Rotates each adjacent pair (2i, 2i+1) of every head of vec (n, n_heads, head_size), token t
 * by the angles of row t of cos and sin (n, head_size / 2). */
void rope(float *vec, const float *cos, const float *sin, int n, int n_heads, int head_size);

/* ------------------------------------------------------------------------------------------ */
/* The KV cache: the keys and values of every position so far, for every layer. */

typedef struct {
    int n_layers, n_kv_heads, head_size;
    int seq_len;     /* positions it holds */
    /* (n_layers, n_kv_heads, seq_len, head_size): one head's keys for all positions are
     * contiguous, so attention streams through them in order */
    float *keys;
    float *values;
} KvCache;

/* Allocates a cache for seq_len positions, zeroed. Returns 0, or -1 if memory ran out. */
int kv_cache_init(KvCache *c, int n_layers, int n_kv_heads, int head_size, int seq_len);
void kv_cache_free(KvCache *c);

/* Bytes the cache takes. */
size_t kv_cache_bytes(const KvCache *c);

/* Stores the keys and values of n positions pos .. pos + n - 1 of one layer, k and v
 * (n, n_kv_heads, head_size). */
void kv_cache_store(KvCache *c, int layer, const float *k, const float *v, int n, int pos);

/* ------------------------------------------------------------------------------------------ */
/* Attention */

/* out (n, n_heads, head_size) = causal attention of the queries q (n, n_heads, head_size) at
 * positions pos .. pos + n - 1 over one layer of the cache, which must already hold them:
 * the query at position p sees positions 0..p only. att (n_heads, seq_len) is scratch. Shares
 * the heads out among the threads when that pays. */
void attention(float *out, float *att, const float *q, const KvCache *c, int layer, int n,
               int pos, int n_heads);

/* attention() for the one query at position pos, on the calling thread, leaving each head's
 * weights in att: head h's pos + 1 weights at att + h * seq_len. The same numbers as
 * attention(), for whoever wants to look at the weights (run --attn). */
void attention_weights(float *out, float *att, const float *q, const KvCache *c, int layer,
                       int pos, int n_heads);

#endif
