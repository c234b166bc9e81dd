/*
 * attnviz.h - watching attention: record the attention weights the forward pass computes, and
 * write them out as a binary file (--attn), a self-contained HTML page (--attn-html) or a
 * ranking of the most attended tokens (--attn-top).
 *
 * What is recorded
 * ----------------
 * For every layer l, query head h and position pos the model processes, one row of pos + 1
 * weights: how much the query at pos took from the value of each position 0..pos. Each row
 * is a softmax, so it sums to 1, and it stops at pos because attention is causal. Query head
 * h read key/value head h / (n_heads / n_kv_heads) (grouped-query attention).
 *
 * Past the context
 * ----------------
 * When generation outgrows the context, run.c evicts positions from the KV cache
 * (model_evict) and tells the recorder (attn_record_evict). The model reports cache
 * positions; the recorder turns them into positions of the text, so a row of text position
 * p still has p + 1 weights, 0 on the positions evicted by then. Which positions were evicted
 * and when, and which are the sinks, is kept for the page.
 *
 * How it is hooked in
 * -------------------
 * run.c hands attn_observe and the recorder to model_observe_attention (model.h): from then
 * on the forward pass calls it with the weights of every layer and position it runs, in
 * order. Nothing in the model knows about this file. run.c tells the recorder which token sits
 * at each position with attn_record_token before running it: a recorder without keep_all
 * (--attn-top alone) keeps only the rows of the newest position it was told about.
 *
 * The file written by attn_write (all numbers little-endian; docs/ATTENTION.md says more)
 * -----------------------------------------------------------------------------------------
 *   offset 0   char[4] "ATTN"
 *          4   u32 version, 1
 *          8   i32 n_layers, i32 n_heads, i32 n_kv_heads, i32 n_positions
 *         24   u64 rows_offset: where the weights start (a multiple of 4)
 *         32   i32 kv_head[n_heads]: the key/value head each query head read
 *              then per position: i32 token id, i32 byte length, the piece's bytes as printed
 *              ("<s>" for BOS, "</s>" for EOS); zero bytes up to rows_offset
 *   rows_offset   float32 rows: for pos in 0..n_positions-1, for layer, for head, pos + 1
 *                 weights. A recording of n positions is a prefix of one of more positions.
 *
 * Errors follow the library's rule: functions that can fail write one line to err and return
 * -1; nothing here prints or exits.
 */
#ifndef ATTNVIZ_H
#define ATTNVIZ_H

#include <stdio.h>

#include "model.h"
#include "tokenizer.h"

typedef struct AttnRecorder {
    int n_layers, n_heads, n_kv_heads, seq_len;
    int keep_all;      /* 1: keep every position (files); 0: only the newest row per (layer, head) */
    int max_positions; /* positions the buffer has room for */
    int n_positions;   /* 1 + the highest position attn_record_token was told about */
    float *rows;       /* keep_all: the file's rows, L * H * P * (P + 1) / 2 floats for P =
                        * max_positions; else (n_layers, n_heads, seq_len), newest rows only */
    int *tokens;       /* (max_positions) the input token at each position, -1 if not told */
    int *evicted_at;   /* (max_positions) the first query position that no longer saw it,
                        * or -1 */
    int sinks;         /* cache positions kept for ever (set at the first eviction) */
    long dropped;      /* text positions evicted so far: cache position c >= sinks holds text
                        * position c + dropped */
    int newest_cache;  /* without keep_all: the cache position of the newest rows */
} AttnRecorder;

/* Prepares a recorder for model c. keep_all = 1 keeps every row of up to max_positions
 * positions (needed to write files); keep_all = 0 keeps only the newest row of each
 * (layer, head), enough for attn_top. Returns 0, or -1 with the reason in err. */
int attn_recorder_init(AttnRecorder *r, const Config *c, int max_positions, int keep_all,
                       char err[ERR_MAX]);

/* Frees the buffers. Safe on a zeroed recorder. */
void attn_recorder_free(AttnRecorder *r);

/* The AttnObserver (model.h) a recorder is given to the model with: records the weights of
 * every head of `layer` at cache position pos, head h's pos + 1 weights at weights + h *
 * stride, as the row of its text position. Positions past max_positions are ignored. */
void attn_observe(void *recorder, int layer, int pos, const float *weights, int stride);

/* Notes that the cache forgot the drop positions after its first sinks (model_evict). */
void attn_record_evict(AttnRecorder *r, int sinks, int drop);

/* Notes that token sat at position pos; the files hold positions 0..n_positions-1. */
void attn_record_token(AttnRecorder *r, int pos, int token);

/* The recorded weights (pos + 1) of (layer, head, text position pos). With keep_all = 0 only
 * the newest position of each (layer, head) is there, and its row is by cache position
 * (newest_cache + 1 weights). */
const float *attn_row(const AttnRecorder *r, int layer, int head, int pos);

/* The key/value head query head h reads. */
int attn_kv_head(const AttnRecorder *r, int head);

/* Ranks text positions 0..pos by their weight averaged over the heads of layer, at query
 * position pos. Writes the k best (fewer if pos + 1 < k), highest first, to positions and
 * weights. Returns how many it wrote. */
int attn_top(const AttnRecorder *r, int layer, int pos, int k, int *positions, float *weights);

/* The text of the token at pos as the reader should see it: the piece as printed after the
 * token before it, "<s>" for BOS and "</s>" for EOS. Sets *len; NULL if no token is known. */
const char *attn_piece(const AttnRecorder *r, const Tokenizer *t, int pos, int *len);

/* Formats one --attn-top line into out (size bytes, always terminated): the token at pos,
 * the token `next` it produced, and the k positions layer attended to most, averaged over
 * heads, with their pieces quoted and escaped for a terminal. Returns the line's length. */
int attn_format_top(char *out, size_t size, const AttnRecorder *r, const Tokenizer *t,
                    int layer, int pos, int next, int k);

/* Writes the binary file described above. Needs keep_all. Returns 0, or -1 with the reason in
 * err (without the path). */
int attn_write(const AttnRecorder *r, const Tokenizer *t, const char *path, char err[ERR_MAX]);

/* Writes the HTML viewer (attnviz.html, built into the program) with the recording inside:
 * one file, no network. Needs keep_all. Returns 0, or -1 with the reason in err. */
int attn_write_html(const AttnRecorder *r, const Tokenizer *t, const char *path,
                    char err[ERR_MAX]);

#endif
