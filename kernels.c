/*
 * kernels.c - matrix products, RMSNorm, softmax and the SwiGLU gate.
 *
 * Nearly all the time of a forward pass is spent in matmul: every weight is read once per
 * token while decoding, once per chunk of tokens while reading the prompt. The plain C
 * versions below are the definition; the fast paths must give the same numbers up to float
 * rounding, and tests/test_kernels.c checks that they do on awkward sizes.
 *
 * Fast paths are chosen at build time from the compiler's predefined macros (-march=native
 * defines them for the machine it runs on): AVX-512 (F, BW, VL; VNNI for int8), else AVX2
 * with FMA, else the plain C reference. `make portable` builds the plain one.
 *
 * How the fast matmul works (the same plan for every weight type): the output is cut into
 * tiles of TILE_R weight rows x TILE_T tokens. A tile keeps one vector accumulator per
 * (row, token) in registers; each step loads one vector of each of its rows and each of its
 * tokens and does TILE_R x TILE_T multiply-adds. So a weight vector loaded from memory serves
 * TILE_T tokens, and an activation vector TILE_R rows: while decoding (one token) the tile is
 * TILE_R x 1 and the speed is set by memory bandwidth; for a prompt chunk the weights are
 * streamed once per chunk instead of once per token, and the speed is set by the arithmetic.
 * Every (row, token) accumulator sees the same sequence of operations whatever the tile
 * shape, so a prompt chunk gives bit for bit the numbers that token-by-token decoding gives.
 * Q8_0 with VNNI departs from this plan: its weights are rearranged at load time so that each
 * vector lane holds one row, and no horizontal sums are needed ("Q8_0 with VNNI", below).
 */
#include <math.h>
#include <string.h>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define USE_AVX512 1
#if defined(__AVX512VNNI__)
#define USE_VNNI 1
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#define USE_AVX2 1
#endif
/* int8 weights as stored in the file take the AVX2 route (also on AVX-512 machines); with
 * VNNI they are first rearranged by q8_pack for a faster kernel. */
#if defined(__AVX2__) && defined(__FMA__)
#define USE_AVX2_Q8 1
#endif

/* Below this many multiply-adds a matmul runs on one thread: waking the others costs a few
 * microseconds, more than the work saved (measured on stories260K and the 15M shape). */
#define PARALLEL_MIN_WORK (1 << 17)

#define ALWAYS_INLINE inline __attribute__((always_inline))

static int min_int(int a, int b) { return a < b ? a : b; }

#if defined(USE_AVX512)
/* A mask selecting the first n (< 16) lanes, for the short last step of a row. */
static ALWAYS_INLINE __mmask16 mask16(int n) {
    return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
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

/* ------------------------------------------------------------------------------------------ */
/* Normalisation and softmax */

void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (scale * x[i]);
}

void softmax_ref(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

void swiglu_ref(float *out, const float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        g *= 1.0f / (1.0f + expf(-g)); /* silu(x) = x * sigmoid(x) */
        out[i] = g * up[i];
    }
}

#if defined(USE_AVX512)
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

void softmax(float *x, int n) {
#if defined(USE_AVX512)
    __m512 vmax = _mm512_set1_ps(x[0]);
    for (int i = 0; i < n; i += 16)
        vmax = _mm512_mask_max_ps(vmax, mask16(n - i), _mm512_maskz_loadu_ps(mask16(n - i), x + i),
                                  vmax);
    __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max));
        sum = _mm512_mask_add_ps(sum, m, sum, e);
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), total));
    }
#else
    softmax_ref(x, n);
#endif
}

void swiglu(float *out, const float *gate, const float *up, int n) {
#if defined(USE_AVX512)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = mask16(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 silu = _mm512_mul_ps(g, _mm512_div_ps(one, _mm512_add_ps(one, e)));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
    }
#else
    swiglu_ref(out, gate, up, n);
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Reference matvecs: one row, one output, summed left to right, on the calling thread
 * (matmul shares the rows out among the threads). */

void matvec_f32_ref(float *y, const float *w, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += row[j] * x[j];
        y[i] = sum;
    }
}

void matvec_bf16_ref(float *y, const uint16_t *w, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const uint16_t *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int j = 0; j < cols; j++) sum += bf16_to_f32(row[j]) * x[j];
        y[i] = sum;
    }
}

/* Q8_0 quantizes the activations too, so that the inner loop is an integer dot product: that
 * is what makes int8 fast on hardware with VNNI. Rounding is roundf's, half away from zero
 * (tests/reference.py mirrors it). The clamp only matters for NaN or infinite activations,
 * which it keeps defined. */
