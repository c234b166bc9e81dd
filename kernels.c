/*
 * kernels.c - the elementwise steps of the forward pass: RMSNorm, the SwiGLU gate, the
 * residual adds, the argmax of greedy decoding, and the plain softmax of the reference
 * attention. (The matrix products live in matmul*.c, attention in attention.c.)
 *
 * The plain C versions (*_ref) are the definition; the fast paths must give the same numbers
 * up to float rounding, and tests/test_kernels.c checks that they do on awkward sizes.
 */
#include <math.h>

#include "kernels.h"
#include "simd.h"
#include "team.h"

/* The steps below run on all threads (team.h) when a prompt chunk gives them this many
 * values: below, handing the work over costs more than it saves (stories260K's chunks stay on
 * one thread, and so does every decoded token). */
#define PARALLEL_MIN_ELEMENTS (1 << 14)

/* The threads for a step of `values` values. */
static int threads_for(long values) { return values >= PARALLEL_MIN_ELEMENTS ? team_size() : 1; }

/* Elementwise steps are cut into blocks of this many values to share them out; each value
 * gets the same arithmetic in any block, so the split changes no number. */
#define BLOCK 1024

/* ------------------------------------------------------------------------------------------ */
/* Normalisation, the residual connection and softmax */

static void rmsnorm_row(float *out, const float *x, const float *weight, int dim, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    float scale = 1.0f / sqrtf(ss / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = weight[i] * (scale * x[i]);
}

typedef struct {
    float *out;
    const float *x, *weight;
    int n, dim;
    float eps;
} Norm;

static void rmsnorm_rows(void *norm, int from, int to) {
    const Norm *a = norm;
    for (int t = from; t < to; t++)
        rmsnorm_row(a->out + (size_t)t * a->dim, a->x + (size_t)t * a->dim, a->weight, a->dim,
                    a->eps);
}

void rmsnorm(float *out, const float *x, const float *weight, int n, int dim, float eps) {
    Norm a = {out, x, weight, n, dim, eps};
    team_for(threads_for((long)n * dim), n, rmsnorm_rows, &a);
}

void add_bias(float *x, const float *bias, int n, int dim) {
    for (int t = 0; t < n; t++)
        for (int i = 0; i < dim; i++) x[(size_t)t * dim + i] += bias[i];
}

/* The elementwise steps of a chunk, shared out in blocks of BLOCK values. */
typedef struct {
    float *out;
    const float *a, *b;
    int n;
} Elementwise;

static int blocks_of(int n) { return (n + BLOCK - 1) / BLOCK; }

static void add_blocks(void *args, int from, int to) {
    const Elementwise *e = args;
    for (int i = from * BLOCK; i < to * BLOCK && i < e->n; i++) e->out[i] += e->a[i];
}

void add(float *x, const float *y, int n) {
    Elementwise e = {x, y, NULL, n};
    team_for(threads_for(n), blocks_of(n), add_blocks, &e);
}

void softmax(float *x, int n) {
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

static void swiglu_block(float *out, const float *gate, const float *up, int n) {
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

static void swiglu_blocks(void *args, int from, int to) {
    const Elementwise *e = args;
    for (int i = from * BLOCK; i < to * BLOCK && i < e->n; i += BLOCK)
        swiglu_block(e->out + i, e->a + i, e->b + i, min_int(BLOCK, e->n - i));
}

void swiglu(float *out, const float *gate, const float *up, int n) {
    Elementwise e = {out, gate, up, n};
    team_for(threads_for(n), blocks_of(n), swiglu_blocks, &e);
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
