/*
 * model.c - loading a checkpoint and the forward pass.
 *
 * A checkpoint is memory-mapped read-only and f32 and bf16 weights are used in place: loading
 * costs no copy, and the operating system pages weights in as the forward pass touches them.
 * On builds with VNNI, Q8_0 matrices are rearranged at load time for the int8 kernel, and
 * `run --no-mmap` copies f32 and bf16 ones ("Where the weight matrices live", below).
 * Two formats are read, told apart by their first four bytes: our own TLLM files (see
 * models/FORMAT.md) and llama2.c's "version 0" checkpoints.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attnviz.h" /* the --attn hook in model_forward */
#include "kernels.h"

/* ------------------------------------------------------------------------------------------ */
/* Validation. Every header field is checked against these limits before any size is
 * computed, which keeps every product below 2^50 and so far from overflowing size_t. */

#define MAX_DIM     (1 << 16)
#define MAX_HIDDEN  (1 << 18)
#define MAX_LAYERS  1024
#define MAX_HEADS   1024
#define MAX_VOCAB   (1 << 20)
#define MAX_SEQ_LEN (1 << 20)
#define ALIGN       64

int fail(char err[ERR_MAX], const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERR_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

/* Checks that the hyperparameters describe a model the forward pass can run. Returns 0, or
 * -1 naming the first field that is out of range. */
static int check_config(const Config *c, char err[ERR_MAX]) {
    struct { const char *name; int value, max; } fields[] = {
        {"dim", c->dim, MAX_DIM},           {"hidden_dim", c->hidden_dim, MAX_HIDDEN},
        {"n_layers", c->n_layers, MAX_LAYERS}, {"n_heads", c->n_heads, MAX_HEADS},
        {"n_kv_heads", c->n_kv_heads, MAX_HEADS}, {"head_size", c->head_size, MAX_DIM},
        {"vocab_size", c->vocab_size, MAX_VOCAB}, {"seq_len", c->seq_len, MAX_SEQ_LEN},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i].value <= 0 || fields[i].value > fields[i].max)
            return fail(err, "header field %s = %d is out of range (1..%d)", fields[i].name,
                        fields[i].value, fields[i].max);
    if (c->n_heads % c->n_kv_heads != 0)
        return fail(err, "n_heads = %d is not a multiple of n_kv_heads = %d", c->n_heads,
                    c->n_kv_heads);
    if (c->head_size % 2 != 0)
        return fail(err, "head_size = %d is odd, but RoPE rotates pairs", c->head_size);
    if ((long)c->n_heads * c->head_size > MAX_DIM)
        return fail(err, "n_heads * head_size = %ld is too large", (long)c->n_heads * c->head_size);
    /* NaN fails every comparison, so each test is written to reject it. A base of 1 or less
     * would turn the frequencies theta^(-2i/head_size) into 1 or growing values. */
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return fail(err, "rope_theta = %g is not a finite number above 1", c->rope_theta);
    if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f))
        return fail(err, "norm_eps = %g is out of range (0..1)", c->norm_eps);
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size || c->eos_id < 0 || c->eos_id >= c->vocab_size)
        return fail(err, "bos_id = %d or eos_id = %d is outside the vocabulary of %d",
                    c->bos_id, c->eos_id, c->vocab_size);
    if (c->weight_type == WEIGHT_Q8_0) {
        if (c->group_size != 32 && c->group_size != 64)
            return fail(err, "Q8_0 group_size = %d is not 32 or 64", c->group_size);
    } else if (c->weight_type != WEIGHT_F32 && c->weight_type != WEIGHT_BF16) {
        return fail(err, "weight_type = %d is unknown (0 f32, 1 bf16, 2 Q8_0)", c->weight_type);
    } else if (c->group_size != 0) {
        return fail(err, "group_size = %d, but only Q8_0 weights have groups (expected 0)",
                    c->group_size);
    }
    if (c->chat_template < TEMPLATE_NONE || c->chat_template > TEMPLATE_ZEPHYR)
        return fail(err, "chat_template = %d is unknown", c->chat_template);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* A cursor hands out the tensors of a mapping in file order, refusing any that would reach
 * past its end. */

typedef struct {
    const unsigned char *base;
    size_t size;  /* bytes in the mapping */
    size_t off;   /* where the next tensor starts */
    size_t align; /* TLLM tensors start at multiples of 64; llama2.c's are packed */
    int failed;
} Cursor;

/* Returns a pointer to the next `bytes` bytes, or NULL (and marks the cursor failed) if they
 * are not all inside the mapping. */