void quantize_q8_ref(int8_t *xq, float *xq_scale, const float *x, int n, int group_size) {
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int len = min_int(group_size, n - start);
        float amax = 0.0f;
        for (int j = 0; j < len; j++) amax = fmaxf(amax, fabsf(x[start + j]));
        float scale = amax / 127.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int j = 0; j < len; j++)
            xq[start + j] = (int8_t)roundf(fmaxf(fminf(x[start + j] * inv, 127.0f), -127.0f));
        xq_scale[g] = scale;
    }
}

/* The same numbers, bit for bit, 16 or 8 at a time. Worth it: compiled plainly, roundf, fmaxf
 * and fminf are library calls, and quantizing took a quarter of a 15M model's decode time.
 * roundf is rebuilt exactly: truncate, then step away from zero if the dropped fraction (exact
 * in float) is at least one half. max/min return their second operand for NaN, which gives
 * fmaxf's and fminf's answers in the order used here. */
void quantize_q8(int8_t *xq, float *xq_scale, const float *x, int n, int group_size) {
#if defined(USE_AVX512)
    const __m512i sign = _mm512_set1_epi32((int)0x80000000), one = _mm512_set1_epi32(0x3F800000);
    const __m512 half = _mm512_set1_ps(0.5f);
    const __m512 hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int len = min_int(group_size, n - start);
        __m512 amax = _mm512_setzero_ps();
        for (int j = 0; j < len; j += 16) {
            __m512 v = _mm512_maskz_loadu_ps(mask16(len - j), x + start + j);
            amax = _mm512_max_ps(_mm512_abs_ps(v), amax);
        }
        float scale = _mm512_reduce_max_ps(amax) / 127.0f;
        __m512 inv = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
        for (int j = 0; j < len; j += 16) {
            __mmask16 m = mask16(len - j);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + start + j), inv);
            v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), half, _CMP_GE_OQ);
            __m512i away = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), sign), one);
            t = _mm512_mask_add_ps(t, up, t, _mm512_castsi512_ps(away)); /* t +- 1 */
            _mm512_mask_cvtepi32_storeu_epi8(xq + start + j, m, _mm512_cvttps_epi32(t));
        }
        xq_scale[g] = scale;
    }
#elif defined(USE_AVX2) || defined(USE_AVX2_Q8)
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int len = min_int(group_size, n - start), j = 0;
        __m256 amax = _mm256_setzero_ps();
        for (; j + 8 <= len; j += 8)
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + start + j)), amax);
        float m8[8];
        _mm256_storeu_ps(m8, amax);
        float scale = 0.0f;
        for (int k = 0; k < 8; k++) scale = fmaxf(scale, m8[k]);
        for (; j < len; j++) scale = fmaxf(scale, fabsf(x[start + j]));
        scale /= 127.0f;
        float inv_s = scale > 0.0f ? 1.0f / scale : 0.0f;
        __m256 inv = _mm256_set1_ps(inv_s);
        for (j = 0; j + 8 <= len; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + start + j), inv);
            v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
            __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                        _mm256_or_ps(_mm256_and_ps(sign, v), _mm256_set1_ps(1.0f)));
            __m256i q = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
            int32_t q8[8];
            _mm256_storeu_si256((__m256i *)q8, q);
            for (int k = 0; k < 8; k++) xq[start + j + k] = (int8_t)q8[k];
        }
        for (; j < len; j++)
            xq[start + j] = (int8_t)roundf(fmaxf(fminf(x[start + j] * inv_s, 127.0f), -127.0f));
        xq_scale[g] = scale;
    }
#else
    quantize_q8_ref(xq, xq_scale, x, n, group_size);
#endif
}

