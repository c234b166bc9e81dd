/*
 * attention.c - rotary position embeddings, the KV cache and grouped-query attention.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "matmul.h"

/* ------------------------------------------------------------------------------------------ */
/* RoPE: the angle grows with the position, at a different rate for each pair, so the dot
 * product of a query and a key depends on how far apart they are. */

void rope_frequencies(float *freq, int head_size, float theta, const RopeScaling *scaling) {
    const float pi = 3.14159265358979f;
    for (int i = 0; i < head_size / 2; i++) {
        /* the same float expression as llama2.c, so the angles agree to the last bit */
        freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_size);
        if (!scaling || scaling->type == ROPE_PLAIN) continue;
        if (scaling->type == ROPE_LINEAR) { /* positions divided by factor: Hugging Face's
                                              * "linear" */
            freq[i] /= scaling->factor;
            continue;
        }
        /* Llama 3.1's rule, as Hugging Face's _compute_llama3_parameters: slow pairs (long
         * wavelengths, which saw no full turn in training) are slowed by factor, fast ones
         * kept, and the band between blended by where its wavelength falls. */
        float wavelength = 2 * pi / freq[i];
        float low = scaling->original_context / scaling->low_freq_factor;
        float high = scaling->original_context / scaling->high_freq_factor;
        if (wavelength > low) {
            freq[i] /= scaling->factor;
        } else if (wavelength >= high) {
            float smooth = (scaling->original_context / wavelength - scaling->low_freq_factor) /
                           (scaling->high_freq_factor - scaling->low_freq_factor);
            freq[i] = (1 - smooth) * freq[i] / scaling->factor + smooth * freq[i];
        }
    }
}

void rope_angles(float *cos, float *sin, const float *freq, int pos, int n, int head_size) {
    int half = head_size / 2;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            float angle = (pos + t) * freq[i];
            cos[(size_t)t * half + i] = cosf(angle);
            sin[(size_t)t * half + i] = sinf(angle);
        }
}

/* Prompt chunks rotate their tokens on all threads when there are this many values (a
 * branch, not `parallel if`, which still enters the OpenMP runtime). */
#define PARALLEL_MIN_ROPE (1 << 14)

static void rope_token(float *v, const float *c, const float *s, int n_heads, int head_size) {
    for (int h = 0; h < n_heads; h++, v += head_size)
        for (int i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * c[i] - v1 * s[i];
            v[2 * i + 1] = v0 * s[i] + v1 * c[i];
        }
}

void rope(float *vec, const float *cos, const float *sin, int n, int n_heads, int head_size) {
    size_t half = head_size / 2, width = (size_t)n_heads * head_size;
    if ((long)n * width >= PARALLEL_MIN_ROPE) {
        #pragma omp parallel for schedule(static)
        for (int t = 0; t < n; t++)
            rope_token(vec + t * width, cos + t * half, sin + t * half, n_heads, head_size);
    } else {
        for (int t = 0; t < n; t++)
            rope_token(vec + t * width, cos + t * half, sin + t * half, n_heads, head_size);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The KV cache */

int kv_cache_init(KvCache *c, int n_layers, int n_kv_heads, int head_size, int seq_len) {
    *c = (KvCache){.n_layers = n_layers, .n_kv_heads = n_kv_heads, .head_size = head_size,
                   .seq_len = seq_len};
    size_t n = (size_t)n_layers * n_kv_heads * seq_len * head_size;
    c->keys = calloc(n, sizeof(float));
    c->values = calloc(n, sizeof(float));
    if (!c->keys || !c->values) {
        kv_cache_free(c);
        return -1;
    }
    return 0;
}

void kv_cache_free(KvCache *c) {
    free(c->keys);
    free(c->values);
    c->keys = c->values = NULL;
}

size_t kv_cache_bytes(const KvCache *c) {
    return 2 * (size_t)c->n_layers * c->n_kv_heads * c->seq_len * c->head_size * sizeof(float);
}

/* Where head h of a layer starts: its seq_len positions follow one another. */
static size_t head_offset(const KvCache *c, int layer, int h) {
    return (((size_t)layer * c->n_kv_heads + h) * c->seq_len) * c->head_size;
}

void kv_cache_store(KvCache *c, int layer, const float *k, const float *v, int n, int pos) {
    size_t hs = (size_t)c->head_size, bytes = hs * sizeof(float);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            size_t at = head_offset(c, layer, h) + (size_t)(pos + t) * hs;
            size_t from = ((size_t)t * c->n_kv_heads + h) * hs;
            memcpy(c->keys + at, k + from, bytes);
            memcpy(c->values + at, v + from, bytes);
        }
}

/* ------------------------------------------------------------------------------------------ */
/* Grouped-query attention. Causal: the query at pos reads the first pos + 1 cached positions
 * only, never a later one, even when a prompt chunk has already stored the keys of later
 * positions. */

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
static void attention_team(float *out, float *att, const float *q, const KvCache *c, int layer,
                           int n, int pos, int n_heads) {
    int hs = c->head_size, group = n_heads / c->n_kv_heads;
    size_t stride = (size_t)n_heads * hs; /* from one token's queries to the next */
    #pragma omp for schedule(static)
    for (int h = 0; h < n_heads; h++) {
        size_t kv = head_offset(c, layer, h / group);
        for (int i = 0; i < n; i++) {
            size_t at = i * stride + (size_t)h * hs;
            attend(out + at, att + (size_t)h * c->seq_len, q + at, c->keys + kv, c->values + kv,
                   pos + i + 1, hs);
        }
    }
}

void attention(float *out, float *att, const float *q, const KvCache *c, int layer, int n,
               int pos, int n_heads) {
    if ((long)n_heads * n * (pos + n) * c->head_size >= PARALLEL_MIN_ATTENTION) {
        #pragma omp parallel
        attention_team(out, att, q, c, layer, n, pos, n_heads);
    } else {
        attention_team(out, att, q, c, layer, n, pos, n_heads);
    }
}

void attention_weights(float *out, float *att, const float *q, const KvCache *c, int layer,
                       int pos, int n_heads) {
    attention_team(out, att, q, c, layer, 1, pos, n_heads);
}
