/*
 * matmul.c - the products of every weight type, shared out among the threads.
 *
 * Each product is cut into units of a few rows (the tile height of its weight type) by a few
 * groups of MATMUL_TOKENS tokens, and the threads (team.h) share out the units of all the
 * products of one call (share.h: each its own contiguous share, stealing when it runs out).
 * The arithmetic is the weight type's own (matmul_<type>.c); this file only prepares the
 * input (once, or for f32 prompts once per thread: matmul_many says why) and decides who
 * computes which rows for which tokens. A (row, token) output is computed the same way
 * whichever unit holds it, so neither the number of threads nor the size of a chunk changes
 * a bit of it.
 */
#include <stdio.h>

#include "matmul.h"
#include "share.h"
#include "simd.h"
#include "team.h"

static const WeightType *const types[WEIGHT_TYPES] = {
    [WEIGHT_F32] = &weight_f32, [WEIGHT_BF16] = &weight_bf16, [WEIGHT_Q8_0] = &weight_q8_0,
    [WEIGHT_Q4_0] = &weight_q4_0,
};

const WeightType *weight_type(int type) {
    return type >= 0 && type < WEIGHT_TYPES ? types[type] : NULL;
}

size_t matmul_scratch_bytes(const Tensor *w, int n) {
    const WeightType *type = weight_type(w->type);
    return (size_t)n * type->input_stride(w, n) * (n > 1 && type->own_input ? team_size() : 1);
}

/* Whether two matrices read their input the same way, so one preparation serves both. */
static int same_input(const Tensor *a, const Tensor *b) {
    return a->type == b->type && a->group_size == b->group_size && a->cols == b->cols &&
           !a->packed == !b->packed;
}

static int token_groups(int n) { return (n + MATMUL_TOKENS - 1) / MATMUL_TOKENS; }

/* The units of work w's rows make, `per` rows each (the last may be short). */
static int row_units(const Tensor *w, int per) { return (w->rows + per - 1) / per; }

/* Fewer units than this for each thread, and the one that finishes last has kept the others
 * waiting a noticeable part of the call: a small model's short matrices then take fewer
 * tokens a unit. */
#define UNITS_PER_THREAD 8

/* Tokens per unit for n tokens through `row_units` units of rows on `threads` threads: the
 * weight type's unit_tokens, halved (down to a group) while the units would be too few. */
static int tokens_per_unit(int unit_tokens, int row_units, int n, int threads) {
    int per = unit_tokens;
    while (per > MATMUL_TOKENS &&
           (long)row_units * ((n + per - 1) / per) < (long)UNITS_PER_THREAD * threads)
        per /= 2;
    return per;
}

/* One call of matmul_many: its products, their input and the shares of their units. */
typedef struct {
    const Product *p;
    int per, tokens, n; /* rows and tokens per unit; tokens in all */
    int token_units;    /* units of `tokens` tokens that n makes (the last may be short) */
    const float *x;
    void *scratch;  /* the prepared input, when the weight type has one */
    size_t stride;  /* its bytes per token, or 0 */
    int own_copies; /* each thread prepares its own copy of the input, n * stride bytes apart */
    Share *shares;
    int nshares;
} Call;

/* Token group g of the input, prepared into `in` (quantized, for the integer types). */
static void prepare_group(const Call *c, void *in, int g) {
    weight_type(c->p[0].w->type)->prepare(in, c->x, c->n, g * MATMUL_TOKENS, c->p[0].w);
}

/* The units of a call that thread `me` takes (share.h). Units run row-block-major, so a
 * thread's units of one row block follow each other and its weights stay in the cache while
 * the token groups pass. Threads past SHARES_MAX take none; a team smaller than nshares (the
 * team busy, or short of threads: team.h) leaves shares without owners, which the others
 * steal. */