/* Each group contributes (integer dot product) x (weight scale x activation scale). */
void matvec_q8_ref(float *y, const int8_t *w, const float *w_scale, const int8_t *xq,
                   const float *xq_scale, int rows, int cols, int group_size) {
    int groups = (cols + group_size - 1) / group_size;
    for (int i = 0; i < rows; i++) {
        const int8_t *row = w + (size_t)i * cols;
        float sum = 0.0f;
        for (int g = 0; g < groups; g++) {
            int start = g * group_size, len = min_int(group_size, cols - start);
            int32_t dot = 0;
            for (int j = start; j < start + len; j++) dot += row[j] * xq[j];
            sum += (float)dot * (w_scale[(size_t)i * groups + g] * xq_scale[g]);
        }
        y[i] = sum;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Tiles. A tile computes y[t * rows + r] for R rows x T tokens (R <= TILE_R, T <= TILE_T,
 * compile-time constants at every call so the loops unroll and the accumulators live in
 * registers). w points at the tile's first row, x at its first token, y at its first output.
 * Both w and x have a stride of cols; y has a stride of rows. */

#if defined(USE_AVX512)

#define TILE_R 4
#define TILE_T 4
#define TILE_T_BF16 3 /* bf16 keeps two sums per (row, token): see tile_bf16 */


/* f32 weights: 16 columns per step. */
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

/* bf16 weights: widened to f32 exactly (a bf16 is the top half of a float, so a 16-bit shift
 * is the whole conversion) and multiplied with f32 activations. The alternative, vdpbf16ps,
 * rounds the activations to bf16 as well (8 bits of mantissa: 1000 times the error in
 * `test_kernels --bench`) and is no faster where it matters: streaming a matrix from memory,
 * as decoding does, one core widened at 24-27 GB/s against vdpbf16ps's 19 GB/s; only a matrix
 * already in L3 went 25% faster with it. In a prompt chunk the two widening instructions are
 * shared by TILE_T tokens. BENCHMARKS.md has the numbers.
 * bf16_step and tile_bf16 repeat f32_step and tile_f32 on purpose: one shared tile with the
 * weight type as a compile-time flag gave the same logits bit for bit but decoded bf16 10%
 * slower (15M shape, one thread, interleaved runs), so the two stay apart. */
static ALWAYS_INLINE void bf16_step(__m512 acc[TILE_R][TILE_T_BF16], const uint16_t *w,
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
 * per tile fit the registers). */
static ALWAYS_INLINE void tile_bf16(float *y, const uint16_t *w, const float *x, int R, int T,
                                    int rows, int cols) {
    __m512 even[TILE_R][TILE_T_BF16], odd[TILE_R][TILE_T_BF16];
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

#define TILE_R 4
#define TILE_T 2
#define TILE_T_BF16 TILE_T


/* The first n (< 8) floats at p, the rest zero: the short last step of a row. */
static ALWAYS_INLINE __m256 load_f32_part(const float *p, int n) {
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
    return _mm256_maskload_ps(p, keep);
}

/* n bf16 (n <= 8) at p, the rest zero, widened to f32 (see the AVX-512 version for why). */
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

/* The AVX2 tiles of f32 and bf16 weights differ only in how a weight vector is loaded; bf16
 * is a compile-time constant at every call, so each type gets its own copy of the loop. */
static ALWAYS_INLINE void tile_float(float *y, const void *w, int bf16, const float *x, int R,
                                     int T, int rows, int cols) {
    __m256 acc[TILE_R][TILE_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int j = 0; j < cols; j += 8) {
        int n = cols - j;
        __m256 wv[TILE_R];
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

static ALWAYS_INLINE void tile_f32(float *y, const float *w, const float *x, int R, int T,
                                   int rows, int cols) {
    tile_float(y, w, 0, x, R, T, rows, cols);
}

static ALWAYS_INLINE void tile_bf16(float *y, const uint16_t *w, const float *x, int R, int T,
                                    int rows, int cols) {
    tile_float(y, w, 1, x, R, T, rows, cols);
}

#endif

/* Q8_0 tiles for weights as stored: w (int8) with w_scale (one float per group of a row), x
 * quantized into xq with xq_scale (one per group of a token), `groups` groups per row. Each
 * step takes a whole number of groups or a part of one, so an integer dot product never
 * mixes two scales. */

#if defined(USE_AVX2_Q8)

#define TILE_R_Q8 2
#define TILE_T_Q8 2


/* 32 bytes at p, or the first n of them and zeros. */
static ALWAYS_INLINE __m256i load_i8(const int8_t *p, int n) {
    if (n >= 32) return _mm256_loadu_si256((const __m256i *)p);
    int8_t buf[32] = {0};
    memcpy(buf, p, n);
    return _mm256_loadu_si256((const __m256i *)buf);
}

/* vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16 with saturation.
 * |x| times w with the sign of x moved onto w gives x * w; both magnitudes are at most 127, so
 * a pair sums to at most 2 * 127 * 127 < 32767 and never saturates. (A weight of -128, which
 * export never writes, would come out wrong here.) */
static ALWAYS_INLINE void tile_q8(float *y, const int8_t *w, const float *w_scale,
                                  const int8_t *xq, const float *xq_scale, int R, int T,
                                  int rows, int cols, int group_size) {
    int groups = (cols + group_size - 1) / group_size;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE_R_Q8][TILE_T_Q8];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int j = 0; j < cols; j += 32) {
        int n = cols - j, g = group_size == 32 ? j >> 5 : j >> 6;
        __m256i wv[TILE_R_Q8];
        for (int r = 0; r < R; r++) wv[r] = load_i8(w + (size_t)r * cols + j, n);
        for (int t = 0; t < T; t++) {
            __m256i xv = load_i8(xq + (size_t)t * cols + j, n);
            __m256i ax = _mm256_abs_epi8(xv);
            float xs = xq_scale[(size_t)t * groups + g];
            for (int r = 0; r < R; r++) {
                __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[r], xv));
                __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                __m256 s = _mm256_set1_ps(w_scale[(size_t)r * groups + g] * xs);
                acc[r][t] = _mm256_fmadd_ps(dot, s, acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)t * rows + r] = hsum256(acc[r][t]);
}

/* The group sizes FORMAT.md allows; others take the reference path. */
static int q8_fast_group(int group_size) { return group_size == 32 || group_size == 64; }

#endif

/* ------------------------------------------------------------------------------------------ */
/* The tiled matmul: a block of TILE_R rows for all tokens. */

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

static void bf16_rows(float *y, const uint16_t *w, const float *x, int n, int rows, int cols,
                      int r0, int nr) {
    const uint16_t *wr = w + (size_t)r0 * cols;
    int t = 0;
    if (nr == TILE_R && n > 1) {
        for (; t + TILE_T_BF16 <= n; t += TILE_T_BF16)
            tile_bf16(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, TILE_T_BF16,
                      rows, cols);
        for (; t < n; t++)
            tile_bf16(y + (size_t)t * rows + r0, wr, x + (size_t)t * cols, TILE_R, 1, rows, cols);
    } else {
        for (; t < n; t++)
            for (int r = 0; r < nr; r++)
                tile_bf16(y + (size_t)t * rows + r0 + r, wr + (size_t)r * cols,
                          x + (size_t)t * cols, 1, 1, rows, cols);
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
#endif

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

#else /* plain C: the references, a row at a time */

#define TILE_R 1

static void f32_rows(float *y, const float *w, const float *x, int n, int rows, int cols,
                     int r0, int nr) {
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++)
            matvec_f32_ref(y + (size_t)t * rows + r, w + (size_t)r * cols, x + (size_t)t * cols,
                           1, cols);
}

static void bf16_rows(float *y, const uint16_t *w, const float *x, int n, int rows, int cols,
                      int r0, int nr) {
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++)
            matvec_bf16_ref(y + (size_t)t * rows + r, w + (size_t)r * cols, x + (size_t)t * cols,
                            1, cols);
}

void matvec_f32(float *y, const float *w, const float *x, int rows, int cols) {
    f32_rows(y, w, x, 1, rows, cols, 0, rows);
}

#endif

/* ------------------------------------------------------------------------------------------ */
/* Q8_0 with VNNI: the weights rearranged once, at load time.
 *
 * Why a second layout is worth a copy of the weights: vpdpbusd multiplies 64 pairs of bytes
 * and sums them in fours into 16 int32 lanes. Given one row and one token per instruction, as
 * the file's layout does, each group of a row still needs its 16 lanes converted, scaled and
 * summed; that float work outnumbers the integer work three to one. So q8_pack interleaves
 * the rows in blocks of 16: one 64-byte vector holds 4 consecutive weights of each of 16
 * rows, each lane becomes one row's own integer dot product, and 4 bytes of the token,
 * broadcast to every lane, are all an instruction needs from the activations. After a whole
 * group the lanes hold 16 exact group sums, and one conversion and two multiplications scale
 * them all. With no horizontal sums, each lane (row) adds up its groups in order, exactly as
 * matvec_q8_ref does: the packed kernel gives the reference's numbers bit for bit.
 *
 * vpdpbusd wants one unsigned operand: the activations become unsigned by adding 128 (x ^
 * 0x80 on the bytes), which adds 128 x (the sum of the group's weights) to each row. That
 * sum belongs to the weights, so q8_pack stores it, negated, as the starting value of each
 * group's accumulator. Rows are padded to a multiple of 16 and columns to a multiple of 4
 * with zero weights. */

#if defined(USE_VNNI)

struct Q8Packed {
    int8_t *q;     /* (blocks, steps, 16 rows, 4 columns) the weights */
    float *scale;  /* (blocks, groups, 16) each row's group scales */
    int32_t *bias; /* (blocks, groups, 16) -128 x the sum of each row's group of weights */
    int steps;     /* ceil(cols / 4): the 64-byte vectors of a block */
};

#define Q8_BLOCK 16

/* Sizes of the parts of a packed matrix, each a multiple of 64 bytes: the header, then q,
 * scale and bias. */
static size_t round64(size_t n) { return (n + 63) / 64 * 64; }
static void q8_parts(int rows, int cols, int group_size, size_t part[4]) {
    size_t blocks = (size_t)(rows + Q8_BLOCK - 1) / Q8_BLOCK;
    size_t per_block = blocks * ((cols + group_size - 1) / group_size) * Q8_BLOCK;
    part[0] = round64(sizeof(Q8Packed));
    part[1] = blocks * ((cols + 3) / 4) * 64;
    part[2] = round64(per_block * sizeof(float));
    part[3] = round64(per_block * sizeof(int32_t));
}

size_t q8_packed_size(const Tensor *w, int rows, int cols) {
    int gs = w->group_size;
    if (w->type != WEIGHT_Q8_0 || gs <= 0 || gs % 4 != 0 || gs > 4096) return 0; /* as stored */
    size_t part[4];
    q8_parts(rows, cols, gs, part);
    return part[0] + part[1] + part[2] + part[3];
}

void q8_pack(Tensor *t, int rows, int cols, void *mem) {
    int gs = t->group_size, groups = (cols + gs - 1) / gs;
    int blocks = (rows + Q8_BLOCK - 1) / Q8_BLOCK, steps = (cols + 3) / 4;
    size_t part[4];
    q8_parts(rows, cols, gs, part);
    Q8Packed *p = mem;
    p->q = (int8_t *)mem + part[0];
    p->scale = (float *)(p->q + part[1]);
    p->bias = (int32_t *)((char *)p->scale + part[2]);
    p->steps = steps;
    const int8_t *w = t->data;
    /* a block at a time, both threads at once: this is most of a Q8_0 model's load time */
    #pragma omp parallel for schedule(static) if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int b = 0; b < blocks; b++) {
        int8_t *dst = p->q + (size_t)b * steps * 64;
        memset(dst, 0, (size_t)steps * 64); /* the padding rows and columns */
        for (int lane = 0; lane < Q8_BLOCK; lane++) {
            int r = b * Q8_BLOCK + lane;
            for (int g = 0; g < groups; g++) { /* padding rows: scale 0 */
                size_t at = ((size_t)b * groups + g) * Q8_BLOCK + lane;
                p->bias[at] = 0;
                p->scale[at] = 0.0f;
            }
            if (r >= rows) continue;
            const int8_t *row = w + (size_t)r * cols;
            int c = 0;
            for (; c + 4 <= cols; c += 4) memcpy(dst + (size_t)c * 16 + lane * 4, row + c, 4);
            if (c < cols) memcpy(dst + (size_t)c * 16 + lane * 4, row + c, (size_t)(cols - c));
            for (int g = 0; g < groups; g++) {
                int32_t sum = 0;
                for (int j = g * gs; j < min_int(cols, (g + 1) * gs); j++) sum += row[j];
                size_t at = ((size_t)b * groups + g) * Q8_BLOCK + lane;
                p->bias[at] = -128 * sum;
                p->scale[at] = t->scales[(size_t)r * groups + g];
            }
        }
    }
    t->packed = p;
}

/* Bytes j .. j + 3 of an unsigned activation row, broadcast to every lane; bytes past the
 * end of the row (j + 4 > cols) read as zero, that is 128. */
static ALWAYS_INLINE __m512i x4(const uint8_t *xu, int j, int cols) {
    uint32_t v = 0x80808080u;
    memcpy(&v, xu + j, (size_t)min_int(4, cols - j));
    return _mm512_set1_epi32((int)v);
}

/* Bytes j .. j + 3, all inside the row. */
static ALWAYS_INLINE __m512i x4_full(const uint8_t *xu, int j) {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 11 /* no _mm_loadu_si32 yet */
    int32_t v;
    memcpy(&v, xu + j, 4);
    return _mm512_set1_epi32(v);
#else
    return _mm512_broadcastd_epi32(_mm_loadu_si32(xu + j));
#endif
}

/* y for RB blocks of 16 rows (starting at block b0) x T tokens. Every call passes RB = 1
 * today (decoding reads one block with four accumulator chains instead); a copy without RB,
 * the same instructions in principle, decoded 15M Q8_0 7% slower (1331 against 1429 tok/s,
 * one thread, 10 interleaved runs), so the tile keeps its shape. */
static ALWAYS_INLINE void tile_q8_packed(float *y, const Q8Packed *p, int b0, const uint8_t *xu,
                                         const float *xs, int RB, int T, int rows, int cols,
                                         int group_size) {
    int groups = (cols + group_size - 1) / group_size, gsteps = group_size / 4;
    int full = cols / 4; /* the steps whose 4 bytes all lie inside the row */
    __m512 acc[4][8];
    for (int rb = 0; rb < RB; rb++)
        for (int t = 0; t < T; t++) acc[rb][t] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        int k0 = g * gsteps, k1 = min_int(k0 + gsteps, p->steps);
        __m512i dot[4][8];
        for (int rb = 0; rb < RB; rb++) {
            __m512i bias =
                _mm512_loadu_si512(p->bias + ((size_t)(b0 + rb) * groups + g) * Q8_BLOCK);
            for (int t = 0; t < T; t++) dot[rb][t] = bias;
        }
        int k = k0;
        if (RB == 1 && T == 1) {
            /* one block, one token (decoding): a chain of dependent vpdpbusd would wait on
             * each other's results, so steps take turns among four sums (of integers: the
             * order changes nothing) */
            __m512i more[3] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                               _mm512_setzero_si512()};
            const int8_t *wb = p->q + (size_t)b0 * p->steps * 64;
            for (; k + 4 <= min_int(k1, full); k += 4) {
                dot[0][0] = _mm512_dpbusd_epi32(dot[0][0], x4_full(xu, 4 * k),
                                                _mm512_loadu_si512(wb + (size_t)k * 64));
                for (int c = 0; c < 3; c++) {
                    __m512i wv = _mm512_loadu_si512(wb + (size_t)(k + c + 1) * 64);
                    more[c] = _mm512_dpbusd_epi32(more[c], x4_full(xu, 4 * (k + c + 1)), wv);
                }
            }
            dot[0][0] = _mm512_add_epi32(_mm512_add_epi32(dot[0][0], more[0]),
                                         _mm512_add_epi32(more[1], more[2]));
        }
        for (; k < k1; k++) {
            __m512i wv[4];
            for (int rb = 0; rb < RB; rb++)
                wv[rb] = _mm512_loadu_si512(p->q + ((size_t)(b0 + rb) * p->steps + k) * 64);
            for (int t = 0; t < T; t++) {
                __m512i xv = k < full ? x4(xu + (size_t)t * cols, 4 * k, 4 * k + 4)
                                      : x4(xu + (size_t)t * cols, 4 * k, cols);
                for (int rb = 0; rb < RB; rb++)
                    dot[rb][t] = _mm512_dpbusd_epi32(dot[rb][t], xv, wv[rb]);
            }
        }
        for (int rb = 0; rb < RB; rb++) {
            __m512 ws = _mm512_loadu_ps(p->scale + ((size_t)(b0 + rb) * groups + g) * Q8_BLOCK);
            for (int t = 0; t < T; t++) {
                __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(xs[(size_t)t * groups + g]));
                acc[rb][t] = _mm512_add_ps(acc[rb][t],
                                           _mm512_mul_ps(_mm512_cvtepi32_ps(dot[rb][t]), s));
            }
        }
    }
    for (int rb = 0; rb < RB; rb++) {
        int r0 = (b0 + rb) * Q8_BLOCK;
        for (int t = 0; t < T; t++)
            _mm512_mask_storeu_ps(y + (size_t)t * rows + r0, mask16(rows - r0), acc[rb][t]);
    }
}

