/*
 * matmul_bf16.c - bfloat16 weights: the top half of each float32 (rounded to nearest even by
 * export.py), two bytes a weight. A bf16 is widened to a float exactly by a 16-bit shift.
 *
 * The definition is what AVX-512's bf16 dot product, vdpbf16ps, computes, so that machines
 * with it run at its speed (1.8-1.9 times the float32 FMA rate per core, BENCHMARKS.md) and
 * every other path gives its numbers bit for bit (product_ref states it in plain C):
 *
 * - The activations are rounded to bf16 first (bf16_round): to nearest, ties to even, on the
 *   float32 bits; zeros and denormals become a zero of their sign, infinities stay, a NaN stays
 *   a NaN (quieted). That is vcvtne2ps2bf16 (tests/test_kernels.c checks it against the
 *   instruction).
 * - Columns go in pairs (2i, 2i + 1); an odd last column is paired with a zero weight and a
 *   zero activation. Per pair, the odd column first:
 *       acc = ftz(fmaf(w[2i + 1], x[2i + 1], acc));  acc = ftz(fmaf(w[2i], x[2i], acc))
 *   each product exact and added with one rounding (to nearest even), denormal weights read
 *   as zero and a denormal sum flushed to a zero of its sign (ftz), from acc = +0.
 *   (Measured on this machine's vdpbf16ps, 4 million random pairs with tiny and denormal
 *   values among them: this gives its bits every time; rounding the product to float first,
 *   a multiply then an add, differed in 9605 of them.)
 *
 * Rounding the activations to 8 bits of mantissa costs accuracy per dot product (about a
 * thousand times the error of widening to float32, as the engine did before) but not in
 * perplexity: stories260K's moves by 0.01% (BENCHMARKS.md).
 *
 * The fast product follows matmul_f32.c's plan: at load time pack lays the matrix out in
 * superblocks of 32 rows, pair of columns after pair, each 32-bit lane one row's two weights
 * (low half the even column), which is the operand vdpbf16ps takes. Prepared input: the
 * rounded activations as 32-bit pairs, laid out pair by pair per group of tokens
 * (xp[i * tn + t]). Without vdpbf16ps (AVX2, AVX-512 without BF16) the same layout runs the
 * definition with FMAs, two per pair, and a flush after each; plain C does it through doubles.
 */
#include <math.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"

#define BF16_SB 32 /* rows per superblock */

/* The float a bf16 value stands for: its 16 bits are the top half of a float32. */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

/* f with a denormal (or zero) replaced by a zero of its sign. */
static inline float ftz(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7F800000u) == 0) v.u &= 0x80000000u;
    return v.f;
}

/* f rounded to bf16 as the activations are (see the top). */
static inline uint16_t bf16_round(float f) {
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7F800000u) == 0) return (uint16_t)((v.u >> 16) & 0x8000u); /* zero, denormal */
    if ((v.u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((v.u >> 16) | 0x40u); /* NaN */
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------------------------------ */
/* The reference */

static void product_ref(float *y, const Tensor *w, const float *x, const void *in, int n,
                        int r0, int nr) {
    int cols = w->cols;
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++) {
            const uint16_t *row = (const uint16_t *)w->data + (size_t)r * cols;
            const float *xt = x + (size_t)t * cols;
            float acc = 0.0f;
            for (int j = 0; j < cols; j += 2) {
                float w0 = ftz(bf16_to_f32(row[j])), x0 = bf16_to_f32(bf16_round(xt[j]));
                float w1 = 0.0f, x1 = 0.0f;
                if (j + 1 < cols)
                    w1 = ftz(bf16_to_f32(row[j + 1])), x1 = bf16_to_f32(bf16_round(xt[j + 1]));
                acc = ftz(fmaf(w1, x1, acc));
                acc = ftz(fmaf(w0, x0, acc));
            }
            y[(size_t)t * w->rows + r] = acc;
        }
}

/* ------------------------------------------------------------------------------------------ */
/* The prepared input: x rounded to bf16, in pairs */

static int pairs_of(const Tensor *w) { return (w->cols + 1) / 2; }

static size_t input_stride(const Tensor *w, int n) {
    return round64((size_t)pairs_of(w) * sizeof(uint32_t));
}

/* dst (ceil(cols / 2)) = x (cols) rounded to bf16 pairs, the even column in the low half. */
static void round_pairs(uint32_t *dst, const float *x, int cols) {
    int j = 0;
#if defined(USE_AVX512_BF16)
    for (; j + 32 <= cols; j += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + j + 16), _mm512_loadu_ps(x + j));
        _mm512_storeu_si512(dst + j / 2, (__m512i)h);
    }