static const void *cursor_take(Cursor *c, size_t bytes) {
    size_t start = (c->off + c->align - 1) / c->align * c->align;
    if (c->failed || start > c->size || bytes > c->size - start) {
        c->failed = 1;
        return NULL;
    }
    c->off = start + bytes;
    return c->base + start;
}

static const float *take_f32(Cursor *c, size_t n) { return cursor_take(c, n * sizeof(float)); }

/* The next (rows, cols) weight matrix of the given type. */
/* The bytes of n weights of a type as stored, Q8_0's scales aside. */
static size_t weight_bytes(int type, size_t n) {
    return type == WEIGHT_F32 ? n * sizeof(float) : type == WEIGHT_BF16 ? n * sizeof(uint16_t) : n;
}

static Tensor take_tensor(Cursor *c, size_t rows, size_t cols, int type, int group_size) {
    Tensor t = {.type = type, .group_size = group_size};
    t.data = cursor_take(c, weight_bytes(type, rows * cols));
    if (type == WEIGHT_Q8_0) t.scales = take_f32(c, rows * ((cols + group_size - 1) / group_size));
    return t;
}

static uint32_t read_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t read_u64(const unsigned char *p) {
    return (uint64_t)read_u32(p) | (uint64_t)read_u32(p + 4) << 32;
}
static float read_f32(const unsigned char *p) {
    uint32_t u = read_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
/* A u32 header field as an int; values above INT_MAX become -1 so range checks catch them. */
static int read_int(const unsigned char *p) {
    uint32_t u = read_u32(p);
    return u > 0x7fffffffu ? -1 : (int)u;
}

/* ------------------------------------------------------------------------------------------ */
/* llama2.c version 0: seven int32, then every tensor of one kind for all layers together. */

static int load_llama2c(Model *m, char err[ERR_MAX]) {
    const unsigned char *b = m->mapping;
    if (m->mapping_size >= 8 && memcmp(b, "ak42", 4) == 0)
        return fail(err, "llama2.c version %u files are not supported: convert with export.py",
                    read_u32(b + 4));
    if (m->mapping_size < 7 * 4)
        return fail(err, "file is %zu bytes, shorter than the 28-byte llama2.c header",
                    m->mapping_size);
    Config *c = &m->config;
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)read_u32(b + 4 * i);
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    /* a negative vocab_size is llama2.c's flag for a classifier stored separately */
    c->shared_classifier = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? -1 : abs(h[5]);
    c->seq_len = h[6];
    if (c->n_heads <= 0 || c->dim <= 0 || c->dim % c->n_heads != 0)
        return fail(err, "dim = %d is not a positive multiple of n_heads = %d: not a llama2.c "
                    "checkpoint", c->dim, c->n_heads);
    c->head_size = c->dim / c->n_heads;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->bos_id = 1;
    c->eos_id = 2;
    c->weight_type = WEIGHT_F32;
    m->is_llama2c = 1;
    if (check_config(c, err)) return -1;

    size_t dim = c->dim, hidden = c->hidden_dim, L = c->n_layers, hs = c->head_size;
    size_t q_dim = c->n_heads * hs, kv_dim = c->n_kv_heads * hs;
    size_t expect = 28 + 4 * (c->vocab_size * dim + L * (2 * dim + 2 * dim * q_dim +
                    2 * dim * kv_dim + 3 * dim * hidden) + dim + c->seq_len * hs +
                    (c->shared_classifier ? 0 : c->vocab_size * dim));
    if (m->mapping_size != expect)
        return fail(err, "file is %zu bytes but its header (dim %d, hidden %d, %d layers, vocab "
                    "%d, seq_len %d) implies %zu: truncated or not a llama2.c checkpoint",
                    m->mapping_size, c->dim, c->hidden_dim, c->n_layers, c->vocab_size,
                    c->seq_len, expect);

    Cursor cur = {.base = b, .size = m->mapping_size, .off = 28, .align = 1};
    Weights *w = &m->weights;
    w->token_embedding = take_tensor(&cur, c->vocab_size, dim, WEIGHT_F32, 0);
    const float *attn_norm = take_f32(&cur, L * dim);
    const float *wq = take_f32(&cur, L * q_dim * dim);
    const float *wk = take_f32(&cur, L * kv_dim * dim);
    const float *wv = take_f32(&cur, L * kv_dim * dim);
    const float *wo = take_f32(&cur, L * dim * q_dim);
    const float *ffn_norm = take_f32(&cur, L * dim);
    const float *w1 = take_f32(&cur, L * hidden * dim);
    const float *w2 = take_f32(&cur, L * dim * hidden);
    const float *w3 = take_f32(&cur, L * hidden * dim);
    w->final_norm = take_f32(&cur, dim);
    take_f32(&cur, c->seq_len * hs); /* the legacy RoPE tables: recomputed, not read */
    w->classifier = c->shared_classifier ? w->token_embedding
                                         : take_tensor(&cur, c->vocab_size, dim, WEIGHT_F32, 0);
    if (cur.failed) return fail(err, "truncated checkpoint");

    w->layers = calloc(L, sizeof *w->layers);
    if (!w->layers) return fail(err, "out of memory");
    for (size_t l = 0; l < L; l++) {
        LayerWeights *lw = &w->layers[l];
        Tensor t = {.type = WEIGHT_F32};
        lw->attn_norm = attn_norm + l * dim;
        lw->ffn_norm = ffn_norm + l * dim;
        lw->wq = t, lw->wq.data = wq + l * q_dim * dim;
        lw->wk = t, lw->wk.data = wk + l * kv_dim * dim;
        lw->wv = t, lw->wv.data = wv + l * kv_dim * dim;
        lw->wo = t, lw->wo.data = wo + l * dim * q_dim;
        lw->w1 = t, lw->w1.data = w1 + l * hidden * dim;
        lw->w2 = t, lw->w2.data = w2 + l * dim * hidden;
        lw->w3 = t, lw->w3.data = w3 + l * hidden * dim;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* TLLM: a 256-byte header, the tokenizer, then each layer's tensors together, 64-aligned. */

#define TLLM_HEADER_SIZE 256

static int load_tllm(Model *m, char err[ERR_MAX]) {
    const unsigned char *b = m->mapping;
    size_t size = m->mapping_size;
    if (size < TLLM_HEADER_SIZE)
        return fail(err, "file is %zu bytes, shorter than the %d-byte TLLM header", size,
                    TLLM_HEADER_SIZE);
    uint32_t version = read_u32(b + 4);
    if (version != 1) return fail(err, "TLLM version %u is not supported (expected 1)", version);

    /* A u32 field above INT_MAX would read as -1 below; name its real value instead. */
    static const struct { int off; const char *name; } int_fields[] = {
        {8, "dim"}, {12, "hidden_dim"}, {16, "n_layers"}, {20, "n_heads"}, {24, "n_kv_heads"},
        {28, "head_size"}, {32, "vocab_size"}, {36, "seq_len"}, {60, "weight_type"},
        {64, "group_size"}, {68, "chat_template"},
    };
    for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++)
        if (read_u32(b + int_fields[i].off) > 0x7fffffffu)
            return fail(err, "header field %s = %u is out of range", int_fields[i].name,
                        read_u32(b + int_fields[i].off));

    Config *c = &m->config;
    c->dim = read_int(b + 8);
    c->hidden_dim = read_int(b + 12);
    c->n_layers = read_int(b + 16);
    c->n_heads = read_int(b + 20);
    c->n_kv_heads = read_int(b + 24);
    c->head_size = read_int(b + 28);
    c->vocab_size = read_int(b + 32);
    c->seq_len = read_int(b + 36);
    c->rope_theta = read_f32(b + 40);
    c->norm_eps = read_f32(b + 44);
    uint32_t shared = read_u32(b + 48);
    c->shared_classifier = shared == 1;
    c->bos_id = (int32_t)read_u32(b + 52);
    c->eos_id = (int32_t)read_u32(b + 56);
    c->weight_type = read_int(b + 60);
    c->group_size = read_int(b + 64);
    c->chat_template = read_int(b + 68);
    uint32_t tokenizer_kind = read_u32(b + 72), reserved = read_u32(b + 76);
    uint64_t tok_off = read_u64(b + 80), tok_size = read_u64(b + 88);
    uint64_t weights_off = read_u64(b + 96), file_size = read_u64(b + 104);
    if (check_config(c, err)) return -1;
    if (shared > 1) return fail(err, "shared_classifier = %u is not 0 or 1", shared);
    if (tokenizer_kind != 1)
        return fail(err, "tokenizer_kind = %u is unknown (1 = BPE)", tokenizer_kind);
    if (reserved != 0) return fail(err, "reserved header field = %u is not 0", reserved);
    if (file_size != size)
        return fail(err, "file is %zu bytes but its header says %llu: truncated or corrupt",
                    size, (unsigned long long)file_size);
    if (tok_off < TLLM_HEADER_SIZE || tok_off > size || tok_size > size - tok_off)
        return fail(err, "tokenizer section (offset %llu, %llu bytes) is outside the file",
                    (unsigned long long)tok_off, (unsigned long long)tok_size);
    if (weights_off % ALIGN || weights_off < tok_off + tok_size || weights_off > size)
        return fail(err, "weights_offset %llu is misaligned or overlaps the tokenizer",
                    (unsigned long long)weights_off);
    m->tokenizer_data = b + tok_off;
    m->tokenizer_size = tok_size;

    size_t dim = c->dim, hidden = c->hidden_dim, hs = c->head_size;
    size_t q_dim = c->n_heads * hs, kv_dim = c->n_kv_heads * hs;
    int type = c->weight_type, gs = c->group_size;
    Cursor cur = {.base = b, .size = size, .off = weights_off, .align = ALIGN};
    Weights *w = &m->weights;
    w->layers = calloc(c->n_layers, sizeof *w->layers);
    if (!w->layers) return fail(err, "out of memory");
    w->token_embedding = take_tensor(&cur, c->vocab_size, dim, type, gs);
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &w->layers[l];
        lw->attn_norm = take_f32(&cur, dim);
        lw->wq = take_tensor(&cur, q_dim, dim, type, gs);
        lw->wk = take_tensor(&cur, kv_dim, dim, type, gs);
        lw->wv = take_tensor(&cur, kv_dim, dim, type, gs);
        lw->wo = take_tensor(&cur, dim, q_dim, type, gs);
        lw->ffn_norm = take_f32(&cur, dim);
        lw->w1 = take_tensor(&cur, hidden, dim, type, gs);
        lw->w2 = take_tensor(&cur, dim, hidden, type, gs);
        lw->w3 = take_tensor(&cur, hidden, dim, type, gs);
    }
    w->final_norm = take_f32(&cur, dim);
    w->classifier = c->shared_classifier ? w->token_embedding
                                         : take_tensor(&cur, c->vocab_size, dim, type, gs);
    if (cur.failed) return fail(err, "truncated: the tensors the header describes do not fit");
    if (cur.off != size)
        return fail(err, "%zu bytes after the last tensor: the header does not match the file",
                    size - cur.off);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Run state */

/* Tokens per prompt chunk. More tokens per chunk read the weights fewer times, but the chunk's
 * activations (chunk x hidden_dim floats for w2) should stay in a core's L2 cache while the
 * weight rows stream past them. */
#define PREFILL_CHUNK 64

/* Allocates every activation buffer and the KV cache. Returns 0, or -1 if memory ran out. */
static int alloc_state(Model *m, char err[ERR_MAX]) {
    const Config *c = &m->config;
    RunState *s = &m->state;
    size_t q_dim = (size_t)c->n_heads * c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_size;
    size_t cache = (size_t)c->n_layers * c->seq_len * kv_dim;
    s->x = calloc(c->dim, sizeof(float));
    s->xb = calloc(c->dim > (int)q_dim ? (size_t)c->dim : q_dim, sizeof(float));
    s->xb2 = calloc(c->dim, sizeof(float));
    s->hb = calloc(c->hidden_dim, sizeof(float));
    s->hb2 = calloc(c->hidden_dim, sizeof(float));
    s->q = calloc(q_dim, sizeof(float));
    s->k = calloc(kv_dim, sizeof(float));
    s->v = calloc(kv_dim, sizeof(float));
    s->att = calloc((size_t)c->n_heads * c->seq_len, sizeof(float));
    s->logits = calloc(c->vocab_size, sizeof(float));
    s->rope_cos = calloc(c->head_size / 2, sizeof(float));
    s->rope_sin = calloc(c->head_size / 2, sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));

    /* prompt chunks; a model with a short context never needs more than seq_len rows */
    size_t n = s->chunk_len = c->seq_len < PREFILL_CHUNK ? c->seq_len : PREFILL_CHUNK;
    size_t xb_dim = c->dim > (int)q_dim ? (size_t)c->dim : q_dim;
    s->cx = calloc(n * c->dim, sizeof(float));
    s->cxb = calloc(n * xb_dim, sizeof(float));
    s->cxb2 = calloc(n * c->dim, sizeof(float));
    s->chb = calloc(n * c->hidden_dim, sizeof(float));
    s->chb2 = calloc(n * c->hidden_dim, sizeof(float));
    s->cq = calloc(n * q_dim, sizeof(float));
    s->ck = calloc(n * kv_dim, sizeof(float));
    s->cv = calloc(n * kv_dim, sizeof(float));
    s->crope_cos = calloc(n * (c->head_size / 2), sizeof(float));
    s->crope_sin = calloc(n * (c->head_size / 2), sizeof(float));
    int quant_ok = 1;
    if (c->weight_type == WEIGHT_Q8_0) {
        size_t widest = xb_dim > (size_t)c->hidden_dim ? xb_dim : (size_t)c->hidden_dim;
        s->xq = calloc(n * widest, 1);
        s->xq_scale = calloc(n * (widest / c->group_size + 1), sizeof(float));
        quant_ok = s->xq && s->xq_scale;
    }
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v || !s->att ||
        !s->logits || !s->rope_cos || !s->rope_sin || !s->key_cache || !s->value_cache ||
        !s->cx || !s->cxb || !s->cxb2 || !s->chb || !s->chb2 || !s->cq || !s->ck || !s->cv ||
        !s->crope_cos || !s->crope_sin || !quant_ok)
        return fail(err, "cannot allocate the run state (KV cache of %zu MB): try a smaller "
                    "seq_len", 2 * cache * sizeof(float) >> 20);
    return 0;
}