/* One block of 16 rows for all n tokens: a single token (decoding) on its own; a prompt
 * chunk 8 tokens at a time, while the block's weights stay in L1. */
static void q8_packed_block(float *y, const Q8Packed *p, const uint8_t *xu, const float *xs,
                            int n, int rows, int cols, int group_size, int b) {
    int groups = (cols + group_size - 1) / group_size;
    for (int t = 0; t < n; t += 8) {
        float *yt = y + (size_t)t * rows;
        const uint8_t *xt = xu + (size_t)t * cols;
        const float *st = xs + (size_t)t * groups;
        switch (min_int(8, n - t)) {
        case 8: tile_q8_packed(yt, p, b, xt, st, 1, 8, rows, cols, group_size); break;
        case 7: tile_q8_packed(yt, p, b, xt, st, 1, 7, rows, cols, group_size); break;
        case 6: tile_q8_packed(yt, p, b, xt, st, 1, 6, rows, cols, group_size); break;
        case 5: tile_q8_packed(yt, p, b, xt, st, 1, 5, rows, cols, group_size); break;
        case 4: tile_q8_packed(yt, p, b, xt, st, 1, 4, rows, cols, group_size); break;
        case 3: tile_q8_packed(yt, p, b, xt, st, 1, 3, rows, cols, group_size); break;
        case 2: tile_q8_packed(yt, p, b, xt, st, 1, 2, rows, cols, group_size); break;
        default: tile_q8_packed(yt, p, b, xt, st, 1, 1, rows, cols, group_size); break;
        }
    }
}