#endif
    for (; j < cols; j += 2)
        dst[j / 2] = bf16_round(x[j]) | (j + 1 < cols ? (uint32_t)bf16_round(x[j + 1]) << 16 : 0);
}

static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, pairs = pairs_of(w), tn = min_int(MATMUL_TOKENS, n - t0);
    uint32_t *xp = (uint32_t *)((char *)in + (size_t)t0 * input_stride(w, n));
    if (tn == 1) {
        round_pairs(xp, x + (size_t)t0 * cols, cols);
        return;
    }
    for (int t = 0; t < tn; t++) /* rounded 64 pairs at a time, then spread out */
        for (int i0 = 0; i0 < pairs; i0 += 64) {
            uint32_t part[64];
            int k = min_int(64, pairs - i0);
            round_pairs(part, x + (size_t)(t0 + t) * cols + 2 * i0, min_int(128, cols - 2 * i0));
            for (int i = 0; i < k; i++) xp[(size_t)(i0 + i) * tn + t] = part[i];
        }
}

/* ------------------------------------------------------------------------------------------ */
/* The packed layout */

#if defined(USE_AVX512) || defined(USE_AVX2)

static size_t packed_size(const Tensor *w) {
    return (size_t)(w->rows + BF16_SB - 1) / BF16_SB * BF16_SB * pairs_of(w) * sizeof(uint32_t);
}

/* A weight as vdpbf16ps reads it: a denormal is a zero of its sign. */
static inline uint32_t weight_bits(const uint16_t *row, int j, int cols) {
    if (j >= cols) return 0;
    uint16_t h = row[j];
    return (h & 0x7F80u) == 0 ? h & 0x8000u : h;
}

/* Superblock b: its BF16_SB rows' column pairs interleaved, a padding row as zero weights. */
static void pack_block(const Tensor *t, void *mem, int b) {
    int rows = t->rows, cols = t->cols, pairs = pairs_of(t);
    uint32_t *out = (uint32_t *)mem + (size_t)b * pairs * BF16_SB;
    for (int i = 0; i < BF16_SB; i++) {
        int r = b * BF16_SB + i;
        if (r >= rows) {
            for (int p = 0; p < pairs; p++) out[(size_t)p * BF16_SB + i] = 0;
            continue;
        }
        const uint16_t *row = (const uint16_t *)t->data + (size_t)r * cols;
        for (int p = 0; p < pairs; p++)
            out[(size_t)p * BF16_SB + i] =
                weight_bits(row, 2 * p, cols) | weight_bits(row, 2 * p + 1, cols) << 16;
    }
}

static void pack(Tensor *t, void *mem) {
    pack_blocks(t, mem, (t->rows + BF16_SB - 1) / BF16_SB, pack_block);
    t->packed = mem;
}

#define SB_VECS (BF16_SB / VEC_LANES) /* vectors per column pair of a superblock */

/* One step of the definition for a vector of rows: the pairs wv (32-bit lanes) times the
 * token's pair xb, odd column first. */
