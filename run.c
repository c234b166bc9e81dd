/*
 * run.c - the command line: load the model, generate text, chat or measure perplexity (the
 * flags are parsed in args.c).
 *
 * Everything numeric lives in the library (model.c, attention.c, kernels.c, tokenizer.c,
 * sampler.c, chat.c); this file only talks to the user. It is the one place that prints
 * errors and exits: each bad input ends the program with one line `what: why` and status 1.
 *
 * stdout carries only text (the prompt and what the model writes; in chat, the transcript);
 * stderr carries errors and the speed report.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "args.h"
#include "attnviz.h"
#include "chat.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

/* ------------------------------------------------------------------------------------------ */
/* Errors and small utilities */

static const char *program = "run"; /* as run, for the messages (args_program_name) */

/* Prints `fmt` as one line on stderr, after the program's name, and exits with status 1. */
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* Hardening: a file name or flag value quoted in the message may hold a newline or a
     * terminal escape; print control bytes as \xNN so the message stays one line (found by
     * fuzzing, tests/regressions/args_newline_in_message). */
    fprintf(stderr, "%s: ", program);
    for (const unsigned char *p = (const unsigned char *)line; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) fprintf(stderr, "\\x%02x", *p);
        else fputc(*p, stderr);
    }
    fputc('\n', stderr);
    exit(1);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The longest -f or --ppl file read: far more text than any context, or any sensible
 * perplexity run, holds. */
#define MAX_PROMPT_FILE (1 << 28)

/* Reads a whole file ("-" is stdin) into a NUL-terminated string, dropping one trailing
 * newline (a file written by an editor ends with one; the prompt usually should not). flag
 * names the option in messages. */
static char *read_prompt_file(const char *flag, const char *path) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) die("%s: %s: %s", flag, path, strerror(errno));
    size_t size = 0, cap = 4096;
    char *text = malloc(cap);
    for (;;) {
        if (!text) die("%s: %s: out of memory", flag, path);
        size_t got = fread(text + size, 1, cap - size - 1, f);
        /* Hardening: check each chunk as it arrives, so /dev/zero ends at once instead of
         * filling memory, and stop at MAX_PROMPT_FILE. */
        if (memchr(text + size, '\0', got)) die("%s: %s: the text holds a NUL byte", flag, path);
        size += got;
        if (size < cap - 1) break;
        if (cap >= MAX_PROMPT_FILE) die("%s: %s: more than %d MB", flag, path, MAX_PROMPT_FILE >> 20);
        cap *= 2;
        text = realloc(text, cap);
    }
    if (ferror(f)) die("%s: %s: read error", flag, path);
    if (f != stdin) fclose(f);
    if (size > 0 && text[size - 1] == '\n') size--;
    if (size > 0 && text[size - 1] == '\r') size--;
    text[size] = '\0';
    return text;
}

/* ------------------------------------------------------------------------------------------ */
/* Output: token text goes through a UTF-8 filter, so the terminal never sees a broken
 * sequence, and then past the stop strings. Text that could be the start of a stop string
 * is held back until the next tokens show whether it is one. */

typedef struct {
    const Tokenizer *tokenizer;
    Utf8Stream utf8;
    const char **stops; /* (n_stops) */
    int n_stops;
    char *held;         /* text that may begin a stop string, (held_cap) */
    size_t n_held, held_cap;
    int skip_space;     /* drop spaces until the first other byte (the start of an answer) */
    FILE *logits_file;  /* --logits, or NULL */
    const char *logits_path;
    int vocab_size;
    int no_prefill;     /* --no-prefill: feed prompts one token at a time */
    AttnRecorder *attn;         /* --attn, --attn-html, --attn-top: the recorder, or NULL */
    int attn_top, attn_layer;   /* --attn-top K (0 = off) reads layer attn_layer */
} Output;

static void write_text(const char *s, size_t n) {
    /* Hardening: s is NULL when nothing was ever held, and fwrite(NULL, ...) is undefined even
     * for 0 bytes (UBSan in `make test`'s debug pass, test_hardening's vocabulary of one). */
    if (n > 0) fwrite(s, 1, n, stdout);
    fflush(stdout);
}

