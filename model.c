/*
 * model.c - loading a checkpoint and the forward pass.
 *
 * A checkpoint is memory-mapped read-only. At load time each weight matrix is rearranged for
 * this build's kernel into memory of the engine's own, or, where the stored layout serves
 * (the plain C build; Q8_0 and Q4_0 without VNNI), used in place ("Where the weight matrices
 * live", below). format.c reads the file (our own TLLM files, models/FORMAT.md, and
 * llama2.c's "version 0" checkpoints) into named tensors; here they become the weights.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "kernels.h"
#include "model.h"

/* ------------------------------------------------------------------------------------------ */
/* The weights, bound by name to the tensors of the file (format.c has checked every one) */

/* The matrix called name, as its weight type lays it out, or a zeroed Tensor if absent. */
static Tensor matrix_named(const ModelFile *f, const char *name) {
    const FileTensor *ft = model_file_tensor(f, name);
    if (!ft) return (Tensor){0};
    Tensor t = {.type = ft->type, .rows = ft->rows, .cols = ft->cols, .group_size = ft->group_size};
    weight_type(ft->type)->bind(&t, ft->data);
    return t;
}

/* The f32 vector called name, or NULL if absent. */
static const float *vector_named(const ModelFile *f, const char *name) {
    const FileTensor *ft = model_file_tensor(f, name);
    return ft ? ft->data : NULL;
}

/* Points the weights at the file's tensors. Returns 0, or -1 if memory ran out. */
static int bind_weights(Model *m, const ModelFile *f, char err[ERR_MAX]) {
    Weights *w = &m->weights;
    w->layers = calloc(m->config.n_layers, sizeof *w->layers);
    if (!w->layers) return fail(err, "out of memory");
    w->token_embedding = matrix_named(f, "token_embedding");
    w->final_norm = vector_named(f, "final_norm");
    /* without a classifier of its own, the model reads the token embedding backwards */
    w->classifier = model_file_tensor(f, "classifier") ? matrix_named(f, "classifier")
                                                       : w->token_embedding;
    for (int l = 0; l < m->config.n_layers; l++) {
        LayerWeights *lw = &w->layers[l];
        char name[FORMAT_MAX_NAME];
#define LAYER(field) (snprintf(name, sizeof name, "layers.%d." #field, l), name)
        lw->attn_norm = vector_named(f, LAYER(attn_norm));
        lw->wq = matrix_named(f, LAYER(wq));
        lw->wk = matrix_named(f, LAYER(wk));
        lw->wv = matrix_named(f, LAYER(wv));
        lw->bq = vector_named(f, LAYER(bq));
        lw->bk = vector_named(f, LAYER(bk));
        lw->bv = vector_named(f, LAYER(bv));
        lw->q_norm = vector_named(f, LAYER(q_norm));
        lw->k_norm = vector_named(f, LAYER(k_norm));
        lw->wo = matrix_named(f, LAYER(wo));
        lw->ffn_norm = vector_named(f, LAYER(ffn_norm));
        lw->w1 = matrix_named(f, LAYER(w1));
        lw->w2 = matrix_named(f, LAYER(w2));
        lw->w3 = matrix_named(f, LAYER(w3));
#undef LAYER
    }
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
    free(s->q), free(s->k), free(s->v), free(s->rope_freq), free(s->rope_cos), free(s->rope_sin);
    free(s->att), free(s->logits), free(s->xp);
    kv_cache_free(&s->kv);
}

/* Bytes of the largest scratch any weight matrix's product takes for n tokens. */
static size_t scratch_bytes(Model *m, int n);

/* count floats, zeroed, from the start of a cache line, or NULL. Each buffer's rows then start
 * where the kernels' 64-byte vector stores do: calloc's large blocks start 16 bytes into a
 * page, which cut each of them across two lines (BENCHMARKS.md, "Prompts: weights from
 * memory"). */
static float *floats(size_t count) {
    void *p = NULL;
    if (count > SIZE_MAX / sizeof(float) ||
        posix_memalign(&p, 64, count ? count * sizeof(float) : 1) != 0)
        return NULL;
    return memset(p, 0, count * sizeof(float));
}