static void free_state(RunState *s) {
    free(s->x), free(s->xb), free(s->xb2), free(s->hb), free(s->hb2);
    free(s->q), free(s->k), free(s->v), free(s->att), free(s->logits);
    free(s->rope_cos), free(s->rope_sin), free(s->key_cache), free(s->value_cache);
    free(s->xq), free(s->xq_scale);
    free(s->cx), free(s->cxb), free(s->cxb2), free(s->chb), free(s->chb2);
    free(s->cq), free(s->ck), free(s->cv), free(s->crope_cos), free(s->crope_sin);
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* Calls fn on every weight matrix with its shape, stopping at the first that fails (the
 * token embedding aside: it is only ever read a row at a time). */
static int each_matrix(Model *m, int (*fn)(Model *, Tensor *, int, int)) {
    const Config *c = &m->config;
    int dim = c->dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * c->head_size, kv_dim = c->n_kv_heads * c->head_size;
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &m->weights.layers[l];
        if (fn(m, &lw->wq, q_dim, dim) || fn(m, &lw->wk, kv_dim, dim) ||
            fn(m, &lw->wv, kv_dim, dim) || fn(m, &lw->wo, dim, q_dim) ||
            fn(m, &lw->w1, hidden, dim) || fn(m, &lw->w2, dim, hidden) ||
            fn(m, &lw->w3, hidden, dim))
            return -1;
    }
    return fn(m, &m->weights.classifier, c->vocab_size, dim);
}

