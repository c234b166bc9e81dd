/*
 * kernels.h - the numeric building blocks of the forward pass.
 *
 * Every kernel is a pure function: output first, inputs const, sizes last, no allocation.
 * matvec() dispatches on the weight type; the *_ref functions are the plain C versions that
 * define what each kernel computes, and the tests hold the fast paths to them.
 */
#ifndef KERNELS_H
#define KERNELS_H

#include "model.h"

/* out (n) = x (n) / sqrt(mean(x^2) + eps) * weight (n). out may alias x. */
void rmsnorm(float *out, const float *x, const float *weight, int n, float eps);

/* x (n) = softmax(x), in place, subtracting the max first for stability. */
void softmax(float *x, int n);

/* y (rows) = W (rows, cols) x (cols), for a weight matrix of any type. */
void matvec(float *y, const Tensor *w, const float *x, int rows, int cols);

/* The plain C reference for matvec, one per weight type. */
void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols);
void matvec_bf16_ref(float *y, const uint16_t *w, const float *x, int rows, int cols);
void matvec_q8_ref(float *y, const int8_t *w, const float *scales, const float *x,
                   int rows, int cols, int group_size);

/* out (cols) = row `row` of W (rows, cols), converted to float: the embedding lookup. */
void dequantize_row(float *out, const Tensor *w, int row, int cols);

/* ------------------------------------------------------------------------------------------ */
/* attention.c: RoPE, the KV cache and attention */

/* cos_row, sin_row (head_size / 2) = the RoPE angles of position pos: pair i turns by
 * pos * theta^(-2i / head_size). Computed once per position, shared by every layer. */
void rope_angles(float *cos_row, float *sin_row, int pos, int head_size, float theta);

/* Rotates each adjacent pair (2i, 2i+1) of every head of vec (n_heads, head_size) by the
 * angles of one position, cos_row and sin_row (head_size / 2). */
void rope(float *vec, const float *cos_row, const float *sin_row, int n_heads, int head_size);

/* Copies the key and value of position pos, k and v (n_kv_heads, head_size), into one
 * layer's cache, key_cache and value_cache (n_kv_heads, seq_len, head_size). */
void kv_cache_store(float *key_cache, float *value_cache, const float *k, const float *v,
                    int n_kv_heads, int head_size, int seq_len, int pos);

/* out (n_heads, head_size) = causal attention of the queries q (n_heads, head_size) over
 * positions 0..pos of one layer's cache. att (n_heads, seq_len) is scratch and is left
 * holding the attention weights. */
void attention(float *out, float *att, const float *q, const float *key_cache,
               const float *value_cache, int n_heads, int n_kv_heads, int head_size,
               int seq_len, int pos);

/* The float a bf16 value stands for: its 16 bits are the top half of a float32. */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

#endif
