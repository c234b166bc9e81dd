/*
 * format.c - reading a model file (format.h, models/FORMAT.md).
 *
 * Every number in a file is checked against the limits below before any size is computed
 * from it, which keeps every product below 2^50 and so far from overflowing size_t; every
 * tensor is checked to lie inside the file before a pointer to it is made.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "format.h"

#define MAX_DIM     (1 << 16)
#define MAX_HIDDEN  (1 << 18)
#define MAX_LAYERS  CONFIG_MAX_LAYERS
#define MAX_HEADS   1024
#define MAX_VOCAB   (1 << 20)
#define MAX_SEQ_LEN (1 << 20)
#define ALIGN       64

/* ------------------------------------------------------------------------------------------ */
/* The hyperparameters */

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
            return fail(err, "%s = %d is out of range (1..%d)", fields[i].name,
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
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size)
        return fail(err, "bos_id = %d is outside the vocabulary of %d", c->bos_id,
                    c->vocab_size);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            return fail(err, "eos_ids[%d] = %d is outside the vocabulary of %d", i,
                        c->eos_ids[i], c->vocab_size);
    if (c->chat_template < TEMPLATE_NONE || c->chat_template >= TEMPLATE_COUNT)
        return fail(err, "chat_template = %d is unknown", c->chat_template);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Little-endian numbers, built from single bytes so the host's byte order does not matter */

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
/* The tensors a model file holds (FORMAT.md's table). Each has a slot in ModelFile.tensors:
 * the global ones first, then LAYER_KINDS per layer; a slot whose data is NULL is absent. */

enum { SIZE_ONE, SIZE_DIM, SIZE_HIDDEN, SIZE_Q, SIZE_KV, SIZE_HEAD, SIZE_VOCAB };

typedef struct {
    const char *name;  /* after "layers.L." for per-layer tensors */
    int rows, cols;    /* SIZE_* */
    int optional;      /* 1: may be absent */
} TensorKind;

static const TensorKind global_kinds[] = {
    {"token_embedding", SIZE_VOCAB, SIZE_DIM, 0},
    {"final_norm", SIZE_ONE, SIZE_DIM, 0},
    {"classifier", SIZE_VOCAB, SIZE_DIM, 1},
};
/* Every layer has the first CORE_KINDS, in the order of version 1 and llama2.c files; the
 * optional ones come in sets (q, k and v biases; q and k norms), each in every layer or in
 * none. */
static const TensorKind layer_kinds[] = {
    {"attn_norm", SIZE_ONE, SIZE_DIM, 0}, {"wq", SIZE_Q, SIZE_DIM, 0},
    {"wk", SIZE_KV, SIZE_DIM, 0},         {"wv", SIZE_KV, SIZE_DIM, 0},
    {"wo", SIZE_DIM, SIZE_Q, 0},          {"ffn_norm", SIZE_ONE, SIZE_DIM, 0},
    {"w1", SIZE_HIDDEN, SIZE_DIM, 0},     {"w2", SIZE_DIM, SIZE_HIDDEN, 0},
    {"w3", SIZE_HIDDEN, SIZE_DIM, 0},
    {"bq", SIZE_ONE, SIZE_Q, 1},          {"bk", SIZE_ONE, SIZE_KV, 1},
    {"bv", SIZE_ONE, SIZE_KV, 1},         {"q_norm", SIZE_ONE, SIZE_HEAD, 1},
    {"k_norm", SIZE_ONE, SIZE_HEAD, 1},
};
#define CORE_KINDS 9
/* The sets of optional layer tensors: the first kind of each set and its size. */
static const struct { int first, count; } optional_sets[] = {{9, 3}, {12, 2}};
#define GLOBAL_KINDS (int)(sizeof global_kinds / sizeof global_kinds[0])
#define LAYER_KINDS (int)(sizeof layer_kinds / sizeof layer_kinds[0])

static int size_of(const Config *c, int which) {
    switch (which) {
    case SIZE_ONE: return 1;
    case SIZE_DIM: return c->dim;
    case SIZE_HIDDEN: return c->hidden_dim;
    case SIZE_Q: return c->n_heads * c->head_size;
    case SIZE_KV: return c->n_kv_heads * c->head_size;
    case SIZE_HEAD: return c->head_size;
    default: return c->vocab_size;
    }
}