/* Where the weight matrices live. By default f32 and bf16 matrices are read where they lie,
 * in the mapping. Two things move matrices into memory of the engine's own, the arena, in
 * 2 MB pages where Linux offers them (the hardware prefetcher stops at every 4 KB page
 * boundary, and decoding streams whole matrices): Q8_0 matrices on builds with VNNI, which
 * are rearranged for the int8 kernel (kernels.c says why), and, with copy_weights (run
 * --no-mmap), f32 and bf16 matrices, which are copied: decoding a model larger than the
 * cache gets about 10% faster, loading slower (BENCHMARKS.md). The mapped pages of a moved
 * matrix are handed back to the kernel at once, so that memory use does not count them
 * twice; were they read again (the token embedding shares the classifier's), they would
 * come back from the file. */

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* Its bytes in the arena, 0 if it stays in the mapping. */
static size_t arena_bytes(const Model *m, const Tensor *w, int rows, int cols) {
    size_t packed = q8_packed_size(w, rows, cols); /* a multiple of 64 */
    if (packed) return packed;
    size_t bytes = weight_bytes(w->type, (size_t)rows * cols);
    return m->copy_weights && w->type != WEIGHT_Q8_0 ? round64(bytes) : 0;
}

static int measure(Model *m, Tensor *w, int rows, int cols) {
    m->arena_size += arena_bytes(m, w, rows, cols);
    return 0;
}

