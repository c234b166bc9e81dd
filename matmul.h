/*
 * matmul.h - weight matrices of every type, and the products that read them.
 *
 * Nearly all the time of a forward pass is spent in matmul: every weight is read once per
 * token while decoding, once per chunk of tokens while reading the prompt. Each weight type
 * has one home, a file matmul_<type>.c holding its storage layout, its plain C reference
 * product (the definition) beside its fast paths, and one row in the table below; matmul.c
 * shares the rows of a product out among the threads and calls the type's kernel. A new
 * type is one new file plus one table row. tests/test_kernels.c holds every fast path to its
 * reference on awkward sizes.
 *
 * Installed with the library for the Tensor type that model.h uses; its functions are the
 * library's own (libtllm.a keeps them local): a program calls model.h's.
 */
#ifndef MATMUL_H
#define MATMUL_H

#include <stddef.h>
#include <stdint.h>

enum { WEIGHT_F32 = 0, WEIGHT_BF16 = 1, WEIGHT_Q8_0 = 2, WEIGHT_Q4_0 = 3, WEIGHT_TYPES = 4 };

/* A weight matrix (rows, cols) of any type, one row per output (PyTorch's nn.Linear layout).
 * It points into the read-only file mapping, or into the model's arena for a matrix moved out
 * of it at load time; it owns no memory. */
typedef struct {
    int type;             /* WEIGHT_* */
    int rows, cols;
    int group_size;       /* quantized types: weights per scale along a row; 0 otherwise */
    const void *data;     /* the values as stored: f32, bf16 (uint16), int8 or Q4_0 blocks */
    const float *scales;  /* Q8_0: (rows, ceil(cols / group_size)), else NULL */
    const void *packed;   /* the matrix rearranged at load for this build's kernel, or NULL */
} Tensor;

/* The group of a prompt chunk's tokens in which the types lay out their prepared input (see
 * `prepare`), and the most tokens of a tile. Threads share out the work of a chunk in units of
 * (a few rows) x (a few groups of tokens: unit_rows and unit_tokens below). */
#define MATMUL_TOKENS 8

/* How far past its rearranged matrix a product may prefetch (see packed_size below). */
#define MATMUL_PREFETCH_BYTES 32768

/* Everything one weight type is. The product covers rows r0 .. r0 + nr - 1 of
 * y (n, rows) = x (n, cols) W^T for n tokens (matmul passes at most unit_tokens at a time);
 * the reference computes the same one row and one token at a time in plain C and is the
 * type's definition: the fast products give its numbers bit for bit, except where the type's
 * file says otherwise (tests/test_kernels.c checks).
 *
 * Most kernels read x prepared: quantized to int8 (Q8_0, Q4_0), rounded to bf16, or laid out
 * column by column for a tile of tokens (f32, bf16). `prepare` writes one token group of it
 * into the scratch `in`, which holds n tokens of input_stride bytes each; the tokens of a group
 * lie together from byte t0 * input_stride on, so a product of the tokens t0 .. t0 + k - 1
 * (t0 a multiple of MATMUL_TOKENS) reads in + t0 * input_stride. */
typedef struct {
    const char *name;       /* as in files and messages: "f32", "bf16", "q8_0", "q4_0" */
    /* bytes of a (rows, cols) matrix as stored in a file, or 0 if the group size is invalid */
    size_t (*file_bytes)(size_t rows, size_t cols, int group_size);
    /* points t->data (and t->scales) into a stored matrix of file_bytes bytes at base */
    void (*bind)(Tensor *t, const void *base);
    /* out (cols) = row `row` of w as floats: the embedding lookup */
    void (*dequantize_row)(float *out, const Tensor *w, int row);
    /* bytes per token (a multiple of 64) of the input product reads when it runs n tokens
     * through w, or 0 when it reads x as it is */
    size_t (*input_stride)(const Tensor *w, int n);
    /* in = tokens t0 .. min(t0 + MATMUL_TOKENS, n) - 1 of x (n, cols) as product reads them */
    void (*prepare)(void *in, const float *x, int n, int t0, const Tensor *w);
    /* the same for product_ref (same stride), or NULL if the reference reads x itself */
    void (*prepare_ref)(void *in, const float *x, int n, int t0, const Tensor *w);
    /* bytes a load-time rearrangement takes (a multiple of 64), 0 if the stored layout serves;
     * pack writes it into mem (64-aligned) and points w->packed there. A product may prefetch
     * (never read) up to MATMUL_PREFETCH_BYTES past the rearranged matrix: what lies there
     * should be what it reads next, the next matrix, and memory after the last */
    size_t (*packed_size)(const Tensor *w);
    void (*pack)(Tensor *w, void *mem);
    /* rows per unit of work (the threads share out units) */
    int (*unit_rows)(const Tensor *w);
    /* in: the prepared input of these n tokens, or NULL when input_stride is 0 */
    void (*product)(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr);
    void (*product_ref)(float *y, const Tensor *w, const float *x, const void *in, int n,
                        int r0, int nr);
    /* tokens per unit of work, a multiple of MATMUL_TOKENS (matmul_many halves it for a
     * matrix of too few rows to go round the threads) */
    int unit_tokens;
    /* 1: when the threads share a prompt, each prepares the whole input itself (matmul_many) */
    int own_input;
    const char *isa;        /* which path `product` takes in this build */
} WeightType;

