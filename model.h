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
 * A prompt runs the same steps for a chunk of tokens at once: every buffer holds one row per
 * token, so each weight matrix is read once per chunk rather than once per token, and the
 * query of the token at position p attends over positions 0..p only (the causal mask).
 * Decoding is a chunk of one token.
 *
 * Some families add steps, each taken only when the model file has its tensors: biases on
 * q, k and v (Qwen2), and an RMSNorm of each query and key head before RoPE (Qwen3). RoPE may
 * be stretched to a longer context (Llama 3.1's scaling), and some layers may see only the
 * last sliding_window positions (Mistral, Qwen2), keeping only those in their cache.
 *
 * The cache holds seq_len positions. Past them, model_evict forgets the oldest after the
 * first few (attention sinks) and the positions are renumbered, so a text can go on for ever
 * in the memory of its context (docs/ATTENTION.md, "Past the context").
 *
 * Out of scope: training, mixture of experts, anything but the CPU.
 *
 * Files: model.c (loading, the forward pass), format.c (reading and checking model files),
 * attention.c (RoPE, KV cache, attention), matmul*.c (the weight types and their products),
 * kernels.c (rmsnorm, softmax, SwiGLU), tokenizer.c, tokenizer_bpe.c, pretokenizer.c and
 * unicode.c (the two kinds of BPE, and the Unicode they need), sampler.c (choosing the next
 * token), chat.c (chat templates), attnviz.c (recording attention), run.c and args.c (the
 * command line).
 * The file formats are described in models/FORMAT.md. Errors follow error.h: the library
 * never prints and never exits.
 */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"
#include "error.h"
#include "matmul.h"

/* ------------------------------------------------------------------------------------------ */
/* Configuration: plain hyperparameters, everything the forward pass needs to know. */

#define CONFIG_MAX_EOS 8
#define CONFIG_MAX_LAYERS 1024

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
    RopeScaling rope_scaling; /* how RoPE stretches to a longer context (attention.h) */
    float norm_eps;        /* RMSNorm epsilon */
    int bos_id;            /* the beginning-of-sequence token */
    int eos_ids[CONFIG_MAX_EOS]; /* (n_eos) the tokens that end a text; [0] is the EOS */
    int n_eos;
    int chat_template;     /* TEMPLATE_* (chat.h): the chat format the model was trained on */
    /* Sliding-window attention (Mistral, Qwen2): a windowed layer's query at position p sees
     * positions p - sliding_window + 1 .. p only, as Hugging Face's mask (kv > q - window). */
    int sliding_window;    /* 0: every layer sees every earlier position */
    unsigned char windowed[CONFIG_MAX_LAYERS]; /* (n_layers) 1: the layer has the window */
} Config;

/* ------------------------------------------------------------------------------------------ */
/* Weights: pointers into the read-only file mapping, or into the model's arena for matrices
 * rearranged at load time (model.c says when); nothing here owns memory. */

