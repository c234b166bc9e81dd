/*
 * kernels.h - the numeric building blocks of the forward pass.
 *
 * Every kernel is a pure function: output first, inputs const, sizes last, no allocation,
 * apart from the scratch it is handed. One exception: attention_chunk may hand each row of
 * weights to the --attn recorder, since its scratch row is reused by the next query before
 * the caller could look at it. (q8_pack, run once at load time, fills memory it is given.)
 * matmul() dispatches on the weight type; the *_ref functions are the plain C versions that
 * define what each kernel computes, and tests/test_kernels.c holds the fast paths to them.
 */
#ifndef KERNELS_H
#define KERNELS_H

#include "model.h"

struct AttnRecorder; /* attnviz.h: the --attn recorder, NULL when off */

/* out (n) = x (n) / sqrt(mean(x^2) + eps) * weight (n). out may alias x. */
void rmsnorm(float *out, const float *x, const float *weight, int n, float eps);

/* x (n) = softmax(x), in place, subtracting the max first for stability. */
void softmax(float *x, int n);
void softmax_ref(float *x, int n);

/* out (n) = silu(gate) * up, where silu(x) = x * sigmoid(x): the SwiGLU feedforward's gate.
 * out may alias gate. */
void swiglu(float *out, const float *gate, const float *up, int n);
void swiglu_ref(float *out, const float *gate, const float *up, int n);

/* y (n, rows) = x (n, cols) W^T: each of n tokens through a weight matrix W (rows, cols) of
 * any type. n = 1 is the matrix-vector product of decoding; n > 1 is a prompt chunk, where
 * each weight row is read once for all n tokens. For Q8_0 weights the activations are first
 * quantized into the scratch xq (n * cols) and xq_scale (n * ceil(cols / group_size)); after
 * a product with packed weights (q8_pack) xq holds them plus 128, the form that kernel reads.
 * f32 and bf16 weights leave the scratch untouched (it may then be NULL). */
void matmul(float *y, const Tensor *w, const float *x, int8_t *xq, float *xq_scale,
            int n, int rows, int cols);

/* matmul for several products of the same input x (n, cols): q, k and v; w1 and w3. One
 * quantization of x and one parallel loop over all their rows, which for a small model
 * costs less than waking the threads once per product. The weights must share one type and
 * group size, and be all packed or none (every matrix of one model is). */
typedef struct {
    float *y;       /* (n, rows) */
    const Tensor *w; /* (rows, cols) */
    int rows;
} Product;
void matmul_many(const Product *p, int count, const float *x, int8_t *xq, float *xq_scale,
                 int n, int cols);

/* A Q8_0 matrix w (rows, cols) rearranged for this build's int8 kernel (kernels.c says why),
 * which matmul then uses. q8_packed_size is the memory it takes, 0 where the stored layout
 * serves (other types, builds without VNNI, a group size that is not a multiple of 4 up to
 * 4096); q8_pack writes it into mem, that many bytes aligned to 64, and points w->packed
 * there. */
size_t q8_packed_size(const Tensor *w, int rows, int cols);
void q8_pack(Tensor *w, int rows, int cols, void *mem);

/* The plain C references, one token at a time, one per weight type. */
void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols);
void matvec_bf16_ref(float *y, const uint16_t *w, const float *x, int rows, int cols);
/* Q8_0: W is int8 w (rows, cols) with one scale per group_size values of a row (the last group
 * of a row may be shorter); x is already quantized the same way by quantize_q8. */
void matvec_q8_ref(float *y, const int8_t *w, const float *w_scale, const int8_t *xq,
                   const float *xq_scale, int rows, int cols, int group_size);

/* xq (n) and xq_scale (ceil(n / group_size)) = x (n) in groups of group_size values: each
 * group gets scale max|x| / 127 and values roundf(x / scale) in -127..127. */
void quantize_q8(int8_t *xq, float *xq_scale, const float *x, int n, int group_size);
void quantize_q8_ref(int8_t *xq, float *xq_scale, const float *x, int n, int group_size);

/* y (rows) = W (rows, cols) x (cols) for float W, on the calling thread only: the building
 * block of attention scores, where the rows are the cached keys. */
void matvec_f32(float *y, const float *w, const float *x, int rows, int cols);

/* y (cols) = a (rows) W (rows, cols): the rows of W weighted by a and summed, on the calling
 * thread only; attention's weighted sum of the cached values. */
void vecmat_f32(float *y, const float *a, const float *w, int rows, int cols);
void vecmat_f32_ref(float *y, const float *a, const float *w, int rows, int cols);

/* The index of the largest of x (n), the first one on ties; NaN is never chosen unless it is
 * x[0] (then nothing compares greater). Greedy decoding. */
int argmax_f32(const float *x, int n);
int argmax_f32_ref(const float *x, int n);

/* out (cols) = row `row` of W (rows, cols), converted to float: the embedding lookup. */
void dequantize_row(float *out, const Tensor *w, int row, int cols);

/* Which instruction set each fast path was built for ("avx512", "avx2" or "plain"), for the
 * tests and the benchmark report. */
const char *kernels_isa(void);

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

/* attention() for n consecutive queries at once, q and out (n, n_heads, head_size), the query
 * of row i at position pos + i seeing positions 0..pos + i. The cache must already hold
 * all n new keys and values. att (n_heads, seq_len) is scratch. rec, when not NULL (--attn),
 * receives every row of weights of `layer` as it is computed. */
void attention_chunk(float *out, float *att, const float *q, const float *key_cache,
                     const float *value_cache, int n, int n_heads, int n_kv_heads,
                     int head_size, int seq_len, int pos,
                     struct AttnRecorder *rec, int layer);

/* The float a bf16 value stands for: its 16 bits are the top half of a float32. */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

#endif
