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
 *
 * Attention's products with the KV cache (matvec_f32, vecmat_f32) live here too, at the end:
 * they read the cache row-major, as it is, on one thread.
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

static void pack(Tensor *t, void *mem) {
    int rows = t->rows, cols = t->cols, blocks = (rows + F32_SB - 1) / F32_SB;
    const float *w = t->data;
    float *dst = mem;
    /* a superblock at a time, both threads at once: this is most of an f32 model's load */
    #pragma omp parallel for schedule(static) if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int b = 0; b < blocks; b++) {
        float *out = dst + (size_t)b * cols * F32_SB;
        for (int i = 0; i < F32_SB; i++) {
            int r = b * F32_SB + i;
            if (r >= rows) { /* a padding row: zero weights */
                for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = 0.0f;
                continue;
            }
            for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = w[(size_t)r * cols + j];
        }
    }
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
/* Attention's products with the KV cache: rows of a few dozen floats, read as they lie, on the
 * calling thread. Each row is summed in 16 (AVX-512) or 8 (AVX2) lanes, then across them. */

void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += row[j] * x[j];
        y[i] = sum;
    }
}

#if defined(USE_AVX512)

/* The sums of the 16 lanes of a, b, c and d, added in the order _mm512_reduce_add_ps adds
 * them (halves, then quarters, then lanes 0+2 and 1+3 of a quarter, then those two), so the
 * results are its results bit for bit; but the four reductions share their shuffles. */
static ALWAYS_INLINE __m128 reduce_add4(__m512 a, __m512 b, __m512 c, __m512 d) {
    /* quarters (a0+a2, a1+a3, b0+b2, b1+b3), then (a0+a2 + a1+a3, b.., c.., d..) */
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88),
                             _mm512_shuffle_f32x4(ab, cd, 0xDD));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E)); /* lanes (0+2, 1+3) of each quarter */
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1)); /* and their sum */
    __m512i lane0 = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(lane0, v)); /* lane 0 of each quarter */
}

/* Attention scores: rows are cached keys, a few dozen floats each, so the horizontal sum of
 * each row's accumulator costs as much as its multiply-adds. Four rows share it. */
void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    int r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4) {
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                         _mm512_setzero_ps()};
        for (int j = 0; j < cols; j += 16) {
            __mmask16 m = mask16(cols - j);
            __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
            for (int r = 0; r < 4; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + (size_t)(r0 + r) * cols + j),
                                         xv, acc[r]);
        }
        _mm_storeu_ps(y + r0, reduce_add4(acc[0], acc[1], acc[2], acc[3]));
    }
    for (; r0 < rows; r0++) {
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < cols; j += 16) {
            __mmask16 m = mask16(cols - j);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + (size_t)r0 * cols + j),
                                  _mm512_maskz_loadu_ps(m, x + j), acc);
        }
        y[r0] = _mm512_reduce_add_ps(acc);
    }
}

#elif defined(USE_AVX2)

/* The first n (< 8) floats at p, the rest zero: the short last step of a row. */
static ALWAYS_INLINE __m256 load_f32_part(const float *p, int n) {
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes));
}

void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < cols; j += 8) {
            int k = cols - j;
            const float *wr = w + (size_t)r * cols + j;
            __m256 wv = k >= 8 ? _mm256_loadu_ps(wr) : load_f32_part(wr, k);
            __m256 xv = k >= 8 ? _mm256_loadu_ps(x + j) : load_f32_part(x + j, k);
            acc = _mm256_fmadd_ps(wv, xv, acc);
        }
        y[r] = hsum256(acc);
    }
}

#else

void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    matvec_f32_ref(y, w, x, rows, cols);
}

#endif

/* Attention's weighted sum of values */

void vecmat_f32_ref(float *y, const float *a, const float *w, int rows, int cols) {
    for (int j = 0; j < cols; j++) y[j] = 0.0f;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) y[j] += a[i] * w[(size_t)i * cols + j];
}

/* A block of up to 64 outputs stays in registers while the rows stream past, instead of
 * y being loaded and stored once per row. */
void vecmat_f32(float *y, const float *a, const float *w, int rows, int cols) {
#if defined(USE_AVX512)
    for (int j = 0; j < cols; j += 64) {
        __mmask16 m[4];
        __m512 acc[4];
        for (int k = 0; k < 4; k++) m[k] = j + 16 * k < cols ? mask16(cols - j - 16 * k) : 0;
        for (int k = 0; k < 4; k++) acc[k] = _mm512_setzero_ps();
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            const float *row = w + (size_t)i * cols + j;
            for (int k = 0; k < 4; k++)
                acc[k] = _mm512_fmadd_ps(ai, _mm512_maskz_loadu_ps(m[k], row + 16 * k), acc[k]);
        }
        for (int k = 0; k < 4; k++) _mm512_mask_storeu_ps(y + j + 16 * k, m[k], acc[k]);
    }
#elif defined(USE_AVX2)
    int j = 0;
    for (; j + 8 <= cols; j += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < rows; i++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(a[i]), _mm256_loadu_ps(w + (size_t)i * cols + j),
                                  acc);
        _mm256_storeu_ps(y + j, acc);
    }
    for (; j < cols; j++) {
        float sum = 0.0f;
        for (int i = 0; i < rows; i++) sum += a[i] * w[(size_t)i * cols + j];
        y[j] = sum;
    }
#else
    vecmat_f32_ref(y, a, w, rows, cols);
#endif
}

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
