/*
 * simd.h - which instruction set this build's fast paths use, and the small vector helpers
 * the kernel files share. Internal to the kernels: nothing outside them includes it.
 *
 * Fast paths are chosen at build time from the compiler's predefined macros (-march=native
 * defines them for the machine it runs on): AVX-512 (F, BW, VL; VNNI for int8), else AVX2
 * with FMA, else the plain C reference. `make portable` builds the plain one.
 */
#ifndef SIMD_H
#define SIMD_H

#include <stddef.h>
#include <stdint.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define USE_AVX512 1
#if defined(__AVX512VNNI__)
#define USE_VNNI 1
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#define USE_AVX2 1
#endif
/* int8 weights as stored in the file take the AVX2 route (also on AVX-512 machines); with
 * VNNI they are first rearranged at load for a faster kernel. */
#if defined(__AVX2__) && defined(__FMA__)
#define USE_AVX2_Q8 1
#endif

/* Below this many multiply-adds a matmul runs on one thread: waking the others costs a few
 * microseconds, more than the work saved (measured on stories260K and the 15M shape). */
#define PARALLEL_MIN_WORK (1 << 17)

#define ALWAYS_INLINE inline __attribute__((always_inline))

static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline size_t round64(size_t n) { return (n + 63) / 64 * 64; }

#if defined(USE_AVX512)
/* A mask selecting the first n (< 16) lanes, for the short last step of a row. */
static ALWAYS_INLINE __mmask16 mask16(int n) {
    return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
}

/* e^x for 16 floats, within about 1 ulp of expf (test_kernels checks 2 ulp): e^x = 2^k e^r
 * with k = round(x / ln 2) and |r| <= ln(2) / 2, e^r by its Taylor series to r^7 (the next
 * term is below 1e-8 relative), 2^k applied by vscalefps, which also overflows to inf and
 * underflows to 0 as expf does. NaN gives NaN. Worth it: expf one value at a time was 8% of
 * a 110M prompt (the SwiGLU gate calls it for every hidden unit) and 5% of a 15M decode. */
static ALWAYS_INLINE __m512 exp16(__m512 x) {
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), xc); /* ln 2 in two parts */
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 e = _mm512_scalef_ps(p, k);
    return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x); /* NaN stays */
}
#endif

#if defined(__AVX2__)
/* The sum of the 8 floats of v. */
static ALWAYS_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#if defined(USE_AVX2)
#include <string.h>

#define AVX2_TILE_R 4
#define AVX2_TILE_T 2

/* The first n (< 8) floats at p, the rest zero: the short last step of a row. */
static ALWAYS_INLINE __m256 load_f32_part(const float *p, int n) {
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
    return _mm256_maskload_ps(p, keep);
}

/* n bf16 (n <= 8) at p, the rest zero, widened to f32 (matmul_bf16.c says why). */
static ALWAYS_INLINE __m256 load_bf16(const uint16_t *p, int n) {
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128((const __m128i *)p);
    } else {
        uint16_t buf[8] = {0};
        memcpy(buf, p, n * sizeof *p);
        h = _mm_loadu_si128((const __m128i *)buf);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The AVX2 tile of f32 and bf16 weights (matmul_f32.c says how tiles work): the two differ
 * only in how a weight vector is loaded; bf16 is a compile-time constant at every call, so
 * each type gets its own copy of the loop. */
static ALWAYS_INLINE void tile_float_avx2(float *y, const void *w, int bf16, const float *x,
                                          int R, int T, int rows, int cols) {
    __m256 acc[AVX2_TILE_R][AVX2_TILE_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int j = 0; j < cols; j += 8) {
        int n = cols - j;
        __m256 wv[AVX2_TILE_R];
        for (int r = 0; r < R; r++) {
            size_t at = (size_t)r * cols + j;
            if (bf16) wv[r] = load_bf16((const uint16_t *)w + at, n);
            else wv[r] = n >= 8 ? _mm256_loadu_ps((const float *)w + at)
                                : load_f32_part((const float *)w + at, n);
        }
        for (int t = 0; t < T; t++) {
            __m256 xv = n >= 8 ? _mm256_loadu_ps(x + (size_t)t * cols + j)
                               : load_f32_part(x + (size_t)t * cols + j, n);
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)t * rows + r] = hsum256(acc[r][t]);
}

#endif

#endif
