/*
 * attention.c - rotary position embeddings, the KV cache and grouped-query attention.
 *
 * Sections: RoPE; the KV cache (types, slots, store, evict); the reference attention (two
 * passes, plain C); the tiled attention that runs (one pass per KV head with a running
 * softmax), its kernels in plain C beside their AVX-512 versions.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "attention.h"
#include "kernels.h"
#include "matmul.h"
#include "share.h"
#include "team.h"
#include "simd.h"

/* ------------------------------------------------------------------------------------------ */
/* RoPE: the angle grows with the position, at a different rate for each pair, so the dot
 * product of a query and a key depends on how far apart they are. */

void rope_frequencies(float *freq, int head_size, float theta, const RopeScaling *scaling) {
    const float pi = 3.14159265358979f;
    for (int i = 0; i < head_size / 2; i++) {
        /* the same float expression as llama2.c, so the angles agree to the last bit */
        freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_size);
        if (!scaling || scaling->type == ROPE_PLAIN) continue;
        if (scaling->type == ROPE_LINEAR) { /* positions divided by factor: Hugging Face's
                                              * "linear" */
            freq[i] /= scaling->factor;
            continue;
        }
        /* Llama 3.1's rule, as Hugging Face's _compute_llama3_parameters: slow pairs (long
         * wavelengths, which saw no full turn in training) are slowed by factor, fast ones
         * kept, and the band between blended by where its wavelength falls. */
        float wavelength = 2 * pi / freq[i];
        float low = scaling->original_context / scaling->low_freq_factor;
        float high = scaling->original_context / scaling->high_freq_factor;
        if (wavelength > low) {
            freq[i] /= scaling->factor;
        } else if (wavelength >= high) {
            float smooth = (scaling->original_context / wavelength - scaling->low_freq_factor) /
                           (scaling->high_freq_factor - scaling->low_freq_factor);
            freq[i] = (1 - smooth) * freq[i] / scaling->factor + smooth * freq[i];
        }
    }
}

void rope_angles(float *cos, float *sin, const float *freq, int pos, int n, int head_size) {
    int half = head_size / 2;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            float angle = (pos + t) * freq[i];
            cos[(size_t)t * half + i] = cosf(angle);
            sin[(size_t)t * half + i] = sinf(angle);
        }
}

/* Prompt chunks rotate their tokens on all threads when there are this many values: below,
 * handing the work over costs more than sharing it saves. */
#define PARALLEL_MIN_ROPE (1 << 14)

static void rope_token(float *v, const float *c, const float *s, int n_heads, int head_size) {
    for (int h = 0; h < n_heads; h++, v += head_size)
        for (int i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * c[i] - v1 * s[i];
            v[2 * i + 1] = v0 * s[i] + v1 * c[i];
        }
}

typedef struct {
    float *vec;
    const float *cos, *sin;
    int n, n_heads, head_size;
} Rope;

static void rope_tokens(void *rope, int from, int to) {
    const Rope *r = rope;
    size_t half = r->head_size / 2, width = (size_t)r->n_heads * r->head_size;
    for (int t = from; t < to; t++)
        rope_token(r->vec + t * width, r->cos + t * half, r->sin + t * half, r->n_heads,
                   r->head_size);
}

void rope(float *vec, const float *cos, const float *sin, int n, int n_heads, int head_size) {
    Rope r = {vec, cos, sin, n, n_heads, head_size};
    long values = (long)n * n_heads * head_size;
    team_for(values >= PARALLEL_MIN_ROPE ? team_size() : 1, n, rope_tokens, &r);
}

/* ------------------------------------------------------------------------------------------ */
/* The KV cache */

/* Positions per tile of the attention below: a tile's scores of every row of a work item
 * stay in L1 (32 rows x 64 positions x 4 bytes = 8 KB). */
#define TILE 64
/* The most query rows (query heads x queries) one work item takes together: their
 * accumulators, head_size floats each, stay in L1 too. */
#define MAX_ROWS 32
/* Keys are stored in blocks of this many, number-major (KvCache): the scores of 16
 * positions are 16 lanes of one vector, with no sum across lanes. */
#define KEY_BLOCK 16

size_t kv_vector_bytes(int type, int head_size) {
    return type == KV_F32 ? 4 * (size_t)head_size
         : type == KV_BF16 ? 2 * (size_t)head_size
                           : (size_t)head_size + sizeof(float);
}

/* Bytes of the numbers of one vector, without its scale. */
static size_t elem_bytes(int type) { return type == KV_F32 ? 4 : type == KV_BF16 ? 2 : 1; }