#else

/* no VNNI: the stored layout serves */
size_t q8_packed_size(const Tensor *w, int rows, int cols) { return 0; }
void q8_pack(Tensor *t, int rows, int cols, void *mem) {}

#endif

#if defined(USE_AVX2_Q8)

static void q8_rows(float *y, const int8_t *w, const float *w_scale, const int8_t *xq,
                    const float *xq_scale, int n, int rows, int cols, int group_size,
                    int r0, int nr) {
    int groups = (cols + group_size - 1) / group_size;
    const int8_t *wr = w + (size_t)r0 * cols;
    const float *sr = w_scale + (size_t)r0 * groups;
    int t = 0;
    if (nr == TILE_R_Q8 && n > 1) {
        for (; t + TILE_T_Q8 <= n; t += TILE_T_Q8)
            tile_q8(y + (size_t)t * rows + r0, wr, sr, xq + (size_t)t * cols,
                    xq_scale + (size_t)t * groups, TILE_R_Q8, TILE_T_Q8, rows, cols, group_size);
        for (; t < n; t++)
            tile_q8(y + (size_t)t * rows + r0, wr, sr, xq + (size_t)t * cols,
                    xq_scale + (size_t)t * groups, TILE_R_Q8, 1, rows, cols, group_size);
    } else {
        for (; t < n; t++)
            for (int r = 0; r < nr; r++)
                tile_q8(y + (size_t)t * rows + r0 + r, wr + (size_t)r * cols,
                        sr + (size_t)r * groups, xq + (size_t)t * cols,
                        xq_scale + (size_t)t * groups, 1, 1, rows, cols, group_size);
    }
}