/* The slot of a tensor name, or -1 for a name the format does not have. */
static int slot_of(const Config *c, const char *name) {
    for (int k = 0; k < GLOBAL_KINDS; k++)
        if (strcmp(name, global_kinds[k].name) == 0) return k;
    if (strncmp(name, "layers.", 7) != 0) return -1;
    /* The layer number in plain decimal, no sign, no leading zero, below n_layers; read digit
     * by digit, stopping as soon as it is too large, so that no value can wrap around. */
    const char *p = name + 7;
    int layer = 0;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.')) return -1;
    while (*p >= '0' && *p <= '9') {
        layer = 10 * layer + (*p++ - '0');
        if (layer >= c->n_layers) return -1;
    }
    if (*p++ != '.') return -1;
    for (int k = 0; k < LAYER_KINDS; k++)
        if (strcmp(p, layer_kinds[k].name) == 0) return GLOBAL_KINDS + layer * LAYER_KINDS + k;
    return -1;
}

static const TensorKind *kind_of(int slot) {
    return slot < GLOBAL_KINDS ? &global_kinds[slot] : &layer_kinds[(slot - GLOBAL_KINDS) % LAYER_KINDS];
}

/* Fills slot's name and expected shape. */
static void name_slot(const Config *c, FileTensor *t, int slot) {
    const TensorKind *k = kind_of(slot);
    if (slot < GLOBAL_KINDS)
        snprintf(t->name, sizeof t->name, "%s", k->name);
    else
        snprintf(t->name, sizeof t->name, "layers.%d.%s", (slot - GLOBAL_KINDS) / LAYER_KINDS,
                 k->name);
    t->rows = size_of(c, k->rows);
    t->cols = size_of(c, k->cols);
}

/* Allocates the slots of a model with config c, each named, all absent. */
static int alloc_slots(ModelFile *f, char err[ERR_MAX]) {
    f->n_tensors = GLOBAL_KINDS + f->config.n_layers * LAYER_KINDS;
    f->tensors = calloc(f->n_tensors, sizeof *f->tensors);
    if (!f->tensors) return fail(err, "out of memory");
    for (int i = 0; i < f->n_tensors; i++) name_slot(&f->config, &f->tensors[i], i);
    return 0;
}

const FileTensor *model_file_tensor(const ModelFile *f, const char *name) {
    int slot = slot_of(&f->config, name);
    return slot >= 0 && f->tensors[slot].data ? &f->tensors[slot] : NULL;
}

