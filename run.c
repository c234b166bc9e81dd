/*
 * run.c - the command line: parse the flags, load the model, generate text or chat.
 *
 * Everything numeric lives in the library (model.c, attention.c, kernels.c, tokenizer.c,
 * sampler.c); this file only talks to the user. It is the one place that prints errors and
 * exits: each bad input ends the program with one line `what: why` and status 1.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model.h"

/* ------------------------------------------------------------------------------------------ */
/* Errors and small utilities */

/* Prints `fmt` as one line on stderr and exits with status 1. */
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("run: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *out) {
    fputs("Usage:   run <checkpoint> [options]\n"
          "Example: run model.bin -n 256 -i \"Once upon a time\"\n"
          "Options:\n"
          "  -t <float>  temperature in [0,inf), default 1.0 (0 = greedy)\n"
          "  -p <float>  p value in top-p (nucleus) sampling in [0,1], default 0.9\n"
          "  -s <int>    random seed, default time(NULL)\n"
          "  -n <int>    number of steps to run for, default 256; 0 = max_seq_len\n"
          "  -i <string> input prompt\n"
          "  -z <string> optional path to custom tokenizer\n"
          "  -m <string> mode: generate|chat, default: generate\n"
          "  -y <string> (optional) system prompt in chat mode\n"
          "  --logits <file>  write the float32 logits of every position to file\n"
          "  --threads <int>  threads for the matrix products, default all cores\n"
          "  --ppl <file>     print the perplexity of the model on a text file and exit\n"
          "  -h, --help  print this help\n", out);
}

/* The next argument as the value of flag, or exit if there is none. */
static const char *flag_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s: missing value (see --help)", argv[*i]);
    return argv[++*i];
}

/* Parses all of s as a float, or exits naming the flag. */
static float parse_float(const char *flag, const char *s) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end != '\0' || errno) die("%s: '%s' is not a number", flag, s);
    return v;
}

/* Parses all of s as a whole number in [lo, hi], or exits naming the flag. */
static long long parse_int(const char *flag, const char *s, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno) die("%s: '%s' is not a whole number", flag, s);
    if (v < lo || v > hi) die("%s: %s is out of range (%lld..%lld)", flag, s, lo, hi);
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* Output: text through a UTF-8 filter so the terminal never sees a broken sequence, and the
 * raw logits for verification. */

typedef struct {
    const Tokenizer *tokenizer;
    Utf8Stream utf8;
    FILE *logits_file; /* --logits, or NULL */
    const char *logits_path;
    int vocab_size;
    int no_prefill; /* --no-prefill (diagnostic): feed the prompt one token at a time */
} Output;

/* Prints the text of token `next` following `prev`, flushed so it appears at once. */
static void emit_piece(Output *o, int prev, int next) {
    int len;
    const char *piece = tokenizer_decode(o->tokenizer, prev, next, &len);
    if (!piece) return;
    char buf[len + 8];
    size_t n = utf8_stream_feed(&o->utf8, piece, (size_t)len, buf);
    fwrite(buf, 1, n, stdout);
    fflush(stdout);
}

/* Runs the model on token at pos and records the logits when asked. */
static float *forward(Model *m, Output *o, int token, int pos) {
    float *logits = model_forward(m, token, pos);
    if (!logits) die("token %d at position %d is outside the model", token, pos);
    if (o->logits_file &&
        fwrite(logits, sizeof(float), o->vocab_size, o->logits_file) != (size_t)o->vocab_size)
        die("%s: write failed: %s", o->logits_path, strerror(errno));
    return logits;
}

/* Runs the prompt tokens (n) at positions pos..pos+n-1 in batches (model_prefill) and returns
 * the last position's logits, writing every position's logits for --logits. --no-prefill feeds
 * them one at a time instead: the tests check that both give the same logits. */
static float *prefill(Model *m, Output *o, const int *tokens, int n, int pos) {
    if (o->no_prefill) {
        float *logits = NULL;
        for (int i = 0; i < n; i++) logits = forward(m, o, tokens[i], pos + i);
        return logits;
    }
    float *all = NULL;
    if (o->logits_file && !(all = malloc((size_t)n * o->vocab_size * sizeof *all)))
        die("out of memory");
    float *logits = model_prefill(m, tokens, n, pos, all);
    if (!logits) die("a token or position is outside the model (prefill at %d)", pos);
    if (all && fwrite(all, sizeof(float), (size_t)n * o->vocab_size, o->logits_file) !=
                   (size_t)n * o->vocab_size)
        die("%s: write failed: %s", o->logits_path, strerror(errno));
    free(all);
    return logits;
}