#endif

/* Rows r0 .. r0 + nr - 1 of a Q8_0 product for all n tokens, x already quantized. */
static void q8_unit(float *y, const Tensor *w, const int8_t *xq, const float *xq_scale, int n,
                    int rows, int cols, int r0, int nr) {
    int gs = w->group_size, groups = (cols + gs - 1) / gs;
#if defined(USE_VNNI)
    if (w->packed) {
        q8_packed_block(y, w->packed, (const uint8_t *)xq, xq_scale, n, rows, cols, gs,
                        r0 / Q8_BLOCK);
        return;
    }
#endif
#if defined(USE_AVX2_Q8)
    if (q8_fast_group(gs)) {
        q8_rows(y, w->data, w->scales, xq, xq_scale, n, rows, cols, gs, r0, nr);
        return;
    }
#endif
    const int8_t *data = w->data;
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r0 + nr; r++)
            matvec_q8_ref(y + (size_t)t * rows + r, data + (size_t)r * cols,
                          w->scales + (size_t)r * groups, xq + (size_t)t * cols,
                          xq_scale + (size_t)t * groups, 1, cols, gs);
}

/* ------------------------------------------------------------------------------------------ */
/* matmul: each product is cut into units of a few rows (the tile height of its weight type),
 * and the threads share out the units of all the products of one call. */

