/*
 * sampler.h - turning logits into the next token id.
 *
 * The filters run in this order: temperature, softmax, top-k, min-p, top-p, then one draw
 * from what is left, renormalised. Top-k and min-p keep the same set in either order (both
 * keep the most likely token); top-p then measures the mass of the survivors renormalised to
 * 1. With top_k = 0 and min_p = 0 the sampler is llama2.c's, draw for draw.
 */
#ifndef SAMPLER_H
#define SAMPLER_H

#include <stdint.h>

typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    int vocab_size;
    float temperature;   /* 0 = greedy argmax */
    float topp;          /* nucleus sampling threshold; 0 or >= 1 disables it */
    int top_k;           /* keep the k most likely tokens; 0 disables it */
    float min_p;         /* drop tokens below min_p times the top probability; 0 disables it */
    uint64_t rng_state;  /* xorshift64* state, as llama2.c */
    ProbIndex *probindex; /* (2 * vocab_size) scratch for top-p, top-k and min-p */
} Sampler;

/* The choices a sampler is made with. */
typedef struct {
    float temperature, topp, min_p;
    int top_k;
    uint64_t seed;       /* must be nonzero */
} SamplerSettings;

/* Prepares a sampler for a vocabulary of vocab_size. Returns 0, or -1 if memory ran out. */
int sampler_init(Sampler *s, int vocab_size, SamplerSettings settings);
void sampler_free(Sampler *s);

/* Picks the next token from logits (vocab_size), which it may overwrite. */
int sampler_sample(Sampler *s, float *logits);

/* Applies top-k, min-p and top-p to probs (vocab_size, summing to 1). Leaves the survivors in
 * s->probindex, most likely first (ties: lower id first), with their unnormalised
 * probabilities, and returns how many there are (at least 1). */
int sampler_filter(Sampler *s, const float *probs);

#endif
