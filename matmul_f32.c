/*
 * matmul_f32.c - float32 weights: stored as they are, four bytes a weight.
 *
 * The definition (product_ref): each output is one chain of fused multiply-adds along its row,
 * in column order, from +0:
 *
 *     acc = 0; for j = 0 .. cols - 1: acc = fmaf(W[r][j], x[j], acc); y[r] = acc
 *
 * A chain per output is what a vector lane computes when the lane owns a row, so the fast
 * kernels need no horizontal sums, and decoding, prompt chunks of any size, any split among
 * threads and every build with FMA give exactly these numbers. (The plain C build has no FMA
 * instruction to count on, and fmaf through the C library is seven times slower than a
 * multiply and an add; it rounds the exact product and sum through a double instead, which
 * is the reference's number except in rare double-rounding cases: tests/test_kernels.c
 * holds it within a tolerance.)
 *
 * How the fast product works: at load time pack rearranges the matrix into superblocks of 32
 * rows, column after column: for column j, 32 consecutive floats hold W[r][j] for the 32 rows
 * (zero for padding rows past the end). One vector load then brings one column of 16 (AVX-512)
 * or 8 (AVX2) rows, each lane accumulating its own row:
 * - decoding (one token): per column, x[j] broadcast and one FMA per vector of the superblock.
 *   The superblock is one sequential stream from memory, and its vectors are independent
 *   chains, so the loads run ahead; a thread takes a contiguous range of superblocks.
 * - a prompt chunk: the tile is a superblock by up to TILE_T tokens, TILE_T x (32 / lanes)
 *   accumulators in registers; per column the weight vectors are loaded once and each meets
 *   every token's x[j]. For that the chunk's activations are first laid out column by column
 *   per group of MATMUL_TOKENS tokens (prepare: xp[j * tn + t]), so that the tokens' values of
 *   a column share a cache line and come as broadcast operands of the FMAs.
 * Measured in the research for this layout (BENCHMARKS.md): 94-95% of the FMA peak for the
 * prompt tile, where row-major tiles of any shape stayed near 63%, and decoding at the
 * machine's read bandwidth.
 */
#include <math.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"

#define F32_SB 32 /* rows per superblock */

/* ------------------------------------------------------------------------------------------ */
/* The reference */

static void product_ref(float *y, const Tensor *w, const float *x, const void *in, int n,
                        int r0, int nr) {
    int cols = w->cols;
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++) {
            const float *row = (const float *)w->data + (size_t)r * cols;
            const float *xt = x + (size_t)t * cols;
            float acc = 0.0f;
            for (int j = 0; j < cols; j++) acc = fmaf(row[j], xt[j], acc);
            y[(size_t)t * w->rows + r] = acc;
        }
}

/* ------------------------------------------------------------------------------------------ */
/* The packed layout and the prepared input */

#if defined(USE_AVX512) || defined(USE_AVX2)

#define SB_VECS (F32_SB / VEC_LANES)         /* vectors per column of a superblock */
#if defined(USE_AVX512)
#define TILE_T 8                             /* 2 x 8 accumulators of the 32 registers */
#else
#define TILE_T 2                             /* 4 x 2 of the 16 */
#endif

static size_t packed_size(const Tensor *w) {
    return (size_t)(w->rows + F32_SB - 1) / F32_SB * F32_SB * w->cols * sizeof(float);
}

/* Superblock b: its F32_SB rows interleaved, a padding row as zero weights. */
static void pack_block(const Tensor *t, void *mem, int b) {
    int rows = t->rows, cols = t->cols;
    const float *w = t->data;
    float *out = (float *)mem + (size_t)b * cols * F32_SB;
    for (int i = 0; i < F32_SB; i++) {
        int r = b * F32_SB + i;
        if (r >= rows) {
            for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = 0.0f;
            continue;
        }
        for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = w[(size_t)r * cols + j];
    }
}

/* a superblock at a time, on all threads: this is most of an f32 model's load */
static void pack(Tensor *t, void *mem) {
    pack_blocks(t, mem, (t->rows + F32_SB - 1) / F32_SB, pack_block);
    t->packed = mem;
}

/* A prompt chunk's input takes cols floats per token (64-aligned); decoding reads x. */
static size_t chunk_stride(const Tensor *w) { return round64((size_t)w->cols * sizeof(float)); }

static size_t input_stride(const Tensor *w, int n) {
    return w->packed && n > 1 ? chunk_stride(w) : 0;
}