#if defined(USE_AVX512_BF16)
#define TILE_T 8
static ALWAYS_INLINE VecF pair_step(VecF acc, __m512i wv, uint32_t xb) {
    return _mm512_dpbf16_ps(acc, (__m512bh)wv, (__m512bh)_mm512_set1_epi32((int)xb));
}
typedef __m512i VecPairs;
static ALWAYS_INLINE VecPairs load_pairs(const uint32_t *p) { return _mm512_load_si512(p); }
#elif defined(USE_AVX512)
#define TILE_T 4
typedef __m512i VecPairs;
static ALWAYS_INLINE VecPairs load_pairs(const uint32_t *p) { return _mm512_load_si512(p); }
/* ftz for 16 lanes: those below the smallest normal in magnitude keep only their sign */
static ALWAYS_INLINE VecF ftz_vec(VecF v) {
    __m512i u = _mm512_castps_si512(v);
    __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(1.17549435e-38f),
                                        _CMP_LT_OQ);
    __m512i sign = _mm512_set1_epi32((int)0x80000000);
    return _mm512_castsi512_ps(_mm512_mask_and_epi32(u, tiny, u, sign));
}
static ALWAYS_INLINE VecF pair_step(VecF acc, VecPairs wv, uint32_t xb) {
    union { uint32_t u; float f; } hi = {xb & 0xFFFF0000u}, lo = {xb << 16};
    VecF w1 = _mm512_castsi512_ps(_mm512_and_si512(wv, _mm512_set1_epi32((int)0xFFFF0000)));
    VecF w0 = _mm512_castsi512_ps(_mm512_slli_epi32(wv, 16));
    acc = ftz_vec(_mm512_fmadd_ps(w1, _mm512_set1_ps(hi.f), acc));
    return ftz_vec(_mm512_fmadd_ps(w0, _mm512_set1_ps(lo.f), acc));
}
#else /* AVX2 */
#define TILE_T 2
typedef __m256i VecPairs;
static ALWAYS_INLINE VecPairs load_pairs(const uint32_t *p) {
    return _mm256_load_si256((const __m256i *)p);
}
/* ftz for 8 lanes: a lane keeps its sign only when its magnitude is below the smallest
 * normal (NaN compares unordered and stays) */
static ALWAYS_INLINE VecF ftz_vec(VecF v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 keep = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(1.17549435e-38f),
                                _CMP_NLT_UQ);
    return _mm256_and_ps(v, _mm256_or_ps(keep, sign));
}
static ALWAYS_INLINE VecF pair_step(VecF acc, VecPairs wv, uint32_t xb) {
    union { uint32_t u; float f; } hi = {xb & 0xFFFF0000u}, lo = {xb << 16};
    VecF w1 = _mm256_castsi256_ps(_mm256_and_si256(wv, _mm256_set1_epi32((int)0xFFFF0000)));
    VecF w0 = _mm256_castsi256_ps(_mm256_slli_epi32(wv, 16));
    acc = ftz_vec(_mm256_fmadd_ps(w1, _mm256_set1_ps(hi.f), acc));
    return ftz_vec(_mm256_fmadd_ps(w0, _mm256_set1_ps(lo.f), acc));
}
#endif

/* The tile: one superblock (wb, its first row at y) by T tokens whose pairs are xp[i * xs + t];
 * outputs for `left` rows. As matmul_f32.c's tile. */
static ALWAYS_INLINE void tile(float *y, const uint32_t *wb, const uint32_t *xp, int xs, int T,
                               int pairs, int rows, int left) {
    VecF acc[SB_VECS][TILE_T];
    for (int q = 0; q < SB_VECS; q++)
        for (int t = 0; t < T; t++) acc[q][t] = vec_zero();
    for (int i = 0; i < pairs; i++, xp += xs, wb += BF16_SB) {
        VecPairs wv[SB_VECS];
        for (int q = 0; q < SB_VECS; q++) wv[q] = load_pairs(wb + q * VEC_LANES);
        for (int t = 0; t < T; t++)
            for (int q = 0; q < SB_VECS; q++) acc[q][t] = pair_step(acc[q][t], wv[q], xp[t]);
    }
    for (int t = 0; t < T; t++)
        for (int q = 0; q < SB_VECS; q++)
            vec_store_first(y + (size_t)t * rows + q * VEC_LANES, acc[q][t], left - q * VEC_LANES);
}