extern const WeightType weight_f32, weight_bf16, weight_q8_0, weight_q4_0;

/* The table entry of a WEIGHT_* value, or NULL for an unknown one. */
const WeightType *weight_type(int type);

/* Bytes of scratch matmul needs to run n tokens through w (0 if none): for a prompt chunk of
 * a type with own_input, a copy of the prepared input for each thread of the team as it is
 * now (team_size). */
size_t matmul_scratch_bytes(const Tensor *w, int n);

/* y (n, w->rows) = x (n, w->cols) W^T: each of n tokens through a weight matrix. n = 1 is the
 * matrix-vector product of decoding; n > 1 is a prompt chunk, where each weight row is read
 * once for a unit of tokens at a time (unit_tokens), and every (row, token) sees the same
 * arithmetic as with n = 1, so a chunk gives the logits of token-by-token decoding bit for
 * bit. scratch
 * (64-aligned, scratch_bytes of it) holds x as the kernel reads it; NULL when
 * matmul_scratch_bytes is 0. Less than that asks is fine if it holds one copy (n times the
 * bytes for one token): the threads then share it. */
void matmul(float *y, const Tensor *w, const float *x, int n, void *scratch,
            size_t scratch_bytes);

/* matmul for several products of the same input x (n, cols): q, k and v; w1 and w3. Products
 * that read the activations the same way share one preparation of x and one parallel loop
 * over all their rows, which for a small model costs less than waking the threads per
 * product. */
typedef struct {
    float *y;        /* (n, w->rows) */
    const Tensor *w;
} Product;
void matmul_many(const Product *p, int count, const float *x, int n, void *scratch,
                 size_t scratch_bytes);

/* The plain C reference of any type: the same products, one row and one token at a time. */
void matmul_ref(float *y, const Tensor *w, const float *x, int n, void *scratch);

/* xq (n) and xq_scale (ceil(n / group_size)) = x (n) in groups of group_size values: each
 * group gets scale max|x| / 127 and values roundf(x / scale) in -127..127. */
void quantize_q8(int8_t *xq, float *xq_scale, const float *x, int n, int group_size);
void quantize_q8_ref(int8_t *xq, float *xq_scale, const float *x, int n, int group_size);

/* out (ceil(n / group_size)) = times x the sum of each group of xq's n values: what a kernel
 * that multiplies offset weights (Q8_0 packed for VNNI: +128; Q4_0's nibbles, 0..15 for
 * -8..7, on every path) must take back out of each group's integer dot product, with
 * times = -128 or -8. */
void group_sums(int32_t *out, const int8_t *xq, int n, int group_size, int times);

/* For the weight types' pack: block(t, mem, b) for each b in 0 .. blocks - 1, shared among
 * the threads when the matrix is large enough (packing is most of a model's load time). */
void pack_blocks(const Tensor *t, void *mem, int blocks,
                 void (*block)(const Tensor *t, void *mem, int b));

/* Which path each type's product takes in this build, e.g. "f32:avx512 bf16:avx512bf16
 * q8_0:avx512vnni q4_0:avx512vnni", for the tests and the benchmark report. */
const char *matmul_isa(void);

#endif