/* Encodes text into a new array; *n receives the count. */
static int *encode(const Tokenizer *t, const char *text, int bos, int *n) {
    int *tokens = malloc((strlen(text) + 3) * sizeof(int));
    if (!tokens) die("out of memory encoding the prompt");
    *n = tokenizer_encode(t, text, bos, 0, tokens);
    if (*n < 0) die("out of memory encoding the prompt");
    return tokens;
}

/* ------------------------------------------------------------------------------------------ */
/* Generation: feed the prompt, then sample until steps positions are done or the model
 * ends the text. Like llama2.c, the stop token of a story is BOS. */

/* llama2.c's stories end with BOS; models of our own format end with EOS */
static int is_end(const Model *m, int token) {
    return token == m->config.bos_id || (!m->is_llama2c && token == m->config.eos_id);
}

static void generate(Model *m, Output *o, Sampler *sampler, const char *prompt, int steps) {
    const Config *c = &m->config;
    int n_prompt;
    int *prompt_tokens = encode(o->tokenizer, prompt ? prompt : "", 1, &n_prompt);
    if (n_prompt > c->seq_len)
        die("-i: the prompt is %d tokens, more than the context of %d", n_prompt, c->seq_len);

    /* the prompt, in one batched call: every token up to the step limit or an end token */
    int n_feed = n_prompt < steps ? n_prompt : steps;
    for (int i = 1; i < n_feed; i++)
        if (is_end(m, prompt_tokens[i])) n_feed = i;
    float *logits = prefill(m, o, prompt_tokens, n_feed, 0);
    for (int i = 1; i < n_feed; i++) emit_piece(o, prompt_tokens[i - 1], prompt_tokens[i]);
    if (n_feed < n_prompt && n_feed == steps && !is_end(m, prompt_tokens[n_feed]))
        emit_piece(o, prompt_tokens[n_feed - 1], prompt_tokens[n_feed]);

    /* then one token at a time, each chosen from the logits of the one before */
    double start = now_seconds();
    int token = prompt_tokens[n_feed - 1], pos = n_feed, decoded = 0;
    while (n_feed == n_prompt) {
        int next = sampler_sample(sampler, logits);
        if (is_end(m, next)) break;
        emit_piece(o, token, next);
        token = next;
        if (pos >= steps) break;
        logits = forward(m, o, token, pos++);
        decoded++;
    }
    putchar('\n');
    fflush(stdout);
    if (decoded > 0) fprintf(stderr, "achieved tok/s: %f\n", decoded / (now_seconds() - start));
    free(prompt_tokens);
}

/* ------------------------------------------------------------------------------------------ */
/* Chat: the Llama 2 template. Each user turn is wrapped in [INST] ... [/INST] (the first one
 * with the system prompt), and the model answers until it emits EOS. The KV cache carries the
 * whole conversation, so earlier turns are never processed again. */

/* Prints prompt, reads one line of stdin without its newline into *buf. Returns 0 at EOF. */
static int read_line(const char *prompt, char **buf, size_t *cap) {
    fputs(prompt, stdout);
    fflush(stdout);
    ssize_t n = getline(buf, cap, stdin);
    if (n < 0) return 0;
    if (n > 0 && (*buf)[n - 1] == '\n') (*buf)[n - 1] = '\0';
    return 1;
}