static int place(Model *m, Tensor *w, int rows, int cols) {
    size_t size = arena_bytes(m, w, rows, cols);
    if (size == 0) return 0;
    void *at = (char *)m->arena + m->arena_used;
    const void *source = w->data;
    size_t source_bytes = weight_bytes(w->type, (size_t)rows * cols);
    if (w->type == WEIGHT_Q8_0) {
        q8_pack(w, rows, cols, at);
    } else {
        memcpy(at, source, source_bytes);
        w->data = at;
    }
    m->arena_used += size;
    if (m->owns_mapping) { /* hand back the whole pages inside the source */
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t start = ((uintptr_t)source + page - 1) / page * page;
        uintptr_t end = ((uintptr_t)source + source_bytes) / page * page;
        if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
    }
    return 0;
}

/* Memory in 2 MB pages where Linux offers them, or NULL; not zeroed (place writes it all). */
static void *alloc_huge(size_t bytes) {
    size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) / huge * huge;
    void *mem = NULL;
    if (posix_memalign(&mem, huge, bytes) != 0) return NULL;
#if defined(MADV_HUGEPAGE)
    madvise(mem, bytes, MADV_HUGEPAGE);
#endif
    return mem;
}

/* Parses the checkpoint in m->mapping, places the weight matrices and allocates the run
 * state; frees all on failure. */
