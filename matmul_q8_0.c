/*
 * matmul_q8_0.c - Q8_0 weights: int8 with one float32 scale per group of group_size (32 or 64)
 * consecutive weights of a row; the last group of a row may be shorter. A weight is
 * q * scale. In a file a matrix is its int8 values (rows, cols), zero bytes up to a multiple of
 * 64, then its scales (rows, ceil(cols / group_size)).
 *
 * The activations are quantized the same way before each product (quantize_q8), so the inner
 * loop is an integer dot product: that is what makes int8 fast on hardware with VNNI. Each
 * group contributes (integer dot product) x (weight scale x activation scale).
 */
#include <math.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"

/* ------------------------------------------------------------------------------------------ */
/* Quantizing the activations */

/* Rounding is roundf's, half away from zero
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

/* ------------------------------------------------------------------------------------------ */
/* The prepared input: per group of MATMUL_TOKENS tokens (tn in the last), their int8 values
 * (tn, cols), then from the next multiple of 64 their scales (tn, groups). */

static int groups_of(const Tensor *w) { return (w->cols + w->group_size - 1) / w->group_size; }

static size_t input_stride(const Tensor *w, int n) {
    return round64((size_t)w->cols) + round64((size_t)groups_of(w) * sizeof(float));
}

/* The values and scales of the group of tokens t0 .. t0 + tn - 1. */
static void group_input(const void *in, const Tensor *w, int t0, int tn, const int8_t **xq,
                        const float **xs) {
    const char *base = (const char *)in + (size_t)t0 * input_stride(w, 0);
    *xq = (const int8_t *)base;
    *xs = (const float *)(base + round64((size_t)tn * w->cols));
}

/* Quantizes tokens t0 .. of x with `quantize` (quantize_q8 or its reference); flip: 0x80 to
 * be added (XORed) to every value, for the packed kernel (see below). */
static void prepare_with(void (*quantize)(int8_t *, float *, const float *, int, int),
                         int flip, void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, groups = groups_of(w), tn = min_int(MATMUL_TOKENS, n - t0);
    const int8_t *cq;
    const float *cs;
    group_input(in, w, t0, tn, &cq, &cs);
    int8_t *xq = (int8_t *)cq;
    float *xs = (float *)cs;
    for (int t = 0; t < tn; t++) {
        int8_t *q = xq + (size_t)t * cols;
        quantize(q, xs + (size_t)t * groups, x + (size_t)(t0 + t) * cols, cols, w->group_size);
        if (flip)
            for (int j = 0; j < cols; j++) q[j] = (int8_t)(q[j] ^ 0x80);
    }
}

static void prepare_ref(void *in, const float *x, int n, int t0, const Tensor *w) {
    prepare_with(quantize_q8_ref, 0, in, x, n, t0, w);
}

/* A group of tokens' activations the way product reads them: quantized, plus 128 when
 * packed. */
static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {
    prepare_with(quantize_q8, w->packed != NULL, in, x, n, t0, w);
}

/* ------------------------------------------------------------------------------------------ */
/* The reference */