void model_file_free(ModelFile *f) {
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------------------------ */
/* The fixed layouts (version 1 and llama2.c): a cursor hands out the tensors in file order,
 * refusing any that would reach past the end. */

typedef struct {
    const unsigned char *base;
    size_t size;  /* bytes in the file */
    size_t off;   /* where the next tensor starts */
    size_t align; /* TLLM tensors start at multiples of 64; llama2.c's are packed */
    int failed;
} Cursor;

/* Returns a pointer to the next `bytes` bytes, or NULL (and marks the cursor failed) if they
 * are not all inside the file. */
static const void *cursor_take(Cursor *c, size_t bytes) {
    size_t start = (c->off + c->align - 1) / c->align * c->align;
    if (c->failed || start > c->size || bytes > c->size - start) {
        c->failed = 1;
        return NULL;
    }
    c->off = start + bytes;
    return c->base + start;
}

/* Takes the cursor's next tensor, stored as `type`, into the slot of `name`. */
static void take(ModelFile *f, Cursor *cur, const char *name, int type, int group_size) {
    FileTensor *t = &f->tensors[slot_of(&f->config, name)];
    const WeightType *wt = weight_type(type);
    t->type = type;
    t->group_size = group_size;
    t->bytes = wt->file_bytes(t->rows, t->cols, group_size);
    t->data = cursor_take(cur, t->bytes);
}

/* llama2.c version 0: seven int32, then every tensor of one kind for all layers together. */
static int read_llama2c(ModelFile *f, const unsigned char *b, size_t size, char err[ERR_MAX]) {
    if (size >= 8 && memcmp(b, "ak42", 4) == 0)
        return fail(err, "llama2.c version %u files are not supported: convert with export.py",
                    read_u32(b + 4));
    if (size < 7 * 4)
        return fail(err, "file is %zu bytes, shorter than the 28-byte llama2.c header", size);
    Config *c = &f->config;
    int32_t h[7];
    for (int i = 0; i < 7; i++) h[i] = (int32_t)read_u32(b + 4 * i);
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    /* a negative vocab_size is llama2.c's flag for a classifier stored separately */
    int shared = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? -1 : abs(h[5]);
    c->seq_len = h[6];
    if (c->n_heads <= 0 || c->dim <= 0 || c->dim % c->n_heads != 0)
        return fail(err, "dim = %d is not a positive multiple of n_heads = %d: not a llama2.c "
                    "checkpoint", c->dim, c->n_heads);
    c->head_size = c->dim / c->n_heads;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->bos_id = 1;
    c->eos_ids[0] = 2;
    c->n_eos = 1;
    f->is_llama2c = 1;
    if (check_config(c, err)) return -1;

    size_t dim = c->dim, hidden = c->hidden_dim, L = c->n_layers, hs = c->head_size;
    size_t q_dim = c->n_heads * hs, kv_dim = c->n_kv_heads * hs;
    size_t expect = 28 + 4 * (c->vocab_size * dim + L * (2 * dim + 2 * dim * q_dim +
                    2 * dim * kv_dim + 3 * dim * hidden) + dim + c->seq_len * hs +
                    (shared ? 0 : c->vocab_size * dim));
    if (size != expect)
        return fail(err, "file is %zu bytes but its header (dim %d, hidden %d, %d layers, vocab "
                    "%d, seq_len %d) implies %zu: truncated or not a llama2.c checkpoint",
                    size, c->dim, c->hidden_dim, c->n_layers, c->vocab_size, c->seq_len, expect);
    if (alloc_slots(f, err)) return -1;

    /* the size matched, so every tensor below lies inside the file */
    Cursor cur = {.base = b, .size = size, .off = 28, .align = 1};
    char name[FORMAT_MAX_NAME];
    take(f, &cur, "token_embedding", WEIGHT_F32, 0);
    for (int k = 0; k < CORE_KINDS; k++) /* attn_norm for all layers, then wq, ... */
        for (size_t l = 0; l < L; l++) {
            snprintf(name, sizeof name, "layers.%zu.%s", l, layer_kinds[k].name);
            take(f, &cur, name, WEIGHT_F32, 0);
        }
    take(f, &cur, "final_norm", WEIGHT_F32, 0);
    cursor_take(&cur, c->seq_len * hs * sizeof(float)); /* the legacy RoPE tables: unused */
    if (!shared) take(f, &cur, "classifier", WEIGHT_F32, 0);
    if (cur.failed) return fail(err, "truncated checkpoint");
    return 0;
}

/* TLLM version 1: a 256-byte header, the tokenizer, then each layer's tensors together,
 * 64-aligned, every matrix of one type. */

#define V1_HEADER_SIZE 256

static int read_v1(ModelFile *f, const unsigned char *b, size_t size, char err[ERR_MAX]) {
    if (size < V1_HEADER_SIZE)
        return fail(err, "file is %zu bytes, shorter than the %d-byte TLLM header", size,
                    V1_HEADER_SIZE);
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

    Config *c = &f->config;
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
    c->bos_id = (int32_t)read_u32(b + 52);
    c->eos_ids[0] = (int32_t)read_u32(b + 56);
    c->n_eos = 1;
    int type = read_int(b + 60), gs = read_int(b + 64);
    c->chat_template = read_int(b + 68);
    uint32_t tokenizer_kind = read_u32(b + 72), reserved = read_u32(b + 76);
    uint64_t tok_off = read_u64(b + 80), tok_size = read_u64(b + 88);
    uint64_t weights_off = read_u64(b + 96), file_size = read_u64(b + 104);
    if (check_config(c, err)) return -1;
    /* version 1 numbers the four templates there were while it was current */
    if (c->chat_template > TEMPLATE_ZEPHYR)
        return fail(err, "chat_template = %d is unknown (0..3 in a version-1 file)",
                    c->chat_template);
    if (type == WEIGHT_Q8_0) {
        if (gs != 32 && gs != 64) return fail(err, "Q8_0 group_size = %d is not 32 or 64", gs);
    } else if (type == WEIGHT_Q4_0) {
        return fail(err, "weight_type = %d is Q4_0, which only a version-2 file holds", type);
    } else if (type != WEIGHT_F32 && type != WEIGHT_BF16) {
        return fail(err, "weight_type = %d is unknown (0 f32, 1 bf16, 2 Q8_0)", type);
    } else if (gs != 0) {
        return fail(err, "group_size = %d, but only Q8_0 weights have groups (expected 0)", gs);
    }
    if (shared > 1) return fail(err, "shared_classifier = %u is not 0 or 1", shared);
    if (tokenizer_kind != 1)
        return fail(err, "tokenizer_kind = %u is unknown (1 = BPE)", tokenizer_kind);
    if (reserved != 0) return fail(err, "reserved header field = %u is not 0", reserved);
    if (file_size != size)
        return fail(err, "file_size = %llu, but the file is %zu bytes: truncated or corrupt",
                    (unsigned long long)file_size, size);
    if (tok_off < V1_HEADER_SIZE || tok_off > size || tok_size > size - tok_off)
        return fail(err, "tokenizer section (offset %llu, %llu bytes) is outside the file",
                    (unsigned long long)tok_off, (unsigned long long)tok_size);
    if (weights_off % ALIGN || weights_off < tok_off + tok_size || weights_off > size)
        return fail(err, "weights_offset %llu is misaligned or overlaps the tokenizer",
                    (unsigned long long)weights_off);
    f->tokenizer = b + tok_off;
    f->tokenizer_size = tok_size;
    f->tokenizer_kind = 1;
    if (alloc_slots(f, err)) return -1;

    Cursor cur = {.base = b, .size = size, .off = weights_off, .align = ALIGN};
    char name[FORMAT_MAX_NAME];
    take(f, &cur, "token_embedding", type, gs);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < CORE_KINDS; k++) {
            int vector = layer_kinds[k].rows == SIZE_ONE; /* the norms are always f32 */
            snprintf(name, sizeof name, "layers.%d.%s", l, layer_kinds[k].name);
            take(f, &cur, name, vector ? WEIGHT_F32 : type, vector ? 0 : gs);
        }
    take(f, &cur, "final_norm", WEIGHT_F32, 0);
    if (!shared) take(f, &cur, "classifier", type, gs);
    if (cur.failed) return fail(err, "truncated: the tensors the header describes do not fit");
    if (cur.off != size)
        return fail(err, "%zu bytes after the last tensor: the header does not match the file",
                    size - cur.off);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* TLLM version 2: sections found through the header, metadata as keys and values, tensors
 * through a directory. */

#define V2_HEADER_SIZE 64

/* A cursor over one section; every read first checks that the bytes are there. */
typedef struct {
    const unsigned char *p;
    size_t left;
} Reader;

static int reader_take(Reader *r, void *out, size_t n) {
    if (n > r->left) return -1;
    if (out) memcpy(out, r->p, n);
    r->p += n, r->left -= n;
    return 0;
}

static int reader_u32(Reader *r, uint32_t *v) {
    unsigned char b[4];
    if (reader_take(r, b, 4)) return -1;
    *v = read_u32(b);
    return 0;
}

/* Reads a short name (u8 length 1..63, then the bytes) as a string into out (64 bytes),
 * printable ASCII only. Returns 0, or -1 if it is cut short or not a plausible name. */
static int reader_name(Reader *r, char out[64]) {
    unsigned char len;
    if (reader_take(r, &len, 1) || len == 0 || len > 63 || reader_take(r, out, len)) return -1;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        if (out[i] < 0x21 || out[i] > 0x7e) return -1;
    return 0;
}

/* Where each metadata key goes. */
enum { VALUE_INT = 1, VALUE_FLOAT = 2, VALUE_STRING = 3 };

typedef struct {
    const char *key;
    int type;
    int min_count, max_count;
    int required;
} KeyRule;

static const KeyRule key_rules[] = {
    {"dim", VALUE_INT, 1, 1, 1},        {"hidden_dim", VALUE_INT, 1, 1, 1},
    {"n_layers", VALUE_INT, 1, 1, 1},   {"n_heads", VALUE_INT, 1, 1, 1},
    {"n_kv_heads", VALUE_INT, 1, 1, 1}, {"head_size", VALUE_INT, 1, 1, 1},
    {"vocab_size", VALUE_INT, 1, 1, 1}, {"seq_len", VALUE_INT, 1, 1, 1},
    {"rope_theta", VALUE_FLOAT, 1, 1, 1}, {"norm_eps", VALUE_FLOAT, 1, 1, 1},
    {"bos_id", VALUE_INT, 1, 1, 1},     {"eos_ids", VALUE_INT, 1, CONFIG_MAX_EOS, 1},
    {"tokenizer_kind", VALUE_INT, 1, 1, 0}, {"chat_template", VALUE_STRING, 1, 32, 0},
    {"rope_scaling", VALUE_STRING, 1, 32, 0}, {"rope_scaling_factor", VALUE_FLOAT, 1, 1, 0},
    {"rope_low_freq_factor", VALUE_FLOAT, 1, 1, 0},
    {"rope_high_freq_factor", VALUE_FLOAT, 1, 1, 0},
    {"rope_original_context", VALUE_INT, 1, 1, 0},
    {"sliding_window", VALUE_INT, 1, 1, 0},
    {"sliding_window_layers", VALUE_INT, 1, MAX_LAYERS, 0},
};
#define N_KEYS (int)(sizeof key_rules / sizeof key_rules[0])

/* Stores one key's values in the config. */
static int set_key(ModelFile *f, int k, const unsigned char *v, uint32_t count,
                   char err[ERR_MAX]) {
    Config *c = &f->config;
    const char *key = key_rules[k].key;
    /* only int and float values are 4 bytes long: a string may be shorter */
    int32_t i0 = key_rules[k].type == VALUE_STRING ? 0 : (int32_t)read_u32(v);
    static const char *const int_keys[] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                           "n_kv_heads", "head_size", "vocab_size", "seq_len"};
    int *ints[] = {&c->dim, &c->hidden_dim, &c->n_layers, &c->n_heads, &c->n_kv_heads,
                   &c->head_size, &c->vocab_size, &c->seq_len};
    for (int i = 0; i < 8; i++)
        if (!strcmp(key, int_keys[i])) {
            *ints[i] = i0;
            return 0;
        }
    if (!strcmp(key, "rope_theta")) c->rope_theta = read_f32(v);
    else if (!strcmp(key, "norm_eps")) c->norm_eps = read_f32(v);
    else if (!strcmp(key, "bos_id")) c->bos_id = i0;
    else if (!strcmp(key, "eos_ids")) {
        c->n_eos = (int)count;
        for (uint32_t i = 0; i < count; i++) c->eos_ids[i] = (int32_t)read_u32(v + 4 * i);
    } else if (!strcmp(key, "tokenizer_kind")) {
        if (i0 != TOKENIZER_SENTENCEPIECE && i0 != TOKENIZER_BYTE_BPE)
            return fail(err, "metadata tokenizer_kind = %d is unknown (1 = SentencePiece-style "
                        "BPE, 2 = byte-level BPE)", i0);
        f->tokenizer_kind = i0;
    } else if (!strcmp(key, "rope_scaling")) {
        RopeScaling *r = &c->rope_scaling;
        r->type = count == 6 && !memcmp(v, "linear", 6)   ? ROPE_LINEAR
                  : count == 6 && !memcmp(v, "llama3", 6) ? ROPE_LLAMA3
                                                          : -1;
        if (r->type < 0)
            return fail(err, "metadata rope_scaling is of an unknown type (linear or llama3)");
    } else if (!strcmp(key, "rope_scaling_factor")) {
        c->rope_scaling.factor = read_f32(v);
    } else if (!strcmp(key, "rope_low_freq_factor")) {
        c->rope_scaling.low_freq_factor = read_f32(v);
    } else if (!strcmp(key, "rope_high_freq_factor")) {
        c->rope_scaling.high_freq_factor = read_f32(v);
    } else if (!strcmp(key, "rope_original_context")) {
        c->rope_scaling.original_context = i0;
    } else if (!strcmp(key, "sliding_window")) {
        c->sliding_window = i0;
    } else if (!strcmp(key, "sliding_window_layers")) { /* n_layers is checked at the end */
        for (uint32_t i = 0; i < count; i++) {
            int32_t flag = (int32_t)read_u32(v + 4 * i);
            if (flag != 0 && flag != 1)
                return fail(err, "metadata sliding_window_layers[%u] = %d is not 0 or 1", i, flag);
            c->windowed[i] = (unsigned char)flag;
        }
    } else { /* chat_template */
        char name[33];
        memcpy(name, v, count);
        name[count] = '\0';
        c->chat_template = chat_template_id(name);
        if (c->chat_template < 0)
            return fail(err, "metadata chat_template '%s' is unknown (llama2, chatml, zephyr, "
                        "llama3, llama3.1, llama3.2, qwen2.5, qwen3 or smollm2)",
                        memchr(name, '\0', count) ? "?" : name);
    }
    return 0;
}