static int load_mapped(Model *m, char err[ERR_MAX]) {
    int is_tllm = m->mapping_size >= 4 && memcmp(m->mapping, "TLLM", 4) == 0;
    if ((is_tllm ? load_tllm(m, err) : load_llama2c(m, err)) != 0) {
        model_free(m);
        return -1;
    }
    each_matrix(m, measure);
    if (m->arena_size > 0) {
        if (!(m->arena = alloc_huge(m->arena_size))) {
            size_t mb = m->arena_size >> 20;
            model_free(m);
            return fail(err, "cannot allocate %zu MB for the weights", mb);
        }
        each_matrix(m, place);
    }
    if (alloc_state(m, err) != 0) {
        model_free(m);
        return -1;
    }
    return 0;
}

int model_load(Model *m, const char *path, int copy_weights, char err[ERR_MAX]) {
    memset(m, 0, sizeof *m);
    m->copy_weights = copy_weights;
    /* O_NONBLOCK so that a FIFO given as a checkpoint is refused instead of waiting forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fail(err, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return fail(err, "empty file");
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping stays valid without the descriptor */
    if (map == MAP_FAILED) return fail(err, "cannot map: %s", strerror(errno));
    m->mapping = map;
    m->mapping_size = (size_t)st.st_size;
    m->owns_mapping = 1;
    return load_mapped(m, err);
}

int model_load_memory(Model *m, const void *data, size_t size, char err[ERR_MAX]) {
    memset(m, 0, sizeof *m);
    if (size == 0) return fail(err, "empty file");
    m->mapping = data;
    m->mapping_size = size;
    return load_mapped(m, err);
}

void model_free(Model *m) {
    free_state(&m->state);
    free(m->weights.layers);
    free(m->arena);
    if (m->owns_mapping) munmap((void *)m->mapping, m->mapping_size);
    memset(m, 0, sizeof *m);
}

/* Bytes of weights one forward pass streams from memory: every layer matrix and the
 * classifier once, plus the norms (the embedding is read one row at a time, which is left
 * out). */
size_t model_weight_bytes(const Model *m) {
    const Config *c = &m->config;
    double per_weight = c->weight_type == WEIGHT_F32 ? 4.0
                      : c->weight_type == WEIGHT_BF16 ? 2.0 : 1.0 + 4.0 / c->group_size;
    size_t q_dim = (size_t)c->n_heads * c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_size;
    size_t layer = (size_t)c->dim * (2 * q_dim + 2 * kv_dim + 3 * (size_t)c->hidden_dim);
    size_t weights = (size_t)c->n_layers * layer + (size_t)c->vocab_size * c->dim;
    return (size_t)(weights * per_weight) + sizeof(float) * (2 * c->n_layers + 1) * c->dim;
}

/* ------------------------------------------------------------------------------------------ */
/* The forward pass */

/* y (rows) = W (rows, cols) x (cols) for one token; Q8_0 weights quantize x into the scratch. */
static void matvec(RunState *s, float *y, const Tensor *w, const float *x, int rows, int cols) {
    matmul(y, w, x, s->xq, s->xq_scale, 1, rows, cols);
}

