/*
 * matmul.c - the products of every weight type, shared out among the threads.
 *
 * Each product is cut into units of a few rows (the tile height of its weight type), and the
 * threads share out the units of all the products of one call. The arithmetic is the weight
 * type's own (matmul_<type>.c); this file only decides who computes which rows.
 */
#include <stdio.h>

#include "matmul.h"
#include "simd.h"

static const WeightType *const types[WEIGHT_TYPES] = {
    [WEIGHT_F32] = &weight_f32, [WEIGHT_BF16] = &weight_bf16, [WEIGHT_Q8_0] = &weight_q8_0,
};

const WeightType *weight_type(int type) {
    return type >= 0 && type < WEIGHT_TYPES ? types[type] : NULL;
}

/* Whether two matrices read their input the same way, so one quantization serves both. */
static int same_input(const Tensor *a, const Tensor *b) {
    return a->type == b->type && a->group_size == b->group_size && a->cols == b->cols &&
           !a->packed == !b->packed;
}

/* The work of matmul_many, shared out among the threads of the team that calls it (one
 * thread when called outside a parallel region). */
static void matmul_team(const Product *p, int count, int units, int per, const float *x, int n,
                        int8_t *xq, float *xq_scale) {
    const Tensor *w = p[0].w;
    const WeightType *type = weight_type(w->type);
    int cols = w->cols, groups = w->group_size ? (cols + w->group_size - 1) / w->group_size : 0;
    if (type->quantize) { /* x is quantized once for all the products, its tokens shared out */
        #pragma omp for schedule(static)
        for (int t = 0; t < n; t++)
            type->quantize(xq + (size_t)t * cols, xq_scale + (size_t)t * groups,
                           x + (size_t)t * cols, w);
    }
    #pragma omp for schedule(static)
    for (int u = 0; u < units; u++) {
        int i = 0, first = u; /* unit u is unit `first` of product i */
        while (first >= (p[i].w->rows + per - 1) / per) first -= (p[i].w->rows + per - 1) / per, i++;
        int r0 = first * per;
        type->product(p[i].y, p[i].w, x, xq, xq_scale, n, r0, min_int(per, p[i].w->rows - r0));
    }
}

void matmul_many(const Product *p, int count, const float *x, int n, int8_t *xq,
                 float *xq_scale) {
    for (int i = 1; i < count; i++)
        if (!same_input(p[0].w, p[i].w)) { /* mixed types: one product at a time */
            for (int k = 0; k < count; k++) matmul_many(p + k, 1, x, n, xq, xq_scale);
            return;
        }
    int per = weight_type(p[0].w->type)->unit_rows(p[0].w), units = 0;
    long work = 0;
    for (int i = 0; i < count; i++) {
        units += (p[i].w->rows + per - 1) / per;
        work += (long)n * p[i].w->rows * p[i].w->cols;
    }
    /* A branch rather than `parallel if`: that still enters the OpenMP runtime, which cost a
     * tenth of stories260K's decode time, where no product is large enough to share. */
    if (work >= PARALLEL_MIN_WORK) {
        #pragma omp parallel
        matmul_team(p, count, units, per, x, n, xq, xq_scale);
    } else {
        matmul_team(p, count, units, per, x, n, xq, xq_scale);
    }
}

void matmul(float *y, const Tensor *w, const float *x, int n, int8_t *xq, float *xq_scale) {
    Product p = {y, w};
    matmul_many(&p, 1, x, n, xq, xq_scale);
}

void matmul_ref(float *y, const Tensor *w, const float *x, int n, int8_t *xq, float *xq_scale) {
    const WeightType *type = weight_type(w->type);
    int groups = w->group_size ? (w->cols + w->group_size - 1) / w->group_size : 0;
    if (type->quantize)
        for (int t = 0; t < n; t++)
            quantize_q8_ref(xq + (size_t)t * w->cols, xq_scale + (size_t)t * groups,
                            x + (size_t)t * w->cols, w->cols, w->group_size);
    type->product_ref(y, w, x, xq, xq_scale, n, 0, w->rows);
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
