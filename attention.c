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
 * query at pos sees positions 0..pos only, because later ones are not in the cache yet. */

void attention(float *out, float *att, const float *q, const float *key_cache,
               const float *value_cache, int n_heads, int n_kv_heads, int head_size,
               int seq_len, int pos) {
    int group = n_heads / n_kv_heads;
    float norm = sqrtf((float)head_size);
    #pragma omp parallel for if (n_heads * (pos + 1) * head_size >= (1 << 15))
    for (int h = 0; h < n_heads; h++) {
        const float *qh = q + (size_t)h * head_size;
        const float *keys = key_cache + (size_t)(h / group) * seq_len * head_size;
        const float *values = value_cache + (size_t)(h / group) * seq_len * head_size;
        float *scores = att + (size_t)h * seq_len;

        /* scores_t = q . k_t / sqrt(head_size) */
        for (int t = 0; t <= pos; t++) {
            const float *kt = keys + (size_t)t * head_size;
            float dot = 0.0f;
            for (int i = 0; i < head_size; i++) dot += qh[i] * kt[i];
            scores[t] = dot / norm;
        }
        softmax(scores, pos + 1);

        /* out_h = sum_t weights_t v_t */
        float *oh = out + (size_t)h * head_size;
        memset(oh, 0, head_size * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float *vt = values + (size_t)t * head_size;
            float a = scores[t];
            for (int i = 0; i < head_size; i++) oh[i] += a * vt[i];
        }
    }
}