float *model_forward(Model *m, int token, int pos) {
    const Config *p = &m->config;
    const Weights *w = &m->weights;
    RunState *s = &m->state;
    if (token < 0 || token >= p->vocab_size || pos < 0 || pos >= p->seq_len) return NULL;
    int dim = p->dim, hidden = p->hidden_dim, hs = p->head_size;
    int q_dim = p->n_heads * hs, kv_dim = p->n_kv_heads * hs;

    /* x = tok_embeddings(token); the rotation angles of this position, for every layer */
    dequantize_row(s->x, &w->token_embedding, token, dim);
    rope_angles(s->rope_cos, s->rope_sin, pos, hs, p->rope_theta);

    for (int l = 0; l < p->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        size_t layer_cache = (size_t)l * p->seq_len * kv_dim;
        float *key_cache = s->key_cache + layer_cache;
        float *value_cache = s->value_cache + layer_cache;

        /* attention: xb = attention_norm(x); q, k, v = wq(xb), wk(xb), wv(xb) */
        rmsnorm(s->xb, s->x, lw->attn_norm, dim, p->norm_eps);
        Product qkv[3] = {{s->q, &lw->wq, q_dim}, {s->k, &lw->wk, kv_dim}, {s->v, &lw->wv, kv_dim}};
        matmul_many(qkv, 3, s->xb, s->xq, s->xq_scale, 1, dim);

        /* q, k = apply_rotary_emb(q, k, pos), then remember k and v for later positions */
        rope(s->q, s->rope_cos, s->rope_sin, p->n_heads, hs);
        rope(s->k, s->rope_cos, s->rope_sin, p->n_kv_heads, hs);
        kv_cache_store(key_cache, value_cache, s->k, s->v, p->n_kv_heads, hs, p->seq_len, pos);

        /* xb = softmax(q k^T / sqrt(head_size)) v over positions 0..pos, per head */
        attention(s->xb, s->att, s->q, key_cache, value_cache, p->n_heads, p->n_kv_heads, hs,
                  p->seq_len, pos);
        if (m->attn) attn_record_layer(m->attn, l, pos, s->att, p->seq_len); /* --attn hook */

        /* x = x + wo(xb) */
        matvec(s, s->xb2, &lw->wo, s->xb, dim, q_dim);
        for (int i = 0; i < dim; i++) s->x[i] += s->xb2[i];

        /* feedforward: xb = ffn_norm(x), then x = x + w2(silu(w1(xb)) * w3(xb)) */
        rmsnorm(s->xb, s->x, lw->ffn_norm, dim, p->norm_eps);
        Product up[2] = {{s->hb, &lw->w1, hidden}, {s->hb2, &lw->w3, hidden}};
        matmul_many(up, 2, s->xb, s->xq, s->xq_scale, 1, dim);
        swiglu(s->hb, s->hb, s->hb2, hidden); /* hb = silu(hb) * hb2 */
        matvec(s, s->xb2, &lw->w2, s->hb, dim, hidden);
        for (int i = 0; i < dim; i++) s->x[i] += s->xb2[i];
    }

    /* logits = output(norm(x)) */
    rmsnorm(s->x, s->x, w->final_norm, dim, p->norm_eps);
    matvec(s, s->logits, &w->classifier, s->x, p->vocab_size, dim);
    return s->logits;
}

/* ------------------------------------------------------------------------------------------ */
/* The prompt, a chunk of tokens at a time */

/* model_forward for n consecutive tokens (n <= chunk_len) at positions pos .. pos + n - 1.
 * The steps are model_forward's, in the same order, but each runs for all n tokens before
 * the next: the buffers hold one row per token (cx is x, cq is q, ...), and each matmul reads
 * a weight matrix once for the whole chunk. Every row goes through the same arithmetic as in
 * model_forward, so the logits agree bit for bit (tests/test_speed.py checks 1e-4). The
 * classifier, by far the largest matrix for a small model with a 32000-token vocabulary, runs
 * for every position only when all_logits (n, vocab_size) is given; otherwise for the last
 * position if `last` is set (into s->logits), or not at all. Between the matrix products, the
 * per-token loops are shared out between the threads too. */