/* The position of the first occurrence of needle (nlen) in hay (n), or n if none. */
static size_t find(const char *hay, size_t n, const char *needle, size_t nlen) {
    for (size_t i = 0; i + nlen <= n; i++)
        if (memcmp(hay + i, needle, nlen) == 0) return i;
    return n;
}

/* Prints the text of token next following prev, unless a stop string shows up: then prints
 * only the text before it and returns 1. Returns 0 otherwise. */
static int emit_token(Output *o, int prev, int next) {
    int len;
    const char *piece = tokenizer_decode(o->tokenizer, prev, next, &len);
    if (!piece) return 0;
    while (o->skip_space && len > 0 && piece[0] == ' ') piece++, len--;
    if (len > 0) o->skip_space = 0;
    if (o->n_held + len + 8 > o->held_cap) {
        o->held_cap = 2 * (o->n_held + len + 8);
        o->held = realloc(o->held, o->held_cap);
        if (!o->held) die("out of memory");
    }
    o->n_held += utf8_stream_feed(&o->utf8, piece, (size_t)len, o->held + o->n_held);

    size_t first = o->n_held; /* the earliest stop string */
    for (int i = 0; i < o->n_stops; i++) {
        size_t at = find(o->held, o->n_held, o->stops[i], strlen(o->stops[i]));
        if (at < first) first = at;
    }
    if (first < o->n_held) {
        write_text(o->held, first);
        o->n_held = 0;
        return 1;
    }
    /* hold back the longest end of the text that begins some stop string */
    size_t keep = 0;
    for (int i = 0; i < o->n_stops; i++) {
        size_t slen = strlen(o->stops[i]);
        for (size_t k = slen - 1; k > keep; k--)
            if (k <= o->n_held && memcmp(o->held + o->n_held - k, o->stops[i], k) == 0) {
                keep = k;
                break;
            }
    }
    write_text(o->held, o->n_held - keep);
    memmove(o->held, o->held + o->n_held - keep, keep);
    o->n_held = keep;
    return 0;
}

/* Ends a stretch of model text: what was held back was no stop string after all. */
static void output_end(Output *o) {
    write_text(o->held, o->n_held);
    o->n_held = 0;
    utf8_stream_reset(&o->utf8);
}

/* Prints tokens[0..n) as the echo of a prompt, outside the stop strings' reach. */
static void echo_tokens(Output *o, const int *tokens, int n) {
    for (int i = 0; i < n; i++) {
        int len;
        const char *piece = tokenizer_decode(o->tokenizer, i ? tokens[i - 1] : -1, tokens[i],
                                             &len);
        if (!piece) continue;
        char buf[len + 8];
        write_text(buf, utf8_stream_feed(&o->utf8, piece, (size_t)len, buf));
    }
}

static void write_logits(Output *o, const float *logits, int rows) {
    size_t count = (size_t)rows * o->vocab_size;
    if (fwrite(logits, sizeof(float), count, o->logits_file) != count)
        die("%s: write failed: %s", o->logits_path, strerror(errno));
}

/* ------------------------------------------------------------------------------------------ */
/* Statistics, for -v */

typedef struct {
    double load_s;
    long prompt_tokens;    /* tokens fed by prefill (every chat turn) */
    double prefill_s;
    long generated_tokens; /* tokens sampled, end tokens not counted */
    long decode_steps;     /* forward passes of sampled tokens */
    double decode_s;
    double ttft_s;         /* start of the first prefill to the first sampled token; -1 */
} Stats;

/* The peak resident set of this process in KiB: Linux's VmHWM, which starts afresh at exec,
 * where getrusage's ru_maxrss (fallback) also counts the parent that forked us before it. */