/* Optional tensors, found in some families only, are NULL when absent. */
typedef struct {
    const float *attn_norm; /* (dim) RMSNorm weight before attention */
    Tensor wq;              /* (n_heads * head_size, dim) */
    Tensor wk;              /* (n_kv_heads * head_size, dim) */
    Tensor wv;              /* (n_kv_heads * head_size, dim) */
    const float *bq;        /* (n_heads * head_size) biases of q, k and v (Qwen2), or NULL */
    const float *bk;        /* (n_kv_heads * head_size) */
    const float *bv;        /* (n_kv_heads * head_size) */
    const float *q_norm;    /* (head_size) RMSNorm weight of each query head (Qwen3), or NULL */
    const float *k_norm;    /* (head_size) RMSNorm weight of each key head (Qwen3), or NULL */
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
/* Run state: every activation buffer and the KV cache, allocated in one place. Each buffer
 * holds one row per token of a chunk of up to chunk_len tokens; decoding uses the first row. */

typedef struct {
    int chunk_len; /* tokens per chunk */
    float *x;      /* (chunk_len, dim) the residual stream */
    float *xb;     /* (chunk_len, max(dim, n_heads * head_size)) normalised input, then
                    * attention output */
    float *xb2;    /* (chunk_len, dim) output of wo and of w2, before the residual add */
    float *hb;     /* (chunk_len, hidden_dim) w1 xb, then silu(w1 xb) * w3 xb */
    float *hb2;    /* (chunk_len, hidden_dim) w3 xb */
    float *q;      /* (chunk_len, n_heads * head_size) queries */
    float *k;      /* (chunk_len, n_kv_heads * head_size) keys of the new positions */
    float *v;      /* (chunk_len, n_kv_heads * head_size) values of the new positions */
    float *rope_freq; /* (head_size / 2) radians per position of each pair (rope_frequencies) */
    float *rope_cos; /* (chunk_len, head_size / 2) cosines of the RoPE angles of each position */
    float *rope_sin; /* (chunk_len, head_size / 2) sines */
    float *att;    /* (n_heads, seq_len) the reference attention's weights (run --attn) */
    float *logits; /* (vocab_size) of the last position */
    /* The input of a product as its weight type's kernel reads it (quantized, rounded or
     * laid out column by column: matmul.h), for chunk_len tokens of the widest input, a copy
     * for each thread; NULL if no matrix needs it. */
    void *xp;
    size_t xp_bytes;
    KvCache kv;    /* the keys and values of the positions the model can still see */
} RunState;

/* Called after each layer's attention for each position, with the attention weights of every
 * query head: head h's pos + 1 weights at weights + h * stride. */
typedef void AttnObserver(void *ctx, int layer, int pos, const float *weights, int stride);

/* ------------------------------------------------------------------------------------------ */
/* The model: configuration, weights, run state, and the mapping they point into. */

/* What the caller chooses at load time; a zeroed struct (or NULL) gives the defaults. */
typedef struct {
    int copy_weights; /* 1: matrices no kernel rearranges at load (all in the plain C build,
                       * Q8_0 and Q4_0 ones without VNNI) copied into memory in 2 MB pages
                       * too (run --no-mmap) */
    int kv_type;      /* KV_F32 (default), KV_BF16 or KV_Q8 (attention.h) */
    int sinks;        /* positions kept at the start when the context overflows
                       * (model_evict), below seq_len; -1: MODEL_DEFAULT_SINKS, or fewer
                       * in a context that short */
} ModelOptions;

/* StreamingLLM's choice (Xiao et al. 2023): four initial tokens hold the attention that has
 * nowhere else to go. */
#define MODEL_DEFAULT_SINKS 4

typedef struct {
    Config config;
    Weights weights;
    RunState state;
    const void *mapping;  /* the whole file, mapped read-only */
    size_t mapping_size;
    int owns_mapping;     /* 1 if model_free must unmap it (model_load, not model_load_memory) */
    ModelOptions options; /* as loaded, defaults filled in */
    void *arena;          /* matrices moved out of the mapping (model.c: "Where the weight ..") */
    size_t arena_size, arena_used;
    int is_llama2c;       /* 1 for llama2.c files, whose stories end with BOS rather than EOS */
    const void *tokenizer_data; /* embedded tokenizer section, or NULL (llama2.c files) */
    size_t tokenizer_size;
    int tokenizer_kind;   /* of the embedded tokenizer (FORMAT.md) */
    AttnObserver *observer;     /* model_observe_attention, or NULL */
    void *observer_ctx;
} Model;

/* Maps a checkpoint (TLLM or llama2.c version 0, told apart by the magic), validates every
 * header field and the file size, rearranges each weight matrix for this build's kernel (or
 * points it into the mapping where the stored layout serves: model.c, "Where the weight
 * matrices live") and allocates the run state as opt says (NULL: the defaults). Returns 0, or
 * -1 with the reason in err. */
int model_load(Model *m, const char *path, const ModelOptions *opt, char err[ERR_MAX]);

/* The same for a checkpoint already in memory: data stays the caller's and must outlive the
 * model (the norms, and matrices no kernel rearranges, are read in place), and must be aligned
 * to 4 bytes at least (64 is best: tensors start at multiples of 64 from the file's start).
 * The rearranged matrices are copies, so the weights take their memory twice while data
 * lives. Returns 0, or -1 with the reason in err. */
int model_load_memory(Model *m, const void *data, size_t size, const ModelOptions *opt,
                      char err[ERR_MAX]);

/* Releases everything model_load acquired. Safe on a zeroed Model. */
void model_free(Model *m);

/* Runs n tokens at positions pos .. pos + n - 1 through the network, appending their keys and
 * values to the cache; n = 1 is a decoding step, a longer n a prompt, run in chunks. Returns
 * the logits of the last position, (vocab_size), owned by the model, or NULL if a token or a
 * position is out of range. If all_logits is not NULL it receives the logits of every
 * position, (n, vocab_size). The logits of a position are the same, bit for bit, however the
 * tokens before it were split into calls. */
float *model_forward(Model *m, const int *tokens, int n, int pos, float *all_logits);

/* Makes room when the KV cache holds len positions (often all seq_len): forgets positions
 * sinks .. sinks + drop - 1 (attention.h, kv_cache_evict) and renumbers the later ones, so the
 * next token goes at position len - drop. The sink positions and the last len - sinks - drop
 * stay, with what they computed. Returns len - drop, or -1 if drop is not in
 * 1 .. len - sinks or len is more than the cache holds (nothing changes then). */
int model_evict(Model *m, int drop, int len);

/* From now on, fn(ctx, ...) sees the attention weights of every layer and position the model
 * runs (NULL stops it). The numbers do not change. */
void model_observe_attention(Model *m, AttnObserver *fn, void *ctx);

/* Bytes of weights one forward pass reads, for GB/s reports. */
size_t model_weight_bytes(const Model *m);

#endif
