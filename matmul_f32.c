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
 *   A unit of work is one superblock for all the tokens of a chunk (F32_UNIT_TOKENS), whose
 *   tiles run block by block of F32_BLOCK_COLS columns, every tile through a block before the
 *   next block; a tile's accumulators wait in a small buffer between blocks, stored and
 *   reloaded as floats, so each output is still the one chain of the reference. While the
 *   tiles run through a block, they prefetch the next one (which lies right after it, the
 *   next superblock's first block after a superblock's last), a cache line every few columns.
 * Measured in the research for this layout (BENCHMARKS.md): 94-95% of the FMA peak for the
 * prompt tile, where row-major tiles of any shape stayed near 63%, and decoding at the
 * machine's read bandwidth. Without the prefetch, a superblock's first tile waited for its
 * weights to come from memory and took 2.5 times as long as the seven others, a fifth of the
 * product's time on a core that does two 512-bit FMAs a cycle (BENCHMARKS.md, "Prompts:
 * weights from memory").
 */
#include <math.h>
#include <string.h>

#include "matmul.h"
#include "simd.h"

#define F32_SB 32 /* rows per superblock */
#define F32_UNIT_TOKENS 64 /* tokens of a unit of work: model.c's whole prompt chunk */

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
/* Columns per block: the block's weights (32 KB) and the chunk's inputs for it (64 KB) stay in
 * L2 beside the next block's weights coming in, even for w2's 2048 columns (BENCHMARKS.md) */
#define F32_BLOCK_COLS 256
#define LINE_FLOATS 16      /* floats per cache line */
/* Columns per prefetched line: the tiles of a whole unit together prefetch 2 lines a column,
 * the next block's size */
#define PREFETCH_EVERY (F32_UNIT_TOKENS / TILE_T / 2)
_Static_assert(F32_BLOCK_COLS * F32_SB * sizeof(float) <= MATMUL_PREFETCH_BYTES,
               "the last block's prefetches reach a block past the matrix");

static size_t packed_size(const Tensor *w) {
    return (size_t)(w->rows + F32_SB - 1) / F32_SB * F32_SB * w->cols * sizeof(float);
}

/* Superblock b: its F32_SB rows interleaved, a padding row as zero weights. */
static void pack_block(const Tensor *t, void *mem, int b) {
    int rows = t->rows, cols = t->cols;
    const float *w = t->data;
    float *out = (float *)mem + (size_t)b * cols * F32_SB;
    for (int i = 0; i < F32_SB; i++) {
        int r = b * F32_SB + i;
        if (r >= rows) {
            for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = 0.0f;
            continue;
        }
        for (int j = 0; j < cols; j++) out[(size_t)j * F32_SB + i] = w[(size_t)r * cols + j];
    }
}

/* a superblock at a time, on all threads: this is most of an f32 model's load */
static void pack(Tensor *t, void *mem) {
    pack_blocks(t, mem, (t->rows + F32_SB - 1) / F32_SB, pack_block);
    t->packed = mem;
}

/* A prompt chunk's input takes cols floats per token (64-aligned); decoding reads x. */
static size_t chunk_stride(const Tensor *w) { return round64((size_t)w->cols * sizeof(float)); }

static size_t input_stride(const Tensor *w, int n) {
    return w->packed && n > 1 ? chunk_stride(w) : 0;
}

#if defined(USE_AVX512) && MATMUL_TOKENS == 8
/* xp[j * 8 + t] = r[t][j] for j = 0 .. 15: 16 columns of 8 rows, transposed in registers.
 * Pairs of rows interleave into pairs, pairs of pairs into the four tokens of a column per
 * 128-bit lane (b[m]: column 4 lane + m, tokens 0-3; b[4 + m]: tokens 4-7), and the lanes
 * are then gathered two columns to a vector. */
