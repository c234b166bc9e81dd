/*
 * simd.h - which instruction set this build's fast paths use, and the small vector helpers
 * the kernel files share. Internal to the kernels: nothing outside them includes it.
 *
 * Fast paths are chosen at build time from the compiler's predefined macros (-march=native
 * defines them for the machine it runs on): AVX-512 (F, BW, VL; VNNI for int8, BF16 for
 * bf16), else AVX2 with FMA, else plain C. `make portable` builds the plain one.
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
#if defined(__AVX512BF16__)
#define USE_AVX512_BF16 1
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

/* The prepared input of the int8 types (Q8_0 and Q4_0): per group of MATMUL_TOKENS tokens (tn
 * in the last), their int8 values (tn, width), then from the next multiple of 64 bytes their
 * scales (tn, groups), then from the next multiple of 64 group_sums of their values (tn,
 * groups). A token takes int8_input_stride(width, groups) bytes; int8_input gives the parts
 * of tokens t0 .. t0 + tn - 1 (t0 a multiple of MATMUL_TOKENS) of the input at `in`. */
typedef struct {
    const int8_t *q;      /* (tn, width) */
    const float *scale;   /* (tn, groups) */
    const int32_t *bias;  /* (tn, groups) */
} Int8Input;

static inline size_t int8_input_stride(size_t width, size_t groups) {
    return round64(width) + 2 * round64(groups * sizeof(float));
}

static inline Int8Input int8_input(const void *in, size_t width, size_t groups, int t0, int tn) {
    const char *base = (const char *)in + (size_t)t0 * int8_input_stride(width, groups);
    Int8Input x = {(const int8_t *)base, NULL, NULL};
    x.scale = (const float *)(base + round64((size_t)tn * width));
    x.bias = (const int32_t *)((const char *)x.scale +
                               round64((size_t)tn * groups * sizeof(float)));
    return x;
}

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

/* The sum of the 8 int32 of v. */
static ALWAYS_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}
#endif

/* Vectors of floats for the kernels written once for both instruction sets (matmul_f32.c,
 * matmul_bf16.c): VEC_LANES floats, loads from 64-byte aligned memory. */
#if defined(USE_AVX512)
typedef __m512 VecF;
#define VEC_LANES 16
static ALWAYS_INLINE VecF vec_zero(void) { return _mm512_setzero_ps(); }
static ALWAYS_INLINE VecF vec_load(const float *p) { return _mm512_load_ps(p); }
static ALWAYS_INLINE VecF vec_set1(float f) { return _mm512_set1_ps(f); }
static ALWAYS_INLINE VecF vec_fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
/* The first n lanes of v (all if n >= VEC_LANES, none if n <= 0) into p. */
static ALWAYS_INLINE void vec_store_first(float *p, VecF v, int n) {
    if (n > 0) _mm512_mask_storeu_ps(p, mask16(n), v);
}
#elif defined(USE_AVX2)
typedef __m256 VecF;
#define VEC_LANES 8
static ALWAYS_INLINE VecF vec_zero(void) { return _mm256_setzero_ps(); }
static ALWAYS_INLINE VecF vec_load(const float *p) { return _mm256_load_ps(p); }
static ALWAYS_INLINE VecF vec_set1(float f) { return _mm256_set1_ps(f); }
static ALWAYS_INLINE VecF vec_fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
static ALWAYS_INLINE void vec_store_first(float *p, VecF v, int n) {
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
    } else if (n > 0) {
        __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        _mm256_maskstore_ps(p, keep, v);
    }
}
#endif

#endif
