/*
 * matmul_q4_0.c - Q4_0 weights: llama.cpp's 4-bit blocks, 4.5 bits a weight.
 *
 * Stored (models/FORMAT.md): each row is cut into blocks of 32 weights, each block 18 bytes:
 * an fp16 scale d, then 16 bytes of which byte i holds weight i in its low nibble and weight
 * i + 16 in its high nibble; a weight is (nibble - 8) x d. The rows follow each other with no
 * padding, so a matrix is exactly what a GGUF file holds for a Q4_0 tensor and export.py
 * --gguf copies it byte for byte. (A row whose width is not a multiple of 32 ends in a block
 * whose missing weights meet zero activations; export writes them as nibble 8.)
 *
 * The activations are quantized as Q8_0's are (quantize_q8, groups of 32), so the inner loop
 * is an integer dot product, and the definition (product_ref) is, per row and token:
 *
 *     acc = 0; for each block g, in order:
 *         idot = sum over the block of (nibble_i - 8) x xq_i          (exact, in int32)
 *         acc  = fmaf((float)idot, d_g x xs_g, acc)                   (d_g x xs_g rounded once)
 *
 * The fast kernels give exactly these numbers: integer sums are exact whatever their order,
 * and each row (a vector lane, or a row at a time) adds its blocks in order.
 *
 * With VNNI, pack rearranges a matrix at load time into blocks of 16 rows, the same 18 bytes
 * per 32 weights (and 32 bytes of padding per block when a row has an odd number of groups):
 * per group of 32 columns, four 64-byte vectors in which lane l holds bytes
 * 4k .. 4k + 3 of row l's block (so weights 4k .. 4k + 3 in the low nibbles and 16 + 4k .. in
 * the high ones), and the 16 rows' scales. vpdpbusd takes the nibbles (0..15) as its unsigned
 * operand and four bytes of the token, broadcast, as its signed one; the -8 enters once per
 * block and token as -8 x (the sum of the block's activations), which prepare computes with
 * the quantization and every row's sum starts from. A block of rows is one stream, read in
 * order, which the hardware prefetcher alone keeps up with (no software prefetch pays;
 * BENCHMARKS.md). A prompt tile is a block of 16 rows by 8 tokens, its nibbles unpacked once
 * per group for all 8.
 * Without VNNI (AVX2) the stored layout is read a row at a time, and plain C is the reference.
 */
#include <math.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"

#define QK 32          /* weights per block */
#define BLOCK_BYTES 18 /* fp16 scale + 16 bytes of nibbles */

/* An fp16 value as a float (exact), as vcvtph2ps converts it. */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0 && m == 0) {
        u = sign;
    } else if (e == 0) { /* subnormal: shift the fraction up to a leading 1 */
        int k = 0;
        while (!(m & 0x400)) m <<= 1, k++;
        u = sign | (uint32_t)(127 - 15 - k + 1) << 23 | (m & 0x3FF) << 13;
    } else if (e == 31) {
        u = sign | 0x7F800000u | m << 13;
    } else {
        u = sign | (e + 127 - 15) << 23 | m << 13;
    }
    union { uint32_t u; float f; } v = {u};
    return v.f;
}

static int blocks_of(int cols) { return (cols + QK - 1) / QK; }

/* The stored block g of row r. */
static const uint8_t *block_at(const Tensor *w, int r, int g) {
    return (const uint8_t *)w->data + ((size_t)r * blocks_of(w->cols) + g) * BLOCK_BYTES;
}

static uint16_t block_scale(const uint8_t *b) { return (uint16_t)(b[0] | b[1] << 8); }

/* ------------------------------------------------------------------------------------------ */
/* The prepared input: Int8Input (simd.h) with whole blocks a token (blocks * 32 values,
 * zeros past cols), and -8 x the sum of each block's values. */

static size_t input_stride(const Tensor *w, int n) {
    size_t g = (size_t)blocks_of(w->cols);
    return int8_input_stride(g * QK, g);
}

static Int8Input group_input(const void *in, const Tensor *w, int t0, int tn) {
    size_t g = (size_t)blocks_of(w->cols);
    return int8_input(in, g * QK, g, t0, tn);
}

