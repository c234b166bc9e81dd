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

void group_sums(int32_t *out, const int8_t *xq, int n, int group_size, int times) {
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int32_t sum = 0;
        for (int j = start; j < min_int(n, start + group_size); j++) sum += xq[j];
        out[g] = times * sum;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The prepared input: Int8Input (simd.h) with a row's cols values a token, and -128 x the
 * sum of each group's values, which only the packed kernel reads (see below). */

static int groups_of(const Tensor *w) { return (w->cols + w->group_size - 1) / w->group_size; }

static size_t input_stride(const Tensor *w, int n) {
    return int8_input_stride((size_t)w->cols, (size_t)groups_of(w));
}

/* The parts of the group of tokens t0 .. t0 + tn - 1. */
static Int8Input group_input(const void *in, const Tensor *w, int t0, int tn) {
    return int8_input(in, (size_t)w->cols, (size_t)groups_of(w), t0, tn);
}

/* Quantizes tokens t0 .. of x with `quantize` (quantize_q8 or its reference), and sums each
 * group of its values when `sums` (for the packed kernel). */
static void prepare_with(void (*quantize)(int8_t *, float *, const float *, int, int),
                         int sums, void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, gs = w->group_size, groups = groups_of(w);
    int tn = min_int(MATMUL_TOKENS, n - t0);
    Int8Input p = group_input(in, w, t0, tn);
    for (int t = 0; t < tn; t++) {
        int8_t *q = (int8_t *)p.q + (size_t)t * cols;
        quantize(q, (float *)p.scale + (size_t)t * groups, x + (size_t)(t0 + t) * cols, cols, gs);
        if (sums) group_sums((int32_t *)p.bias + (size_t)t * groups, q, cols, gs, -128);
    }
}

static void prepare_ref(void *in, const float *x, int n, int t0, const Tensor *w) {
    prepare_with(quantize_q8_ref, 0, in, x, n, t0, w);
}

/* A group of tokens' activations the way product reads them: quantized, and summed when
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
        Int8Input p = group_input(in, w, t0, tn);
        for (int t = 0; t < tn; t++)
            matvec_q8_ref(y + (size_t)(t0 + t) * w->rows + r0,
                          (const int8_t *)w->data + (size_t)r0 * cols,
                          w->scales + (size_t)r0 * groups, p.q + (size_t)t * cols,
                          p.scale + (size_t)t * groups, nr, cols, gs);
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
 * summed; that float work outnumbers the integer work three to one. So pack interleaves the
 * rows in blocks of 16: one 64-byte vector holds 4 consecutive weights of each of 16 rows,
 * each lane becomes one row's own integer dot product, and 4 bytes of the token, broadcast to
 * every lane, are all an instruction needs from the activations. After a whole group the
 * lanes hold 16 exact group sums, and one conversion and two multiplications scale them all.
 * With no horizontal sums, each lane (row) adds up its groups in order, exactly as
 * matvec_q8_ref does: the packed kernel gives the reference's numbers bit for bit.
 *
 * vpdpbusd wants one unsigned operand: the weights become unsigned by adding 128 (w ^ 0x80 on
 * the bytes), which adds 128 x (the sum of the group's activations) to every row. That sum
 * belongs to the token, so prepare computes it once per group, negated, as the starting value
 * of every row's accumulator.
 *
 * A block is one stream, group after group: the group's weights (gs / 4 vectors, fewer in a
 * row's short last group), then its 16 rows' scales (64 bytes). That is the file's 1.125
 * bytes a weight (group size 32), all read in order. An earlier layout kept per-row sums of
 * the weights beside the scales and read three streams, 1.25 bytes a weight: decoding 110M
 * read 11% more than the file holds. Rows are padded to a multiple of 16 with zero weights
 * and scales, columns to a multiple of 4 with zero weights. */

#if defined(USE_VNNI)

#define Q8_BLOCK 16

/* The sizes are functions of cols and the group size, kept here because working them out in
 * every tile decoded 15M 4-6% slower; larger models did not notice (BENCHMARKS.md, "Tried
 * and left out"). */
typedef struct {
    const uint8_t *q; /* (blocks) of block_bytes each, laid out as above */
    size_t block_bytes;
    int steps;        /* ceil(cols / 4): the weight vectors of a block */
} Q8Packed;

static size_t q8_block_bytes(int cols, int group_size) {
    return (size_t)(cols + 3) / 4 * 64 + (size_t)((cols + group_size - 1) / group_size) * 64;
}

static size_t packed_size(const Tensor *w) {
    int gs = w->group_size;
    if (gs <= 0 || gs % 4 != 0 || gs > 4096) return 0; /* as stored */
    size_t blocks = (size_t)(w->rows + Q8_BLOCK - 1) / Q8_BLOCK;
    return round64(sizeof(Q8Packed)) + blocks * q8_block_bytes(w->cols, gs);
}

/* Block b of Q8_BLOCK rows, each group's weight vectors then its scales. */
static void pack_block(const Tensor *t, void *mem, int b) {
    int rows = t->rows, cols = t->cols, gs = t->group_size, groups = (cols + gs - 1) / gs;
    int gsteps = gs / 4;
    const Q8Packed *p = mem;
    const int8_t *w = t->data;
    uint8_t *block = (uint8_t *)p->q + (size_t)b * p->block_bytes;
    /* padding rows and columns: weight 0 (0x80 once unsigned); every scale is written below */
    memset(block, 0x80, p->block_bytes);
    for (int lane = 0; lane < Q8_BLOCK; lane++) {
        int r = b * Q8_BLOCK + lane;
        for (int g = 0; g < groups; g++) {
            uint8_t *at = block + (size_t)g * (gsteps + 1) * 64;
            int c0 = g * gs, c1 = min_int(cols, c0 + gs);
            float *scale = (float *)(at + (size_t)((c1 - c0 + 3) / 4) * 64);
            scale[lane] = r < rows ? t->scales[(size_t)r * groups + g] : 0.0f;
            for (int c = c0; r < rows && c < c1; c += 4) {
                const int8_t *row = w + (size_t)r * cols;
                uint32_t v = 0; /* past the row: 0 here, 0x80 (weight 0) after the flip */
                if (c + 4 <= c1) /* a constant size: a variable one is a byte loop */
                    memcpy(&v, row + c, 4);
                else
                    memcpy(&v, row + c, (size_t)(c1 - c));
                v ^= 0x80808080u;
                memcpy(at + (size_t)(c - c0) / 4 * 64 + lane * 4, &v, 4);
            }
        }
    }
}

/* a block at a time, on all threads: this is most of a Q8_0 model's load time. A row is read
 * in order (16 rows a group at a time made loading 110M 2-3x slower). */
static void pack(Tensor *t, void *mem) {
    Q8Packed *p = mem;
    p->q = (uint8_t *)mem + round64(sizeof(Q8Packed));
    p->block_bytes = q8_block_bytes(t->cols, t->group_size);
    p->steps = (t->cols + 3) / 4;
    pack_blocks(t, mem, (t->rows + Q8_BLOCK - 1) / Q8_BLOCK, pack_block);
    t->packed = p;
}

/* Bytes j .. j + 3 of an activation row, broadcast to every lane; bytes past the end of the
 * row (j + 4 > cols) read as zero. */
static ALWAYS_INLINE __m512i x4(const int8_t *x, int j, int cols) {
    int32_t v = 0;
    memcpy(&v, x + j, (size_t)min_int(4, cols - j));
    return _mm512_set1_epi32(v);
}

/* Bytes j .. j + 3, all inside the row. */
static ALWAYS_INLINE __m512i x4_full(const int8_t *x, int j) {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 11 /* no _mm_loadu_si32 yet */
    int32_t v;
    memcpy(&v, x + j, 4);
    return _mm512_set1_epi32(v);
#else
    return _mm512_broadcastd_epi32(_mm_loadu_si32(x + j));
#endif
}

/* y for the 16 rows of block b x T tokens: x (T, cols) quantized, xs (T, groups) their
 * scales, xb (T, groups) -128 x their group sums. */
static ALWAYS_INLINE void tile_q8_packed(float *y, const Q8Packed *p, int b, const int8_t *x,
                                         const float *xs, const int32_t *xb, int T, int rows,
                                         int cols, int group_size) {
    int groups = (cols + group_size - 1) / group_size, gsteps = group_size / 4;
    int full = cols / 4; /* the steps whose 4 bytes all lie inside the row */
    const uint8_t *at = p->q + (size_t)b * p->block_bytes;
    __m512 acc[8];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        int k0 = g * gsteps, k1 = min_int(k0 + gsteps, p->steps), k = k0;
        __m512i dot[8];
        for (int t = 0; t < T; t++) dot[t] = _mm512_set1_epi32(xb[(size_t)t * groups + g]);
        if (T == 1) {
            /* one token (decoding): a chain of dependent vpdpbusd would wait on each other's
             * results, so steps take turns among four sums (of integers: the order changes
             * nothing) */
            __m512i more[3] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                               _mm512_setzero_si512()};
            for (; k + 4 <= min_int(k1, full); k += 4, at += 4 * 64) {
                dot[0] = _mm512_dpbusd_epi32(dot[0], _mm512_loadu_si512(at), x4_full(x, 4 * k));
                for (int c = 0; c < 3; c++)
                    more[c] = _mm512_dpbusd_epi32(more[c], _mm512_loadu_si512(at + 64 * (c + 1)),
                                                  x4_full(x, 4 * (k + c + 1)));
            }
            dot[0] = _mm512_add_epi32(_mm512_add_epi32(dot[0], more[0]),
                                      _mm512_add_epi32(more[1], more[2]));
        }
        for (; k < k1; k++, at += 64) {
            __m512i wv = _mm512_loadu_si512(at);
            for (int t = 0; t < T; t++) {
                __m512i xv = k < full ? x4(x + (size_t)t * cols, 4 * k, 4 * k + 4)
                                      : x4(x + (size_t)t * cols, 4 * k, cols);
                dot[t] = _mm512_dpbusd_epi32(dot[t], wv, xv);
            }
        }
        __m512 ws = _mm512_loadu_ps(at);
        at += 64;
        for (int t = 0; t < T; t++) {
            __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(xs[(size_t)t * groups + g]));
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(dot[t]), s));
        }
    }
    int r0 = b * Q8_BLOCK;
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * rows + r0, mask16(rows - r0), acc[t]);
}

