/*
 * matmul_f32.c - float32 weights: stored as they are, four bytes a weight.
 *
 * How the fast product works (the plan the bf16 type follows too): the output is cut into
 * tiles of TILE_R weight rows x TILE_T tokens. A tile keeps one vector accumulator per
 * (row, token) in registers; each step loads one vector of each of its rows and each of its
 * tokens and does TILE_R x TILE_T multiply-adds. So a weight vector loaded from memory serves
 * TILE_T tokens, and an activation vector TILE_R rows: while decoding (one token) the tile is
 * TILE_R x 1 and the speed is set by memory bandwidth; for a prompt chunk the weights are
 * streamed once per chunk instead of once per token, and the speed is set by the arithmetic.
 * Every (row, token) accumulator sees the same sequence of operations whatever the tile
 * shape, so a prompt chunk gives bit for bit the numbers that token-by-token decoding gives.
 */
#include <string.h>

#include "matmul.h"
#include "simd.h"

/* ------------------------------------------------------------------------------------------ */
/* The reference: one row, one output, summed left to right. */

void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += row[j] * x[j];
        y[i] = sum;
    }
}

static void product_ref(float *y, const Tensor *w, const float *x, const int8_t *xq,
                        const float *xq_scale, int n, int r0, int nr) {
    for (int t = 0; t < n; t++)
        matvec_f32_ref(y + (size_t)t * w->rows + r0, (const float *)w->data + (size_t)r0 * w->cols,
                       x + (size_t)t * w->cols, nr, w->cols);
}

/* ------------------------------------------------------------------------------------------ */
/* Tiles. A tile computes y[t * rows + r] for R rows x T tokens (R <= TILE_R, T <= TILE_T,
 * compile-time constants at every call so the loops unroll and the accumulators live in
 * registers). w points at the tile's first row, x at its first token, y at its first output.
 * Both w and x have a stride of cols; y has a stride of rows. */

#if defined(USE_AVX512)

#define TILE_R 4
#define TILE_T 4

/* 16 columns per step. */
static ALWAYS_INLINE void f32_step(__m512 acc[TILE_R][TILE_T], const float *w, const float *x,
                                   int j, __mmask16 m, int R, int T, int cols) {
    __m512 wv[TILE_R];
    for (int r = 0; r < R; r++) wv[r] = _mm512_maskz_loadu_ps(m, w + (size_t)r * cols + j);
    for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * cols + j);
        for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
}

static ALWAYS_INLINE void tile_f32(float *y, const float *w, const float *x, int R, int T,
                                   int rows, int cols) {
    __m512 acc[TILE_R][TILE_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= cols; j += 16) f32_step(acc, w, x, j, 0xFFFF, R, T, cols);
    if (j < cols) f32_step(acc, w, x, j, mask16(cols - j), R, T, cols);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)t * rows + r] = _mm512_reduce_add_ps(acc[r][t]);
}

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

#elif defined(USE_AVX2)

#define TILE_R AVX2_TILE_R
#define TILE_T AVX2_TILE_T

static ALWAYS_INLINE void tile_f32(float *y, const float *w, const float *x, int R, int T,
                                   int rows, int cols) {
    tile_float_avx2(y, w, 0, x, R, T, rows, cols);
}

#endif

#if defined(USE_AVX512) || defined(USE_AVX2)

/* The tiles covering rows r0 .. r0 + nr - 1 (nr <= TILE_R) for all n tokens. Tiles of the full
 * size first; leftover tokens go one at a time, leftover rows one at a time. A single token
 * (decoding) goes one row at a time: one core streams weights from memory at about 23 GB/s
 * through one row, but only 10-15 GB/s through four interleaved rows (measured here on 32000 x
 * 768 floats), and with one token there is nothing for the tile to share anyway. */
static void f32_rows(float *y, const float *w, const float *x, int n, int rows, int cols,
                     int r0, int nr) {
    const float *wr = w + (size_t)r0 * cols;
    int t = 0;
    if (nr == TILE_R && n > 1) {
        for (; t + TILE_T <= n; t += TILE_T)
            tile_f32(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, TILE_T, rows,
                     cols);
        for (; t < n; t++)
            tile_f32(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, 1, rows, cols);
    } else {
        for (; t < n; t++)
            for (int r = 0; r < nr; r++)
                tile_f32(y + (size_t)t * rows + r0 + r, wr + (size_t)r * cols,
                         x + (size_t)t * cols, 1, 1, rows, cols);
    }
}

/* Attention scores: rows are cached keys, a few dozen floats each, so the horizontal sum of
 * each row's accumulator costs as much as its multiply-adds. Four rows share it (AVX-512). */
void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    int r0 = 0;
#if defined(USE_AVX512)
    for (; r0 + 4 <= rows; r0 += 4) {
        __m512 acc[4][TILE_T];
        for (int r = 0; r < 4; r++) acc[r][0] = _mm512_setzero_ps();
        const float *wr = w + (size_t)r0 * cols;
        int j = 0;
        for (; j + 16 <= cols; j += 16) f32_step(acc, wr, x, j, 0xFFFF, 4, 1, cols);
        if (j < cols) f32_step(acc, wr, x, j, mask16(cols - j), 4, 1, cols);
        _mm_storeu_ps(y + r0, reduce_add4(acc[0][0], acc[1][0], acc[2][0], acc[3][0]));
    }
#endif
    for (; r0 < rows; r0 += TILE_R)
        f32_rows(y, w, x, 1, rows, cols, r0, min_int(TILE_R, rows - r0));
}

static void product(float *y, const Tensor *w, const float *x, const int8_t *xq,
                    const float *xq_scale, int n, int r0, int nr) {
    f32_rows(y, w->data, x, n, w->rows, w->cols, r0, nr);
}

#else /* plain C: the reference, a row at a time */

#define TILE_R 1

void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    matvec_f32_ref(y, w, x, rows, cols);
}

static void product(float *y, const Tensor *w, const float *x, const int8_t *xq,
                    const float *xq_scale, int n, int r0, int nr) {
    product_ref(y, w, x, xq, xq_scale, n, r0, nr);
}

#endif

/* ------------------------------------------------------------------------------------------ */
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

static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *w, void *mem) {}
static int unit_rows(const Tensor *w) { return TILE_R; }

const WeightType weight_f32 = {
    .name = "f32", .file_bytes = file_bytes, .bind = bind,
    .dequantize_row = dequantize_row, .packed_size = packed_size, .pack = pack,
    .unit_rows = unit_rows, .product = product, .product_ref = product_ref,
#if defined(USE_AVX512)
    .isa = "avx512",
#elif defined(USE_AVX2)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