static int unit_rows(const Tensor *w) {
    if (w->type != WEIGHT_Q8_0) return TILE_R;
#if defined(USE_VNNI)
    if (w->packed) return Q8_BLOCK;
#endif
#if defined(USE_AVX2_Q8)
    if (q8_fast_group(w->group_size)) return TILE_R_Q8;
#endif
    return 1;
}

static void run_unit(const Product *p, const float *x, const int8_t *xq, const float *xq_scale,
                     int n, int cols, int r0) {
    const Tensor *w = p->w;
    int nr = min_int(unit_rows(w), p->rows - r0);
    switch (w->type) {
    case WEIGHT_F32: f32_rows(p->y, w->data, x, n, p->rows, cols, r0, nr); break;
    case WEIGHT_BF16: bf16_rows(p->y, w->data, x, n, p->rows, cols, r0, nr); break;
    case WEIGHT_Q8_0: q8_unit(p->y, w, xq, xq_scale, n, p->rows, cols, r0, nr); break;
    }
}

/* The work of matmul_many, shared out among the threads of the team that calls it (one
 * thread when called outside a parallel region). */
static void matmul_team(const Product *p, int count, int units, int per, const float *x,
                        int8_t *xq, float *xq_scale, int n, int cols) {
    const Tensor *w = p[0].w;
    int gs = w->group_size, groups = w->type == WEIGHT_Q8_0 ? (cols + gs - 1) / gs : 0;
    if (w->type == WEIGHT_Q8_0) {
        /* x is quantized once for all the products, its tokens shared out too */
        #pragma omp for schedule(static)
        for (int t = 0; t < n; t++) {
            int8_t *q = xq + (size_t)t * cols;
            quantize_q8(q, xq_scale + (size_t)t * groups, x + (size_t)t * cols, cols, gs);
            if (w->packed) /* the packed kernel takes x + 128, see above */
                for (int j = 0; j < cols; j++) q[j] = (int8_t)(q[j] ^ 0x80);
        }
    }
    #pragma omp for schedule(static)
    for (int u = 0; u < units; u++) {
        int i = 0, first = u; /* unit u is unit `first` of product i */
        while (first >= (p[i].rows + per - 1) / per) first -= (p[i].rows + per - 1) / per, i++;
        run_unit(&p[i], x, xq, xq_scale, n, cols, first * per);
    }
}