static void prepare_with(void (*quantize)(int8_t *, float *, const float *, int, int),
                         void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, G = blocks_of(cols), tn = min_int(MATMUL_TOKENS, n - t0);
    Int8Input p = group_input(in, w, t0, tn);
    for (int t = 0; t < tn; t++) {
        int8_t *q = (int8_t *)p.q + (size_t)t * G * QK;
        quantize(q, (float *)p.scale + (size_t)t * G, x + (size_t)(t0 + t) * cols, cols, QK);
        memset(q + cols, 0, (size_t)G * QK - cols);
        group_sums((int32_t *)p.bias + (size_t)t * G, q, cols, QK, -8);
    }
}

static void prepare_ref(void *in, const float *x, int n, int t0, const Tensor *w) {
    prepare_with(quantize_q8_ref, in, x, n, t0, w);
}

static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {
    prepare_with(quantize_q8, in, x, n, t0, w);
}

/* ------------------------------------------------------------------------------------------ */
/* The reference */

static void product_ref(float *y, const Tensor *w, const float *x, const void *in, int n,
                        int r0, int nr) {
    int G = blocks_of(w->cols);
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS) {
        int tn = min_int(MATMUL_TOKENS, n - t0);
        Int8Input p = group_input(in, w, t0, tn);
        for (int t = 0; t < tn; t++)
            for (int r = r0; r < r0 + nr; r++) {
                const int8_t *xq = p.q + (size_t)t * G * QK;
                float acc = 0.0f;
                for (int g = 0; g < G; g++) {
                    const uint8_t *b = block_at(w, r, g);
                    int32_t idot = 0;
                    for (int i = 0; i < 16; i++)
                        idot += ((b[2 + i] & 15) - 8) * xq[g * QK + i] +
                                ((b[2 + i] >> 4) - 8) * xq[g * QK + 16 + i];
                    float scale = half_to_f32(block_scale(b)) * p.scale[(size_t)t * G + g];
                    acc = fmaf((float)idot, scale, acc);
                }
                y[(size_t)(t0 + t) * w->rows + r] = acc;
            }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* VNNI: the weights packed in blocks of 16 rows */

#if defined(USE_VNNI)

#define Q4_ROWS 16

/* A block of rows is one stream, two groups at a time: the 16 rows' scales of both (32 bytes
 * each), then the nibbles of the first and of the second (256 bytes each). An odd last group
 * comes alone, its scales padded to 64 bytes. An earlier layout put all the scales after all
 * the nibbles, two streams per block, and needed a software prefetch to keep up; in one stream
 * decoding 110M is 6% faster without one (BENCHMARKS.md). */
static size_t rows_block_bytes(int cols) {
    size_t G = (size_t)blocks_of(cols);
    return (G + 1) / 2 * 64 + G * 256;
}

/* Where group g's nibbles and scales start in a block of rows, in bytes. */
static size_t nibbles_at(int g) { return (size_t)(g / 2) * (64 + 512) + 64 + (g % 2) * 256; }
static size_t scales_at(int g) { return (size_t)(g / 2) * (64 + 512) + (g % 2) * 32; }

static size_t packed_size(const Tensor *w) {
    return (size_t)(w->rows + Q4_ROWS - 1) / Q4_ROWS * rows_block_bytes(w->cols);
}

/* Block b of Q4_ROWS rows; padding rows have no weights and scale 0. */
static void pack_block(const Tensor *t, void *mem, int b) {
    int rows = t->rows, G = blocks_of(t->cols);
    size_t bytes = rows_block_bytes(t->cols);
    uint8_t *dst = (uint8_t *)mem + (size_t)b * bytes;
    memset(dst, 0, bytes);
    for (int l = 0; l < Q4_ROWS && b * Q4_ROWS + l < rows; l++)
        for (int g = 0; g < G; g++) {
            const uint8_t *src = block_at(t, b * Q4_ROWS + l, g);
            for (int k = 0; k < 4; k++)
                memcpy(dst + nibbles_at(g) + k * 64 + l * 4, src + 2 + 4 * k, 4);
            ((uint16_t *)(dst + scales_at(g)))[l] = block_scale(src);
        }
}

static void pack(Tensor *t, void *mem) {
    pack_blocks(t, mem, (t->rows + Q4_ROWS - 1) / Q4_ROWS, pack_block);
    t->packed = mem;
}

/* Bytes p .. p + 3 of a token's values, broadcast to every lane. */
static ALWAYS_INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Decoding: blocks of rows b0 .. b1 - 1 for one token. Four integer sums per group keep the
 * vpdpbusd of a group independent of each other. */
static void decode_blocks(float *y, const uint8_t *packed, int rows, int cols, const int8_t *xq,
                          const float *xs, const int32_t *xbias, int b0, int b1) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    int G = blocks_of(cols);
    size_t bytes = rows_block_bytes(cols);
    for (int b = b0; b < b1; b++) {
        const uint8_t *q = packed + (size_t)b * bytes;
        __m512 acc = _mm512_setzero_ps();
        for (int g = 0; g < G; g++) {
            const uint8_t *qg = q + nibbles_at(g);
            const int8_t *xg = xq + g * QK;
            __m512i lo0 = _mm512_set1_epi32(xbias[g]), lo1 = _mm512_setzero_si512();
            __m512i hi0 = _mm512_setzero_si512(), hi1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k += 2) {
                __m512i v0 = _mm512_load_si512(qg + 64 * k);
                __m512i v1 = _mm512_load_si512(qg + 64 * k + 64);
                lo0 = _mm512_dpbusd_epi32(lo0, _mm512_and_si512(v0, low), bcast4(xg + 4 * k));
                hi0 = _mm512_dpbusd_epi32(hi0, _mm512_and_si512(_mm512_srli_epi16(v0, 4), low),
                                          bcast4(xg + 16 + 4 * k));
                lo1 = _mm512_dpbusd_epi32(lo1, _mm512_and_si512(v1, low), bcast4(xg + 4 * k + 4));
                hi1 = _mm512_dpbusd_epi32(hi1, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low),
                                          bcast4(xg + 20 + 4 * k));
            }
            __m512i idot = _mm512_add_epi32(_mm512_add_epi32(lo0, lo1), _mm512_add_epi32(hi0, hi1));
            __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(q + scales_at(g))));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idot), _mm512_mul_ps(d, _mm512_set1_ps(xs[g])),
                                  acc);
        }
        _mm512_mask_storeu_ps(y + b * Q4_ROWS, mask16(rows - b * Q4_ROWS), acc);
    }
}