/* One block of 16 rows for all n tokens: a single token (decoding) on its own; a prompt
 * chunk 8 tokens at a time, while the block's weights stay in L1. */
static void q8_packed_block(float *y, const Q8Packed *p, const int8_t *xq, const float *xs,
                            const int32_t *xb, int n, int rows, int cols, int group_size,
                            int b) {
    int groups = (cols + group_size - 1) / group_size;
    for (int t = 0; t < n; t += 8) {
        float *yt = y + (size_t)t * rows;
        const int8_t *xt = xq + (size_t)t * cols;
        const float *st = xs + (size_t)t * groups;
        const int32_t *bt = xb + (size_t)t * groups;
        /* a case per count, so T is a constant in the tile (why: see matmul_f32.c's tile) */
        switch (min_int(8, n - t)) {
        case 8: tile_q8_packed(yt, p, b, xt, st, bt, 8, rows, cols, group_size); break;
        case 7: tile_q8_packed(yt, p, b, xt, st, bt, 7, rows, cols, group_size); break;
        case 6: tile_q8_packed(yt, p, b, xt, st, bt, 6, rows, cols, group_size); break;
        case 5: tile_q8_packed(yt, p, b, xt, st, bt, 5, rows, cols, group_size); break;
        case 4: tile_q8_packed(yt, p, b, xt, st, bt, 4, rows, cols, group_size); break;
        case 3: tile_q8_packed(yt, p, b, xt, st, bt, 3, rows, cols, group_size); break;
        case 2: tile_q8_packed(yt, p, b, xt, st, bt, 2, rows, cols, group_size); break;
        default: tile_q8_packed(yt, p, b, xt, st, bt, 1, rows, cols, group_size); break;
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
        Int8Input p = group_input(in, w, t0, tn);
        float *yt = y + (size_t)t0 * w->rows;
#if defined(USE_VNNI)
        if (w->packed) {
            q8_packed_block(yt, w->packed, p.q, p.scale, p.bias, tn, w->rows, w->cols,
                            w->group_size, r0 / Q8_BLOCK);
            continue;
        }
#endif
#if defined(USE_AVX2_Q8)
        if (q8_fast_group(w->group_size)) {
            q8_rows(yt, w->data, w->scales, p.q, p.scale, tn, w->rows, w->cols, w->group_size, r0,
                    nr);
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
    .unit_rows = unit_rows, .unit_tokens = MATMUL_TOKENS, .product = product,
    .product_ref = product_ref,
#if defined(USE_VNNI)
    .isa = "avx512vnni",
#elif defined(USE_AVX2_Q8)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