static void take_units(const Call *c, int me) {
    if (me >= c->nshares) return;
    const WeightType *type = weight_type(c->p[0].w->type);
    const char *input = c->scratch;
    if (c->own_copies) {
        input += (size_t)me * c->n * c->stride;
        for (int g = 0; g < token_groups(c->n); g++) prepare_group(c, (void *)input, g);
    }
    int u, end;
    while ((u = share_take(c->shares, c->nshares, me, &end)) >= 0)
        for (; u < end; u++) {
            const Product *p = c->p;
            int first = u / c->token_units; /* row unit `first` of product p */
            while (first >= row_units(p->w, c->per)) first -= row_units(p->w, c->per), p++;
            int r0 = first * c->per, t0 = u % c->token_units * c->tokens;
            const void *in = c->stride ? input + t0 * c->stride : NULL;
            type->product(p->y + (size_t)t0 * p->w->rows, p->w, c->x + (size_t)t0 * p->w->cols,
                          in, min_int(c->tokens, c->n - t0), r0,
                          min_int(c->per, p->w->rows - r0));
        }
}

static void prepare_groups(void *call, int from, int to) {
    const Call *c = call;
    for (int g = from; g < to; g++) prepare_group(c, c->scratch, g);
}

static void take_units_job(void *call, int me, int n) { take_units(call, me); }

void matmul_many(const Product *p, int count, const float *x, int n, void *scratch,
                 size_t scratch_bytes) {
    for (int i = 1; i < count; i++)
        if (!same_input(p[0].w, p[i].w)) { /* mixed types: one product at a time */
            for (int k = 0; k < count; k++) matmul_many(p + k, 1, x, n, scratch, scratch_bytes);
            return;
        }
    const WeightType *type = weight_type(p[0].w->type);
    int per = type->unit_rows(p[0].w), units = 0;
    long work = 0;
    for (int i = 0; i < count; i++) {
        units += row_units(p[i].w, per);
        work += (long)n * p[i].w->rows * p[i].w->cols;
    }
    /* below PARALLEL_MIN_WORK (stories260K's products) handing the work over costs more than
     * sharing it saves */
    int threads = work >= PARALLEL_MIN_WORK ? team_size() : 1, groups = token_groups(n);
    int tokens = tokens_per_unit(type->unit_tokens, units, n, threads);
    size_t stride = type->input_stride(p[0].w, n);
    Share shares[SHARES_MAX];
    Call c = {p, per, tokens, n, (n + tokens - 1) / tokens, x, scratch, stride, 0, shares,
              min_int(threads, SHARES_MAX)};
    share_init(shares, c.nshares, units * c.token_units);
    /* A prompt's input: every thread's products read all of it, and what one core wrote reads
     * slowly on another (and is slow to write again once the other has read it), so for f32
     * each thread prepares a copy of its own, when the scratch holds one for each: 1.05x
     * (110M) and 1.09x (15M) prompts; the integer types, which would quantize twice, showed
     * no gain (BENCHMARKS.md). Otherwise the threads prepare one copy together; decoding's
     * single token, the caller alone. */
    if (stride && type->own_input && groups > 1 && threads > 1 &&
        scratch_bytes / (n * stride) >= (size_t)c.nshares)
        c.own_copies = 1;
    else if (stride && groups == 1)
        prepare_group(&c, scratch, 0);
    else if (stride)
        team_for(threads, groups, prepare_groups, &c);
    team_run(threads, take_units_job, &c);
}

typedef struct {
    const Tensor *t;
    void *mem;
    void (*block)(const Tensor *t, void *mem, int b);
} Packing;

static void pack_some(void *packing, int from, int to) {
    const Packing *k = packing;
    for (int b = from; b < to; b++) k->block(k->t, k->mem, b);
}

void pack_blocks(const Tensor *t, void *mem, int blocks,
                 void (*block)(const Tensor *t, void *mem, int b)) {
    Packing k = {t, mem, block};
    team_for((long)t->rows * t->cols >= PARALLEL_MIN_WORK ? team_size() : 1, blocks, pack_some,
             &k);
}

void matmul(float *y, const Tensor *w, const float *x, int n, void *scratch,
            size_t scratch_bytes) {
    Product p = {y, w};
    matmul_many(&p, 1, x, n, scratch, scratch_bytes);
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
