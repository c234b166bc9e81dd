/*
 * matmul.c - the products of every weight type, shared out among the threads.
 *
 * Each product is cut into units of a few rows (the tile height of its weight type) by up to
 * MATMUL_TOKENS tokens, and the threads share out the units of all the products of one call
 * (share.h: each its own contiguous share, stealing when it runs out).
 * The arithmetic is the weight type's own (matmul_<type>.c); this file only prepares the
 * input once and decides who computes which rows for which tokens. A (row, token) output is
 * computed the same way whichever unit holds it, so neither the number of threads nor the
 * size of a chunk changes a bit of it.
 */
#include <stdio.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "matmul.h"
#include "share.h"
#include "simd.h"

static const WeightType *const types[WEIGHT_TYPES] = {
    [WEIGHT_F32] = &weight_f32, [WEIGHT_BF16] = &weight_bf16, [WEIGHT_Q8_0] = &weight_q8_0,
    [WEIGHT_Q4_0] = &weight_q4_0,
};

const WeightType *weight_type(int type) {
    return type >= 0 && type < WEIGHT_TYPES ? types[type] : NULL;
}

size_t matmul_scratch_bytes(const Tensor *w, int n) {
    return (size_t)n * weight_type(w->type)->input_stride(w, n);
}

/* Whether two matrices read their input the same way, so one preparation serves both. */
static int same_input(const Tensor *a, const Tensor *b) {
    return a->type == b->type && a->group_size == b->group_size && a->cols == b->cols &&
           !a->packed == !b->packed;
}

static int token_groups(int n) { return (n + MATMUL_TOKENS - 1) / MATMUL_TOKENS; }

/* The units of work w's rows make, `per` rows each (the last may be short). */
static int row_units(const Tensor *w, int per) { return (w->rows + per - 1) / per; }

/* The work of matmul_many, done by thread `me` of the team that calls it (or by the calling
 * thread alone, me = 0 of 1 share): the units are dealt into nshares shares (share.h), one
 * per thread. Units run row-block-major, so a thread's units of one row block follow each
 * other and its weights stay in the cache while the token groups pass. */
static void matmul_team(const Product *p, int count, int per, const float *x, int n,
                        void *scratch, Share *shares, int nshares, int me) {
    const Tensor *w = p[0].w;
    const WeightType *type = weight_type(w->type);
    size_t stride = type->input_stride(w, n);
    int groups = token_groups(n);
    if (stride) { /* x is prepared once for all the products, its token groups shared out */
        #pragma omp for schedule(static)
        for (int g = 0; g < groups; g++) type->prepare(scratch, x, n, g * MATMUL_TOKENS, w);
    }
    /* threads past SHARES_MAX take no units; a team smaller than nshares (OMP_DYNAMIC) leaves
     * shares without owners, which the others steal */
    if (me >= nshares) return;
    int u, end;
    while ((u = share_take(shares, nshares, me, &end)) >= 0)
        for (; u < end; u++) {
            int i = 0, first = u / groups; /* row unit `first` of product i */
            while (first >= row_units(p[i].w, per)) first -= row_units(p[i].w, per), i++;
            int r0 = first * per, t0 = u % groups * MATMUL_TOKENS;
            const void *in = stride ? (const char *)scratch + t0 * stride : NULL;
            type->product(p[i].y + (size_t)t0 * p[i].w->rows, p[i].w, x + (size_t)t0 * w->cols,
                          in, min_int(MATMUL_TOKENS, n - t0), r0,
                          min_int(per, p[i].w->rows - r0));
        }
}

void matmul_many(const Product *p, int count, const float *x, int n, void *scratch) {
    for (int i = 1; i < count; i++)
        if (!same_input(p[0].w, p[i].w)) { /* mixed types: one product at a time */
            for (int k = 0; k < count; k++) matmul_many(p + k, 1, x, n, scratch);
            return;
        }
    int per = weight_type(p[0].w->type)->unit_rows(p[0].w), units = 0;
    long work = 0;
    for (int i = 0; i < count; i++) {
        units += row_units(p[i].w, per);
        work += (long)n * p[i].w->rows * p[i].w->cols;
    }
    int total = units * token_groups(n), nshares = 1;
    Share shares[SHARES_MAX];
    /* A branch rather than `parallel if`: that still enters the OpenMP runtime, which cost a
     * tenth of stories260K's decode time, where no product is large enough to share. */
    if (work >= PARALLEL_MIN_WORK) {
#ifdef _OPENMP
        nshares = min_int(omp_get_max_threads(), SHARES_MAX);
#endif
        share_init(shares, nshares, total);
        #pragma omp parallel
        {
            int me = 0;
#ifdef _OPENMP
            me = omp_get_thread_num();
#endif
            matmul_team(p, count, per, x, n, scratch, shares, nshares, me);
        }
    } else {
        share_init(shares, 1, total);
        matmul_team(p, count, per, x, n, scratch, shares, 1, 0);
    }
}

void matmul(float *y, const Tensor *w, const float *x, int n, void *scratch) {
    Product p = {y, w};
    matmul_many(&p, 1, x, n, scratch);
}

void matmul_ref(float *y, const Tensor *w, const float *x, int n, void *scratch) {
    const WeightType *type = weight_type(w->type);
    if (type->prepare_ref)
        for (int g = 0; g < token_groups(n); g++)
            type->prepare_ref(scratch, x, n, g * MATMUL_TOKENS, w);
    type->product_ref(y, w, x, type->prepare_ref ? scratch : NULL, n, 0, w->rows);
}

const char *matmul_isa(void) {
    static char line[128];
    if (!line[0]) {
        int at = 0;
        for (int i = 0; i < WEIGHT_TYPES; i++)
            at += snprintf(line + at, sizeof line - at, "%s%s:%s", i ? " " : "", types[i]->name,
                           types[i]->isa);
    }
    return line;
}