static void chat(Model *m, Output *o, Sampler *sampler, const char *cli_user,
                 const char *cli_system, int steps) {
    const Config *c = &m->config;
    char *system = NULL, *user = NULL, *rendered = NULL;
    size_t system_cap = 0, user_cap = 0;
    int *prompt_tokens = NULL, n_prompt = 0, user_idx = 0;
    int user_turn = 1, token = 0, next = 0, pos = 0;

    while (pos < steps) {
        if (user_turn) {
            if (pos == 0) {
                if (cli_system) {
                    system = strdup(cli_system);
                } else if (!read_line("Enter system prompt (optional): ", &system, &system_cap)) {
                    break;
                }
            }
            if (pos == 0 && cli_user) {
                free(user);
                user = strdup(cli_user);
            } else if (!read_line("User: ", &user, &user_cap)) {
                break;
            }
            if (!system || !user) die("out of memory");
            size_t size = strlen(system) + strlen(user) + 64;
            free(rendered);
            rendered = malloc(size);
            if (!rendered) die("out of memory");
            if (pos == 0 && system[0])
                snprintf(rendered, size, "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]", system, user);
            else
                snprintf(rendered, size, "[INST] %s [/INST]", user);
            free(prompt_tokens);
            prompt_tokens = encode(o->tokenizer, rendered, 1, &n_prompt);
            if (pos + n_prompt >= steps) {
                fprintf(stderr, "run: the context of %d tokens is full; ending the chat\n", steps);
                break;
            }
            user_idx = 0;
            user_turn = 0;
            fputs("Assistant: ", stdout);
        }
        /* feed the user's tokens first, then the model's own answer back to it */
        token = user_idx < n_prompt ? prompt_tokens[user_idx++] : next;
        if (token == c->eos_id) user_turn = 1;
        float *logits = forward(m, o, token, pos);
        next = sampler_sample(sampler, logits);
        pos++;
        if (user_idx >= n_prompt && next != c->eos_id) emit_piece(o, token, next);
        if (next == c->eos_id) {
            utf8_stream_reset(&o->utf8);
            putchar('\n');
        }
    }
    putchar('\n');
    free(system), free(user), free(rendered), free(prompt_tokens);
}

/* ------------------------------------------------------------------------------------------ */
/* Perplexity: how well the model predicts a text. Each token after the first is scored by
 * the probability the model gave it, reading the tokens before it; the mean negative log of
 * those probabilities (nats per token) and its exponential, the perplexity, go to stdout. A
 * text longer than the context is read in windows of seq_len positions, each starting afresh
 * at position 0 on the last token of the window before, so every token is predicted once. */

static void perplexity(Model *m, const Tokenizer *t, const char *path) {
    const Config *c = &m->config;
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: cannot open: %s", path, strerror(errno));
    size_t size = 0, cap = 1 << 16;
    char *text = malloc(cap + 1);
    for (size_t got; text && (got = fread(text + size, 1, cap - size, f)) > 0;)
        if ((size += got) == cap) text = realloc(text, (cap *= 2) + 1);
    if (!text) die("out of memory reading %s", path);
    if (ferror(f)) die("%s: read failed: %s", path, strerror(errno));
    fclose(f);
    text[size] = '\0';

    int n;
    int *tokens = encode(t, text, 1, &n);
    if (n < 2) die("%s: no text to predict", path);
    if (c->seq_len < 2) die("%s: a context of %d position cannot predict anything", path, c->seq_len);
    int batch = 64; /* positions per model_prefill call: bounds the logits buffer */
    float *logits = malloc((size_t)batch * c->vocab_size * sizeof(float));
    if (!logits) die("out of memory");

    double nll = 0.0;
    long count = 0;
    for (int start = 0; start < n - 1;) {
        int len = n - start < c->seq_len ? n - start : c->seq_len;
        for (int done = 0; done < len; done += batch) {
            int k = len - done < batch ? len - done : batch;
            if (!model_prefill(m, tokens + start + done, k, done, logits))
                die("%s: a token is outside the model's vocabulary", path);
            for (int i = 0; i < k && done + i + 1 < len; i++) {
                /* -log softmax(row)[target], as log-sum-exp minus the target's logit */
                const float *row = logits + (size_t)i * c->vocab_size;
                double max = row[0], sum = 0.0;
                for (int v = 1; v < c->vocab_size; v++) max = row[v] > max ? row[v] : max;
                for (int v = 0; v < c->vocab_size; v++) sum += exp(row[v] - max);
                nll += max + log(sum) - row[tokens[start + done + i + 1]];
                count++;
            }
        }
        start += len - 1;
    }
    printf("ppl: tokens=%ld nll=%.6f perplexity=%.6f\n", count, nll / count, exp(nll / count));
    free(logits), free(tokens), free(text);
}