/* Allocates every activation buffer and the KV cache. Returns 0, or -1 if memory ran out. */
static int alloc_state(Model *m, char err[ERR_MAX]) {
    const Config *c = &m->config;
    RunState *s = &m->state;
    /* a model with a short context never needs more than seq_len rows */
    size_t n = s->chunk_len = c->seq_len < PREFILL_CHUNK ? c->seq_len : PREFILL_CHUNK;
    size_t q_dim = (size_t)c->n_heads * c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_size;
    size_t xb_dim = c->dim > (int)q_dim ? (size_t)c->dim : q_dim;
    s->x = floats(n * c->dim);
    s->xb = floats(n * xb_dim);
    s->xb2 = floats(n * c->dim);
    s->hb = floats(n * c->hidden_dim);
    s->hb2 = floats(n * c->hidden_dim);
    s->q = floats(n * q_dim);
    s->k = floats(n * kv_dim);
    s->v = floats(n * kv_dim);
    s->rope_freq = floats(c->head_size / 2);
    s->rope_cos = floats(n * (c->head_size / 2));
    s->rope_sin = floats(n * (c->head_size / 2));
    s->att = floats((size_t)c->n_heads * c->seq_len);
    s->logits = floats(c->vocab_size);
    size_t scratch = scratch_bytes(m, (int)n); /* a multiple of 64 bytes */
    s->xp = scratch ? floats(scratch / sizeof(float)) : NULL; /* zeroed: faulted in now */
    int scratch_ok = scratch == 0 || s->xp;
    s->xp_bytes = s->xp ? scratch : 0;
    ModelOptions *o = &m->options;
    if (o->kv_type < KV_F32 || o->kv_type > KV_Q8) return fail(err, "unknown KV cache type");
    if (o->sinks < 0) /* the default, but always leaving one position to evict */
        o->sinks = MODEL_DEFAULT_SINKS < c->seq_len ? MODEL_DEFAULT_SINKS : c->seq_len - 1;
    if (o->sinks >= c->seq_len)
        return fail(err, "%d sink positions do not leave room in a context of %d", o->sinks,
                    c->seq_len);
    int *window = calloc(c->n_layers, sizeof(int));
    for (int l = 0; window && l < c->n_layers; l++)
        window[l] = c->windowed[l] ? c->sliding_window : 0;
    if (s->rope_freq) rope_frequencies(s->rope_freq, c->head_size, c->rope_theta, &c->rope_scaling);
    int kv_ok = window && s->rope_freq &&
                kv_cache_init(&s->kv, o->kv_type, c->n_layers, c->n_kv_heads, c->head_size,
                              c->seq_len, window, (int)n, o->sinks, s->rope_freq) == 0;
    free(window);
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v ||
        !s->rope_freq || !s->rope_cos || !s->rope_sin || !s->att || !s->logits || !scratch_ok ||
        !kv_ok)
        return fail(err, "cannot allocate the run state (KV cache of %zu MB): try a smaller "
                    "seq_len", 2 * (size_t)c->n_layers * c->seq_len * c->n_kv_heads *
                    kv_vector_bytes(o->kv_type, c->head_size) >> 20);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading */

/* The weight matrices, numbered 0 .. matrix_count - 1: the seven of each layer in the order the
 * forward pass reads them, then the classifier (the token embedding aside: it is only ever
 * read a row at a time). The arena holds them in this order, so that what follows a matrix
 * there is the one read next, which a product can prefetch (matmul.h). */
static int matrix_count(const Model *m) { return 7 * m->config.n_layers + 1; }

static Tensor *matrix(Model *m, int i) {
    if (i == 7 * m->config.n_layers) return &m->weights.classifier;
    LayerWeights *lw = &m->weights.layers[i / 7];
    Tensor *layer[7] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w1, &lw->w3, &lw->w2};
    return layer[i % 7];
}

static size_t tensor_bytes(const Tensor *w) {
    return weight_type(w->type)->file_bytes(w->rows, w->cols, w->group_size);
}

static size_t scratch_bytes(Model *m, int n) {
    size_t most = 0;
    for (int i = 0; i < matrix_count(m); i++) {
        size_t bytes = matmul_scratch_bytes(matrix(m, i), n);
        if (bytes > most) most = bytes;
    }
    return most;
}