/* Superblocks b0 .. b1 - 1 for the tn tokens of one group, in tiles of up to TILE_T. */
static void superblocks(float *y, const uint32_t *packed, const uint32_t *xp, int tn, int rows,
                        int pairs, int b0, int b1) {
    for (int b = b0; b < b1; b++) {
        const uint32_t *wb = packed + (size_t)b * pairs * BF16_SB;
        int left = rows - b * BF16_SB;
        for (int t = 0; t < tn; t += TILE_T) {
            float *yt = y + (size_t)t * rows + b * BF16_SB;
            /* a case per count, so T is a constant in the tile (why: see matmul_f32.c's tile) */
            switch (min_int(TILE_T, tn - t)) {
#if TILE_T >= 8
            case 8: tile(yt, wb, xp + t, tn, 8, pairs, rows, left); break;
            case 7: tile(yt, wb, xp + t, tn, 7, pairs, rows, left); break;
            case 6: tile(yt, wb, xp + t, tn, 6, pairs, rows, left); break;
            case 5: tile(yt, wb, xp + t, tn, 5, pairs, rows, left); break;
#endif
#if TILE_T >= 4
            case 4: tile(yt, wb, xp + t, tn, 4, pairs, rows, left); break;
            case 3: tile(yt, wb, xp + t, tn, 3, pairs, rows, left); break;
#endif
            case 2: tile(yt, wb, xp + t, tn, 2, pairs, rows, left); break;
            default: tile(yt, wb, xp + t, tn, 1, pairs, rows, left); break;
            }
        }
    }
}

static int unit_rows(const Tensor *w) { return w->packed ? BF16_SB : 1; }

#else /* plain C: the stored layout */

static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *t, void *mem) {}
static int unit_rows(const Tensor *w) { return 1; }

#endif

/* ------------------------------------------------------------------------------------------ */
/* The fast product */

/* The definition row by row on the stored layout and the prepared pairs, each fmaf taken
 * through a double: the product of two bf16 values (8 significant bits each) is exact in a
 * double, and so is its sum with a float (at most 53 significant bits between them, or else
 * the float alone decides the rounding), so one rounding to float gives fmaf's result. */
static void rows_plain(float *y, const Tensor *w, const uint32_t *xp, int n, int r0, int nr) {
    int cols = w->cols, pairs = pairs_of(w);
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++) {
            const uint16_t *row = (const uint16_t *)w->data + (size_t)r * cols;
            float acc = 0.0f;
            for (int i = 0; i < pairs; i++) {
                uint32_t xb = xp[(size_t)i * n + t];
                float w0 = ftz(bf16_to_f32(row[2 * i])), x0 = bf16_to_f32((uint16_t)xb);
                float w1 = 2 * i + 1 < cols ? ftz(bf16_to_f32(row[2 * i + 1])) : 0.0f;
                float x1 = bf16_to_f32((uint16_t)(xb >> 16));
                acc = ftz((float)((double)w1 * x1 + acc));
                acc = ftz((float)((double)w0 * x0 + acc));
            }
            y[(size_t)t * w->rows + r] = acc;
        }
}

/* Rows r0 .. r0 + nr - 1 (whole superblocks but for the matrix's last) for n tokens. */
static void product(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr) {
    size_t stride = input_stride(w, n) / sizeof(uint32_t);
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS) {
        int tn = min_int(MATMUL_TOKENS, n - t0);
        const uint32_t *xp = (const uint32_t *)in + t0 * stride;
        float *yt = y + (size_t)t0 * w->rows;
#if defined(USE_AVX512) || defined(USE_AVX2)
        if (w->packed) {
            superblocks(yt, w->packed, xp, tn, w->rows, pairs_of(w), r0 / BF16_SB,
                        (r0 + nr + BF16_SB - 1) / BF16_SB);
            continue;
        }
#endif
        rows_plain(yt, w, xp, tn, r0, nr);
    }
}

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

const WeightType weight_bf16 = {
    .name = "bf16", .file_bytes = file_bytes, .bind = bind,
    .dequantize_row = dequantize_row, .input_stride = input_stride, .prepare = prepare,
    .packed_size = packed_size, .pack = pack, .unit_rows = unit_rows,
    .unit_tokens = MATMUL_TOKENS, .product = product,
    .product_ref = product_ref,
#if defined(USE_AVX512_BF16)
    .isa = "avx512bf16",
#elif defined(USE_AVX512)
    .isa = "avx512",
#elif defined(USE_AVX2)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
