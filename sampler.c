/*
 * sampler.c - choosing the next token from the logits.
 *
 * Greedy decoding takes the most likely token. Sampling divides the logits by a temperature
 * (below 1 sharpens the distribution, above 1 flattens it), turns them into probabilities and
 * draws one; top-p (nucleus) sampling first throws away the unlikely tail. The random numbers
 * and every step of the procedure follow llama2.c, so the same seed picks the same tokens.
 */
#include <stdlib.h>

#include "kernels.h"

int sampler_init(Sampler *s, int vocab_size, float temperature, float topp, uint64_t seed) {
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng_state = seed;
    s->probindex = malloc((size_t)vocab_size * sizeof *s->probindex);
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

/* Index of the largest of n values (the first one on ties). */
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
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

static int compare_prob_desc(const void *a, const void *b) {
    float pa = ((const ProbIndex *)a)->prob, pb = ((const ProbIndex *)b)->prob;
    return (pa < pb) - (pa > pb);
}

/* Top-p: samples among the most likely tokens whose probabilities add up to just over topp.
 * Tokens below (1 - topp) / (n - 1) cannot be in that set, so they are dropped before the
 * sort, which keeps it short. */
static int sample_topp(const float *probs, int n, float topp, ProbIndex *scratch, float coin) {
    int kept = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) {
        if (probs[i] >= cutoff) {
            scratch[kept].index = i;
            scratch[kept].prob = probs[i];
            kept++;
        }
    }
    qsort(scratch, kept, sizeof *scratch, compare_prob_desc);

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

int sampler_sample(Sampler *s, float *logits) {
    if (s->temperature == 0.0f) return argmax(logits, s->vocab_size);
    for (int i = 0; i < s->vocab_size; i++) logits[i] /= s->temperature;
    softmax(logits, s->vocab_size);
    float coin = random_f32(&s->rng_state);
    if (s->topp <= 0.0f || s->topp >= 1.0f) return sample_cdf(logits, s->vocab_size, coin);
    return sample_topp(logits, s->vocab_size, s->topp, s->probindex, coin);
}