/* Where the weight matrices live. Every type's kernel wants its matrices in a layout of its
 * own (matmul_<type>.c says why): rows interleaved so that one vector load serves 16 or 32
 * rows, each lane one row's sum. So at load time each matrix is rearranged into the arena,
 * memory of the engine's own in 2 MB pages where Linux offers them (the hardware prefetcher
 * stops at every 4 KB page boundary, and decoding streams whole matrices), and the mapped
 * pages it came from are handed back to the kernel at once, so that memory use does not count
 * them twice; were they read again (the token embedding shares the classifier's), they would
 * come back from the file. That costs a copy of the weights at load time (BENCHMARKS.md:
 * 20-90 ms for 110M) and makes every matrix one stream in 2 MB pages.
 * A matrix whose stored layout serves (every one in the plain C build, Q8_0 and Q4_0 ones in
 * builds without VNNI) stays in the mapping, unless copy_weights (run --no-mmap) asks for a
 * copy into the arena. */

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* Its bytes in the arena, 0 if it stays in the mapping. */
static size_t arena_bytes(const Model *m, const Tensor *w) {
    const WeightType *type = weight_type(w->type);
    size_t packed = type->packed_size(w); /* a multiple of 64 */
    if (packed) return packed;
    return m->options.copy_weights ? round64(type->file_bytes(w->rows, w->cols, w->group_size)) : 0;
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

/* Reads the checkpoint in m->mapping, binds and places the weight matrices and allocates
 * the run state; frees all on failure. */
static int load_mapped(Model *m, char err[ERR_MAX]) {
    ModelFile file;
    if (model_file_read(&file, m->mapping, m->mapping_size, err) != 0) {
        model_free(m);
        return -1;
    }
    m->config = file.config;
    m->is_llama2c = file.is_llama2c;
    m->tokenizer_data = file.tokenizer;
    m->tokenizer_size = file.tokenizer_size;
    m->tokenizer_kind = file.tokenizer_kind;
    int rc = bind_weights(m, &file, err);
    model_file_free(&file);
    if (rc != 0) {
        model_free(m);
        return -1;
    }
    for (int i = 0; i < matrix_count(m); i++) m->arena_size += arena_bytes(m, matrix(m, i));
    if (m->arena_size > 0) {
        m->arena_size += MATMUL_PREFETCH_BYTES; /* after the last matrix */
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

/* opt, or the defaults for NULL (sinks are settled by alloc_state, which knows seq_len). */
static ModelOptions with_defaults(const ModelOptions *opt) {
    return opt ? *opt : (ModelOptions){.sinks = -1};
}

int model_load(Model *m, const char *path, const ModelOptions *opt, char err[ERR_MAX]) {
    memset(m, 0, sizeof *m);
    m->options = with_defaults(opt);
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

int model_load_memory(Model *m, const void *data, size_t size, const ModelOptions *opt,
                      char err[ERR_MAX]) {
    memset(m, 0, sizeof *m);
    m->options = with_defaults(opt);
    if (size == 0) return fail(err, "empty file");
    /* the weights are read as floats where they lie (a file's tensors start at multiples of
     * 64 from its first byte) */
    if ((uintptr_t)data % sizeof(float) != 0)
        return fail(err, "the model's bytes are not aligned to %zu bytes in memory",
                    sizeof(float));
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

int model_evict(Model *m, int drop, int len) {
    KvCache *kv = &m->state.kv;
    return kv_cache_evict(kv, drop, len) == 0 ? len - drop : -1;
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
    matmul_many(qkv, 3, s->xb, n, s->xp, s->xp_bytes);
    if (lw->bq) { /* Qwen2: q_proj, k_proj and v_proj have biases */
        add_bias(s->q, lw->bq, n, p->n_heads * hs);
        add_bias(s->k, lw->bk, n, p->n_kv_heads * hs);
        add_bias(s->v, lw->bv, n, p->n_kv_heads * hs);
    }
    if (lw->q_norm) { /* Qwen3: q = q_norm(q), k = k_norm(k), each head on its own */
        rmsnorm(s->q, s->q, lw->q_norm, n * p->n_heads, hs, p->norm_eps);
        rmsnorm(s->k, s->k, lw->k_norm, n * p->n_kv_heads, hs, p->norm_eps);
    }

    /* q, k = apply_rotary_emb(q, k, freqs_cis): each token by its own position */
    rope(s->q, s->rope_cos, s->rope_sin, n, p->n_heads, hs);
    rope(s->k, s->rope_cos, s->rope_sin, n, p->n_kv_heads, hs);

    /* cache_k[:, pos:pos+n] = k; cache_v[:, pos:pos+n] = v (all n first; the mask keeps
     * each query to the positions up to its own), then
     * xb = softmax(q k^T / sqrt(head_size) + mask) v, for every query head */
    attention(s->xb, s->q, s->k, s->v, &s->kv, l, n, pos, p->n_heads);
    if (m->observer) { /* the weights by their definition, a position at a time: the numbers
                        * above up to rounding, which the output keeps */
        size_t q_dim = (size_t)p->n_heads * hs;
        for (int i = 0; i < n; i++) {
            attention_weights(NULL, s->att, s->q + i * q_dim, &s->kv, l, pos + i, p->n_heads);
            m->observer(m->observer_ctx, l, pos + i, s->att, p->seq_len);
        }
    }

    /* x = x + wo(xb) */
    matmul(s->xb2, &lw->wo, s->xb, n, s->xp, s->xp_bytes);
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
    matmul_many(up, 2, s->xb, n, s->xp, s->xp_bytes);
    swiglu(s->hb, s->hb, s->hb2, n * p->hidden_dim);
    matmul(s->xb2, &lw->w2, s->hb, n, s->xp, s->xp_bytes);
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
    matmul(out, &m->weights.classifier, x, rows, s->xp, s->xp_bytes);
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
    rope_angles(m->state.rope_cos, m->state.rope_sin, m->state.rope_freq, pos, n, p->head_size);
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