/* ------------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    const char *checkpoint = NULL, *tokenizer_path = NULL, *prompt = NULL, *system = NULL;
    const char *mode = "generate", *logits_path = NULL, *ppl_path = NULL;
    int no_prefill = 0;
    long long threads = 0;
    float temperature = 1.0f, topp = 0.9f;
    long long seed = 0, steps = 256;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-t")) {
            temperature = parse_float(a, flag_value(argc, argv, &i));
            if (!(temperature >= 0.0f)) die("-t: temperature must be 0 or more");
        } else if (!strcmp(a, "-p")) {
            topp = parse_float(a, flag_value(argc, argv, &i));
            if (!(topp >= 0.0f && topp <= 1.0f)) die("-p: top-p must be in [0, 1]");
        } else if (!strcmp(a, "-s")) {
            seed = parse_int(a, flag_value(argc, argv, &i), 0, (long long)UINT32_MAX * 2);
        } else if (!strcmp(a, "-n")) {
            steps = parse_int(a, flag_value(argc, argv, &i), 0, 1 << 30);
        } else if (!strcmp(a, "-i")) {
            prompt = flag_value(argc, argv, &i);
        } else if (!strcmp(a, "-z")) {
            tokenizer_path = flag_value(argc, argv, &i);
        } else if (!strcmp(a, "-m")) {
            mode = flag_value(argc, argv, &i);
            if (strcmp(mode, "generate") && strcmp(mode, "chat"))
                die("-m: unknown mode '%s' (generate or chat)", mode);
        } else if (!strcmp(a, "-y")) {
            system = flag_value(argc, argv, &i);
        } else if (!strcmp(a, "--logits")) {
            logits_path = flag_value(argc, argv, &i);
        } else if (!strcmp(a, "--threads")) {
            threads = parse_int(a, flag_value(argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "--ppl")) {
            ppl_path = flag_value(argc, argv, &i);
        } else if (!strcmp(a, "--no-prefill")) {
            no_prefill = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            die("%s: unknown option (see --help)", a);
        } else if (!checkpoint) {
            checkpoint = a;
        } else {
            die("%s: unexpected argument; only one checkpoint is read (see --help)", a);
        }
    }
    if (!checkpoint) {
        usage(stderr);
        return 1;
    }

#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif

    char err[ERR_MAX];
    Model model;
    if (model_load(&model, checkpoint, err) != 0) die("%s: %s", checkpoint, err);
    const Config *c = &model.config;

    /* The tokenizer: -z wins, then the one embedded in the model file, then llama2.c's
     * default of tokenizer.bin in the current directory. */
    Tokenizer tokenizer;
    if (!tokenizer_path && model.tokenizer_data) {
        if (tokenizer_load_memory(&tokenizer, model.tokenizer_data, model.tokenizer_size,
                                  c->vocab_size, err) != 0)
            die("%s: embedded tokenizer: %s", checkpoint, err);
    } else {
        if (!tokenizer_path) tokenizer_path = "tokenizer.bin";
        if (tokenizer_load(&tokenizer, tokenizer_path, c->vocab_size, err) != 0)
            die("%s: %s", tokenizer_path, err);
    }
    tokenizer.bos_id = c->bos_id;
    tokenizer.eos_id = c->eos_id;

    if (ppl_path) {
        perplexity(&model, &tokenizer, ppl_path);
        tokenizer_free(&tokenizer);
        model_free(&model);
        return 0;
    }

    if (steps == 0 || steps > c->seq_len) steps = c->seq_len;
    if (seed == 0) seed = (long long)time(NULL);
    Sampler sampler;
    if (sampler_init(&sampler, c->vocab_size, temperature, topp, (uint64_t)seed) != 0)
        die("out of memory");

    Output out = {.tokenizer = &tokenizer, .vocab_size = c->vocab_size,
                  .logits_path = logits_path, .no_prefill = no_prefill};
    if (logits_path && !(out.logits_file = fopen(logits_path, "wb")))
        die("%s: cannot write: %s", logits_path, strerror(errno));

    if (!strcmp(mode, "generate"))
        generate(&model, &out, &sampler, prompt, (int)steps);
    else
        chat(&model, &out, &sampler, prompt, system, (int)steps);

    if (out.logits_file && fclose(out.logits_file) != 0)
        die("%s: write failed: %s", logits_path, strerror(errno));
    sampler_free(&sampler);
    tokenizer_free(&tokenizer);
    model_free(&model);
    return 0;
}
