/*
 * attention.c - rotary position embeddings, the KV cache and grouped-query attention.
 *
 * Attention is where tokens talk to each other. Each query head compares its query with the
 * keys of every earlier position, turns the scores into weights with a softmax, and takes the
 * weighted sum of their values. Keys and values of past positions never change, so they are
 * computed once and kept in the KV cache.
 */
#include <math.h>
#include <string.h>

#include "attnviz.h"
#include "kernels.h"

/* ------------------------------------------------------------------------------------------ */
/* RoPE: position enters the model by rotating pairs of query and key components. The angle
 * grows with the position, at a different rate for each pair, so the dot product of a query
 * and a key depends on how far apart they are. */

void rope_angles(float *cos_row, float *sin_row, int pos, int head_size, float theta) {
    for (int i = 0; i < head_size / 2; i++) {
        /* the same float expressions as llama2.c, so the angles agree to the last bit */
        float freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_size);
        float angle = pos * freq;
        cos_row[i] = cosf(angle);
        sin_row[i] = sinf(angle);
    }
}

void rope(float *vec, const float *cos_row, const float *sin_row, int n_heads, int head_size) {
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_size;
        for (int i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cos_row[i] - v1 * sin_row[i];
            v[2 * i + 1] = v0 * sin_row[i] + v1 * cos_row[i];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The KV cache: per layer (n_kv_heads, seq_len, head_size), so the keys one head attends over
 * are one contiguous block, read front to back. */

void kv_cache_store(float *key_cache, float *value_cache, const float *k, const float *v,
                    int n_kv_heads, int head_size, int seq_len, int pos) {
    for (int h = 0; h < n_kv_heads; h++) {
        size_t at = ((size_t)h * seq_len + pos) * head_size;
        memcpy(key_cache + at, k + (size_t)h * head_size, head_size * sizeof(float));
        memcpy(value_cache + at, v + (size_t)h * head_size, head_size * sizeof(float));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Grouped-query attention: query head h reads KV head h / (n_heads / n_kv_heads). Causal: the
 * query at pos reads the first pos + 1 cached positions only, never a later one, even when a
 * prompt chunk has already stored the keys of later positions. */

/* One query head q (head_size) over the first n_pos cached keys and values (n_pos, head_size):
 * out (head_size) = sum_t softmax(q . k_t / sqrt(head_size))_t v_t. scores (n_pos) is left
 * holding the attention weights. Decoding and prompt chunks both come here, so a position
 * gets the same numbers either way. */
static void attend(float *out, float *scores, const float *q, const float *keys,
                   const float *values, int n_pos, int head_size) {
    /* the scores are a matrix-vector product with the cached keys as the matrix rows */
    matvec_f32(scores, keys, q, n_pos, head_size);
    float norm = sqrtf((float)head_size);
    for (int t = 0; t < n_pos; t++) scores[t] /= norm;
    softmax(scores, n_pos);
    vecmat_f32(out, scores, values, n_pos, head_size);
}

/* Attention shares the heads out among the threads when there is enough work: below, the
 * calling thread does them all (a branch, not `parallel if`, which still costs a trip into
 * the OpenMP runtime). */
#define PARALLEL_MIN_ATTENTION (1 << 15)

/* n queries (n = 1 when decoding) of every head, heads shared among the calling team: one
 * head per thread, so the head's keys stay in that core's cache for all n queries. */
static void attention_team(float *out, float *att, const float *q, const float *key_cache,
                           const float *value_cache, int n, int n_heads, int n_kv_heads,
                           int head_size, int seq_len, int pos, AttnRecorder *rec, int layer) {
    int group = n_heads / n_kv_heads;
    size_t stride = (size_t)n_heads * head_size; /* from one token's queries to the next */
    #pragma omp for schedule(static)
    for (int h = 0; h < n_heads; h++) {
        size_t kv = (size_t)(h / group) * seq_len * head_size;
        for (int i = 0; i < n; i++) {
            size_t at = i * stride + (size_t)h * head_size;
            attend(out + at, att + (size_t)h * seq_len, q + at, key_cache + kv,
                   value_cache + kv, pos + i + 1, head_size);
            /* --attn: save the row now, the next query of this head reuses the scratch */
            if (rec) attn_record_row(rec, layer, h, pos + i, att + (size_t)h * seq_len);
        }
    }
}

void attention(float *out, float *att, const float *q, const float *key_cache,
               const float *value_cache, int n_heads, int n_kv_heads, int head_size,
               int seq_len, int pos) {
    attention_chunk(out, att, q, key_cache, value_cache, 1, n_heads, n_kv_heads, head_size,
                    seq_len, pos, NULL, 0);
}

void attention_chunk(float *out, float *att, const float *q, const float *key_cache,
                     const float *value_cache, int n, int n_heads, int n_kv_heads,
                     int head_size, int seq_len, int pos, AttnRecorder *rec, int layer) {
    if ((long)n_heads * n * (pos + n) * head_size >= PARALLEL_MIN_ATTENTION) {
        #pragma omp parallel
        attention_team(out, att, q, key_cache, value_cache, n, n_heads, n_kv_heads, head_size,
                       seq_len, pos, rec, layer);
    } else {
        attention_team(out, att, q, key_cache, value_cache, n, n_heads, n_kv_heads, head_size,
                       seq_len, pos, rec, layer);
    }
}