/* A prompt tile: block of rows b by T tokens (x.q rows of blocks * 32 bytes). */
static ALWAYS_INLINE void tile(float *y, const uint8_t *packed, int rows, int cols, Int8Input x,
                               int b, int T) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    int G = blocks_of(cols);
    const uint8_t *q = packed + (size_t)b * rows_block_bytes(cols);
    __m512 acc[MATMUL_TOKENS];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        const uint8_t *qg = q + nibbles_at(g);
        __m512i wv[8];
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_load_si512(qg + 64 * k);
            wv[k] = _mm512_and_si512(v, low);
            wv[4 + k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
        __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(q + scales_at(g))));
        for (int t = 0; t < T; t++) {
            const int8_t *xg = x.q + ((size_t)t * G + g) * QK;
            __m512i i0 = _mm512_set1_epi32(x.bias[(size_t)t * G + g]), i1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k += 2) {
                i0 = _mm512_dpbusd_epi32(i0, wv[k], bcast4(xg + 4 * k));
                i1 = _mm512_dpbusd_epi32(i1, wv[4 + k], bcast4(xg + 16 + 4 * k));
                i0 = _mm512_dpbusd_epi32(i0, wv[k + 1], bcast4(xg + 4 * k + 4));
                i1 = _mm512_dpbusd_epi32(i1, wv[5 + k], bcast4(xg + 20 + 4 * k));
            }
            __m512 s = _mm512_mul_ps(d, _mm512_set1_ps(x.scale[(size_t)t * G + g]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), s, acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * rows + b * Q4_ROWS, mask16(rows - b * Q4_ROWS),
                              acc[t]);
}

/* Blocks of rows b0 .. b1 - 1 for the tn tokens of one group. */
static void packed_blocks(float *y, const Tensor *w, Int8Input x, int tn, int b0, int b1) {
    if (tn == 1) {
        decode_blocks(y, w->packed, w->rows, w->cols, x.q, x.scale, x.bias, b0, b1);
        return;
    }
    for (int b = b0; b < b1; b++) {
        /* a case per count, so T is a constant in the tile (why: see matmul_f32.c's tile) */
        switch (tn) {
        case 8: tile(y, w->packed, w->rows, w->cols, x, b, 8); break;
        case 7: tile(y, w->packed, w->rows, w->cols, x, b, 7); break;
        case 6: tile(y, w->packed, w->rows, w->cols, x, b, 6); break;
        case 5: tile(y, w->packed, w->rows, w->cols, x, b, 5); break;
        case 4: tile(y, w->packed, w->rows, w->cols, x, b, 4); break;
        case 3: tile(y, w->packed, w->rows, w->cols, x, b, 3); break;
        default: tile(y, w->packed, w->rows, w->cols, x, b, 2); break;
        }
    }
}