/* Tokens t0 .. t0 + tn - 1 column by column: xp[j * tn + t]. */
static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, tn = min_int(MATMUL_TOKENS, n - t0);
    float *xp = (float *)((char *)in + (size_t)t0 * chunk_stride(w));
    for (int t = 0; t < tn; t++) {
        const float *xt = x + (size_t)(t0 + t) * cols;
        for (int j = 0; j < cols; j++) xp[(size_t)j * tn + t] = xt[j];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The tile: one superblock (wb, its first row at y) by T tokens whose inputs are xp[j * xs + t];
 * outputs for `left` rows (the rest are padding). T is a compile-time constant at every call,
 * so the accumulators live in registers. */
static ALWAYS_INLINE void tile(float *y, const float *wb, const float *xp, int xs, int T,
                               int cols, int rows, int left) {
    VecF acc[SB_VECS][TILE_T];
    for (int q = 0; q < SB_VECS; q++)
        for (int t = 0; t < T; t++) acc[q][t] = vec_zero();
    for (int j = 0; j < cols; j++, xp += xs, wb += F32_SB) {
        VecF wv[SB_VECS];
        for (int q = 0; q < SB_VECS; q++) wv[q] = vec_load(wb + q * VEC_LANES);
        for (int t = 0; t < T; t++) {
            VecF xb = vec_set1(xp[t]);
            for (int q = 0; q < SB_VECS; q++) acc[q][t] = vec_fma(wv[q], xb, acc[q][t]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int q = 0; q < SB_VECS; q++)
            vec_store_first(y + (size_t)t * rows + q * VEC_LANES, acc[q][t], left - q * VEC_LANES);
}

/* Superblocks b0 .. b1 - 1 for the tn tokens of one group, inputs xp[j * tn + t] (a single
 * token's input is x itself), in tiles of up to TILE_T tokens. */
static void superblocks(float *y, const float *packed, const float *xp, int tn, int rows,
                        int cols, int b0, int b1) {
    for (int b = b0; b < b1; b++) {
        const float *wb = packed + (size_t)b * cols * F32_SB;
        int left = rows - b * F32_SB;
        for (int t = 0; t < tn; t += TILE_T) {
            float *yt = y + (size_t)t * rows + b * F32_SB;
            switch (min_int(TILE_T, tn - t)) {
#if TILE_T >= 8
            case 8: tile(yt, wb, xp + t, tn, 8, cols, rows, left); break;
            case 7: tile(yt, wb, xp + t, tn, 7, cols, rows, left); break;
            case 6: tile(yt, wb, xp + t, tn, 6, cols, rows, left); break;
            case 5: tile(yt, wb, xp + t, tn, 5, cols, rows, left); break;
            case 4: tile(yt, wb, xp + t, tn, 4, cols, rows, left); break;
            case 3: tile(yt, wb, xp + t, tn, 3, cols, rows, left); break;
#endif
            case 2: tile(yt, wb, xp + t, tn, 2, cols, rows, left); break;
            default: tile(yt, wb, xp + t, tn, 1, cols, rows, left); break;
            }
        }
    }
}

/* Rows r0 .. r0 + nr - 1 (whole superblocks but for the matrix's last) for n tokens. */
static void product(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr) {
    if (!w->packed) { /* not rearranged (a caller of the kernels that did not pack) */
        product_ref(y, w, x, in, n, r0, nr);
        return;
    }
    int b0 = r0 / F32_SB, b1 = (r0 + nr + F32_SB - 1) / F32_SB, rows = w->rows, cols = w->cols;
    if (!in) { /* decoding: x itself is a token's input */
        for (int t = 0; t < n; t++)
            superblocks(y + (size_t)t * rows, w->packed, x + (size_t)t * cols, 1, rows, cols, b0,
                        b1);
        return;
    }
    size_t stride = chunk_stride(w) / sizeof(float);
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS)
        superblocks(y + (size_t)t0 * rows, w->packed, (const float *)in + t0 * stride,
                    min_int(MATMUL_TOKENS, n - t0), rows, cols, b0, b1);
}

static int unit_rows(const Tensor *w) { return w->packed ? F32_SB : 1; }

#else /* plain C: the stored layout, row by row */

static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *t, void *mem) {}
static size_t input_stride(const Tensor *w, int n) { return 0; }
static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {}

/* The reference's chain with each step rounded through a double: the product of two floats
 * is exact in a double, so only the sum is rounded twice (see the top of the file). */
static void product(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr) {
    int cols = w->cols;
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++) {
            const float *row = (const float *)w->data + (size_t)r * cols;
            const float *xt = x + (size_t)t * cols;
            float acc = 0.0f;
            for (int j = 0; j < cols; j++) acc = (float)((double)row[j] * xt[j] + acc);
            y[(size_t)t * w->rows + r] = acc;
        }
}

static int unit_rows(const Tensor *w) { return 1; }

#endif

/* ------------------------------------------------------------------------------------------ */
/* The table row */

static size_t file_bytes(size_t rows, size_t cols, int group_size) {
    return group_size == 0 ? rows * cols * sizeof(float) : 0;
}

static void bind(Tensor *t, const void *base) { t->data = base; }

static void dequantize_row(float *out, const Tensor *w, int row) {
    memcpy(out, (const float *)w->data + (size_t)row * w->cols, (size_t)w->cols * sizeof(float));
}

const WeightType weight_f32 = {
    .name = "f32", .file_bytes = file_bytes, .bind = bind,
    .dequantize_row = dequantize_row, .input_stride = input_stride, .prepare = prepare,
    .packed_size = packed_size, .pack = pack, .unit_rows = unit_rows, .product = product,
    .product_ref = product_ref,
#if defined(USE_AVX512)
    .isa = "avx512",
#elif defined(USE_AVX2)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