/* Each group contributes (integer dot product) x (weight scale x activation scale). */
static void matvec_q8_ref(float *y, const int8_t *w, const float *w_scale, const int8_t *xq,
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

/* Rows r0 .. r0 + nr - 1 for n tokens of the input prepare_ref wrote, a token at a time. */
static void product_ref(float *y, const Tensor *w, const float *x, const void *in, int n,
                        int r0, int nr) {
    int cols = w->cols, gs = w->group_size, groups = groups_of(w);
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS) {
        int tn = min_int(MATMUL_TOKENS, n - t0);
        const int8_t *xq;
        const float *xs;
        group_input(in, w, t0, tn, &xq, &xs);
        for (int t = 0; t < tn; t++)
            matvec_q8_ref(y + (size_t)(t0 + t) * w->rows + r0,
                          (const int8_t *)w->data + (size_t)r0 * cols,
                          w->scales + (size_t)r0 * groups, xq + (size_t)t * cols,
                          xs + (size_t)t * groups, nr, cols, gs);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2: the stored layout */

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

typedef struct {
    int8_t *q;     /* (blocks, steps, 16 rows, 4 columns) the weights */
    float *scale;  /* (blocks, groups, 16) each row's group scales */
    int32_t *bias; /* (blocks, groups, 16) -128 x the sum of each row's group of weights */
    int steps;     /* ceil(cols / 4): the 64-byte vectors of a block */
} Q8Packed;

#define Q8_BLOCK 16

/* Sizes of the parts of a packed matrix, each a multiple of 64 bytes: the header, then q,
 * scale and bias. */
static void q8_parts(int rows, int cols, int group_size, size_t part[4]) {
    size_t blocks = (size_t)(rows + Q8_BLOCK - 1) / Q8_BLOCK;
    size_t per_block = blocks * ((cols + group_size - 1) / group_size) * Q8_BLOCK;
    part[0] = round64(sizeof(Q8Packed));
    part[1] = blocks * ((cols + 3) / 4) * 64;
    part[2] = round64(per_block * sizeof(float));
    part[3] = round64(per_block * sizeof(int32_t));
}

static size_t packed_size(const Tensor *w) {
    int gs = w->group_size;
    if (gs <= 0 || gs % 4 != 0 || gs > 4096) return 0; /* as stored */
    size_t part[4];
    q8_parts(w->rows, w->cols, gs, part);
    return part[0] + part[1] + part[2] + part[3];
}

static void pack(Tensor *t, void *mem) {
    int rows = t->rows, cols = t->cols, gs = t->group_size, groups = (cols + gs - 1) / gs;
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
        /* a case per count, so T is a constant in the tile (why: see matmul_f32.c's tile) */
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
static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *t, void *mem) {}

#endif

/* ------------------------------------------------------------------------------------------ */
/* The fast product */

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

/* Rows r0 .. r0 + nr - 1 of a Q8_0 product for n tokens, x already quantized. */
static void product(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr) {
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS) {
        int tn = min_int(MATMUL_TOKENS, n - t0);
        const int8_t *xq;
        const float *xs;
        group_input(in, w, t0, tn, &xq, &xs);
        float *yt = y + (size_t)t0 * w->rows;
#if defined(USE_VNNI)
        if (w->packed) {
            q8_packed_block(yt, w->packed, (const uint8_t *)xq, xs, tn, w->rows, w->cols,
                            w->group_size, r0 / Q8_BLOCK);
            continue;
        }
#endif
#if defined(USE_AVX2_Q8)
        if (q8_fast_group(w->group_size)) {
            q8_rows(yt, w->data, w->scales, xq, xs, tn, w->rows, w->cols, w->group_size, r0, nr);
            continue;
        }
#endif
        product_ref(yt, w, x, (const char *)in + (size_t)t0 * input_stride(w, n), tn, r0, nr);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The table row */

static size_t file_bytes(size_t rows, size_t cols, int group_size) {
    if (group_size != 32 && group_size != 64) return 0;
    return round64(rows * cols) + rows * ((cols + group_size - 1) / group_size) * sizeof(float);
}

static void bind(Tensor *t, const void *base) {
    t->data = base;
    t->scales = (const float *)((const char *)base + round64((size_t)t->rows * t->cols));
}

static void dequantize_row(float *out, const Tensor *w, int row) {
    int cols = w->cols, gs = w->group_size, groups = (cols + gs - 1) / gs;
    const int8_t *src = (const int8_t *)w->data + (size_t)row * cols;
    const float *scales = w->scales + (size_t)row * groups;
    for (int j = 0; j < cols; j++) out[j] = src[j] * scales[j / gs];
}

static int unit_rows(const Tensor *w) {
#if defined(USE_VNNI)
    if (w->packed) return Q8_BLOCK;
#endif
#if defined(USE_AVX2_Q8)
    if (q8_fast_group(w->group_size)) return TILE_R_Q8;
#endif
    return 1;
}

const WeightType weight_q8_0 = {
    .name = "q8_0", .file_bytes = file_bytes, .bind = bind,
    .dequantize_row = dequantize_row, .input_stride = input_stride, .prepare = prepare,
    .prepare_ref = prepare_ref, .packed_size = packed_size, .pack = pack,
    .unit_rows = unit_rows, .product = product, .product_ref = product_ref,
#if defined(USE_VNNI)
    .isa = "avx512vnni",
#elif defined(USE_AVX2_Q8)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