static long peak_rss_kb(long fallback) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = fallback;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static void print_stats(const Stats *st, const Model *m) {
    double prefill = st->prefill_s > 0 ? st->prompt_tokens / st->prefill_s : 0.0;
    double decode = st->decode_s > 0 ? st->decode_steps / st->decode_s : 0.0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "load_ms: %.1f\n", st->load_s * 1e3);
    fprintf(stderr, "prompt_tokens: %ld\n", st->prompt_tokens);
    fprintf(stderr, "prefill_tok_s: %.1f\n", prefill);
    fprintf(stderr, "generated_tokens: %ld\n", st->generated_tokens);
    fprintf(stderr, "decode_tok_s: %.1f\n", decode);
    fprintf(stderr, "decode_ms_per_token: %.3f\n", decode > 0 ? 1e3 / decode : 0.0);
    fprintf(stderr, "ttft_ms: %.1f\n", st->ttft_s > 0 ? st->ttft_s * 1e3 : 0.0);
    fprintf(stderr, "weights_gb_s: %.2f\n", model_weight_bytes(m) * decode / 1e9);
    fprintf(stderr, "peak_rss_mb: %.1f\n", peak_rss_kb(ru.ru_maxrss) / 1024.0);
    fprintf(stderr, "kv_cache_mb: %.3f\n", kv_cache_bytes(&m->state.kv) / 1048576.0);
}

/* ------------------------------------------------------------------------------------------ */
/* The model, fed and sampled */

/* Where the text is in the KV cache. Cache position p holds text position p while p is below
 * sinks, and p + dropped after: each eviction forgets the positions right after the sinks. */
typedef struct {
    int pos;      /* the next cache position to run */
    long dropped; /* text positions forgotten so far */
    int sinks;    /* cache positions kept for ever (the model's, model_load's option) */
    int evict;    /* positions forgotten at a time */
    int shift;    /* 0: --no-shift, the text ends with the context */
} Context;

static long text_pos(const Context *x, int cache_pos) {
    return cache_pos < x->sinks ? cache_pos : cache_pos + x->dropped;
}

/* Makes sure need more positions fit in the cache, forgetting the oldest after the sinks if
 * it is full: at least x->evict of them, so that the keys that move are re-rotated once per
 * x->evict tokens rather than once per token. Returns 1, or 0 if they cannot fit (shifting off,
 * or more than the positions after the sinks). */
static int make_room(Model *m, const Output *o, Context *x, int need) {
    int seq_len = m->config.seq_len, over = x->pos + need - seq_len;
    if (over <= 0) return 1;
    if (!x->shift || over > x->pos - x->sinks) return 0;
    int drop = over > x->evict ? over : x->evict;
    if (drop > x->pos - x->sinks) drop = x->pos - x->sinks;
    x->pos = model_evict(m, drop, x->pos);
    if (o && o->attn) attn_record_evict(o->attn, x->sinks, drop);
    x->dropped += drop;
    return 1;
}

static float *forward(Model *m, Output *o, Context *x, int token);

/* Runs n tokens at the next positions (the caller made room) and returns the last position's
 * logits, writing every position's logits for --logits. --no-prefill feeds them one at a time
 * instead: the tests check that both give the same logits. */
static float *prefill(Model *m, Output *o, Context *x, const int *tokens, int n) {
    if (o->no_prefill) {
        float *logits = NULL;
        for (int i = 0; i < n; i++) logits = forward(m, o, x, tokens[i]);
        return logits;
    }
    float *all = NULL;
    if (o->logits_file && !(all = malloc((size_t)n * o->vocab_size * sizeof *all)))
        die("out of memory");
    for (int i = 0; o->attn && i < n; i++) attn_record_token(o->attn, text_pos(x, x->pos + i), tokens[i]);
    float *logits = model_forward(m, tokens, n, x->pos, all);
    if (!logits) die("a token or position is outside the model (prefill at %d)", x->pos);
    x->pos += n;
    if (all) write_logits(o, all, n);
    free(all);
    return logits;
}

static float *forward(Model *m, Output *o, Context *x, int token) {
    if (o->attn) attn_record_token(o->attn, text_pos(x, x->pos), token); /* --attn: which token */
    float *logits = model_forward(m, &token, 1, x->pos, NULL);
    if (!logits) die("token %d at position %d is outside the model", token, x->pos);
    x->pos++;
    if (o->logits_file) write_logits(o, logits, 1);
    return logits;
}

/* --attn-top: after the step at text position pos chose next, the positions its query
 * attended to most. */
static void attn_report(const Output *o, long pos, int next) {
    if (!o->attn_top) return;
    char line[4096];
    attn_format_top(line, sizeof line, o->attn, o->tokenizer, o->attn_layer, (int)pos, next,
                    o->attn_top);
    fprintf(stderr, "%s\n", line);
}

/* Why an answer ended */
enum { END_TOKEN, END_STOP_STRING, END_LIMIT, END_CONTEXT };