static void transpose_8x16(float *xp, const float *const r[8], int j) {
    __m512 a[8], b[8];
    for (int i = 0; i < 4; i++) {
        __m512 lo = _mm512_loadu_ps(r[2 * i] + j), hi = _mm512_loadu_ps(r[2 * i + 1] + j);
        a[2 * i] = _mm512_unpacklo_ps(lo, hi);     /* r0[4L] r1[4L] r0[4L+1] r1[4L+1] */
        a[2 * i + 1] = _mm512_unpackhi_ps(lo, hi); /* the same for 4L+2, 4L+3 */
    }
    for (int h = 0; h < 2; h++) { /* tokens 0-3, then 4-7 */
        __m512d p = _mm512_castps_pd(a[4 * h]), q = _mm512_castps_pd(a[4 * h + 2]);
        __m512d u = _mm512_castps_pd(a[4 * h + 1]), v = _mm512_castps_pd(a[4 * h + 3]);
        b[4 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(p, q));
        b[4 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p, q));
        b[4 * h + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(u, v));
        b[4 * h + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(u, v));
    }
    for (int m = 0; m < 4; m += 2) { /* columns 4L + m and 4L + m + 1 of each lane L */
        __m512 d01 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x44);
        __m512 e01 = _mm512_shuffle_f32x4(b[m + 1], b[5 + m], 0x44);
        __m512 d23 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xEE);
        __m512 e23 = _mm512_shuffle_f32x4(b[m + 1], b[5 + m], 0xEE);
        float *o = xp + (size_t)(j + m) * 8;
        _mm512_storeu_ps(o, _mm512_shuffle_f32x4(d01, e01, 0x88));       /* lane 0 */
        _mm512_storeu_ps(o + 32, _mm512_shuffle_f32x4(d01, e01, 0xDD));  /* lane 1 */
        _mm512_storeu_ps(o + 64, _mm512_shuffle_f32x4(d23, e23, 0x88));  /* lane 2 */
        _mm512_storeu_ps(o + 96, _mm512_shuffle_f32x4(d23, e23, 0xDD));  /* lane 3 */
    }
}
#endif