/* The index of a key in key_rules. */
static int key_index(const char *key) {
    int k = 0;
    while (k < N_KEYS && strcmp(key, key_rules[k].key) != 0) k++;
    return k;
}

/* Checks that the rope_scaling keys present (seen, by key_rules index) are the ones its type
 * needs, with usable values. Returns 0, or -1 naming the key. */
static int check_rope_scaling(const RopeScaling *r, const int *seen, char err[ERR_MAX]) {
    static const char *const needs[][4] = {
        [ROPE_PLAIN] = {NULL},
        [ROPE_LINEAR] = {"rope_scaling_factor", NULL},
        [ROPE_LLAMA3] = {"rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                         "rope_original_context"},
    };
    static const char *const all[] = {"rope_scaling_factor", "rope_low_freq_factor",
                                      "rope_high_freq_factor", "rope_original_context"};
    for (int i = 0; i < 4; i++) {
        int needed = 0;
        for (int j = 0; j < 4 && needs[r->type][j]; j++) needed |= !strcmp(all[i], needs[r->type][j]);
        if (needed != (seen[key_index(all[i])] != 0))
            return fail(err, "metadata key '%s' is %s for rope_scaling %s", all[i],
                        needed ? "missing" : "not used",
                        r->type == ROPE_LINEAR ? "linear" : r->type == ROPE_LLAMA3 ? "llama3" : "(none)");
    }
    if (r->type == ROPE_PLAIN) return 0;
    if (!(r->factor >= 1.0f) || !isfinite(r->factor))
        return fail(err, "metadata rope_scaling_factor = %g is not a finite number of at least 1",
                    r->factor);
    if (r->type == ROPE_LLAMA3 &&
        (!(r->low_freq_factor > 0.0f) || !(r->high_freq_factor > r->low_freq_factor) ||
         !isfinite(r->high_freq_factor) || r->original_context <= 0))
        return fail(err, "metadata rope_low_freq_factor = %g, rope_high_freq_factor = %g or "
                    "rope_original_context = %d is unusable (need 0 < low < high, context > 0)",
                    r->low_freq_factor, r->high_freq_factor, r->original_context);
    return 0;
}

/* Checks the sliding-window keys once every key is read (seen by key_rules index; flags: how
 * many sliding_window_layers gave): a window of 1 .. seq_len positions, and one flag per
 * layer, or none, meaning every layer. Returns 0, or -1 naming the key. */
static int check_window(Config *c, const int *seen, uint32_t flags, char err[ERR_MAX]) {
    int has_window = seen[key_index("sliding_window")], has_flags = seen[key_index("sliding_window_layers")];
    if (!has_window) {
        if (has_flags) return fail(err, "metadata key 'sliding_window_layers' needs 'sliding_window'");
        return 0;
    }
    if (c->seq_len < 1 || c->n_layers < 1 || c->n_layers > MAX_LAYERS)
        return 0; /* check_config, which comes next, names the field */
    if (c->sliding_window < 1 || c->sliding_window > c->seq_len)
        return fail(err, "metadata sliding_window = %d is out of range (1..seq_len = %d): a "
                    "window larger than the context", c->sliding_window, c->seq_len);
    if (has_flags && flags != (uint32_t)c->n_layers)
        return fail(err, "metadata sliding_window_layers has %u flags for %d layers", flags,
                    c->n_layers);
    if (!has_flags)
        for (int l = 0; l < c->n_layers && l < MAX_LAYERS; l++) c->windowed[l] = 1;
    return 0;
}

static int read_metadata(ModelFile *f, Reader r, char err[ERR_MAX]) {
    uint32_t count;
    if (reader_u32(&r, &count)) return fail(err, "metadata section is too short for its count");
    int seen[N_KEYS] = {0};
    uint32_t layer_flags = 0;
    for (uint32_t i = 0; i < count; i++) {
        char key[64];
        unsigned char type;
        uint32_t n;
        if (reader_name(&r, key))
            return fail(err, "metadata entry %u: the key is cut short or not 1..63 printable "
                        "ASCII characters", i);
        if (reader_take(&r, &type, 1) || reader_u32(&r, &n))
            return fail(err, "metadata key '%s' is cut short", key);
        int k = key_index(key);
        if (k == N_KEYS)
            return fail(err, "metadata key '%s' is unknown to this engine (a newer export?)", key);
        const KeyRule *rule = &key_rules[k];
        if (seen[k]++) return fail(err, "metadata key '%s' appears twice", key);
        if (type != rule->type || n < (uint32_t)rule->min_count || n > (uint32_t)rule->max_count)
            return fail(err, "metadata key '%s' has type %u with %u values (expected type %d, "
                        "%d..%d values)", key, type, n, rule->type, rule->min_count,
                        rule->max_count);
        size_t bytes = type == VALUE_STRING ? n : 4 * (size_t)n;
        const unsigned char *v = r.p;
        if (reader_take(&r, NULL, bytes))
            return fail(err, "metadata key '%s' runs past the end of its section", key);
        if (set_key(f, k, v, n, err)) return -1;
        if (!strcmp(key, "sliding_window_layers")) layer_flags = n;
    }
    if (r.left) return fail(err, "%zu bytes after the last metadata entry", r.left);
    for (int k = 0; k < N_KEYS; k++)
        if (key_rules[k].required && !seen[k])
            return fail(err, "metadata key '%s' is missing", key_rules[k].key);
    if (f->tokenizer && !f->tokenizer_kind)
        return fail(err, "metadata key 'tokenizer_kind' is missing (the file has a tokenizer)");
    if (check_window(&f->config, seen, layer_flags, err)) return -1;
    return check_rope_scaling(&f->config.rope_scaling, seen, err);
}

/* Orders tensors by where they start, for the overlap check. */
static int by_offset(const void *a, const void *b) {
    const FileTensor *x = *(const FileTensor *const *)a, *y = *(const FileTensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

static int read_directory(ModelFile *f, Reader r, const unsigned char *b, size_t size,
                          size_t data_start, char err[ERR_MAX]) {
    uint32_t count;
    if (reader_u32(&r, &count)) return fail(err, "tensor directory is too short for its count");
    if (count > (uint32_t)f->n_tensors)
        return fail(err, "tensor directory lists %u tensors, more than the %d names the model "
                    "has", count, f->n_tensors);
    for (uint32_t i = 0; i < count; i++) {
        char name[64];
        unsigned char fixed[32];
        if (reader_name(&r, name))
            return fail(err, "tensor directory entry %u: the name is cut short or not 1..63 "
                        "printable ASCII characters", i);
        if (reader_take(&r, fixed, sizeof fixed))
            return fail(err, "tensor '%s' is cut short in the directory", name);
        int slot = slot_of(&f->config, name);
        if (slot < 0) return fail(err, "tensor '%s' is not a tensor of this model", name);
        FileTensor *t = &f->tensors[slot];
        if (t->data) return fail(err, "tensor '%s' appears twice", name);
        uint32_t type = read_u32(fixed), gs = read_u32(fixed + 4);
        uint32_t rows = read_u32(fixed + 8), cols = read_u32(fixed + 12);
        uint64_t off = read_u64(fixed + 16), bytes = read_u64(fixed + 24);
        const WeightType *wt = weight_type((int)(type > 255 ? 255 : type));
        if (!wt) return fail(err, "tensor '%s' has weight type %u, unknown", name, type);
        if (rows != (uint32_t)t->rows || cols != (uint32_t)t->cols)
            return fail(err, "tensor '%s' is (%u, %u), but the metadata implies (%d, %d)", name,
                        rows, cols, t->rows, t->cols);
        if (kind_of(slot)->rows == SIZE_ONE && type != WEIGHT_F32)
            return fail(err, "tensor '%s' is a vector stored as %s; vectors are f32", name,
                        wt->name);
        size_t want = gs > 4096 ? 0 : wt->file_bytes(rows, cols, (int)gs);
        if (want == 0)
            return fail(err, "tensor '%s': group size %u is not valid for %s", name, gs, wt->name);
        if (bytes != want)
            return fail(err, "tensor '%s' has %llu bytes, but a (%u, %u) %s tensor takes %zu",
                        name, (unsigned long long)bytes, rows, cols, wt->name, want);
        if (off % ALIGN || off < data_start || off > size || bytes > size - off)
            return fail(err, "tensor '%s' (offset %llu, %llu bytes) is misaligned or outside "
                        "the tensor data", name, (unsigned long long)off,
                        (unsigned long long)bytes);
        t->type = (int)type;
        t->group_size = (int)gs;
        t->bytes = (size_t)bytes;
        t->data = b + off;
    }
    if (r.left) return fail(err, "%zu bytes after the last tensor directory entry", r.left);

    /* every required tensor is there; the tensors do not overlap; the file ends with them */
    const FileTensor **sorted = malloc(count * sizeof *sorted + 1);
    if (!sorted) return fail(err, "out of memory");
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        if (f->tensors[i].data) sorted[n++] = &f->tensors[i];
        else if (!kind_of(i)->optional) {
            free(sorted);
            return fail(err, "tensor '%s' is missing", f->tensors[i].name);
        }
    }
    qsort(sorted, n, sizeof *sorted, by_offset);
    size_t end = data_start;
    for (int i = 0; i < n; i++) {
        size_t at = (size_t)((const unsigned char *)sorted[i]->data - b);
        if (at < end) {
            const char *name = sorted[i]->name;
            free(sorted);
            return fail(err, "tensor '%s' overlaps the tensor before it", name);
        }
        /* packed: each tensor at the first multiple of 64 after the one before, so no byte of
         * the file goes unaccounted for */
        int nonzero = 0;
        for (size_t j = end; j < at && j < end + ALIGN; j++) nonzero |= b[j];
        if (at >= end + ALIGN || nonzero) {
            const char *name = sorted[i]->name;
            free(sorted);
            return fail(err, "tensor '%s' starts %zu bytes after the data before it (at most 63, "
                        "all zero)", name, at - end);
        }
        end = at + sorted[i]->bytes;
    }
    free(sorted);
    if (end != size)
        return fail(err, "%zu bytes after the last tensor: the directory does not match the file",
                    size - end);
    /* an optional set is in every layer or in none: a model does not change halfway */
    for (size_t i = 0; i < sizeof optional_sets / sizeof optional_sets[0]; i++) {
        int first = optional_sets[i].first;
        int in_layer0 = f->tensors[GLOBAL_KINDS + first].data != NULL;
        for (int l = 0; l < f->config.n_layers; l++)
            for (int k = first; k < first + optional_sets[i].count; k++) {
                const FileTensor *t = &f->tensors[GLOBAL_KINDS + l * LAYER_KINDS + k];
                if ((t->data != NULL) != in_layer0)
                    return fail(err, "tensor '%s' is %s, but not in every layer as it must be",
                                t->name, t->data ? "present" : "missing");
            }
    }
    return 0;
}

/* A section (offset, size) of the header, checked to lie inside the file after the header.
 * Returns 0, or -1 naming it. */
static int section(const unsigned char *b, size_t size, int at, const char *what, Reader *r,
                   char err[ERR_MAX]) {
    uint64_t off = read_u64(b + at), len = read_u64(b + at + 8);
    if (off < V2_HEADER_SIZE || off > size || len > size - off)
        return fail(err, "%s section (offset %llu, %llu bytes) is outside the file", what,
                    (unsigned long long)off, (unsigned long long)len);
    *r = (Reader){b + off, (size_t)len};
    return 0;
}

static int overlaps(Reader a, Reader b) {
    return a.left && b.left && a.p < b.p + b.left && b.p < a.p + a.left;
}

static int read_v2(ModelFile *f, const unsigned char *b, size_t size, char err[ERR_MAX]) {
    if (size < V2_HEADER_SIZE)
        return fail(err, "file is %zu bytes, shorter than the %d-byte TLLM header", size,
                    V2_HEADER_SIZE);
    uint64_t file_size = read_u64(b + 8);
    if (file_size != size)
        return fail(err, "file_size = %llu, but the file is %zu bytes: truncated or corrupt",
                    (unsigned long long)file_size, size);
    Reader meta, tok = {NULL, 0}, dir;
    if (section(b, size, 16, "metadata", &meta, err)) return -1;
    if (read_u64(b + 32) || read_u64(b + 40)) { /* both 0: the file has no tokenizer */
        if (section(b, size, 32, "tokenizer", &tok, err)) return -1;
        if (!tok.left)
            return fail(err, "tokenizer section at offset %llu is empty (a file without one "
                        "has offset and size 0)", (unsigned long long)read_u64(b + 32));
    }
    if (section(b, size, 48, "tensor directory", &dir, err)) return -1;
    Reader all[3] = {meta, tok, dir};
    static const char *const names[3] = {"metadata", "tokenizer", "tensor directory"};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (overlaps(all[i], all[j]))
                return fail(err, "the %s and %s sections overlap", names[i], names[j]);
    if (tok.left) f->tokenizer = tok.p, f->tokenizer_size = tok.left;

    f->config.chat_template = TEMPLATE_NONE;
    if (read_metadata(f, meta, err) || check_config(&f->config, err)) return -1;
    if (alloc_slots(f, err)) return -1;
    /* tensor data begins after every section, at a multiple of 64 */
    size_t data_start = 0;
    for (int i = 0; i < 3; i++)
        if (all[i].p && (size_t)(all[i].p - b) + all[i].left > data_start)
            data_start = (size_t)(all[i].p - b) + all[i].left;
    data_start = (data_start + ALIGN - 1) / ALIGN * ALIGN;
    return read_directory(f, dir, b, size, data_start, err);
}

/* ------------------------------------------------------------------------------------------ */

int model_file_read(ModelFile *f, const void *data, size_t size, char err[ERR_MAX]) {
    memset(f, 0, sizeof *f);
    const unsigned char *b = data;
    int rc;
    if (size >= 4 && memcmp(b, "TLLM", 4) == 0) {
        uint32_t version = size >= 8 ? read_u32(b + 4) : 0;
        if (size < 8)
            rc = fail(err, "file is %zu bytes, shorter than the TLLM header", size);
        else if (version == 2)
            rc = read_v2(f, b, size, err);
        else if (version == 1)
            rc = read_v1(f, b, size, err);
        else
            rc = fail(err, "TLLM version %u is not supported (expected 1 or 2)", version);
    } else {
        rc = read_llama2c(f, b, size, err);
    }
    if (rc) model_file_free(f);
    return rc;
}