#else

static size_t packed_size(const Tensor *w) { return 0; }
static void pack(Tensor *t, void *mem) {}

#endif

/* ------------------------------------------------------------------------------------------ */
/* AVX2: the stored layout, a row at a time for all the tokens of a group */

#if defined(USE_AVX2_Q8)

/* vpmaddubsw multiplies the nibbles (0..15, unsigned) by the values (-127..127) and adds
 * neighbours into int16: at most 2 x 15 x 127, so it never saturates; the -8 comes in as the
 * bias. */
static void rows_avx2(float *y, const Tensor *w, Int8Input x, int tn, int r0, int nr) {
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    int G = blocks_of(w->cols);
    for (int r = r0; r < r0 + nr; r++) {
        float acc[MATMUL_TOKENS] = {0};
        for (int g = 0; g < G; g++) {
            const uint8_t *b = block_at(w, r, g);
            __m128i v = _mm_loadu_si128((const __m128i *)(b + 2));
            __m256i nib = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(v, 4), v), low); /* weights 0..15, 16..31 */
            float d = half_to_f32(block_scale(b));
            for (int t = 0; t < tn; t++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(x.q + ((size_t)t * G + g) * QK));
                __m256i pairs = _mm256_maddubs_epi16(nib, xv);
                int32_t idot = hsum_epi32(_mm256_madd_epi16(pairs, ones)) + x.bias[t * G + g];
                acc[t] = fmaf((float)idot, d * x.scale[t * G + g], acc[t]);
            }
        }
        for (int t = 0; t < tn; t++) y[(size_t)t * w->rows + r] = acc[t];
    }
}

#endif

/* ------------------------------------------------------------------------------------------ */
/* The fast product */

/* Rows r0 .. r0 + nr - 1 for n tokens, x prepared. */
static void product(float *y, const Tensor *w, const float *x, const void *in, int n, int r0,
                    int nr) {
    size_t stride = input_stride(w, n);
    for (int t0 = 0; t0 < n; t0 += MATMUL_TOKENS) {
        int tn = min_int(MATMUL_TOKENS, n - t0);
        const void *group = (const char *)in + (size_t)t0 * stride;
        float *yt = y + (size_t)t0 * w->rows;
#if defined(USE_VNNI)
        if (w->packed) {
            packed_blocks(yt, w, group_input(group, w, 0, tn), tn, r0 / Q4_ROWS,
                          (r0 + nr + Q4_ROWS - 1) / Q4_ROWS);
            continue;
        }
#endif
#if defined(USE_AVX2_Q8)
        rows_avx2(yt, w, group_input(group, w, 0, tn), tn, r0, nr);
#else
        product_ref(yt, w, NULL, group, tn, r0, nr); /* it reads only the prepared input */
#endif
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The table row */

static size_t file_bytes(size_t rows, size_t cols, int group_size) {
    return group_size == QK ? rows * ((cols + QK - 1) / QK) * BLOCK_BYTES : 0;
}

static void bind(Tensor *t, const void *base) { t->data = base; }

/* Rows per unit of work: a packed block of 16; on the stored layout 4, where f32 and bf16 take
 * 1. Each unit costs a call of product and a walk over the token groups, and a row of Q4_0 is
 * little work (a few instructions per 32 weights): with the cost shared by 4 rows, the AVX2
 * path runs faster than with 1 (BENCHMARKS.md, "Tried and left out"). */
static int unit_rows(const Tensor *w) {
#if defined(USE_VNNI)
    if (w->packed) return Q4_ROWS;
#endif
    return 4;
}

static void dequantize_row(float *out, const Tensor *w, int row) {
    for (int j = 0; j < w->cols; j++) {
        const uint8_t *b = block_at(w, row, j / QK);
        int i = j % QK, nibble = i < 16 ? b[2 + i] & 15 : b[2 + i - 16] >> 4;
        out[j] = (float)(nibble - 8) * half_to_f32(block_scale(b));
    }
}

const WeightType weight_q4_0 = {
    .name = "q4_0", .file_bytes = file_bytes, .bind = bind,
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