/* Tokens t0 .. t0 + tn - 1 column by column: xp[j * tn + t]. */
static void prepare(void *in, const float *x, int n, int t0, const Tensor *w) {
    int cols = w->cols, tn = min_int(MATMUL_TOKENS, n - t0), j0 = 0;
    float *xp = (float *)((char *)in + (size_t)t0 * chunk_stride(w));
#if defined(USE_AVX512) && MATMUL_TOKENS == 8
    /* a whole group 16 columns at a time: the loop below does a store per value, which took
     * 5% of a 110M prompt */
    if (tn == 8) {
        const float *r[8];
        for (int t = 0; t < 8; t++) r[t] = x + (size_t)(t0 + t) * cols;
        for (; j0 + 16 <= cols; j0 += 16) transpose_8x16(xp, r, j0);
    }
#endif
    for (int t = 0; t < tn; t++) {
        const float *xt = x + (size_t)(t0 + t) * cols;
        for (int j = j0; j < cols; j++) xp[(size_t)j * tn + t] = xt[j];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The tile: `cols` columns of one superblock from wb, by T tokens whose inputs are
 * xp[j * xs + t]. Its accumulators start from zero, or from the partial sums at `from`
 * (from[t * F32_SB + r]), and end in out[t * out_stride + r] for the first `left` rows (the
 * rest are padding). Unless `ahead` is NULL, it meanwhile prefetches the cache lines from
 * `ahead` on, one every PREFETCH_EVERY columns. T is a compile-time constant at every call,
 * so the accumulators live in registers. */
static ALWAYS_INLINE void tile(float *out, size_t out_stride, int left, const float *from,
                               const float *wb, const float *xp, int xs, int T, int cols,
                               const float *ahead) {
    VecF acc[SB_VECS][TILE_T];
    for (int q = 0; q < SB_VECS; q++)
        for (int t = 0; t < T; t++)
            acc[q][t] = from ? vec_load(from + t * F32_SB + q * VEC_LANES) : vec_zero();
    for (int j = 0; j < cols; j++, xp += xs, wb += F32_SB) {
        if (ahead && j % PREFETCH_EVERY == 0)
            _mm_prefetch((const char *)(ahead + j / PREFETCH_EVERY * LINE_FLOATS), _MM_HINT_T0);
        VecF wv[SB_VECS];
        for (int q = 0; q < SB_VECS; q++) wv[q] = vec_load(wb + q * VEC_LANES);
        for (int t = 0; t < T; t++) {
            VecF xb = vec_set1(xp[t]);
            for (int q = 0; q < SB_VECS; q++) acc[q][t] = vec_fma(wv[q], xb, acc[q][t]);
        }
    }
    for (int t = 0; t < T; t++)
        for (int q = 0; q < SB_VECS; q++)
            vec_store_first(out + t * out_stride + q * VEC_LANES, acc[q][t],
                            left - q * VEC_LANES);
}

/* Superblocks b0 .. b1 - 1 for one token (decoding): each one stream of weights, which the
 * hardware's prefetcher follows. */
static void superblocks_token(float *y, const float *packed, const float *x, int rows,
                              int cols, int b0, int b1) {
    for (int b = b0; b < b1; b++)
        tile(y + b * F32_SB, rows, rows - b * F32_SB, NULL, packed + (size_t)b * cols * F32_SB,
             x, 1, 1, cols, NULL);
}

/* tile() for T tokens chosen at run time (1 .. TILE_T), each T a constant inside. */
static void tile_tokens(float *out, size_t out_stride, int left, const float *from,
                        const float *wb, const float *xp, int xs, int T, int cols,
                        const float *ahead) {
    switch (T) {
#if TILE_T >= 8
    case 8: tile(out, out_stride, left, from, wb, xp, xs, 8, cols, ahead); break;
    case 7: tile(out, out_stride, left, from, wb, xp, xs, 7, cols, ahead); break;
    case 6: tile(out, out_stride, left, from, wb, xp, xs, 6, cols, ahead); break;
    case 5: tile(out, out_stride, left, from, wb, xp, xs, 5, cols, ahead); break;
    case 4: tile(out, out_stride, left, from, wb, xp, xs, 4, cols, ahead); break;
    case 3: tile(out, out_stride, left, from, wb, xp, xs, 3, cols, ahead); break;
#endif
    case 2: tile(out, out_stride, left, from, wb, xp, xs, 2, cols, ahead); break;
    default: tile(out, out_stride, left, from, wb, xp, xs, 1, cols, ahead); break;
    }
}

/* One superblock (wb; its outputs from y on, `left` real rows) for n <= F32_UNIT_TOKENS tokens
 * of a chunk, whose prepared inputs lie from `in` on, `stride` floats a token, in groups of
 * MATMUL_TOKENS. Block by block, each block through every tile of tokens; between blocks a
 * tile's sums wait in `part`. */
static void superblock_chunk(float *y, const float *wb, const float *in, size_t stride, int n,
                             int rows, int cols, int left) {
    _Alignas(64) float part[F32_UNIT_TOKENS * F32_SB];
    for (int j0 = 0; j0 < cols; j0 += F32_BLOCK_COLS) {
        int kc = min_int(F32_BLOCK_COLS, cols - j0);
        const float *block = wb + (size_t)j0 * F32_SB;
        /* what follows the block in memory (the next block, or the next superblock's first, or
         * the next matrix's), as many lines as the block has, 2 a column; each tile prefetches
         * its share, so that a whole unit's tiles prefetch all of them */
        int share = (kc + PREFETCH_EVERY - 1) / PREFETCH_EVERY;
        const float *next = block + (size_t)kc * F32_SB;
        for (int t = 0; t < n; t += TILE_T) {
            int g = t / MATMUL_TOKENS * MATMUL_TOKENS, tn = min_int(MATMUL_TOKENS, n - g);
            const float *xp = in + (size_t)g * stride + (size_t)j0 * tn + (t - g);
            const float *ahead = next + (size_t)(t / TILE_T) * share * LINE_FLOATS;
            float *p = part + (size_t)t * F32_SB;
            int T = min_int(TILE_T, n - t);
            if (j0 + kc == cols) /* the last block: the outputs */
                tile_tokens(y + (size_t)t * rows, rows, left, j0 ? p : NULL, block, xp, tn, T,
                            kc, ahead);
            else
                tile_tokens(p, F32_SB, F32_SB, j0 ? p : NULL, block, xp, tn, T, kc, ahead);
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
    const float *packed = w->packed;
    if (!in) { /* decoding: x itself is a token's input */
        for (int t = 0; t < n; t++)
            superblocks_token(y + (size_t)t * rows, packed, x + (size_t)t * cols, rows, cols, b0,
                              b1);
        return;
    }
    size_t stride = chunk_stride(w) / sizeof(float);
    for (int t0 = 0; t0 < n; t0 += F32_UNIT_TOKENS)
        for (int b = b0; b < b1; b++)
            superblock_chunk(y + (size_t)t0 * rows + b * F32_SB,
                             packed + (size_t)b * cols * F32_SB, (const float *)in + t0 * stride,
                             stride, min_int(F32_UNIT_TOKENS, n - t0), rows, cols,
                             rows - b * F32_SB);
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
    .packed_size = packed_size, .pack = pack, .unit_rows = unit_rows,
    .unit_tokens = F32_UNIT_TOKENS,
    .product = product, .product_ref = product_ref, .own_input = 1,
#if defined(USE_AVX512)
    .isa = "avx512",
#elif defined(USE_AVX2)
    .isa = "avx2",
#else
    .isa = "plain",
#endif
};