/* Feeds tokens (n, which fit: make_room) at the next positions, then samples and prints
 * tokens until one of end_ids (n_end), a stop string, max_new printed tokens, or the end of
 * the context when it does not shift. Returns why it ended; *unfed receives the last token
 * printed if the model has not been fed it yet (at END_LIMIT and END_CONTEXT), else -1. */
static int answer(Model *m, Output *o, Sampler *s, Stats *st, Context *x, const int *tokens,
                  int n, long max_new, const int *end_ids, int n_end, int *unfed) {
    double start = now_seconds();
    float *logits = prefill(m, o, x, tokens, n);
    double first = now_seconds();
    st->prompt_tokens += n;
    st->prefill_s += first - start;

    int prev = tokens[n - 1], why;
    long printed = 0;
    *unfed = -1;
    for (;;) {
        int next = sampler_sample(s, logits);
        attn_report(o, text_pos(x, x->pos - 1), next);
        if (printed == 0) {
            first = now_seconds();
            if (st->ttft_s < 0) st->ttft_s = first - start;
        }
        int is_end = 0;
        for (int i = 0; i < n_end; i++) is_end |= next == end_ids[i];
        if (is_end) {
            why = END_TOKEN;
            break;
        }
        st->generated_tokens++;
        if (emit_token(o, prev, next)) {
            why = END_STOP_STRING;
            break;
        }
        if (++printed >= max_new || !make_room(m, o, x, 1)) {
            why = printed >= max_new ? END_LIMIT : END_CONTEXT;
            *unfed = next;
            break;
        }
        logits = forward(m, o, x, next);
        st->decode_steps++;
        prev = next;
    }
    st->decode_s += now_seconds() - first;
    output_end(o);
    return why;
}

/* Encodes text as a prompt (TOKENIZER_PROMPT: what Hugging Face's encode(text) gives, so
 * SentencePiece's BOS and Llama 3's <|begin_of_text|> come first) into a new array, with room
 * for one more id; *n receives the count. */
static int *encode_prompt(const Tokenizer *t, const char *text, int *n) {
    size_t len = strlen(text), cap = tokenizer_max_tokens(t, len) + 1;
    int *tokens = cap < (size_t)INT_MAX / sizeof(int) ? malloc(cap * sizeof(int)) : NULL;
    if (!tokens) die("out of memory encoding the prompt");
    *n = tokenizer_encode_text(t, text, len, TOKENIZER_PROMPT, tokens);
    if (*n < 0) die("out of memory encoding the prompt");
    return tokens;
}

