/*
 * model.h - the public API of a tiny Llama-style inference engine.
 *
 * The model, in one page
 * ----------------------
 * A decoder-only transformer turns a sequence of token ids into, at every position, a score
 * (logit) for each possible next token. For one token at position `pos`:
 *
 *   x = token_embedding[token]                          the residual stream, (dim)
 *   for each layer:
 *     xb = rmsnorm(x) * attn_norm                       pre-norm: normalise, then scale
 *     q = wq xb, k = wk xb, v = wv xb                   n_heads query heads, n_kv_heads k/v heads
 *     rotate q and k by RoPE(pos)                       position enters only here
 *     store k, v in the KV cache at pos
 *     each query head h attends over positions 0..pos of KV head h / (n_heads / n_kv_heads):
 *       weights = softmax(q . k_t / sqrt(head_size)), out_h = sum_t weights_t v_t
 *     x += wo concat(out_h)                             residual connection
 *     xb = rmsnorm(x) * ffn_norm
 *     x += w2 (silu(w1 xb) * (w3 xb))                   SwiGLU feedforward
 *   logits = classifier rmsnorm(x) * final_norm
 *
 * Grouped-query attention (GQA) lets several query heads share one key/value head, which
 * shrinks the KV cache; n_kv_heads == n_heads is plain multi-head attention and
 * n_kv_heads == 1 is multi-query attention.
 *
 * Shapes: every matrix is row-major (rows, cols) with one row per output, so y = W x reads
 * row i to produce y[i], exactly like PyTorch's nn.Linear weight.
 *
 * Out of scope: training, biases, sliding-window attention, RoPE scaling, mixture of experts,
 * anything but the CPU.
 *
 * Files: model.c (loading, the forward pass), attention.c (RoPE, KV cache, attention),
 * kernels.c (matmul, rmsnorm, softmax), tokenizer.c (BPE), sampler.c (choosing the next
 * token), chat.c (chat templates), attnviz.c (recording attention), run.c (the command
 * line). The file formats are described in models/FORMAT.md.
 *
 * Errors: library functions never print and never exit. Those that can fail take a buffer
 * `char err[ERR_MAX]`, write one line (without the file name: the caller prefixes it) and
 * return -1; they return 0 on success.
 */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

#define ERR_MAX 256

