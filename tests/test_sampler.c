/*
 * test_sampler.c - the sampler's filters on hand-made distributions, and proof that the
 * llama2.c paths still draw the same tokens.
 *
 * Prints one line per check and ends with `sampler: N failed`; exits 1 if any check failed.
 * Run by tests/test_sampler.py (make test).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h>

#include "kernels.h"
#include "sampler.h"

static int failed = 0;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failed++;
}

/* Runs sampler_filter on probs (n) with the given settings and compares the survivors, in
 * order, with want (n_want ids). */
static void check_kept(const char *what, const float *probs, int n, int top_k, float min_p,
                       float topp, const int *want, int n_want) {
    Sampler s;
    SamplerSettings set = {.temperature = 1.0f, .topp = topp, .top_k = top_k, .min_p = min_p,
                           .seed = 1};
    if (sampler_init(&s, n, set) != 0) {
        check(0, "sampler_init");
        return;
    }
    int got = sampler_filter(&s, probs);
    int ok = got == n_want;
    for (int i = 0; ok && i < n_want; i++) ok = s.probindex[i].index == want[i];
    if (!ok) {
        printf("     kept:");
        for (int i = 0; i < got; i++) printf(" %d", s.probindex[i].index);
        printf("\n     want:");
        for (int i = 0; i < n_want; i++) printf(" %d", want[i]);
        printf("\n");
    }
    check(ok, what);
    sampler_free(&s);
}

/* ------------------------------------------------------------------------------------------ */
/* The kept set on a hand-made distribution */

static void test_filters(void) {
    /* ids ranked by probability: 1 (0.4), 3 (0.3), 4 (0.15), 2 (0.1), 0 (0.05) */
    const float p[5] = {0.05f, 0.4f, 0.1f, 0.3f, 0.15f};

    check_kept("no filter keeps everything, most likely first", p, 5, 0, 0.0f, 0.0f,
               (int[]){1, 3, 4, 2, 0}, 5);
    check_kept("top-k 3", p, 5, 3, 0.0f, 0.0f, (int[]){1, 3, 4}, 3);
    check_kept("top-k 1 is greedy", p, 5, 1, 0.0f, 0.0f, (int[]){1}, 1);
    check_kept("top-k larger than the vocabulary keeps all", p, 5, 99, 0.0f, 0.0f,
               (int[]){1, 3, 4, 2, 0}, 5);
    /* min-p 0.3: the bar is 0.3 * 0.4 = 0.12, so 0.15 stays and 0.1 goes */
    check_kept("min-p 0.3", p, 5, 0, 0.3f, 0.0f, (int[]){1, 3, 4}, 3);
    /* min-p 0.5: bar 0.2 */
    check_kept("min-p 0.5", p, 5, 0, 0.5f, 0.0f, (int[]){1, 3}, 2);
    check_kept("min-p 1 keeps only the top", p, 5, 0, 1.0f, 0.0f, (int[]){1}, 1);
    check_kept("top-k 2 and min-p 0.3 together", p, 5, 2, 0.3f, 0.0f, (int[]){1, 3}, 2);
    /* top-p 0.75 alone: 0.4, 0.7, 0.85 passes 0.75 at the third token */
    check_kept("top-p 0.75", p, 5, 0, 0.0f, 0.75f, (int[]){1, 3, 4}, 3);
    /* top-k 3 then top-p 0.8: the survivors hold 0.85; renormalised 0.47, 0.82 passes 0.8 at
     * the second token. Measured on the raw probabilities (0.4, 0.7, 0.85) it would keep
     * three, so this pins down the renormalisation. */
    check_kept("top-k 3 then top-p 0.8 on the renormalised survivors", p, 5, 3, 0.0f, 0.8f,
               (int[]){1, 3}, 2);
    /* min-p 0.3 then top-p 0.5: survivors 0.4, 0.3, 0.15 (0.85); 0.4 / 0.85 = 0.47 < 0.5 */
    check_kept("min-p then top-p", p, 5, 0, 0.3f, 0.5f, (int[]){1, 3}, 2);

    const float flat[5] = {0.2f, 0.2f, 0.2f, 0.2f, 0.2f};
    check_kept("ties at the top-k boundary go to the lower ids", flat, 5, 2, 0.0f, 0.0f,
               (int[]){0, 1}, 2);
    check_kept("min-p on a flat distribution keeps all", flat, 5, 0, 0.9f, 0.0f,
               (int[]){0, 1, 2, 3, 4}, 5);

    /* a larger vocabulary, so the heap is exercised beyond a handful of entries: prob of id i
     * rises with (i * 37) % 101, so the top 5 are the ids with the largest such values */
    enum { N = 101 };
    float big[N], sum = 0.0f;
    for (int i = 0; i < N; i++) sum += big[i] = (float)((i * 37) % 101 + 1);
    for (int i = 0; i < N; i++) big[i] /= sum;
    int want[5], n_want = 0;
    for (int v = 100; v > 95; v--)
        for (int i = 0; i < N; i++)
            if ((i * 37) % 101 == v) want[n_want++] = i;
    check_kept("top-k 5 of 101", big, N, 5, 0.0f, 0.0f, want, 5);
}