static void print_ids(const int *ids, int n) {
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

/* The context of a run: the model's sinks, and --evict's block or its default. */
static Context new_context(const Model *m, const Options *opt) {
    int sinks = m->options.sinks, after = m->config.seq_len - sinks;
    int evict = opt->evict > 0 ? opt->evict : after / 4 > 0 ? after / 4 : 1;
    return (Context){.sinks = sinks, .evict = evict < after ? evict : after,
                     .shift = !opt->no_shift};
}

/* The ids that end a text: the model's EOS ids; with a SentencePiece tokenizer BOS too, since
 * llama2.c's stories end when the model starts the next one (and llama2.c stops only there). */
static int end_ids_of(const Model *m, const Tokenizer *t, int *end_ids) {
    const Config *c = &m->config;
    int n = 0;
    if (t->kind == TOKENIZER_SENTENCEPIECE) end_ids[n++] = c->bos_id;
    for (int i = 0; i < c->n_eos && !m->is_llama2c; i++) end_ids[n++] = c->eos_ids[i];
    return n;
}

/* The positions generate runs, prompt included: -n, but the context's length for -n 0,
 * and at most it with --no-shift. */
static long long generate_positions(const Options *o, const Config *c) {
    int capped = o->steps == 0 || (o->no_shift && o->steps > c->seq_len);
    return capped ? c->seq_len : o->steps;
}

/* ------------------------------------------------------------------------------------------ */
/* Generation: echo the prompt, then continue it, as llama2.c does: -n counts positions,
 * prompt included, and a story ends when the model starts the next one (BOS). */

static void generate(Model *m, Output *o, Sampler *s, Stats *st, const Options *opt) {
    const Config *c = &m->config;
    int n_prompt;
    int *tokens = encode_prompt(o->tokenizer, opt->prompt ? opt->prompt : "", &n_prompt);
    if (opt->print_tokens) {
        print_ids(tokens, n_prompt);
        free(tokens);
        return;
    }
    /* A tokenizer that adds nothing to a text (Qwen, SmolLM2) leaves an empty prompt without
     * a token to start from: the model's BOS starts it, as it does a SentencePiece prompt. */
    if (n_prompt == 0) tokens[n_prompt++] = c->bos_id;
    /* (when -n ends right at the context, the message below says so) */
    long long steps = generate_positions(opt, c);
    if (n_prompt > c->seq_len)
        die("%s: the prompt is %d tokens, more than the context of %d", opt->prompt_flag,
            n_prompt, c->seq_len);
    if (n_prompt > steps)
        die("-n: %lld positions cannot hold the prompt's %d tokens", steps, n_prompt);

    int end_ids[1 + CONFIG_MAX_EOS];
    int n_end = opt->ignore_eos ? 0 : end_ids_of(m, o->tokenizer, end_ids);

    echo_tokens(o, tokens, n_prompt);
    Context x = new_context(m, opt);
    int unfed;
    int why = answer(m, o, s, st, &x, tokens, n_prompt, steps - n_prompt + 1, end_ids, n_end,
                     &unfed);
    putchar('\n');
    fflush(stdout);
    /* Hardening: say why the text stopped when the context, not the model, ended it. */
    if (why == END_CONTEXT || (why == END_LIMIT && x.dropped == 0 && x.pos >= c->seq_len))
        fprintf(stderr, "%s: the context of %d tokens is full\n", program, c->seq_len);

    /* the decode rate: llama2.c leaves out the first position, which pays for page faults;
     * here the whole prompt is left out, since prefill runs it in one call */
    double rate = st->decode_steps > 0 && st->decode_s > 0 ? st->decode_steps / st->decode_s
                  : st->prefill_s > 0                      ? st->prompt_tokens / st->prefill_s
                                                           : 0.0;
    fprintf(stderr, "achieved tok/s: %f\n", rate);
    free(tokens);
}

/* ------------------------------------------------------------------------------------------ */
/* Chat: each user turn is rendered by the template (chat.c) and fed on top of the KV cache,
 * which keeps the whole conversation: nothing said before is ever processed again. */

/* Reads the next non-empty line of stdin into *line, without its line ending. With prompt
 * (at a terminal) it asks "User: " first; with echo (from a pipe) it prints the line after
 * the label, so stdout reads as a transcript either way. Returns 0 at the end of input. */
static int read_turn(char **line, size_t *cap, int prompt, int echo) {
    for (;;) {
        if (prompt) {
            fputs("User: ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(line, cap, stdin);
        if (n < 0) {
            if (prompt) putchar('\n');
            return 0;
        }
        if (n > 0 && (*line)[n - 1] == '\n') (*line)[--n] = '\0';
        if (n > 0 && (*line)[n - 1] == '\r') (*line)[--n] = '\0';
        if (echo && n > 0) printf("User: %s\n", *line);
        if (n > 0) return 1;
    }
}

static void chat(Model *m, Output *o, Sampler *s, Stats *st, const Options *opt,
                 const ChatSettings *settings) {
    const Config *c = &m->config;
    /* an answer ends at EOS, at the template's end marker, and (as a story does) at BOS */
    int end_ids[CONFIG_MAX_EOS + 2];
    int n_end = end_ids_of(m, o->tokenizer, end_ids);
    for (int i = 0; i < c->n_eos && m->is_llama2c; i++) end_ids[n_end++] = c->eos_ids[i];
    int end_marker = chat_end_token(o->tokenizer, settings->template_id);
    if (end_marker >= 0) end_ids[n_end++] = end_marker;
    if (opt->ignore_eos) n_end = 0;
    long max_new = opt->steps == 0 ? LONG_MAX : (long)opt->steps;
    /* --print-tokens prints ids only */
    int at_terminal = isatty(STDIN_FILENO);
    int prompt = at_terminal && !opt->print_tokens, echo = !at_terminal && !opt->print_tokens;
    char *line = NULL;
    size_t cap = 0;
    int unfed = -1;
    Context x = new_context(m, opt);

    for (int turn = 0;; turn++) {
        const char *user;
        if (turn == 0 && opt->prompt) {
            user = opt->prompt;
            if (!opt->print_tokens) printf("User: %s\n", user);
        } else if (read_turn(&line, &cap, prompt, echo)) {
            user = line;
        } else {
            break;
        }
        int n;
        int *rendered = chat_encode_turn(o->tokenizer, settings, user, turn == 0, &n);
        if (!rendered) die("out of memory rendering the chat turn");
        if (opt->print_tokens) {
            print_ids(rendered, n);
            free(rendered);
            continue;
        }
        /* an answer cut short by -n ends with a token the model has not seen yet */
        int *tokens = malloc((n + 1) * sizeof *tokens);
        if (!tokens) die("out of memory");
        int n_tokens = 0;
        if (unfed >= 0) tokens[n_tokens++] = unfed;
        memcpy(tokens + n_tokens, rendered, n * sizeof *tokens);
        n_tokens += n;
        free(rendered);

        /* room for the turn and the answer's first token; older turns make way unless
         * --no-shift, or unless the turn alone is longer than what follows the sinks */
        if (!make_room(m, o, &x, n_tokens + 1)) {
            fprintf(stderr, "%s: the context of %d tokens is full; ending the chat\n", program,
                    c->seq_len);
            free(tokens);
            break;
        }
        fputs("Assistant: ", stdout);
        o->skip_space = 1;
        int why = answer(m, o, s, st, &x, tokens, n_tokens, max_new, end_ids, n_end, &unfed);
        putchar('\n');
        fflush(stdout);
        free(tokens);
        if (why == END_CONTEXT) {
            fprintf(stderr, "%s: the context of %d tokens is full; ending the chat\n", program,
                    c->seq_len);
            break;
        }
    }
    free(line);
}

/* ------------------------------------------------------------------------------------------ */
/* Perplexity: how well the model predicts a text. Each token after the first is scored by
 * the probability the model gave it, reading the tokens before it; the mean negative log of
 * those probabilities (nats per token) and its exponential, the perplexity, go to stdout.
 * Every token is predicted once. A text longer than the context is read (--ppl-mode):
 *   chunks     in windows of seq_len positions, each starting afresh at position 0 on the
 *              last token of the window before: a token sees 0 .. seq_len - 1 tokens;
 *   stream     in one pass, the cache shifting as in generation (sinks, then the most recent
 *              positions): what generating past the context sees;
 *   recompute  each token from the seq_len tokens before it, run afresh at positions
 *              0 .. seq_len - 1: a sliding window without any cache, seq_len times slower. */

/* -log softmax(row)[target], as log-sum-exp minus the target's logit. */
static double nll_of(const float *row, int vocab_size, int target) {
    double max = row[0], sum = 0.0;
    for (int v = 1; v < vocab_size; v++) max = row[v] > max ? row[v] : max;
    for (int v = 0; v < vocab_size; v++) sum += exp(row[v] - max);
    return max + log(sum) - row[target];
}

static void perplexity(Model *m, const Tokenizer *t, const Options *opt) {
    const Config *c = &m->config;
    const char *path = opt->ppl_path;
    char *text = read_prompt_file("--ppl", path);
    int n;
    int *tokens = encode_prompt(t, text, &n);
    if (n < 2) die("%s: no text to predict", path);
    if (c->seq_len < 2) die("%s: a context of one position cannot predict anything", path);
    int batch = 64; /* positions per model_forward call: bounds the logits buffer */
    float *logits = malloc((size_t)batch * c->vocab_size * sizeof(float));
    if (!logits) die("out of memory");

    double nll = 0.0;
    long count = 0;
    if (opt->ppl_mode == PPL_STREAM) {
        Context x = new_context(m, opt);
        x.shift = 1;
        for (int done = 0; done < n - 1;) { /* feeds tokens 0 .. n - 2, predicts 1 .. n - 1 */
            make_room(m, NULL, &x, 1);
            int k = n - 1 - done < batch ? n - 1 - done : batch;
            k = k < c->seq_len - x.pos ? k : c->seq_len - x.pos;
            if (!model_forward(m, tokens + done, k, x.pos, logits))
                die("%s: a token is outside the model's vocabulary", path);
            x.pos += k;
            for (int i = 0; i < k; i++, count++)
                nll += nll_of(logits + (size_t)i * c->vocab_size, c->vocab_size, tokens[done + i + 1]);
            done += k;
        }
    } else {
        /* chunks, and recompute's first window, where every token has all before it */
        for (int start = 0; start < n - 1;) {
            int len = n - start < c->seq_len ? n - start : c->seq_len;
            for (int done = 0; done < len; done += batch) {
                int k = len - done < batch ? len - done : batch;
                if (!model_forward(m, tokens + start + done, k, done, logits))
                    die("%s: a token is outside the model's vocabulary", path);
                for (int i = 0; i < k && done + i + 1 < len; i++, count++)
                    nll += nll_of(logits + (size_t)i * c->vocab_size, c->vocab_size,
                                  tokens[start + done + i + 1]);
            }
            start += len - 1;
            if (opt->ppl_mode == PPL_RECOMPUTE) break;
        }
        if (opt->ppl_mode == PPL_RECOMPUTE)
            for (int target = c->seq_len; target < n; target++, count++) {
                const float *row = model_forward(m, tokens + target - c->seq_len, c->seq_len, 0, NULL);
                if (!row) die("%s: a token is outside the model's vocabulary", path);
                nll += nll_of(row, c->vocab_size, tokens[target]);
            }
    }
    printf("ppl: tokens=%ld nll=%.6f perplexity=%.6f\n", count, nll / count, exp(nll / count));
    free(logits), free(tokens), free(text);
}

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    program = args_program_name(argv[0]);
    char err[ERR_MAX];
    Options opt;
    switch (args_parse(argc, argv, &opt, err)) {
    case ARGS_OK: break;
    case ARGS_EXIT: free(opt.stops); return 0;
    case ARGS_USAGE: args_usage(stderr, program); free(opt.stops); return 1;
    default: die("%s", err);
    }
    if (opt.prompt_file)
        opt.prompt = opt.prompt_file_text = read_prompt_file("-f", opt.prompt_file);
#ifdef _OPENMP
    if (opt.threads > 0) omp_set_num_threads(opt.threads);
#endif

    double load_start = now_seconds();
    Model model;
    ModelOptions load = {.copy_weights = opt.no_mmap, .kv_type = opt.kv_type, .sinks = opt.sinks};
    if (model_load(&model, opt.checkpoint, &load, err) != 0) die("%s: %s", opt.checkpoint, err);
    const Config *c = &model.config;

    /* The tokenizer: -z wins, then the one embedded in the model file, then llama2.c's
     * default of tokenizer.bin in the current directory. */
    Tokenizer tokenizer;
    const char *tokenizer_path = opt.tokenizer_path;
    if (!tokenizer_path && model.tokenizer_data) {
        if (tokenizer_load_memory(&tokenizer, model.tokenizer_data, model.tokenizer_size,
                                  model.tokenizer_kind, c->vocab_size, c->bos_id,
                                  c->eos_ids[0], err) != 0)
            die("%s: embedded tokenizer: %s", opt.checkpoint, err);
    } else {
        if (!tokenizer_path) tokenizer_path = "tokenizer.bin";
        if (tokenizer_load(&tokenizer, tokenizer_path, c->vocab_size, c->bos_id, c->eos_ids[0],
                           err) != 0)
            die("%s: %s", tokenizer_path, err);
    }
    Stats stats = {.load_s = now_seconds() - load_start, .ttft_s = -1.0};

    if (opt.ppl_path) {
        perplexity(&model, &tokenizer, &opt);
        free(opt.stops);
        free(opt.prompt_file_text);
        tokenizer_free(&tokenizer);
        model_free(&model);
        return 0;
    }

    long long seed = opt.seed != 0 ? opt.seed : (long long)time(NULL);
    Sampler sampler;
    SamplerSettings sampling = {.temperature = opt.temperature, .topp = opt.topp,
                                .top_k = opt.top_k, .min_p = opt.min_p, .seed = (uint64_t)seed};
    if (sampler_init(&sampler, c->vocab_size, sampling) != 0) die("out of memory");

    /* The template: --template wins over the model file's, and llama2.c files, which name
     * none, get Llama 2's. A byte-level tokenizer comes from a family of its own, whose
     * template Llama 2's certainly is not: without one, chat is refused. */
    int template_id = opt.template_id >= 0             ? opt.template_id
                      : c->chat_template != TEMPLATE_NONE ? c->chat_template
                                                          : TEMPLATE_LLAMA2;
    if (opt.chat && opt.template_id < 0 && c->chat_template == TEMPLATE_NONE &&
        tokenizer.kind == TOKENIZER_BYTE_BPE)
        die("%s: the model file names no chat template; give one with --template (see --help)",
            opt.checkpoint);
    /* Llama 3.2's template dates its system message today, as transformers renders it */
    char today[32];
    time_t now = time(NULL);
    struct tm local;
    if (!localtime_r(&now, &local) || !strftime(today, sizeof today, "%d %b %Y", &local))
        today[0] = '\0';
    ChatSettings chat_settings = {.template_id = template_id, .system = opt.system,
                                  .think = opt.think, .date = today[0] ? today : NULL};
    /* ChatML on a vocabulary without <|im_end|>: the model spells the marker out, so it is a
     * stop string. (The tokens of it before the last one are already in the KV cache when the
     * next turn adds the template's own <|im_end|>: a wart of text markers, not undone.) */
    const char *end_text = opt.chat ? chat_end_text(&tokenizer, template_id) : NULL;
    if (end_text) opt.stops[opt.n_stops++] = end_text;

    Output out = {.tokenizer = &tokenizer, .stops = opt.stops, .n_stops = opt.n_stops,
                  .vocab_size = c->vocab_size, .logits_path = opt.logits_path,
                  .no_prefill = opt.no_prefill};
    if (opt.logits_path && !(out.logits_file = fopen(opt.logits_path, "wb")))
        die("%s: cannot write: %s", opt.logits_path, strerror(errno));

    /* --attn, --attn-html, --attn-top: the model shows every attention row to a recorder
     * (attnviz.h), sized for the positions this run can reach */
    AttnRecorder attn;
    if ((opt.attn_path || opt.attn_html_path || opt.attn_top) && !opt.print_tokens) {
        if (opt.attn_layer >= c->n_layers)
            die("--attn-layer: %d is out of range (the model has layers 0..%d)", opt.attn_layer,
                c->n_layers - 1);
        const char *paths[2] = {opt.attn_path, opt.attn_html_path};
        for (int i = 0; i < 2; i++) { /* fail now rather than after generating */
            FILE *f = paths[i] ? fopen(paths[i], "wb") : NULL;
            if (paths[i] && (!f || fclose(f) != 0))
                die("%s: cannot write: %s", paths[i], strerror(errno));
        }
        /* generation records every position it runs; a chat's length is not known, so its
         * files hold the first seq_len positions (--attn-top alone follows any length) */
        long long positions = opt.chat ? c->seq_len : generate_positions(&opt, c);
        if (attn_recorder_init(&attn, c, (int)positions, opt.attn_path || opt.attn_html_path,
                               err) != 0)
            die("--attn: %s", err);
        model_observe_attention(&model, attn_observe, &attn);
        out.attn = &attn;
        out.attn_top = opt.attn_top;
        out.attn_layer = opt.attn_layer >= 0 ? opt.attn_layer : c->n_layers - 1;
    }

    if (opt.chat) chat(&model, &out, &sampler, &stats, &opt, &chat_settings);
    else generate(&model, &out, &sampler, &stats, &opt);

    if (opt.verbose && !opt.print_tokens) print_stats(&stats, &model);
    if (out.logits_file && fclose(out.logits_file) != 0)
        die("%s: write failed: %s", opt.logits_path, strerror(errno));
    if (out.attn && opt.attn_path && attn_write(&attn, &tokenizer, opt.attn_path, err) != 0)
        die("%s: %s", opt.attn_path, err);
    if (out.attn && opt.attn_html_path &&
        attn_write_html(&attn, &tokenizer, opt.attn_html_path, err) != 0)
        die("%s: %s", opt.attn_html_path, err);
    if (out.attn) attn_recorder_free(&attn);
    free(out.held);
    free(opt.stops);
    free(opt.prompt_file_text);
    sampler_free(&sampler);
    tokenizer_free(&tokenizer);
    model_free(&model);
    return 0;
}
