/*
 * sampler.c - choosing the next token from the logits.
 *
 * Greedy decoding takes the most likely token. Sampling divides the logits by a temperature
 * (below 1 sharpens the distribution, above 1 flattens it), turns them into probabilities and
 * draws one; top-p (nucleus) sampling first throws away the unlikely tail. The random numbers
 * and every step of the procedure follow llama2.c, so the same seed picks the same tokens.
 *
 * Beyond llama2.c, two more filters trim the tail before top-p: top-k keeps the k most likely
 * tokens, min-p drops every token less likely than min_p times the most likely one (so it
 * cuts deep when the model is sure and shallow when it is not). Their path is separate: when
 * neither is set, the llama2.c code below runs unchanged and draws the same tokens.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"
#include "sampler.h"
#include "team.h"

int sampler_init(Sampler *s, int vocab_size, SamplerSettings settings) {
    s->vocab_size = vocab_size;
    s->temperature = settings.temperature;
    s->topp = settings.topp;
    s->top_k = settings.top_k;
    s->min_p = settings.min_p;
    s->rng_state = settings.seed;
    s->probindex = malloc(2 * (size_t)vocab_size * sizeof *s->probindex);
    return s->probindex ? 0 : -1;
}

void sampler_free(Sampler *s) {
    free(s->probindex);
    s->probindex = NULL;
}

/* xorshift64*: a tiny generator with a good enough spread for sampling. Returns 32 bits. */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

/* A float in [0, 1) from the top 24 bits, which a float holds exactly. */
static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; }

/* x[i] = e^(x[i] - max) for i in from .. to - 1. */
typedef struct {
    float *x, max;
} Exps;

static void exps(void *e, int from, int to) {
    Exps *a = e;
    for (int i = from; i < to; i++) a->x[i] = expf(a->x[i] - a->max);
}

/* x (n) = softmax(x) with expf, as llama2.c computes it, so that the same seed draws the
 * same tokens. Each expf stands alone, so the threads share them (32000 took 0.2 ms of each
 * sampled token): decoding's team (team.h), which a token's products keep waiting. The sum
 * is taken in order afterwards, which gives llama2.c's numbers. */
static void probabilities(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    Exps e = {x, max};
    team_for(n >= 8192 ? team_size() : 1, n, exps, &e);
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += x[i];
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* Walks the cumulative distribution of probs (n) until it passes coin in [0, 1). */
static int sample_cdf(const float *probs, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += probs[i];
        if (coin < cdf) return i;
    }
    return n - 1; /* rounding left the total just under coin */
}

/* Sorts a (n) by probability, most likely first, equal ones keeping their order: what
 * llama2.c's qsort does on glibc (a stable merge sort there). Probabilities here are
 * positive floats, whose bit patterns order as the floats do, so a radix sort works on the
 * bits (they are at least top-p's cutoff, which is above 0, so neither 0 nor NaN gets
 * here): four stable passes of 8 bits, with tmp (n) to move between. Sorting with qsort and a
 * comparison callback took most of a sampled token's time when many tokens pass the top-p
 * cutoff (about 2 ms when 32000 do); this takes a tenth of that. */
static void sort_by_prob_desc(ProbIndex *a, ProbIndex *tmp, int n) {
    for (int shift = 0; shift < 32; shift += 8) {
        int start[257] = {0};
        for (int i = 0; i < n; i++) {
            union { float f; uint32_t u; } key = {a[i].prob};
            start[((~key.u >> shift) & 0xFF) + 1]++; /* ~: larger first */
        }
        for (int b = 0; b < 256; b++) start[b + 1] += start[b];
        for (int i = 0; i < n; i++) {
            union { float f; uint32_t u; } key = {a[i].prob};
            tmp[start[(~key.u >> shift) & 0xFF]++] = a[i];
        }
        ProbIndex *swap = a;
        a = tmp, tmp = swap;
    }
    /* after an even number of passes the sorted run is back in the caller's array */
}

/* Top-p: samples among the most likely tokens whose probabilities add up to just over topp.
 * Tokens below (1 - topp) / (n - 1) cannot be in that set, so they are dropped before the
 * sort, which keeps it short. */
