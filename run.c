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
#include <time.h>

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

static void generate(Model *m, Output *o, Sampler *sampler, const char *prompt, int steps) {
    const Config *c = &m->config;
    int n_prompt;
    int *prompt_tokens = encode(o->tokenizer, prompt ? prompt : "", 1, &n_prompt);
    if (n_prompt > c->seq_len)
        die("-i: the prompt is %d tokens, more than the context of %d", n_prompt, c->seq_len);

    double start = 0.0;
    int token = prompt_tokens[0], pos = 0;
    while (pos < steps) {
        float *logits = forward(m, o, token, pos);
        int next = pos < n_prompt - 1 ? prompt_tokens[pos + 1] : sampler_sample(sampler, logits);
        pos++;
        /* llama2.c's stories end with BOS; models of our own format end with EOS */
        if (next == c->bos_id || (!m->is_llama2c && next == c->eos_id)) break;
        emit_piece(o, token, next);
        token = next;
        if (start == 0.0) start = now_seconds(); /* the first step pays for page faults */
    }
    putchar('\n');
    fflush(stdout);
    if (pos > 1) fprintf(stderr, "achieved tok/s: %f\n", (pos - 1) / (now_seconds() - start));
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

int main(int argc, char **argv) {
    const char *checkpoint = NULL, *tokenizer_path = NULL, *prompt = NULL, *system = NULL;
    const char *mode = "generate", *logits_path = NULL;
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

    if (steps == 0 || steps > c->seq_len) steps = c->seq_len;
    if (seed == 0) seed = (long long)time(NULL);
    Sampler sampler;
    if (sampler_init(&sampler, c->vocab_size, temperature, topp, (uint64_t)seed) != 0)
        die("out of memory");

    Output out = {.tokenizer = &tokenizer, .vocab_size = c->vocab_size,
                  .logits_path = logits_path};
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
