/*
 * matmul_bf16.c - bfloat16 weights: the top half of each float32 (rounded to nearest even by
 * export.py), two bytes a weight. A bf16 is widened to a float exactly by a 16-bit shift.
 *
 * The fast product follows matmul_f32.c's plan of tiles, widening each weight vector once for
 * the TILE_T tokens of a tile. Why not vdpbf16ps, AVX-512's bf16 dot product: it rounds the
 * activations to bf16 as well (8 bits of mantissa: 1000 times the error in `test_kernels
 * --bench`) and is no faster where it matters: streaming a matrix from memory, as decoding
 * does, one core widened at 24-27 GB/s against vdpbf16ps's 19 GB/s; only a matrix already in
 * L3 went 25% faster with it (BENCHMARKS.md has the numbers).
 */
#include "matmul.h"
#include "simd.h"

/* The float a bf16 value stands for: its 16 bits are the top half of a float32. */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

/* ------------------------------------------------------------------------------------------ */
/* The reference: one row, one output, summed left to right. */

static void matvec_bf16_ref(float *y, const uint16_t *w, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const uint16_t *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += bf16_to_f32(row[j]) * x[j];
        y[i] = sum;
    }
}

static void product_ref(float *y, const Tensor *w, const float *x, const int8_t *xq,
                        const float *xq_scale, int n, int r0, int nr) {
    for (int t = 0; t < n; t++)
        matvec_bf16_ref(y + (size_t)t * w->rows + r0,
                        (const uint16_t *)w->data + (size_t)r0 * w->cols, x + (size_t)t * w->cols,
                        nr, w->cols);
}

/* ------------------------------------------------------------------------------------------ */
/* Tiles: see matmul_f32.c. */

#if defined(USE_AVX512)

#define TILE_R 4
#define TILE_T 3 /* two sums per (row, token): see tile_bf16 */

/* 16 columns per step, the weights widened to f32 exactly. */
static ALWAYS_INLINE void bf16_step(__m512 acc[TILE_R][TILE_T], const uint16_t *w,
                                    const float *x, int j, __mmask16 m, int R, int T, int cols) {
    __m512 wv[TILE_R];
    for (int r = 0; r < R; r++) {
        __m256i h = _mm256_maskz_loadu_epi16(m, w + (size_t)r * cols + j);
        wv[r] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * cols + j);
        for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
}

/* Two sums per (row, token), for the even and the odd steps of 16: decoding runs one row at
 * a time (see f32_rows), and a single chain of dependent FMAs left one core reading bf16 at
 * 17 GB/s; with two, 110M bf16 decodes 13-20% faster on one thread. Prompt chunks keep the
 * same sums, so that they stay bit-identical to decoding, which costs them 7% (fewer tokens
 * per tile fit the registers). bf16_step and tile_bf16 repeat matmul_f32.c's f32_step and
 * tile_f32 on purpose: one shared tile with the weight type as a compile-time flag gave the
 * same logits bit for bit but decoded bf16 10% slower (15M shape, one thread, interleaved
 * runs), so the two stay apart. */
static ALWAYS_INLINE void tile_bf16(float *y, const uint16_t *w, const float *x, int R, int T,
                                    int rows, int cols) {
    __m512 even[TILE_R][TILE_T], odd[TILE_R][TILE_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) even[r][t] = odd[r][t] = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= cols; j += 32) {
        bf16_step(even, w, x, j, 0xFFFF, R, T, cols);
        bf16_step(odd, w, x, j + 16, 0xFFFF, R, T, cols);
    }
    for (; j + 16 <= cols; j += 16) bf16_step(even, w, x, j, 0xFFFF, R, T, cols);
    if (j < cols) bf16_step(odd, w, x, j, mask16(cols - j), R, T, cols);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(size_t)t * rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(even[r][t], odd[r][t]));
}

#elif defined(USE_AVX2)

#define TILE_R AVX2_TILE_R
#define TILE_T AVX2_TILE_T

static ALWAYS_INLINE void tile_bf16(float *y, const uint16_t *w, const float *x, int R, int T,
                                    int rows, int cols) {
    tile_float_avx2(y, w, 1, x, R, T, rows, cols);
}

#endif

#if defined(USE_AVX512) || defined(USE_AVX2)

/* The tiles covering rows r0 .. r0 + nr - 1 (nr <= TILE_R) for all n tokens, as f32_rows. */
static void bf16_rows(float *y, const uint16_t *w, const float *x, int n, int rows, int cols,
                      int r0, int nr) {
    const uint16_t *wr = w + (size_t)r0 * cols;
    int t = 0;
    if (nr == TILE_R && n > 1) {
        for (; t + TILE_T <= n; t += TILE_T)
            tile_bf16(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, TILE_T, rows,
                      cols);
        for (; t < n; t++)
            tile_bf16(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, 1, rows, cols);
    } else {
        for (; t < n; t++)
            for (int r = 0; r < nr; r++)
                tile_bf16(y + (size_t)t * rows + r0 + r, wr + (size_t)r * cols,
                          x + (size_t)t * cols, 1, 1, rows, cols);
    }
}

static void product(float *y, const Tensor *w, const float *x, const int8_t *xq,
                    const float *xq_scale, int n, int r0, int nr) {
    bf16_rows(y, w->data, x, n, w->rows, w->cols, r0, nr);
}

#else

#define TILE_R 1
static void product(float *y, const Tensor *w, const float *x, const int8_t *xq,
                    const float *xq_scale, int n, int r0, int nr) {
    product_ref(y, w, x, xq, xq_scale, n, r0, nr);
}

#endif

/* ------------------------------------------------------------------------------------------ */
/* The table row */

static size_t file_bytes(size_t rows, size_t cols, int group_size) {
    return group_size == 0 ? rows * cols * sizeof(uint16_t) : 0;
}

static void bind(Tensor *t, const void *base) { t->data = base; }

static void dequantize_row(float *out, const Tensor *w, int row) {
    const uint16_t *src = (const uint16_t *)w->data + (size_t)row * w->cols;
    for (int j = 0; j < w->cols; j++) out[j] = bf16_to_f32(src[j]);
}

static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *w, void *mem) {}
static int unit_rows(const Tensor *w) { return TILE_R; }

const WeightType weight_bf16 = {
    .name = "bf16", .file_bytes = file_bytes, .bind = bind,
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