/* Draws many times with top-k 2 on logits whose softmax is known: only the two best may come
 * out, in proportion to their renormalised probabilities. */
static void test_draws(void) {
    Sampler s;
    if (sampler_init(&s, 4, (SamplerSettings){.temperature = 1.0f, .top_k = 2, .seed = 99}) != 0) {
        check(0, "sampler_init");
        return;
    }
    int counts[4] = {0};
    const int draws = 20000;
    for (int i = 0; i < draws; i++) {
        /* probabilities 0.1, 0.6, 0.2, 0.1: the kept pair is ids 1 and 2 at 3:1 */
        float logits[4] = {logf(0.1f), logf(0.6f), logf(0.2f), logf(0.1f)};
        counts[sampler_sample(&s, logits)]++;
    }
    check(counts[0] == 0 && counts[3] == 0, "top-k 2 never draws a token outside the top 2");
    double share = (double)counts[1] / draws;
    check(fabs(share - 0.75) < 0.02, "top-k 2 draws the best token 3 times out of 4");
    sampler_free(&s);
}

/* ------------------------------------------------------------------------------------------ */
/* llama2.c's paths are untouched: these checksums of 2000 draws were recorded from the
 * sampler before top-k and min-p existed. */

static uint32_t lcg(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

static void test_llama2c_draws(void) {
    const float temps[4] = {1.0f, 0.8f, 1.3f, 1.0f};
    const float topps[4] = {0.9f, 0.0f, 0.5f, 1.0f};
    const unsigned long long want[4] = {775247479728223290ull, 10611904914033672758ull,
                                        17475862196390799603ull, 13522132864743527065ull};
    enum { V = 512 };
    float logits[V];
    for (int c = 0; c < 4; c++) {
        Sampler s;
        SamplerSettings set = {.temperature = temps[c], .topp = topps[c], .seed = 42 + c};
        if (sampler_init(&s, V, set) != 0) {
            check(0, "sampler_init");
            return;
        }
        uint32_t state = 1234 + c;
        unsigned long long sum = 0;
        for (int i = 0; i < 2000; i++) {
            /* uniform logits in [-4, 4) with one token lifted by 6 */
            for (int j = 0; j < V; j++) logits[j] = (lcg(&state) % 8000) / 1000.0f - 4.0f;
            logits[lcg(&state) % V] += 6.0f;
            sum = sum * 1000003ull + (unsigned)sampler_sample(&s, logits);
        }
        char what[96];
        snprintf(what, sizeof what, "llama2.c draws unchanged (t %.1f, p %.1f)", temps[c],
                 topps[c]);
        check(sum == want[c], what);
        sampler_free(&s);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Greedy decoding: the first index of the largest logit, as argmax_f32_ref's loop finds it */

static void test_greedy(void) {
    static const int sizes[] = {1, 2, 15, 16, 17, 33, 100, 32000};
    static float x[32000];
    uint32_t state = 99;
    int ok = 1;
    for (int a = 0; a < (int)(sizeof sizes / sizeof *sizes); a++)
        for (int trial = 0; trial < 60; trial++) {
            int n = sizes[a];
            for (int j = 0; j < n; j++) /* few distinct values: many ties */
                x[j] = trial % 3 == 0 ? (float)j : (float)(lcg(&state) % 7);
            if (trial % 4 == 1) x[lcg(&state) % n] = NAN;
            if (trial % 10 == 2) x[0] = NAN;
            Sampler s;
            if (sampler_init(&s, n, (SamplerSettings){.topp = 0.9f, .seed = 1}) != 0) {
                check(0, "sampler_init");
                return;
            }
            int want = argmax_f32_ref(x, n), got = sampler_sample(&s, x);
            if (got != want) printf("     n %d trial %d: got %d, want %d\n", n, trial, got, want);
            ok &= got == want;
            sampler_free(&s);
        }
    check(ok, "greedy: the first of the largest logits, NaN skipped, any length");
}

/* ------------------------------------------------------------------------------------------ */
/* Top-p with many equal probabilities: the candidates must be ranked as llama2.c's stable
 * qsort ranks them (more likely first, then the lower id). The oracle: llama2.c's steps with
 * that order spelled out in the comparison, and llama2.c's random numbers. */

static uint64_t oracle_rng;
static float oracle_coin(void) {
    oracle_rng ^= oracle_rng >> 12;
    oracle_rng ^= oracle_rng << 25;
    oracle_rng ^= oracle_rng >> 27;
    return ((uint32_t)((oracle_rng * 0x2545F4914F6CDD1Dull) >> 32) >> 8) / 16777216.0f;
}

static int by_prob_then_id(const void *a, const void *b) {
    const ProbIndex *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int oracle_topp(float *logits, int n, float topp, ProbIndex *cand) {
    softmax(logits, n);
    float coin = oracle_coin(), cutoff = (1.0f - topp) / (n - 1);
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] >= cutoff) cand[kept++] = (ProbIndex){logits[i], i};
    qsort(cand, kept, sizeof *cand, by_prob_then_id);
    float cumulative = 0.0f;
    int last = kept - 1;
    for (int i = 0; i < kept; i++) {
        cumulative += cand[i].prob;
        if (cumulative > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative, cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += cand[i].prob;
        if (r < cdf) return cand[i].index;
    }
    return cand[last].index;
}

static void test_topp_ties(void) {
    enum { V = 9000 }; /* past 8192: the sampler's softmax shares its expf between threads */
    static float logits[V], copy[V];
    static ProbIndex cand[V];
    Sampler s;
    if (sampler_init(&s, V, (SamplerSettings){.temperature = 1.0f, .topp = 0.9f, .seed = 7}) != 0) {
        check(0, "sampler_init");
        return;
    }
    oracle_rng = 7;
    uint32_t state = 5;
    int same = 1;
    for (int i = 0; i < 600; i++) {
        for (int j = 0; j < V; j++) /* half the draws 4 values only, half all different */
            logits[j] = i % 2 ? (float)(lcg(&state) % 4) * 0.5f : (lcg(&state) % 100000) * 1e-4f;
        memcpy(copy, logits, sizeof logits);
        same &= sampler_sample(&s, logits) == oracle_topp(copy, V, 0.9f, cand);
    }
    check(same, "top-p draws as llama2.c's steps do, equal probabilities too (600 draws)");
    sampler_free(&s);
}

int main(void) {
    test_topp_ties();
    test_greedy();
    test_filters();
    test_draws();
    test_llama2c_draws();
    printf("sampler: %d failed\n", failed);
    return failed ? 1 : 0;
}