void matmul_many(const Product *p, int count, const float *x, int8_t *xq, float *xq_scale,
                 int n, int cols) {
    int per = unit_rows(p[0].w), units = 0;
    long work = 0;
    for (int i = 0; i < count; i++) {
        units += (p[i].rows + per - 1) / per;
        work += (long)n * p[i].rows * cols;
    }
    /* A branch rather than `parallel if`: that still enters the OpenMP runtime, which cost a
     * tenth of stories260K's decode time, where no product is large enough to share. */
    if (work >= PARALLEL_MIN_WORK) {
        #pragma omp parallel
        matmul_team(p, count, units, per, x, xq, xq_scale, n, cols);
    } else {
        matmul_team(p, count, units, per, x, xq, xq_scale, n, cols);
    }
}

void matmul(float *y, const Tensor *w, const float *x, int8_t *xq, float *xq_scale,
            int n, int rows, int cols) {
    Product p = {y, w, rows};
    matmul_many(&p, 1, x, xq, xq_scale, n, cols);
}

/* ------------------------------------------------------------------------------------------ */
/* Small vector helpers for attention */

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
/* Greedy decoding */

int argmax_f32_ref(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

/* Blocks of 16 are first checked for a new maximum in one compare; after the first few
 * blocks one rarely appears, so most blocks cost one instruction. Going one value at a time
 * took 2% of a 15M model's greedy decoding, while the other thread waited. */
int argmax_f32(const float *x, int n) {
#if defined(USE_AVX512)
    int best = 0, i = 1;
    float max = x[0];
    for (; i + 16 <= n; i += 16)
        if (_mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_set1_ps(max), _CMP_GT_OQ))
            for (int j = i; j < i + 16; j++)
                if (x[j] > max) max = x[j], best = j;
    for (; i < n; i++)
        if (x[i] > max) max = x[i], best = i;
    return best;
#else
    return argmax_f32_ref(x, n);
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* The embedding lookup */

void dequantize_row(float *out, const Tensor *w, int row, int cols) {
    size_t base = (size_t)row * cols;
    switch (w->type) {
    case WEIGHT_F32: {
        const float *src = (const float *)w->data + base;
        for (int j = 0; j < cols; j++) out[j] = src[j];
        break;
    }
    case WEIGHT_BF16: {
        const uint16_t *src = (const uint16_t *)w->data + base;
        for (int j = 0; j < cols; j++) out[j] = bf16_to_f32(src[j]);
        break;
    }
    case WEIGHT_Q8_0: {
        const int8_t *src = (const int8_t *)w->data + base;
        int groups = (cols + w->group_size - 1) / w->group_size;
        const float *scales = w->scales + (size_t)row * groups;
        for (int j = 0; j < cols; j++) out[j] = src[j] * scales[j / w->group_size];
        break;
    }
    }
}

const char *kernels_isa(void) {
#if defined(USE_AVX512) && defined(USE_VNNI)
    return "f32:avx512 bf16:avx512 q8:avx512vnni";
#elif defined(USE_AVX512)
    return "f32:avx512 bf16:avx512 q8:avx2";
#elif defined(USE_AVX2)
    return "f32:avx2 bf16:avx2 q8:avx2";
#else
    return "f32:plain bf16:plain q8:plain";
#endif
}