static void forward_chunk(Model *m, const int *tokens, int n, int pos, float *all_logits,
                          int last) {
    const Config *p = &m->config;
    const Weights *w = &m->weights;
    RunState *s = &m->state;
    int dim = p->dim, hidden = p->hidden_dim, hs = p->head_size;
    int q_dim = p->n_heads * hs, kv_dim = p->n_kv_heads * hs;
    int8_t *xq = s->xq;
    float *xq_scale = s->xq_scale;
    /* the per-token loops go to all threads when that pays for waking them (not for 260K) */
    int share = (long)n * dim >= (1 << 14);
    (void)share; /* read only by OpenMP */

    /* x = tok_embeddings(token), and the RoPE angles of each token's position */
    for (int i = 0; i < n; i++) {
        dequantize_row(s->cx + (size_t)i * dim, &w->token_embedding, tokens[i], dim);
        rope_angles(s->crope_cos + (size_t)i * (hs / 2), s->crope_sin + (size_t)i * (hs / 2),
                    pos + i, hs, p->rope_theta);
    }

    for (int l = 0; l < p->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        size_t layer_cache = (size_t)l * p->seq_len * kv_dim;
        float *key_cache = s->key_cache + layer_cache;
        float *value_cache = s->value_cache + layer_cache;

        /* xb = attention_norm(x); q, k, v = wq(xb), wk(xb), wv(xb) */
        #pragma omp parallel for if (share)
        for (int i = 0; i < n; i++)
            rmsnorm(s->cxb + (size_t)i * dim, s->cx + (size_t)i * dim, lw->attn_norm, dim,
                    p->norm_eps);
        Product qkv[3] = {{s->cq, &lw->wq, q_dim}, {s->ck, &lw->wk, kv_dim},
                          {s->cv, &lw->wv, kv_dim}};
        matmul_many(qkv, 3, s->cxb, xq, xq_scale, n, dim);

        /* rotate each token's q and k by its own position; all n keys and values enter the
         * cache before attention, which then keeps each query to the positions up to its own */
        #pragma omp parallel for if (share)
        for (int i = 0; i < n; i++) {
            const float *cos_row = s->crope_cos + (size_t)i * (hs / 2);
            const float *sin_row = s->crope_sin + (size_t)i * (hs / 2);
            rope(s->cq + (size_t)i * q_dim, cos_row, sin_row, p->n_heads, hs);
            rope(s->ck + (size_t)i * kv_dim, cos_row, sin_row, p->n_kv_heads, hs);
            kv_cache_store(key_cache, value_cache, s->ck + (size_t)i * kv_dim,
                           s->cv + (size_t)i * kv_dim, p->n_kv_heads, hs, p->seq_len, pos + i);
        }
        attention_chunk(s->cxb, s->att, s->cq, key_cache, value_cache, n, p->n_heads,
                        p->n_kv_heads, hs, p->seq_len, pos, m->attn, l);

        /* x = x + wo(xb) */
        matmul(s->cxb2, &lw->wo, s->cxb, xq, xq_scale, n, dim, q_dim);
        #pragma omp parallel for if (share)
        for (size_t i = 0; i < (size_t)n * dim; i++) s->cx[i] += s->cxb2[i];

        /* x = x + w2(silu(w1(xb)) * w3(xb)), xb = ffn_norm(x) */
        #pragma omp parallel for if (share)
        for (int i = 0; i < n; i++)
            rmsnorm(s->cxb + (size_t)i * dim, s->cx + (size_t)i * dim, lw->ffn_norm, dim,
                    p->norm_eps);
        Product up[2] = {{s->chb, &lw->w1, hidden}, {s->chb2, &lw->w3, hidden}};
        matmul_many(up, 2, s->cxb, xq, xq_scale, n, dim);
        #pragma omp parallel for if (share)
        for (int i = 0; i < n; i++)
            swiglu(s->chb + (size_t)i * hidden, s->chb + (size_t)i * hidden,
                   s->chb2 + (size_t)i * hidden, hidden);
        matmul(s->cxb2, &lw->w2, s->chb, xq, xq_scale, n, dim, hidden);
        #pragma omp parallel for if (share)
        for (size_t i = 0; i < (size_t)n * dim; i++) s->cx[i] += s->cxb2[i];
    }

    /* logits = output(norm(x)), for every position or only the last */
    if (all_logits) {
        for (int i = 0; i < n; i++)
            rmsnorm(s->cx + (size_t)i * dim, s->cx + (size_t)i * dim, w->final_norm, dim,
                    p->norm_eps);
        matmul(all_logits, &w->classifier, s->cx, xq, xq_scale, n, p->vocab_size, dim);
        if (last)
            memcpy(s->logits, all_logits + (size_t)(n - 1) * p->vocab_size,
                   p->vocab_size * sizeof(float));
    } else if (last) {
        float *x = s->cx + (size_t)(n - 1) * dim;
        rmsnorm(x, x, w->final_norm, dim, p->norm_eps);
        matvec(s, s->logits, &w->classifier, x, p->vocab_size, dim);
    }
}

float *model_prefill(Model *m, const int *tokens, int n, int pos, float *all_logits) {
    const Config *p = &m->config;
    if (n <= 0 || pos < 0 || pos > p->seq_len - n) return NULL;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= p->vocab_size) return NULL;
    int chunk = m->state.chunk_len;
    for (int done = 0; done < n; done += chunk) {
        int k = n - done < chunk ? n - done : chunk;
        forward_chunk(m, tokens + done, k, pos + done,
                      all_logits ? all_logits + (size_t)done * p->vocab_size : NULL,
                      done + k == n);
    }
    return m->state.logits;
}