static int sample_topp(const float *probs, int n, float topp, ProbIndex *scratch, float coin) {
    /* scratch holds 2n: the candidates, then room for the sort */
    int kept = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) {
        if (probs[i] >= cutoff) {
            scratch[kept].index = i;
            scratch[kept].prob = probs[i];
            kept++;
        }
    }
    /* Hardening: nothing passes the cutoff when the probabilities are NaN (a corrupt model, or
     * a temperature so small that logits overflow) or when n is 1 (the cutoff divides by 0);
     * without this, scratch[-1] below is read (tests/test_hardening.py). */
    if (kept == 0) return sample_cdf(probs, n, coin);
    sort_by_prob_desc(scratch, scratch + n, kept);

    float cumulative = 0.0f;
    int last = kept - 1;
    for (int i = 0; i < kept; i++) {
        cumulative += scratch[i].prob;
        if (cumulative > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += scratch[i].prob;
        if (r < cdf) return scratch[i].index;
    }
    return scratch[last].index;
}

/* ------------------------------------------------------------------------------------------ */
/* Top-k and min-p */

/* The order the filters rank tokens in: more likely first, then the lower id, so that ties at
 * the top-k boundary are settled the same way on every platform. */
static int ranks_before(ProbIndex a, ProbIndex b) {
    return a.prob > b.prob || (a.prob == b.prob && a.index < b.index);
}

static int compare_rank(const void *a, const void *b) {
    ProbIndex pa = *(const ProbIndex *)a, pb = *(const ProbIndex *)b;
    return ranks_before(pb, pa) - ranks_before(pa, pb);
}

/* Moves heap[i] down a heap (n) whose root is the lowest-ranked entry. */
static void sift_down(ProbIndex *heap, int n, int i) {
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(heap[worst], heap[l])) worst = l;
        if (r < n && ranks_before(heap[worst], heap[r])) worst = r;
        if (worst == i) return;
        ProbIndex t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

int sampler_filter(Sampler *s, const float *probs) {
    int n = s->vocab_size;
    ProbIndex *kept = s->probindex;

    /* min-p: the bar is relative to the most likely token, which top-k always keeps too, so
     * applying it first gives the same set and shortens everything after it. */
    float top = probs[argmax_f32(probs, n)];
    float bar = s->min_p > 0.0f ? s->min_p * top : 0.0f;

    /* top-k: a heap of the k best so far with the worst at its root, O(n log k); without
     * top-k every token over the bar is kept. */
    int k = s->top_k > 0 && s->top_k < n ? s->top_k : n;
    int n_kept = 0;
    for (int i = 0; i < n; i++) {
        ProbIndex c = {probs[i], i};
        if (c.prob < bar) continue;
        if (n_kept < k) {
            kept[n_kept++] = c;
            if (n_kept == k) /* now full: order it as a heap */
                for (int j = k / 2 - 1; j >= 0; j--) sift_down(kept, k, j);
        } else if (ranks_before(c, kept[0])) {
            kept[0] = c;
            sift_down(kept, k, 0);
        }
    }
    qsort(kept, n_kept, sizeof *kept, compare_rank);

    /* top-p over the survivors renormalised: the shortest prefix whose share of their mass
     * passes topp, counting the token that crosses the line, as llama2.c does. */
    if (s->topp > 0.0f && s->topp < 1.0f) {
        float mass = 0.0f, cumulative = 0.0f;
        for (int i = 0; i < n_kept; i++) mass += kept[i].prob;
        for (int i = 0; i < n_kept; i++) {
            cumulative += kept[i].prob;
            if (cumulative > s->topp * mass) {
                n_kept = i + 1;
                break;
            }
        }
    }
    return n_kept;
}

/* Draws from the survivors of sampler_filter in proportion to their probabilities. */
static int sample_filtered(Sampler *s, const float *probs, float coin) {
    int n = sampler_filter(s, probs);
    float mass = 0.0f;
    for (int i = 0; i < n; i++) mass += s->probindex[i].prob;
    float r = coin * mass, cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += s->probindex[i].prob;
        if (r < cdf) return s->probindex[i].index;
    }
    return s->probindex[n - 1].index; /* rounding left the total just under r */
}

/* ------------------------------------------------------------------------------------------ */

int sampler_sample(Sampler *s, float *logits) {
    if (s->temperature == 0.0f) return argmax_f32(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    probabilities(logits, s->vocab_size);
    float coin = random_f32(&s->rng_state);
    if (s->top_k > 0 || s->min_p > 0.0f) return sample_filtered(s, logits, coin);
    if (s->topp <= 0.0f || s->topp >= 1.0f) return sample_cdf(logits, s->vocab_size, coin);
    return sample_topp(logits, s->vocab_size, s->topp, s->probindex, coin);
}
