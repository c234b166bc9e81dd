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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "kernels.h"
#include "model.h"

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
    } else if (!weight_type(c->weight_type)) {
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

/* The next (rows, cols) weight matrix of the given type, laid out as its type says. */
static Tensor take_tensor(Cursor *c, size_t rows, size_t cols, int type, int group_size) {
    const WeightType *wt = weight_type(type);
    Tensor t = {.type = type, .rows = (int)rows, .cols = (int)cols, .group_size = group_size};
    const void *base = cursor_take(c, wt->file_bytes(rows, cols, group_size));
    if (base) wt->bind(&t, base);
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

/* An f32 matrix (rows, cols) at data. */
static Tensor f32_matrix(const float *data, size_t rows, size_t cols) {
    return (Tensor){.type = WEIGHT_F32, .rows = (int)rows, .cols = (int)cols, .data = data};
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
        lw->attn_norm = attn_norm + l * dim;
        lw->ffn_norm = ffn_norm + l * dim;
        lw->wq = f32_matrix(wq + l * q_dim * dim, q_dim, dim);
        lw->wk = f32_matrix(wk + l * kv_dim * dim, kv_dim, dim);
        lw->wv = f32_matrix(wv + l * kv_dim * dim, kv_dim, dim);
        lw->wo = f32_matrix(wo + l * dim * q_dim, dim, q_dim);
        lw->w1 = f32_matrix(w1 + l * hidden * dim, hidden, dim);
        lw->w2 = f32_matrix(w2 + l * dim * hidden, dim, hidden);
        lw->w3 = f32_matrix(w3 + l * hidden * dim, hidden, dim);
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

static void free_state(RunState *s) {
    free(s->x), free(s->xb), free(s->xb2), free(s->hb), free(s->hb2);
    free(s->q), free(s->k), free(s->v), free(s->rope_cos), free(s->rope_sin);
    free(s->att), free(s->logits), free(s->xq), free(s->xq_scale);
    kv_cache_free(&s->kv);
}

/* Whether any weight matrix quantizes its input (then the state needs xq). */
static int quantizes_input(const Model *m);

/* Allocates every activation buffer and the KV cache. Returns 0, or -1 if memory ran out. */
static int alloc_state(Model *m, char err[ERR_MAX]) {
    const Config *c = &m->config;
    RunState *s = &m->state;
    /* a model with a short context never needs more than seq_len rows */
    size_t n = s->chunk_len = c->seq_len < PREFILL_CHUNK ? c->seq_len : PREFILL_CHUNK;
    size_t q_dim = (size_t)c->n_heads * c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_size;
    size_t xb_dim = c->dim > (int)q_dim ? (size_t)c->dim : q_dim;
    s->x = calloc(n * c->dim, sizeof(float));
    s->xb = calloc(n * xb_dim, sizeof(float));
    s->xb2 = calloc(n * c->dim, sizeof(float));
    s->hb = calloc(n * c->hidden_dim, sizeof(float));
    s->hb2 = calloc(n * c->hidden_dim, sizeof(float));
    s->q = calloc(n * q_dim, sizeof(float));
    s->k = calloc(n * kv_dim, sizeof(float));
    s->v = calloc(n * kv_dim, sizeof(float));
    s->rope_cos = calloc(n * (c->head_size / 2), sizeof(float));
    s->rope_sin = calloc(n * (c->head_size / 2), sizeof(float));
    s->att = calloc((size_t)c->n_heads * c->seq_len, sizeof(float));
    s->logits = calloc(c->vocab_size, sizeof(float));
    int quant_ok = 1;
    if (quantizes_input(m)) { /* the smallest group (32) has the most scales */
        size_t widest = xb_dim > (size_t)c->hidden_dim ? xb_dim : (size_t)c->hidden_dim;
        s->xq = calloc(n * widest, 1);
        s->xq_scale = calloc(n * (widest / 32 + 1), sizeof(float));
        quant_ok = s->xq && s->xq_scale;
    }
    int kv_ok = kv_cache_init(&s->kv, c->n_layers, c->n_kv_heads, c->head_size, c->seq_len) == 0;
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v ||
        !s->rope_cos || !s->rope_sin || !s->att || !s->logits || !quant_ok || !kv_ok)
        return fail(err, "cannot allocate the run state (KV cache of %zu MB): try a smaller "
                    "seq_len", 2 * (size_t)c->n_layers * c->seq_len * kv_dim * sizeof(float) >> 20);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* The weight matrices, numbered 0 .. matrix_count - 1: the seven of each layer, then the
 * classifier (the token embedding aside: it is only ever read a row at a time). */
static int matrix_count(const Model *m) { return 7 * m->config.n_layers + 1; }

static Tensor *matrix(Model *m, int i) {
    if (i == 7 * m->config.n_layers) return &m->weights.classifier;
    LayerWeights *lw = &m->weights.layers[i / 7];
    Tensor *layer[7] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w1, &lw->w2, &lw->w3};
    return layer[i % 7];
}

static size_t tensor_bytes(const Tensor *w) {
    return weight_type(w->type)->file_bytes(w->rows, w->cols, w->group_size);
}

static int quantizes_input(const Model *m) {
    for (int i = 0; i < matrix_count(m); i++)
        if (weight_type(matrix((Model *)m, i)->type)->quantize) return 1;
    return 0;
}

/* Where the weight matrices live. By default f32 and bf16 matrices are read where they lie,
 * in the mapping. Two things move matrices into memory of the engine's own, the arena, in
 * 2 MB pages where Linux offers them (the hardware prefetcher stops at every 4 KB page
 * boundary, and decoding streams whole matrices): a weight type that rearranges its matrices
 * for this build's kernel (Q8_0 with VNNI, matmul_q8_0.c says why), and, with copy_weights
 * (run --no-mmap), every other matrix, which is copied: decoding a model larger than the
 * cache gets about 10% faster, loading slower (BENCHMARKS.md). The mapped pages of a moved
 * matrix are handed back to the kernel at once, so that memory use does not count them
 * twice; were they read again (the token embedding shares the classifier's), they would
 * come back from the file. */

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* Its bytes in the arena, 0 if it stays in the mapping. */
static size_t arena_bytes(const Model *m, const Tensor *w) {
    const WeightType *type = weight_type(w->type);
    size_t packed = type->packed_size(w); /* a multiple of 64 */
    if (packed) return packed;
    return m->copy_weights ? round64(type->file_bytes(w->rows, w->cols, w->group_size)) : 0;
}

/* Moves w into the arena if it belongs there. */
static void place(Model *m, Tensor *w) {
    size_t size = arena_bytes(m, w);
    if (size == 0) return;
    const WeightType *type = weight_type(w->type);
    void *at = (char *)m->arena + m->arena_used;
    const void *source = w->data;
    size_t source_bytes = tensor_bytes(w);
    if (type->packed_size(w)) {
        type->pack(w, at);
    } else {
        memcpy(at, source, source_bytes);
        type->bind(w, at);
    }
    m->arena_used += size;
    if (m->owns_mapping) { /* hand back the whole pages inside the source */
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t start = ((uintptr_t)source + page - 1) / page * page;
        uintptr_t end = ((uintptr_t)source + source_bytes) / page * page;
        if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
    }
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
    for (int i = 0; i < matrix_count(m); i++) m->arena_size += arena_bytes(m, matrix(m, i));
    if (m->arena_size > 0) {
        if (!(m->arena = alloc_huge(m->arena_size))) {
            size_t mb = m->arena_size >> 20;
            model_free(m);
            return fail(err, "cannot allocate %zu MB for the weights", mb);
        }
        for (int i = 0; i < matrix_count(m); i++) place(m, matrix(m, i));
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
    size_t bytes = sizeof(float) * (2 * m->config.n_layers + 1) * m->config.dim;
    for (int i = 0; i < matrix_count(m); i++) bytes += tensor_bytes(matrix((Model *)m, i));
    return bytes;
}

void model_observe_attention(Model *m, AttnObserver *fn, void *ctx) {
    m->observer = fn;
    m->observer_ctx = ctx;
}

/* ------------------------------------------------------------------------------------------ */
/* The forward pass, for a chunk of n tokens at positions pos .. pos + n - 1. Each step runs
 * for all n tokens before the next: the buffers hold one row per token, and each matmul reads
 * a weight matrix once for the whole chunk. Every row goes through the same arithmetic
 * whatever n is, so the logits of a position do not depend on how the prompt was chunked.
 * The comments give the line of llama2.c's model.py each step mirrors. */

/* h = tok_embeddings(tokens) */
static void embed(Model *m, const int *tokens, int n) {
    const Tensor *emb = &m->weights.token_embedding;
    for (int i = 0; i < n; i++)
        weight_type(emb->type)->dequantize_row(m->state.x + (size_t)i * emb->cols, emb, tokens[i]);
}

/* h = x + self.attention.forward(self.attention_norm(x), start_pos, freqs_cis, mask) */
static void attention_block(Model *m, int l, int n, int pos) {
    const Config *p = &m->config;
    const LayerWeights *lw = &m->weights.layers[l];
    RunState *s = &m->state;
    int dim = p->dim, hs = p->head_size;

    /* xb = attention_norm(x); q, k, v = wq(xb), wk(xb), wv(xb) */
    rmsnorm(s->xb, s->x, lw->attn_norm, n, dim, p->norm_eps);
    Product qkv[3] = {{s->q, &lw->wq}, {s->k, &lw->wk}, {s->v, &lw->wv}};
    matmul_many(qkv, 3, s->xb, n, s->xq, s->xq_scale);

    /* q, k = apply_rotary_emb(q, k, freqs_cis): each token by its own position */
    rope(s->q, s->rope_cos, s->rope_sin, n, p->n_heads, hs);
    rope(s->k, s->rope_cos, s->rope_sin, n, p->n_kv_heads, hs);

    /* cache_k[:, pos:pos+n] = k; cache_v[:, pos:pos+n] = v (all n before attention, which
     * keeps each query to the positions up to its own) */
    kv_cache_store(&s->kv, l, s->k, s->v, n, pos);

    /* xb = softmax(q k^T / sqrt(head_size) + mask) v, for every query head */
    if (!m->observer) {
        attention(s->xb, s->att, s->q, &s->kv, l, n, pos, p->n_heads);
    } else { /* the same numbers a position at a time, shown to the observer */
        size_t q_dim = (size_t)p->n_heads * hs;
        for (int i = 0; i < n; i++) {
            attention_weights(s->xb + i * q_dim, s->att, s->q + i * q_dim, &s->kv, l, pos + i,
                              p->n_heads);
            m->observer(m->observer_ctx, l, pos + i, s->att, p->seq_len);
        }
    }

    /* x = x + wo(xb) */
    matmul(s->xb2, &lw->wo, s->xb, n, s->xq, s->xq_scale);
    add(s->x, s->xb2, n * dim);
}

/* out = h + self.feed_forward.forward(self.ffn_norm(h)) */
static void feedforward_block(Model *m, int l, int n) {
    const Config *p = &m->config;
    const LayerWeights *lw = &m->weights.layers[l];
    RunState *s = &m->state;

    /* xb = ffn_norm(x) */
    rmsnorm(s->xb, s->x, lw->ffn_norm, n, p->dim, p->norm_eps);
    /* x = x + w2(silu(w1(xb)) * w3(xb)) */
    Product up[2] = {{s->hb, &lw->w1}, {s->hb2, &lw->w3}};
    matmul_many(up, 2, s->xb, n, s->xq, s->xq_scale);
    swiglu(s->hb, s->hb, s->hb2, n * p->hidden_dim);
    matmul(s->xb2, &lw->w2, s->hb, n, s->xq, s->xq_scale);
    add(s->x, s->xb2, n * p->dim);
}

/* logits = self.output(self.norm(h)): for every position into all_logits (n, vocab_size),
 * and the last position's into s->logits; only the last if all_logits is NULL. (The
 * classifier is by far the largest matrix of a small model with a 32000-token vocabulary,
 * so it runs only for the positions whose logits someone wants.) */
static void classify(Model *m, int n, float *all_logits) {
    const Config *p = &m->config;
    RunState *s = &m->state;
    int first = all_logits ? 0 : n - 1, rows = n - first; /* the rows that need logits */
    float *x = s->x + (size_t)first * p->dim;
    rmsnorm(x, x, m->weights.final_norm, rows, p->dim, p->norm_eps);
    float *out = all_logits ? all_logits : s->logits;
    matmul(out, &m->weights.classifier, x, rows, s->xq, s->xq_scale);
    if (all_logits)
        memcpy(s->logits, all_logits + (size_t)(n - 1) * p->vocab_size,
               p->vocab_size * sizeof(float));
}

/* The whole network for a chunk of n <= chunk_len tokens; the logits of all of them into
 * all_logits, or with `last` only of the last one, or none. */
static void forward_chunk(Model *m, const int *tokens, int n, int pos, float *all_logits,
                          int last) {
    const Config *p = &m->config;
    embed(m, tokens, n);
    rope_angles(m->state.rope_cos, m->state.rope_sin, pos, n, p->head_size, p->rope_theta);
    for (int l = 0; l < p->n_layers; l++) {
        attention_block(m, l, n, pos);
        feedforward_block(m, l, n);
    }
    if (all_logits || last) classify(m, n, all_logits);
}

float *model_forward(Model *m, const int *tokens, int n, int pos, float *all_logits) {
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