/* Formats one line into err and returns -1, so that failures read `return fail(err, ...)`. */
int fail(char err[ERR_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------------------------ */
/* Configuration: plain hyperparameters, everything the forward pass needs to know. */

enum { WEIGHT_F32 = 0, WEIGHT_BF16 = 1, WEIGHT_Q8_0 = 2 };
enum { TEMPLATE_NONE = 0, TEMPLATE_LLAMA2 = 1, TEMPLATE_CHATML = 2, TEMPLATE_ZEPHYR = 3 };

typedef struct {
    int dim;               /* width of the residual stream */
    int hidden_dim;        /* width of the feedforward layer */
    int n_layers;
    int n_heads;           /* query heads */
    int n_kv_heads;        /* key/value heads, divides n_heads */
    int head_size;         /* width of one head (dim / n_heads in llama2.c files) */
    int vocab_size;
    int seq_len;           /* maximum context length: the KV cache holds this many positions */
    float rope_theta;      /* RoPE base frequency */
    float norm_eps;        /* RMSNorm epsilon */
    int shared_classifier; /* 1 if the classifier reuses the token embedding */
    int bos_id, eos_id;    /* beginning and end of sequence token ids */
    int weight_type;       /* WEIGHT_F32, WEIGHT_BF16 or WEIGHT_Q8_0 */
    int group_size;        /* Q8_0: weights per scale; 0 otherwise */
    int chat_template;     /* TEMPLATE_*: the chat format the model was trained on */
} Config;

/* ------------------------------------------------------------------------------------------ */
/* Weights: pointers into the read-only file mapping, or into the model's arena for matrices
 * moved out of it at load time (model.c says when); nothing here owns memory. */

/* A weight matrix of any type. `data` is f32, bf16 (uint16) or int8, rows * cols values;
 * `scales` (Q8_0 only) holds one float per group_size consecutive values of a row. `packed`
 * is the same Q8_0 matrix rearranged for the int8 kernel (kernels.c says why), or NULL. */
typedef struct Q8Packed Q8Packed;
typedef struct {
    const void *data;
    const float *scales;
    int type;          /* WEIGHT_* */
    int group_size;    /* Q8_0 only */
    Q8Packed *packed;  /* Q8_0 only, written by q8_pack into the model's arena */
} Tensor;

typedef struct {
    const float *attn_norm; /* (dim) RMSNorm weight before attention */
    Tensor wq;              /* (n_heads * head_size, dim) */
    Tensor wk;              /* (n_kv_heads * head_size, dim) */
    Tensor wv;              /* (n_kv_heads * head_size, dim) */
    Tensor wo;              /* (dim, n_heads * head_size) */
    const float *ffn_norm;  /* (dim) RMSNorm weight before the feedforward */
    Tensor w1;              /* (hidden_dim, dim) gate */
    Tensor w2;              /* (dim, hidden_dim) down */
    Tensor w3;              /* (hidden_dim, dim) up */
} LayerWeights;

typedef struct {
    Tensor token_embedding;   /* (vocab_size, dim) */
    LayerWeights *layers;     /* (n_layers) structs of pointers: the one allocation here */
    const float *final_norm;  /* (dim) */
    Tensor classifier;        /* (vocab_size, dim); the token embedding when shared */
} Weights;

/* ------------------------------------------------------------------------------------------ */
/* Run state: every activation buffer and the KV cache, allocated in one place. */

typedef struct {
    float *x;      /* (dim) the residual stream */
    float *xb;     /* (max(dim, n_heads * head_size)) normalised input, then attention output */
    float *xb2;    /* (dim) output of wo and of w2, before the residual add */
    float *hb;     /* (hidden_dim) w1 xb, then silu(w1 xb) * w3 xb */
    float *hb2;    /* (hidden_dim) w3 xb */
    float *q;      /* (n_heads * head_size) queries of the current position */
    float *k;      /* (n_kv_heads * head_size) key of the current position */
    float *v;      /* (n_kv_heads * head_size) value of the current position */
    float *att;    /* (n_heads, seq_len) attention scores, then weights */
    float *logits; /* (vocab_size) */
    float *rope_cos; /* (head_size / 2) cosines of the RoPE angles at the current position */
    float *rope_sin; /* (head_size / 2) sines of the RoPE angles at the current position */
    /* The KV cache, (n_layers, n_kv_heads, seq_len, head_size): one head's keys for all
     * positions are contiguous, so attention streams through them in order. */
    float *key_cache;
    float *value_cache;
    /* Q8_0 weights only (NULL otherwise): the activations quantized to int8 once per matmul,
     * (chunk_len, max width) values with one scale per group_size of them. */
    int8_t *xq;
    float *xq_scale;
    /* Prompt chunks (model_prefill): the activations of up to chunk_len tokens, one row per
     * token, so that each weight matrix is read once per chunk rather than once per token. */
    int chunk_len;
    float *cx;     /* (chunk_len, dim) the residual streams */
    float *cxb;    /* (chunk_len, max(dim, n_heads * head_size)) normalised inputs, attention out */
    float *cxb2;   /* (chunk_len, dim) outputs of wo and w2 */
    float *chb;    /* (chunk_len, hidden_dim) */
    float *chb2;   /* (chunk_len, hidden_dim) */
    float *cq;     /* (chunk_len, n_heads * head_size) */
    float *ck;     /* (chunk_len, n_kv_heads * head_size) */
    float *cv;     /* (chunk_len, n_kv_heads * head_size) */
    float *crope_cos; /* (chunk_len, head_size / 2) RoPE angles of each position of the chunk */
    float *crope_sin; /* (chunk_len, head_size / 2) */
} RunState;

/* ------------------------------------------------------------------------------------------ */
/* Tokenizer: SentencePiece-style BPE over a table of pieces with scores. */

typedef struct {
    int vocab_size;
    int max_token_length;
    char **pieces;        /* (vocab_size) NUL-terminated piece strings */
    int *piece_lens;      /* (vocab_size) byte length of each piece (pieces may hold NUL) */
    float *scores;        /* (vocab_size) merge priority: higher merges first */
    int *hash_table;      /* open-addressing table from piece bytes to id, -1 = empty */
    size_t hash_size;     /* power of two, at least twice vocab_size */
    int byte_fallback[256]; /* id of the piece <0xXX> for each byte, or -1 */
    int bos_id, eos_id;
    char *arena;          /* one allocation holding every piece's bytes */
} Tokenizer;

/* Streams decoded bytes to a terminal safely: passes on complete, valid UTF-8 sequences and
 * whitespace, holds back the start of a sequence until it is complete, drops invalid bytes
 * and ASCII control bytes other than \t, \n and \r. */
typedef struct {
    unsigned char pending[4];
    int n_pending;
} Utf8Stream;

/* ------------------------------------------------------------------------------------------ */
/* Sampler: turns logits into the next token id. */

typedef struct {
    float prob;
    int index;
} ProbIndex;

/* The filters run in this order: temperature, softmax, top-k, min-p, top-p, then one draw
 * from what is left, renormalised. Top-k and min-p keep the same set in either order (both
 * keep the most likely token); top-p then measures the mass of the survivors renormalised to
 * 1. With top_k = 0 and min_p = 0 the sampler is llama2.c's, draw for draw. */
typedef struct {
    int vocab_size;
    float temperature;   /* 0 = greedy argmax */
    float topp;          /* nucleus sampling threshold; 0 or >= 1 disables it */
    int top_k;           /* keep the k most likely tokens; 0 disables it (set after init) */
    float min_p;         /* drop tokens below min_p times the top probability; 0 disables it */
    uint64_t rng_state;  /* xorshift64* state, as llama2.c */
    ProbIndex *probindex; /* (2 * vocab_size) scratch for top-p, top-k and min-p */
} Sampler;

/* ------------------------------------------------------------------------------------------ */
/* The model: configuration, weights, run state, and the mapping they point into. */

typedef struct {
    Config config;
    Weights weights;
    RunState state;
    const void *mapping;  /* the whole file, mapped read-only */
    size_t mapping_size;
    int owns_mapping;     /* 1 if model_free must unmap it (model_load, not model_load_memory) */
    int copy_weights;     /* 1: f32 and bf16 matrices copied into the arena (run --no-mmap) */
    void *arena;          /* matrices moved out of the mapping (model.c: "Where the weight ..") */
    size_t arena_size, arena_used;
    int is_llama2c;       /* 1 for llama2.c files, whose stories end with BOS rather than EOS */
    const void *tokenizer_data; /* embedded tokenizer section, or NULL (llama2.c files) */
    size_t tokenizer_size;
    struct AttnRecorder *attn;  /* --attn: receives every attention row (attnviz.h); NULL = off */
} Model;

/* Maps a checkpoint (TLLM or llama2.c version 0, told apart by the magic), validates every
 * header field and the file size, points the weights into the mapping and allocates the run
 * state. With copy_weights the f32 and bf16 matrices are copied out of the mapping into
 * memory in 2 MB pages (faster decoding, slower loading). Returns 0, or -1 with the reason
 * in err. */
int model_load(Model *m, const char *path, int copy_weights, char err[ERR_MAX]);

/* The same for a checkpoint already in memory: data is used in place, stays the caller's and
 * must outlive the model. Returns 0, or -1 with the reason in err. */
int model_load_memory(Model *m, const void *data, size_t size, char err[ERR_MAX]);

/* Releases everything model_load acquired. Safe on a zeroed Model. */
void model_free(Model *m);

/* Runs one token at position pos (0 <= pos < seq_len) through the network, appending its key
 * and value to the cache. Returns the logits, (vocab_size), owned by the model, or NULL if
 * the token or the position is out of range. */
float *model_forward(Model *m, int token, int pos);

/* Runs n tokens (the prompt) at positions pos .. pos + n - 1, filling the KV cache as n calls
 * of model_forward would. Returns the logits of the last position (owned by the model), or
 * NULL if a token or position is out of range. If all_logits is not NULL it receives the
 * logits of every position, (n, vocab_size). */
float *model_prefill(Model *m, const int *tokens, int n, int pos, float *all_logits);

/* Bytes of weights one forward pass reads, for GB/s reports. */
size_t model_weight_bytes(const Model *m);

/* Loads llama2.c's tokenizer.bin. vocab_size is the model's: the file must hold at least that
 * many pieces. Returns 0, or -1 with the reason in err. */
int tokenizer_load(Tokenizer *t, const char *path, int vocab_size, char err[ERR_MAX]);

/* Loads a tokenizer from memory: a u32 piece count, then the tokenizer.bin layout (the
 * section embedded in a TLLM file). Returns 0, or -1 with the reason in err. */
int tokenizer_load_memory(Tokenizer *t, const void *data, size_t size, int vocab_size,
                          char err[ERR_MAX]);

void tokenizer_free(Tokenizer *t);

/* Encodes UTF-8 text (any bytes: invalid UTF-8 falls back to byte tokens) into ids, with BOS
 * and/or EOS when asked. tokens must have room for strlen(text) + 3 ids. Returns the number
 * of ids written, or -1 if memory ran out. */
int tokenizer_encode(const Tokenizer *t, const char *text, int bos, int eos, int *tokens);

/* Encodes text that continues after a special token, such as a chat template's <|user|>:
 * the same as tokenizer_encode without BOS, EOS and the dummy-prefix space, which sentencepiece
 * puts only at the start of a text. Returns the number of ids, or -1 if memory ran out. */
int tokenizer_encode_continuation(const Tokenizer *t, const char *text, int *tokens);

/* The bytes token stands for when it follows prev_token: a <0xXX> piece is its byte, and the
 * leading space of a piece right after BOS is dropped. Sets *len; the result may hold any
 * byte and lives as long as the tokenizer. Returns NULL for an id outside the vocabulary. */
const char *tokenizer_decode(const Tokenizer *t, int prev_token, int token, int *len);

/* Id of the piece with exactly these bytes, or -1. */
int tokenizer_lookup(const Tokenizer *t, const char *bytes, int len);

/* Feeds n bytes to the stream and writes what is safe to print to out (room for n + 4 bytes).
 * Returns the number of bytes written. */
size_t utf8_stream_feed(Utf8Stream *s, const char *in, size_t n, char *out);

/* Drops a sequence left incomplete at the end of the text. */
void utf8_stream_reset(Utf8Stream *s);

/* Prepares a sampler; seed must be nonzero. Returns 0, or -1 if memory ran out. */
int sampler_init(Sampler *s, int vocab_size, float temperature, float topp, uint64_t seed);
void sampler_free(Sampler *s);

/* Picks the next token from logits (vocab_size), which it may overwrite. */
int sampler_sample(Sampler *s, float *logits);

/* Applies top-k, min-p and top-p to probs (vocab_size, summing to 1). Leaves the survivors in
 * s->probindex, most likely first (ties: lower id first), with their unnormalised
 * probabilities, and returns how many there are (at least 1). */
int sampler_filter(Sampler *s, const float *probs);

/* ------------------------------------------------------------------------------------------ */
/* Chat templates (chat.c): a conversation as token ids, one user turn at a time. The formats
 * and the encoding rules are described at the top of chat.c. */

/* TEMPLATE_LLAMA2, TEMPLATE_CHATML or TEMPLATE_ZEPHYR for "llama2", "chatml" or "zephyr";
 * -1 for any other name. */
int chat_template_id(const char *name);

/* The name of a TEMPLATE_* value ("none" for TEMPLATE_NONE). */
const char *chat_template_name(int template_id);

/* The ids to feed before the assistant answers user: on the first turn BOS, the system
 * prompt (NULL or "" for none) and the user turn; on later turns the end of the previous
 * answer, then the user turn. Both end with the assistant's header. t->bos_id and t->eos_id
 * must be the model's. Returns a malloc'd array of *n ids, or NULL if memory ran out. */
int *chat_encode_turn(const Tokenizer *t, int template_id, const char *system, const char *user,
                      int first, int *n);

/* The id that ends the assistant's answer besides EOS: <|im_end|> for ChatML when the
 * vocabulary has it; -1 when there is none. */
int chat_end_token(const Tokenizer *t, int template_id);

/* The text that ends the answer when the end marker is not one token ("<|im_end|>" for
 * ChatML on a vocabulary without it), for the caller to treat as a stop string; or NULL. */
const char *chat_end_text(const Tokenizer *t, int template_id);

#endif