/* Slots of one KV head's keys in a layer: its slots rounded up to whole blocks. */
static size_t key_slots(const KvCache *c, int layer) {
    return ((size_t)c->sinks + c->ring[layer] + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK;
}

/* The keys or the values: `bytes` of zeroes, or NULL if memory ran out. With huge_pages, in
 * 2 MB pages where Linux gives them, faulted in here, at load time, as llama.cpp clears its
 * cache when it makes it: a prompt's first chunk would otherwise fault in the whole cache at
 * once (below), and on a machine whose free memory is fragmented, wait there while the
 * kernel assembles 2 MB pages (up to 0.1 s seen here). Otherwise in 4 KB pages, untouched
 * (as calloc's) until a vector is stored. Not calloc itself, nor model.c's alloc_huge: the
 * cache must start on a page, zeroed, and stay untouched when large. calloc's large blocks
 * start 16 bytes into a page, so every 64-byte line of keys a kernel loads straddles two
 * cache lines: with calloc's memory 15M Q8_0 decoded 10% slower (0.89 and 0.90 against
 * this, alternating), which the split lines would explain. */
#define HUGE_PAGE ((size_t)2 << 20)

static size_t huge_round(size_t bytes) { return (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE; }

static void *cache_alloc(size_t bytes, int huge_pages) {
    size_t size = huge_round(bytes);
    char *map = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (map == MAP_FAILED) return NULL;
    char *at = (char *)huge_round((uintptr_t)map); /* the first 2 MB boundary in it */
    if (at > map) munmap(map, (size_t)(at - map));
    munmap(at + size, (size_t)(map + HUGE_PAGE - at));
#if defined(MADV_HUGEPAGE)
    if (huge_pages) madvise(at, size, MADV_HUGEPAGE);
#endif
    if (huge_pages)
        for (size_t i = 0; i < size; i += 4096) ((volatile char *)at)[i] = 0;
    return at;
}

static void cache_release(void *p, size_t bytes) {
    if (p) munmap(p, huge_round(bytes));
}

/* A cache of HUGE_CACHE_MIN to HUGE_CACHE_MAX bytes lives in 2 MB pages. In 4 KB pages a
 * generated token's 2 x layers x heads vectors take a fresh page every 16 positions: the 110M
 * shape at 512 positions (a 38 MB cache) faulted 18 pages per token, 5-9% of its decoding
 * time (BENCHMARKS.md, "Decoding: what held it at half the bandwidth"). A 2 MB page holds
 * the slots of several heads, so the whole cache is faulted in at once: cheap for a cache of
 * tens of MB, but a long context's (a gigabyte or more at 128K positions) would then be
 * resident from the start, mostly for positions never reached; those keep 4 KB pages. So
 * does one smaller than a 2 MB page (stories260K: 0.6 MB), whose few faults cost little and
 * which 2 MB pages would only round up. Not more than that: the 15M shape's 7 MB cache, in 4
 * KB pages, faulted about 850 pages in a 256-token prompt, 12 of its 26 ms on a host whose
 * faults cost 14 us (BENCHMARKS.md, "Prompts: weights from memory"). */
#define HUGE_CACHE_MIN HUGE_PAGE
#define HUGE_CACHE_MAX ((size_t)64 << 20)

int kv_cache_init(KvCache *c, int type, int n_layers, int n_kv_heads, int head_size,
                  int seq_len, const int *window, int chunk, int sinks, const float *freq) {
    *c = (KvCache){.type = type, .n_layers = n_layers, .n_kv_heads = n_kv_heads,
                   .head_size = head_size, .seq_len = seq_len, .sinks = sinks};
    c->window = calloc(n_layers, sizeof(int));
    c->ring = calloc(n_layers, sizeof(int));
    c->base = calloc(n_layers, sizeof(int));
    c->first = calloc(n_layers, sizeof(size_t));
    c->first_slot = calloc(n_layers, sizeof(size_t));
    c->first_key = calloc(n_layers, sizeof(size_t));
    c->freq = malloc((size_t)(head_size / 2 + 1) * sizeof(float));
    if (!c->window || !c->ring || !c->base || !c->first || !c->first_slot || !c->first_key ||
        !c->freq) {
        kv_cache_free(c);
        return -1;
    }
    memcpy(c->freq, freq, (size_t)(head_size / 2) * sizeof(float));
    size_t vectors = 0, slots = 0, keys = 0;
    for (int l = 0; l < n_layers; l++) {
        int full = seq_len - sinks, w = window ? window[l] : 0;
        c->window[l] = w;
        /* a chunk stores all its keys before its first query reads the oldest it needs, so a
         * ring keeps window + chunk - 1 positions */
        c->ring[l] = w > 0 && (long)w + chunk - 1 < full ? w + chunk - 1 : full;
        c->first[l] = vectors;
        c->first_slot[l] = slots;
        c->first_key[l] = keys;
        vectors += (size_t)n_kv_heads * (sinks + c->ring[l]);
        slots += (size_t)sinks + c->ring[l];
        keys += (size_t)n_kv_heads * key_slots(c, l);
    }
    c->shift = calloc(slots, sizeof(int));
    /* cos and sin of each shift's angles, filled by kv_cache_evict for the shifts it makes
     * (calloc's pages cost nothing until then) */
    c->turns = calloc((size_t)seq_len * head_size, sizeof(float));
    c->turned = calloc((size_t)seq_len, 1);
    c->keys_bytes = keys * elem_bytes(type) * head_size;
    c->values_bytes = vectors * elem_bytes(type) * head_size;
    size_t total = c->keys_bytes + c->values_bytes;
    int huge = total >= HUGE_CACHE_MIN && total <= HUGE_CACHE_MAX;
    c->keys = cache_alloc(c->keys_bytes, huge);
    c->values = cache_alloc(c->values_bytes, huge);
    if (type == KV_Q8) {
        c->key_scales = calloc(keys, sizeof(float));
        c->value_scales = calloc(vectors, sizeof(float));
    }
    /* per thread: the query rows, turned (below), their accumulators, a tile of scores, three
     * numbers per row (running max, running sum, rescale); attend_row uses the scores as one
     * row of max_rows tiles and the rescales as one per tile */
    c->threads = team_size();
    c->max_rows = 8192 / head_size;
    c->max_rows = c->max_rows < 4 ? 4 : c->max_rows > MAX_ROWS ? MAX_ROWS : c->max_rows;
    c->scratch_floats = round64(((size_t)c->max_rows * (3 * head_size + TILE + 3) + head_size) *
                                sizeof(float)) / sizeof(float);
    /* on cache lines, each thread's part a whole number of them (calloc's would start 16 bytes
     * into a page: every vector of it cut across two lines, and one line shared by two
     * threads) */
    size_t scratch_bytes = (size_t)c->threads * c->scratch_floats * sizeof(float);
    if (posix_memalign((void **)&c->scratch, 64, scratch_bytes) == 0)
        memset(c->scratch, 0, scratch_bytes);
    else
        c->scratch = NULL;
    if (!c->keys || !c->values || !c->scratch || !c->shift || !c->turns || !c->turned ||
        (type == KV_Q8 && (!c->key_scales || !c->value_scales))) {
        kv_cache_free(c);
        return -1;
    }
    return 0;
}

void kv_cache_free(KvCache *c) {
    cache_release(c->keys, c->keys_bytes), cache_release(c->values, c->values_bytes);
    free(c->key_scales), free(c->value_scales);
    free(c->window), free(c->ring), free(c->base), free(c->first), free(c->scratch);
    free(c->first_slot), free(c->first_key), free(c->shift), free(c->freq);
    free(c->turns), free(c->turned);
    memset(c, 0, sizeof *c);
}

size_t kv_cache_bytes(const KvCache *c) {
    size_t vectors = 0;
    for (int l = 0; l < c->n_layers; l++)
        vectors += (size_t)c->n_kv_heads * (c->sinks + c->ring[l] + key_slots(c, l));
    return vectors * kv_vector_bytes(c->type, c->head_size);
}

/* The slot of position pos in a layer (KvCache says why the ring). */
static int slot_of(const KvCache *c, int layer, int pos) {
    if (pos < c->sinks) return pos;
    return c->sinks + (int)(((long)pos - c->sinks + c->base[layer]) % c->ring[layer]);
}

/* The index of the value in slot `slot` of KV head h of a layer. */
static size_t vector_index(const KvCache *c, int layer, int h, int slot) {
    return c->first[layer] + (size_t)h * (c->sinks + c->ring[layer]) + slot;
}

/* The index of the key in that slot; each head's keys start at a whole block. */
static size_t key_index(const KvCache *c, int layer, int h, int slot) {
    return c->first_key[layer] + (size_t)h * key_slots(c, layer) + slot;
}

/* Where number d of vector i lies, counted in numbers from the start of the values or keys:
 * a value's numbers follow one another; a key's are KEY_BLOCK apart, in the block of
 * KEY_BLOCK keys it belongs to. */
static size_t at(const KvCache *c, int value, size_t i, int d) {
    if (value) return i * c->head_size + d;
    return (i & ~(size_t)(KEY_BLOCK - 1)) * c->head_size + (size_t)d * KEY_BLOCK +
           (i & (KEY_BLOCK - 1));
}

/* The shift of slot `slot` of a layer (KvCache). */
static int *shift_of(const KvCache *c, int layer, int slot) {
    return c->shift + c->first_slot[layer] + slot;
}

/* Rotates each pair of v (head_size) by s positions' worth of RoPE: R(s) v. */
static void turn(float *v, const float *freq, int head_size, int s) {
    for (int i = 0; i < head_size / 2; i++) {
        float angle = (float)s * freq[i], cs = cosf(angle), sn = sinf(angle);
        float v0 = v[2 * i], v1 = v[2 * i + 1];
        v[2 * i] = v0 * cs - v1 * sn;
        v[2 * i + 1] = v0 * sn + v1 * cs;
    }
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Rounded to nearest even, as export.py rounds bf16 weights; a NaN stays a NaN. */
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* Writes x (head_size) into vector i of keys (value = 0, i a key_index) or values (i a
 * vector_index), in the cache's type; a Q8 cache quantizes in scratch (head_size bytes). */
static void put_vector(KvCache *c, int value, size_t i, const float *x, void *scratch) {
    int hs = c->head_size;
    void *base = value ? c->values : c->keys;
    if (c->type == KV_F32) {
        for (int d = 0; d < hs; d++) ((float *)base)[at(c, value, i, d)] = x[d];
    } else if (c->type == KV_BF16) {
        for (int d = 0; d < hs; d++) ((uint16_t *)base)[at(c, value, i, d)] = f32_to_bf16(x[d]);
    } else { /* one scale for the whole vector: Q8_0's rule with a group of head_size */
        float *scales = value ? c->value_scales : c->key_scales;
        int8_t *q = scratch;
        quantize_q8(q, scales + i, x, hs, hs);
        for (int d = 0; d < hs; d++) ((int8_t *)base)[at(c, value, i, d)] = q[d];
    }
}

/* out (head_size) = vector i of keys or values, as floats. */
static void get_vector(float *out, const KvCache *c, int value, size_t i) {
    int hs = c->head_size;
    const void *base = value ? c->values : c->keys;
    if (c->type == KV_F32) {
        for (int d = 0; d < hs; d++) out[d] = ((const float *)base)[at(c, value, i, d)];
    } else if (c->type == KV_BF16) {
        for (int d = 0; d < hs; d++) out[d] = bf16_to_f32(((const uint16_t *)base)[at(c, value, i, d)]);
    } else {
        float scale = (value ? c->value_scales : c->key_scales)[i];
        for (int d = 0; d < hs; d++) out[d] = ((const int8_t *)base)[at(c, value, i, d)] * scale;
    }
}

/* Head h's key and value of position pos (slot), from k and v (n_kv_heads, head_size). */
static void store_head(KvCache *c, int layer, int h, int slot, const float *k, const float *v,
                       void *scratch) {
    size_t from = (size_t)h * c->head_size;
    put_vector(c, 0, key_index(c, layer, h, slot), k + from, scratch);
    put_vector(c, 1, vector_index(c, layer, h, slot), v + from, scratch);
}

void kv_cache_store(KvCache *c, int layer, const float *k, const float *v, int n, int pos) {
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_size;
    for (int t = 0; t < n; t++) {
        int slot = slot_of(c, layer, pos + t);
        *shift_of(c, layer, slot) = 0;
        for (int h = 0; h < c->n_kv_heads; h++)
            store_head(c, layer, h, slot, k + t * kv_dim, v + t * kv_dim, c->scratch);
    }
}

void kv_cache_read(float *out, const KvCache *c, int layer, int head, int pos, int value) {
    int slot = slot_of(c, layer, pos), s = *shift_of(c, layer, slot);
    get_vector(out, c, value, value ? vector_index(c, layer, head, slot)
                                    : key_index(c, layer, head, slot));
    if (!value && s) turn(out, c->freq, c->head_size, -s);
}

/* Each layer's ring turns by drop, which gives position p the slot position p + drop had;
 * the keys of the positions that moved are from now on read turned back by drop more. */
int kv_cache_evict(KvCache *c, int drop, int len) {
    int new_len = len - drop;
    if (len > c->seq_len || drop < 1 || drop > len - c->sinks) return -1;
    /* A key moves down at most from where it was stored (below seq_len) to the first place
     * after the sinks; a len larger than the cache's own would push shifts past that, and
     * past the table of turns: refused before anything changes. */
    for (int l = 0; l < c->n_layers; l++) {
        int base = c->base[l], bad = 0;
        c->base[l] = (int)(((long)base + drop) % c->ring[l]); /* as the loop below turns it */
        int from = new_len - c->ring[l] > c->sinks ? new_len - c->ring[l] : c->sinks;
        for (int p = from; p < new_len; p++)
            bad |= *shift_of(c, l, slot_of(c, l, p)) + drop >= c->seq_len;
        c->base[l] = base;
        if (bad) return -1;
    }
    c->moved = 1;
    for (int l = 0; l < c->n_layers; l++) {
        c->base[l] = (int)(((long)c->base[l] + drop) % c->ring[l]);
        int from = new_len - c->ring[l] > c->sinks ? new_len - c->ring[l] : c->sinks;
        for (int p = from; p < new_len; p++) {
            int *s = shift_of(c, l, slot_of(c, l, p));
            *s += drop;
            if (!c->turned[*s]) { /* attention turns queries by these angles */
                rope_angles(c->turns + (size_t)*s * c->head_size,
                            c->turns + (size_t)*s * c->head_size + c->head_size / 2, c->freq, *s,
                            1, c->head_size);
                c->turned[*s] = 1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The reference: two passes, exactly as the formula reads. Causal: the query at pos reads
 * positions up to pos only, never a later one, even when a prompt chunk has already stored
 * the keys of later positions; with a window w only positions pos - w + 1 .. pos. */

/* The first position the query at pos sees in a layer. */
static int first_seen(const KvCache *c, int layer, int pos) {
    int w = c->window[layer];
    return w > 0 && pos - w + 1 > 0 ? pos - w + 1 : 0;
}

/* q . (key i), in plain C: the key as attention reads it (kv_cache_read), in scratch: its
 * numbers as floats, turned back by s if it moved down (shift s, KvCache). */
static float dot_key(const KvCache *c, size_t i, int s, const float *q) {
    int hs = c->head_size;
    float sum = 0.0f, *k = c->scratch;
    get_vector(k, c, 0, i);
    if (s) turn(k, c->freq, hs, -s);
    for (int d = 0; d < hs; d++) sum += q[d] * k[d];
    return sum;
}

/* out (head_size) += w * (vector i of the values). */
static void add_value(float *out, float w, const KvCache *c, size_t i) {
    int hs = c->head_size;
    if (c->type == KV_F32) {
        const float *v = (const float *)c->values + i * hs;
        for (int d = 0; d < hs; d++) out[d] += w * v[d];
    } else if (c->type == KV_BF16) {
        const uint16_t *v = (const uint16_t *)c->values + i * hs;
        for (int d = 0; d < hs; d++) out[d] += w * bf16_to_f32(v[d]);
    } else {
        const int8_t *v = (const int8_t *)c->values + i * hs;
        for (int d = 0; d < hs; d++) out[d] += w * (v[d] * c->value_scales[i]);
    }
}

/* One query head q (head_size) at pos over KV head kv: scores (pos + 1) = the weights
 * softmax(q . k_t / sqrt(head_size)) (0 before the window), out (head_size, or NULL) =
 * sum_t weights_t v_t. */
static void attend_ref(float *out, float *scores, const float *q, const KvCache *c, int layer,
                       int kv, int pos) {
    int lo = first_seen(c, layer, pos);
    float norm = sqrtf((float)c->head_size);
    for (int t = 0; t < lo; t++) scores[t] = 0.0f;
    for (int t = lo; t <= pos; t++) {
        int slot = slot_of(c, layer, t);
        scores[t] = dot_key(c, key_index(c, layer, kv, slot), *shift_of(c, layer, slot), q) / norm;
    }
    softmax(scores + lo, pos - lo + 1);
    if (!out) return;
    for (int d = 0; d < c->head_size; d++) out[d] = 0.0f;
    for (int t = lo; t <= pos; t++)
        add_value(out, scores[t], c, vector_index(c, layer, kv, slot_of(c, layer, t)));
}

void attention_weights(float *out, float *att, const float *q, const KvCache *c, int layer,
                       int pos, int n_heads) {
    int hs = c->head_size, group = n_heads / c->n_kv_heads;
    for (int h = 0; h < n_heads; h++)
        attend_ref(out ? out + (size_t)h * hs : NULL, att + (size_t)h * c->seq_len,
                   q + (size_t)h * hs, c, layer, h / group, pos);
}

void attention_ref(float *out, float *att, const float *q, const KvCache *c, int layer, int n,
                   int pos, int n_heads) {
    size_t stride = (size_t)n_heads * c->head_size; /* from one token's queries to the next */
    for (int i = 0; i < n; i++)
        attention_weights(out + i * stride, att, q + i * stride, c, layer, pos + i, n_heads);
}

/* ------------------------------------------------------------------------------------------ */
/* The attention that runs: the reference's numbers in one pass over the cache.
 *
 * The query heads that share a KV head ("rows", query-major: for each query of the chunk,
 * the heads of its group) go through that head's cached positions together, a tile of up to
 * TILE positions at a time: each key and value is read once for all of them, instead of once
 * per query head. Within a tile: the scores of every row (q . k / sqrt(head_size)); then per
 * row the running softmax (the online softmax of Milakov and Gimelshein 2018, as
 * FlashAttention uses it): with m the largest score so far and l the sum of e^(score - m),
 * a tile with a larger maximum m' rescales l and the accumulated output by e^(m - m'), then
 * adds its own e^(score - m') and weighted values. At the end the output is divided by l.
 * Only a tile of scores exists at any time, never a whole row.
 *
 * Tiles are cut at multiples of TILE of the absolute position (and where the slots wrap or
 * the keys' shift changes: kv_cache_evict), and every row's arithmetic is its own, so a
 * query's numbers are the same whichever rows and queries share its work item, and a prompt
 * gives the logits of token-by-token decoding bit for bit; the threads only decide who does
 * an item. The SIMD kernels keep that: each score and each output element sees the same
 * operations in the same order in every case. */

/* One unit of work: some query heads of one KV head for some queries of the chunk. */
typedef struct {
    int kv;      /* the KV head */
    int q0, nq;  /* queries q0 .. q0 + nq - 1 of the chunk */
    int g0, ng;  /* heads g0 .. g0 + ng - 1 of the group */
} Item;

/* The positions a row's query sees, lo .. hi. */
typedef struct {
    int lo, hi;
} RowRange;

/* ----- plain C kernels: the definition of the fast ones, which replace them where the
 * build has AVX-512 ----- */

#if !defined(USE_AVX512)

/* S (rows, TILE) [r][j] = scale * Q[r] . k_(j), for j in ja .. jb - 1, where k_(j) is key
 * `first + j`. */
static void scores_plain(float *S, const float *Q, int rows, const KvCache *c, size_t first,
                         int ja, int jb, float scale) {
    int hs = c->head_size;
    for (int r = 0; r < rows; r++)
        for (int j = ja; j < jb; j++) {
            float dot = 0.0f;
            size_t i = first + j;
            if (c->type == KV_F32) {
                const float *k = c->keys;
                for (int d = 0; d < hs; d++) dot += Q[(size_t)r * hs + d] * k[at(c, 0, i, d)];
            } else if (c->type == KV_BF16) {
                const uint16_t *k = c->keys;
                for (int d = 0; d < hs; d++)
                    dot += Q[(size_t)r * hs + d] * bf16_to_f32(k[at(c, 0, i, d)]);
            } else {
                const int8_t *k = c->keys;
                for (int d = 0; d < hs; d++) dot += Q[(size_t)r * hs + d] * (float)k[at(c, 0, i, d)];
                dot *= c->key_scales[i];
            }
            S[(size_t)r * TILE + j] = dot * scale;
        }
}

/* O (rows, head_size) [r] = rescale O[r] + sum over j in j0 .. j1 - 1 of P[r][j] v_(j), P
 * (rows, TILE). */
static void accumulate_plain(float *O, const float *P, int rows, const KvCache *c, size_t first,
                             int j0, int j1, float rescale) {
    int hs = c->head_size;
    for (int r = 0; r < rows; r++) {
        float *o = O + (size_t)r * hs;
        for (int d = 0; d < hs; d++) o[d] *= rescale;
        for (int j = j0; j < j1; j++) {
            float p = P[(size_t)r * TILE + j];
            size_t i = first + j;
            if (c->type == KV_F32) {
                const float *v = (const float *)c->values + i * hs;
                for (int d = 0; d < hs; d++) o[d] += p * v[d];
            } else if (c->type == KV_BF16) {
                const uint16_t *v = (const uint16_t *)c->values + i * hs;
                for (int d = 0; d < hs; d++) o[d] += p * bf16_to_f32(v[d]);
            } else { /* the value's scale is already in P */
                const int8_t *v = (const int8_t *)c->values + i * hs;
                for (int d = 0; d < hs; d++) o[d] += p * (float)v[d];
            }
        }
    }
}

/* Row s (TILE) of scores, over j in a .. b - 1: the largest is the new running max m', the
 * scores become e^(s - m'), their sum is returned. */
static float exp_row_plain(float *s, int a, int b, float m) {
    float sum = 0.0f;
    for (int j = a; j < b; j++) {
        s[j] = expf(s[j] - m);
        sum += s[j];
    }
    return sum;
}

static float max_row_plain(const float *s, int a, int b) {
    float mx = s[a];
    for (int j = a + 1; j < b; j++) mx = s[j] > mx ? s[j] : mx;
    return mx;
}

#define SCORES scores_plain
#define ACCUMULATE(O, P, r0, R, c, first, j0, j1, rescale)                                     \
    accumulate_plain((O) + (size_t)(r0) * (c)->head_size, (P) + (size_t)(r0) * TILE, R, c, first, \
                     j0, j1, rescale)
#define EXP_ROW exp_row_plain
#define MAX_ROW max_row_plain

#else
/* ----- AVX-512 ----- */

/* 16 numbers of a cached vector (or the d-th numbers of a block of 16 keys) from index d on,
 * those the mask selects (the rest 0), as floats. type is a constant at every call, so each
 * type gets its own loops. */
static ALWAYS_INLINE __m512 load16(const void *vec, int type, int d, __mmask16 m) {
    if (type == KV_F32) return _mm512_maskz_loadu_ps(m, (const float *)vec + d);
    if (type == KV_BF16) {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)vec + d);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    __m128i b = _mm_maskz_loadu_epi8(m, (const int8_t *)vec + d);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

/* The scores of R rows against NB blocks of 16 keys from block `blk` on (the keys of slots
 * blk .. blk + 16 NB - 1 of the head, counted from `first`'s block): for each number d of
 * the head, one vector of 16 keys' d-th numbers times row r's q[d], added into the row's
 * accumulator; each lane is its own score, summed over d in order, whatever R and NB are.
 * R * NB = 8 independent chains keep the multiply-adds in flight. Lanes outside ja .. jb - 1
 * (and blocks past it, which repeat the last) are computed but not stored. */
static ALWAYS_INLINE void score_blocks(float *S, const float *Q, int r0, const KvCache *c,
                                       size_t first, size_t blk, int ja, int jb, float scale,
                                       int type, int R, int NB) {
    int hs = c->head_size;
    size_t esize = elem_bytes(type), last = (first + jb - 1) & ~(size_t)(KEY_BLOCK - 1);
    const char *kb[8];
    for (int b = 0; b < NB; b++) {
        size_t at_blk = blk + (size_t)b * KEY_BLOCK;
        kb[b] = (const char *)c->keys + (at_blk < last ? at_blk : last) * hs * esize;
    }
    __m512 acc[8];
    for (int a = 0; a < R * NB; a++) acc[a] = _mm512_setzero_ps();
    for (int d = 0; d < hs; d++) {
        __m512 kv[8];
        for (int b = 0; b < NB; b++) kv[b] = load16(kb[b] + (size_t)d * KEY_BLOCK * esize, type, 0, 0xFFFF);
        for (int r = 0; r < R; r++) {
            __m512 qd = _mm512_set1_ps(Q[(size_t)(r0 + r) * hs + d]);
            for (int b = 0; b < NB; b++) acc[r * NB + b] = _mm512_fmadd_ps(qd, kv[b], acc[r * NB + b]);
        }
    }
    for (int b = 0; b < NB; b++) {
        size_t at_blk = blk + (size_t)b * KEY_BLOCK;
        /* the lanes of this block inside ja .. jb - 1, as positions j = lane + offset */
        long offset = (long)at_blk - (long)first, lo = ja - offset, hi = jb - offset;
        if (hi <= 0 || lo >= KEY_BLOCK) continue;
        __mmask16 m = (__mmask16)(mask16(hi > KEY_BLOCK ? KEY_BLOCK : (int)hi) &
                                  ~(lo > 0 ? mask16((int)lo) : 0));
        __m512 k = _mm512_set1_ps(scale);
        if (type == KV_Q8) k = _mm512_mul_ps(_mm512_loadu_ps(c->key_scales + at_blk), k);
        for (int r = 0; r < R; r++) /* lanes before j = 0 are masked: S - 15 stays in scratch */
            _mm512_mask_storeu_ps(S + (size_t)(r0 + r) * TILE + offset, m,
                                  _mm512_mul_ps(acc[r * NB + b], k));
    }
}

/* The scores of rows 0..rows-1 for j in ja .. jb - 1: eight rows a block of keys at a time,
 * or fewer rows over more blocks while there are that many, the last blocks one at a time;
 * a row alone (decoding a multi-head model) as below. */
#define SCORE_ROWS(R, NB)                                                                      \
    for (; r0 + R <= rows; r0 += R) {                                                           \
        size_t blk = from;                                                                      \
        for (; blk + (NB - 1) * KEY_BLOCK < to; blk += NB * KEY_BLOCK)                          \
            score_blocks(S, Q, r0, c, first, blk, ja, jb, scale, type, R, NB);                  \
        for (; blk < to; blk += KEY_BLOCK)                                                      \
            score_blocks(S, Q, r0, c, first, blk, ja, jb, scale, type, R, 1);                   \
    }
static ALWAYS_INLINE void scores_type(float *S, const float *Q, int rows, const KvCache *c,
                                      size_t first, int ja, int jb, float scale, int type) {
    size_t from = (first + ja) & ~(size_t)(KEY_BLOCK - 1), to = first + jb;
    int r0 = 0;
    SCORE_ROWS(8, 1)
    SCORE_ROWS(4, 2)
    SCORE_ROWS(2, 4)
    /* A row alone: eight blocks at a time while they last, then four at a time, the blocks
     * past the end repeating the last (computed, not stored). A tile has at most 5 blocks, so
     * SCORE_ROWS(1, 8) took them one at a time, each a single chain of dependent multiply-adds
     * (4 cycles apiece); four chains take the time of one (docs/ATTENTION.md, "A row alone",
     * has the measurements). */
    for (; r0 < rows; r0++) {
        size_t blk = from;
        for (; blk + 7 * KEY_BLOCK < to; blk += 8 * KEY_BLOCK)
            score_blocks(S, Q, r0, c, first, blk, ja, jb, scale, type, 1, 8);
        for (; blk < to; blk += 4 * KEY_BLOCK)
            score_blocks(S, Q, r0, c, first, blk, ja, jb, scale, type, 1, 4);
    }
}
#undef SCORE_ROWS

static void scores_fast(float *S, const float *Q, int rows, const KvCache *c, size_t first,
                        int ja, int jb, float scale) {
    switch (c->type) {
    case KV_F32: scores_type(S, Q, rows, c, first, ja, jb, scale, KV_F32); break;
    case KV_BF16: scores_type(S, Q, rows, c, first, ja, jb, scale, KV_BF16); break;
    default: scores_type(S, Q, rows, c, first, ja, jb, scale, KV_Q8); break;
    }
}

/* O rows r0 .. r0 + R - 1 = rescale O + sum_j P[r][j] v_(j): 64 output columns at a time
 * stay in registers (R x 4 vectors) while the values of j0 .. j1 - 1 stream past. The running
 * softmax's rescale is applied to the registers as they are loaded: as a loop of its own over
 * O between two calls, it spent its time waiting on its loads of what this kernel had just
 * stored (docs/ATTENTION.md, "A row alone"). */
static ALWAYS_INLINE void accumulate_tile(float *O, const float *P, int r0, const KvCache *c,
                                          size_t first, int j0, int j1, float rescale, int type,
                                          int R) {
    int hs = c->head_size;
    size_t row_bytes = elem_bytes(type) * hs;
    for (int d = 0; d < hs; d += 64) {
        __mmask16 m[4];
        __m512 acc[4][4];
        for (int k = 0; k < 4; k++) m[k] = d + 16 * k < hs ? mask16(hs - d - 16 * k) : 0;
        for (int r = 0; r < R; r++)
            for (int k = 0; k < 4; k++)
                acc[r][k] = _mm512_mul_ps(
                    _mm512_set1_ps(rescale),
                    _mm512_maskz_loadu_ps(m[k], O + (size_t)(r0 + r) * hs + d + 16 * k));
        for (int j = j0; j < j1; j++) {
            const char *v = (const char *)c->values + (first + j) * row_bytes;
            __m512 vv[4];
            for (int k = 0; k < 4; k++) vv[k] = load16(v, type, d + 16 * k, m[k]);
            for (int r = 0; r < R; r++) {
                __m512 p = _mm512_set1_ps(P[(size_t)(r0 + r) * TILE + j]);
                for (int k = 0; k < 4; k++) acc[r][k] = _mm512_fmadd_ps(p, vv[k], acc[r][k]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int k = 0; k < 4; k++)
                _mm512_mask_storeu_ps(O + (size_t)(r0 + r) * hs + d + 16 * k, m[k], acc[r][k]);
    }
}

static ALWAYS_INLINE void accumulate_type(float *O, const float *P, int r0, int R,
                                          const KvCache *c, size_t first, int j0, int j1,
                                          float rescale, int type) {
    switch (R) {
    case 4: accumulate_tile(O, P, r0, c, first, j0, j1, rescale, type, 4); break;
    case 3: accumulate_tile(O, P, r0, c, first, j0, j1, rescale, type, 3); break;
    case 2: accumulate_tile(O, P, r0, c, first, j0, j1, rescale, type, 2); break;
    default: accumulate_tile(O, P, r0, c, first, j0, j1, rescale, type, 1); break;
    }
}

/* Rows r0 .. r0 + R - 1 (R <= 4) of O, positions j0 .. j1 - 1. */
static void accumulate_fast(float *O, const float *P, int r0, int R, const KvCache *c,
                            size_t first, int j0, int j1, float rescale) {
    switch (c->type) {
    case KV_F32: accumulate_type(O, P, r0, R, c, first, j0, j1, rescale, KV_F32); break;
    case KV_BF16: accumulate_type(O, P, r0, R, c, first, j0, j1, rescale, KV_BF16); break;
    default: accumulate_type(O, P, r0, R, c, first, j0, j1, rescale, KV_Q8); break;
    }
}

static float exp_row_fast(float *s, int a, int b, float m) {
    __m512 sum = _mm512_setzero_ps(), mv = _mm512_set1_ps(m);
    for (int j = a; j < b; j += 16) {
        __mmask16 k = mask16(b - j);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), mv));
        sum = _mm512_mask_add_ps(sum, k, sum, e);
        _mm512_mask_storeu_ps(s + j, k, e);
    }
    return _mm512_reduce_add_ps(sum);
}

static float max_row_fast(const float *s, int a, int b) {
    __m512 mx = _mm512_set1_ps(s[a]);
    for (int j = a; j < b; j += 16)
        mx = _mm512_mask_max_ps(mx, mask16(b - j), _mm512_maskz_loadu_ps(mask16(b - j), s + j), mx);
    return _mm512_reduce_max_ps(mx);
}

#define SCORES scores_fast
#define ACCUMULATE accumulate_fast
#define EXP_ROW exp_row_fast
#define MAX_ROW max_row_fast

#endif

/* ----- one work item ----- */

/* One tile's step of a row's running softmax (the online softmax above): its scores s[a..b)
 * become e^(s - m) for the new running max m, the running sum l follows, and the values'
 * scales of a Q8 cache are applied to these weights. Returns how much the output so far must
 * be scaled down (0 on the first tile, where m is -inf). */
static float softmax_step(float *s, int a, int b, float *m, float *l, const KvCache *c,
                          size_t first) {
    float mx = MAX_ROW(s, a, b), m_new = mx > *m ? mx : *m;
    float alpha = expf(*m - m_new);
    *l = *l * alpha + EXP_ROW(s, a, b, m_new);
    *m = m_new;
    if (c->type == KV_Q8)
        for (int j = a; j < b; j++) s[j] *= c->value_scales[first + j];
    return alpha;
}

/* Where the tile of a layer that starts at position t ends (at most at `last`): at the next
 * multiple of TILE, at the end of the sink slots, where the ring wraps, or where the keys'
 * shift changes, whichever comes first. Its positions then have contiguous slots and one
 * shift. Until the first eviction no key has moved and the scan of the shifts is skipped: a
 * compare and branch per position, it was a few per cent of attention's time
 * (docs/ATTENTION.md, "A row alone"). */
static int tile_end(const KvCache *c, int layer, int t, int last) {
    int end = (t / TILE + 1) * TILE;
    end = end < last + 1 ? end : last + 1;
    if (t < c->sinks) {
        end = end < c->sinks ? end : c->sinks;
    } else {
        int ring = c->ring[layer];
        int wrap = t + ring - (int)(((long)t - c->sinks + c->base[layer]) % ring);
        end = end < wrap ? end : wrap;
    }
    if (!c->moved) return end;
    const int *shift = shift_of(c, layer, slot_of(c, layer, t));
    for (int j = 1; j < end - t; j++)
        if (shift[j] != shift[0]) return t + j;
    return end;
}

/* Qt (rows, head_size) = the rows of Q turned by s positions' worth of RoPE. */
static void turn_rows(float *Qt, const float *Q, int rows, const KvCache *c, int s) {
    int hs = c->head_size;
    const float *cs = c->turns + (size_t)s * hs, *sn = cs + hs / 2;
    memcpy(Qt, Q, (size_t)rows * hs * sizeof(float));
    for (int r = 0; r < rows; r++) rope(Qt + (size_t)r * hs, cs, sn, 1, 1, hs);
}

/* o (head_size) = the attention of the one query q (head_size) over positions lo .. hi of KV
 * head kv: attend_item below for an item of a single row: every item of a multi-head model's
 * decoding, and a grouped-query one's when the threads outnumber its KV heads so far that
 * split_work cuts its groups down to one head each. The same tiles and the same arithmetic, so the same numbers bit for bit,
 * in another order: attend_item takes turns between a tile's 64 keys and its 64 values; here
 * the keys of a run of tiles (contiguous slots, one shift, at most max_rows tiles: what S
 * holds) give their scores first, then each tile takes its step of the running softmax, then
 * the run's values are added, each tile's after the rescale its step asked for. Scores do not
 * depend on one another, and each output number still adds its terms tile by tile in position
 * order. With one row the time goes in reading the cache, which streams better in long runs
 * (docs/ATTENTION.md, "A row alone": this brought multi-head decoding back to the speed of
 * the two-pass code the tiles replaced, or past it). */
static void attend_row(float *o, const float *q, const KvCache *c, int layer, int kv, int lo,
                       int hi, float *scratch) {
    int hs = c->head_size;
    float *Qt = scratch, *O = Qt + (size_t)c->max_rows * hs, *S = O + (size_t)c->max_rows * hs;
    float *alpha = S + (size_t)c->max_rows * (TILE + 2); /* the rescale of each tile of a run */
    float scale = 1.0f / sqrtf((float)hs), m = -INFINITY, l = 0.0f;
    size_t keys = key_index(c, layer, kv, 0), values = vector_index(c, layer, kv, 0);
    int turned = 0;
    memset(O, 0, hs * sizeof(float));
    for (int t = lo; t <= hi;) {
        int slot = slot_of(c, layer, t), moved = *shift_of(c, layer, slot);
        int edge[MAX_ROWS + 1], n = 0; /* tile k of the run: t + edge[k] .. t + edge[k + 1] - 1 */
        edge[0] = 0;
        do {
            edge[n + 1] = tile_end(c, layer, t + edge[n], hi) - t;
            n++;
        } while (n < c->max_rows && t + edge[n] <= hi &&
                 slot_of(c, layer, t + edge[n]) == slot + edge[n] &&
                 *shift_of(c, layer, slot + edge[n]) == moved);
        const float *Qs = q; /* turned for keys that moved, as in attend_item */
        if (moved) {
            if (moved != turned) {
                turn_rows(Qt, q, 1, c, moved);
                turned = moved;
            }
            Qs = Qt;
        }
        SCORES(S, Qs, 1, c, keys + slot, 0, edge[n], scale);
        for (int k = 0; k < n; k++) /* the running softmax, tile by tile */
            alpha[k] = softmax_step(S, edge[k], edge[k + 1], &m, &l, c, values + slot);
        for (int k = 0; k < n; k++)
            ACCUMULATE(O, S, 0, 1, c, values + slot, edge[k], edge[k + 1], alpha[k]);
        t += edge[n];
    }
    float inv = 1.0f / l;
    for (int d = 0; d < hs; d++) o[d] = O[d] * inv;
}

static void attend_item(float *out, const float *q, const KvCache *c, int layer, int pos,
                        int n_heads, Item it, float *scratch) {
    int hs = c->head_size, group = n_heads / c->n_kv_heads, rows = it.nq * it.ng;
    size_t stride = (size_t)n_heads * hs; /* from one token's queries to the next */
    if (rows == 1) {
        size_t at = (size_t)it.q0 * stride + (size_t)(it.kv * group + it.g0) * hs;
        attend_row(out + at, q + at, c, layer, it.kv, first_seen(c, layer, pos + it.q0),
                   pos + it.q0, scratch);
        return;
    }
    float *Q = scratch, *Qt = Q + (size_t)c->max_rows * hs, *O = Qt + (size_t)c->max_rows * hs;
    float *S = O + (size_t)c->max_rows * hs, *m = S + (size_t)c->max_rows * TILE;
    float *l = m + c->max_rows, *alpha = l + c->max_rows;
    RowRange range[MAX_ROWS];
    for (int r = 0; r < rows; r++) {
        int i = it.q0 + r / it.ng, h = it.kv * group + it.g0 + r % it.ng;
        memcpy(Q + (size_t)r * hs, q + i * stride + (size_t)h * hs, hs * sizeof(float));
        memset(O + (size_t)r * hs, 0, hs * sizeof(float));
        range[r] = (RowRange){first_seen(c, layer, pos + i), pos + i};
        m[r] = -INFINITY, l[r] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)hs);
    size_t keys = key_index(c, layer, it.kv, 0), values = vector_index(c, layer, it.kv, 0);
    int hi = range[rows - 1].hi, turned = 0; /* queries are in order: the last sees furthest */
    for (int t = range[0].lo; t <= hi;) {
        int end = tile_end(c, layer, t, hi), slot = slot_of(c, layer, t);
        /* the tile's positions have contiguous slots: keys and values from these on */
        size_t first_key = keys + slot, first = values + slot;
        /* keys that moved down by s (evictions) are read as they are, with the queries turned
         * by s instead: q . R(-s) k = R(s) q . k, RoPE being a rotation */
        int moved = *shift_of(c, layer, slot);
        const float *Qs = Q;
        if (moved) {
            if (moved != turned) {
                turn_rows(Qt, Q, rows, c, moved);
                turned = moved;
            }
            Qs = Qt;
        }
        int a[MAX_ROWS], b[MAX_ROWS], ja = end - t, jb = 0;
        for (int r = 0; r < rows; r++) { /* the part of the tile each row sees */
            a[r] = (range[r].lo > t ? range[r].lo : t) - t;
            b[r] = (range[r].hi + 1 < end ? range[r].hi + 1 : end) - t;
            if (a[r] < b[r]) ja = a[r] < ja ? a[r] : ja, jb = b[r] > jb ? b[r] : jb;
        }
        SCORES(S, Qs, rows, c, first_key, ja, jb, scale);
        for (int r = 0; r < rows; r++) /* the running softmax, row by row; O is rescaled by
                                          * alpha below, by the first ACCUMULATE of its row */
            if (a[r] < b[r])
                alpha[r] = softmax_step(S + (size_t)r * TILE, a[r], b[r], &m[r], &l[r], c, first);
        /* the weighted values: rows in fours sharing the positions all four see, the rest a
         * row at a time; each output element adds its terms in position order either way */
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int R = rows - r0 < 4 ? rows - r0 : 4, A = 0, B = TILE, shared = 1;
            for (int r = r0; r < r0 + R; r++) {
                shared &= a[r] < b[r];
                A = a[r] > A ? a[r] : A, B = b[r] < B ? b[r] : B;
            }
            if (shared && A < B) {
                for (int r = r0; r < r0 + R; r++) /* may be no position (a[r] = A): then only
                                                    * the rescale, which must still happen */
                    ACCUMULATE(O, S, r, 1, c, first, a[r], A, alpha[r]);
                ACCUMULATE(O, S, r0, R, c, first, A, B, 1.0f);
                for (int r = r0; r < r0 + R; r++) ACCUMULATE(O, S, r, 1, c, first, B, b[r], 1.0f);
            } else {
                for (int r = r0; r < r0 + R; r++)
                    if (a[r] < b[r]) ACCUMULATE(O, S, r, 1, c, first, a[r], b[r], alpha[r]);
            }
        }
        t = end;
    }
    for (int r = 0; r < rows; r++) {
        int i = it.q0 + r / it.ng, h = it.kv * group + it.g0 + r % it.ng;
        float inv = 1.0f / l[r], *o = out + i * stride + (size_t)h * hs;
        for (int d = 0; d < hs; d++) o[d] = O[(size_t)r * hs + d] * inv;
    }
}

/* ----- sharing the work ----- */

/* Attention shares the work items among the threads when there is enough work: below, the
 * calling thread does them all, as handing them over would cost more than it saves. */
#define PARALLEL_MIN_ATTENTION (1 << 15)

/* How a layer's work is cut: heads_per of each group's heads and queries_per queries per
 * item, as many rows as fit an item, then smaller head sets until every thread has one. */
typedef struct {
    int heads_per, head_sets, queries_per, query_sets;
} Split;

static Split split_work(const KvCache *c, int n, int group, int threads) {
    Split s;
    s.heads_per = group < c->max_rows ? group : c->max_rows;
    s.head_sets = (group + s.heads_per - 1) / s.heads_per;
    s.queries_per = c->max_rows / s.heads_per;
    s.query_sets = (n + s.queries_per - 1) / s.queries_per;
    while ((long)c->n_kv_heads * s.query_sets * s.head_sets < threads && s.heads_per > 1) {
        s.head_sets++;
        s.heads_per = (group + s.head_sets - 1) / s.head_sets;
        s.head_sets = (group + s.heads_per - 1) / s.heads_per;
    }
    return s;
}

static Item item_of(Split s, int index, int n, int group) {
    Item it;
    it.kv = index / (s.query_sets * s.head_sets);
    int rest = index % (s.query_sets * s.head_sets);
    it.q0 = (rest / s.head_sets) * s.queries_per;
    it.nq = n - it.q0 < s.queries_per ? n - it.q0 : s.queries_per;
    it.g0 = (rest % s.head_sets) * s.heads_per;
    it.ng = group - it.g0 < s.heads_per ? group - it.g0 : s.heads_per;
    return it;
}

/* One layer's attention for the queries of a chunk, as attention() hands it to the team. */
typedef struct {
    float *out;
    const float *q;
    const float *k, *v; /* when set (decoding), each item first stores its KV head's */
    KvCache *c;
    int layer, n, pos, n_heads, group, items;
    Split split;
    Share *shares;
    int nshares;
    _Atomic int next; /* a prompt chunk's next item */
} Layer;

static void do_item(const Layer *a, int i, int me) {
    Item it = item_of(a->split, i, a->n, a->group);
    float *scratch = a->c->scratch + (size_t)me * a->c->scratch_floats;
    if (a->k) store_head(a->c, a->layer, it.kv, slot_of(a->c, a->layer, a->pos), a->k, a->v, scratch);
    attend_item(a->out, a->q, a->c, a->layer, a->pos, a->n_heads, it, scratch);
}

/* Decoding's items are all alike, so they go out in equal contiguous shares, and each
 * thread's heads lie together in the cache, which it then reads in longer runs (dealt out in
 * turn, the cache read 10-15% slower: BENCHMARKS.md, "Decoding: what held it at half the
 * bandwidth"); a thread that finishes its share first takes heads from the back of the
 * other's (share.h). A prompt chunk's items differ (a later query sees more keys): each goes
 * to the next thread free. */
static void attend_items(void *layer, int me, int n) {
    Layer *a = layer;
    int i, end;
    if (a->n == 1) {
        while (me < a->nshares && (i = share_take(a->shares, a->nshares, me, &end)) >= 0)
            for (; i < end; i++) do_item(a, i, me);
    } else {
        while ((i = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed)) < a->items)
            do_item(a, i, me);
    }
}

void attention(float *out, const float *q, const float *k, const float *v, KvCache *c,
               int layer, int n, int pos, int n_heads) {
    int group = n_heads / c->n_kv_heads;
    long work = (long)n_heads * n * (pos + n - first_seen(c, layer, pos)) * c->head_size;
    int threads = work >= PARALLEL_MIN_ATTENTION ? c->threads : 1;
    Split s = split_work(c, n, group, threads);
    Share shares[SHARES_MAX];
    Layer a = {out, q, NULL, NULL, c, layer, n, pos, n_heads, group,
               c->n_kv_heads * s.query_sets * s.head_sets, s, shares,
               min_int(threads, SHARES_MAX), 0};
    /* Decoding with an item per KV head: each item stores its head's key and value, on the
     * thread that reads that head's keys next. Stored beforehand by one thread, a token's keys
     * (a value every KEY_BLOCK keys apart: head_size cache lines per head, each fetched from
     * memory before it is written) took 3% of a 110M Q8_0 token on the thread that hands out
     * the work, while the others waited (BENCHMARKS.md). Anything else stores them all first. */
    if (k && n == 1 && a.items == c->n_kv_heads) {
        *shift_of(c, layer, slot_of(c, layer, pos)) = 0;
        a.k = k, a.v = v;
    } else if (k) {
        kv_cache_store(c, layer, k, v, n, pos);
    }
    if (n == 1) share_init(shares, a.nshares, a.items);
    team_run(threads, attend_items, &a);
}
