/*
 * args.c - run's command line: --help, and each flag parsed and range-checked into Options.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "attention.h"
#include "chat.h"


const char *args_program_name(const char *argv0) {
    if (!argv0) return "run";
    const char *slash = strrchr(argv0, '/'), *name = slash ? slash + 1 : argv0;
    if (!name[0]) return "run"; /* "" or a path ending in '/' */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return "run"; /* it starts every one-line message */
    return name;
}

void args_usage(FILE *out, const char *name) {
    fprintf(out,
"Usage: %s <model.bin> [options]\n"
"Generates text with a Llama-style model (a TLLM file or a llama2.c checkpoint), or chats.\n"
"Examples: %s models/stories260K.tllm -t 0 -n 200 -i \"Once upon a time\"\n"
"          %s stories15M.bin -z tokenizer.bin -n 256   (a llama2.c checkpoint and its tokenizer)\n"
"          printf 'Hello\\nTell me more\\n' | %s chat.bin -m chat\n", name, name, name, name);
    fputs(
"\n"
"Generation:\n"
"  -i <text>          prompt, default none (the model starts from BOS)\n"
"  -f <file>          read the prompt from a file, '-' for stdin; one final newline is dropped\n"
"  -n <int>           generate: positions to run, prompt included (as llama2.c), default 256;\n"
"                     chat: most tokens in one answer, default 256; 0 = no limit\n"
"                     (generate: -n 0, and with --no-shift any -n, ends with the context)\n"
"  --stop <text>      stop once the output contains text, which is not printed; repeatable\n"
"  --ignore-eos       go on past the model's end tokens (they are fed like any other)\n"
"  -m <mode>          generate or chat, default generate\n"
"  Generation stops at EOS (a llama2.c file: at BOS, as llama2.c) or at -n.\n"
"\n"
"Past the context (generate and chat): when the KV cache is full, the oldest positions after\n"
"the first few (attention sinks) are forgotten and the text goes on (docs/ATTENTION.md):\n"
"  --sinks <int>      positions kept from the start, default 4; 0 = a plain sliding window\n"
"  --evict <int>      positions forgotten each time the cache is full, default a quarter of\n"
"                     those after the sinks\n"
"  --no-shift         stop at the end of the context instead\n"
"\n"
"Sampling, applied in this order: temperature, top-k, min-p, top-p, then one draw:\n"
"  -t <float>         temperature, 0 or more, default 1.0; 0 = greedy (no draw, no filters)\n"
"  -k <int>           top-k: keep the k most likely tokens, default 0 = off\n"
"  --min-p <float>    min-p in [0,1]: drop tokens below min-p times the top one, default 0 = off\n"
"  -p <float>         top-p in [0,1] over what is left, renormalised, default 0.9; 0 or 1 = off\n"
"  -s <int>           random seed, default time(NULL)\n"
"  Without -k and --min-p the draws are llama2.c's: the same seed gives the same tokens.\n"
"\n"
"Chat (-m chat): each line of stdin is a user turn, until end of input (Ctrl-D); empty lines\n"
"are skipped. The conversation stays in the KV cache; when it is full the oldest turns are\n"
"forgotten as above (with --no-shift the chat ends there).\n"
"  -y <text>          system prompt, default none (qwen2.5 and smollm2: their own)\n"
"  --template <name>  llama2, chatml, zephyr, llama3, llama3.1, llama3.2, qwen2.5, qwen3 or\n"
"                     smollm2; overrides the model file's template; default the file's,\n"
"                     else llama2 (a file with a byte-level tokenizer must name one)\n"
"  --think            qwen3: let the model think first (default: the empty <think> block)\n"
"  -i, -f             the first user turn\n"
"\n"
"Model:\n"
"  -z <file>          tokenizer (llama2.c tokenizer.bin format); default the one inside the\n"
"                     model file, else ./tokenizer.bin\n"
"  --threads <int>    threads for the matrix products, default all cores\n"
"  --kv-type <type>   how the KV cache stores keys and values: f32 (default, exact), bf16\n"
"                     (half the memory) or q8 (int8 with a scale per vector, a quarter)\n"
"  --no-mmap          copy into memory (2 MB pages) the weights no kernel rearranges at\n"
"                     load: all in the plain C build, Q8_0 and Q4_0 ones without VNNI\n"
"\n"
"Diagnostics:\n"
"  -v                 statistics on stderr after the run, as `key: value` lines: load_ms,\n"
"                     prompt_tokens, prefill_tok_s, generated_tokens, decode_tok_s,\n"
"                     decode_ms_per_token, ttft_ms, weights_gb_s, peak_rss_mb, kv_cache_mb\n"
"  --logits <file>    write the float32 logits of every position the model runs, in order\n"
"  --ppl <file>       print the perplexity of the model on a text file (read as -f reads),\n"
"                     as one line `ppl: tokens=N nll=X perplexity=Y`, and exit\n"
"  --ppl-mode <mode>  how a text longer than the context is read: chunks (default: windows\n"
"                     of seq_len positions, each from position 0), stream (one pass, the\n"
"                     cache shifting as in generation, see --sinks), recompute (each token\n"
"                     from the seq_len - 1 tokens before it, run afresh: slow)\n"
"  --no-prefill       feed the prompt one token at a time, not in batches (to check prefill)\n"
"  --attn <file>      record the attention weights of every layer, head and position\n"
"                     (the layout is in docs/ATTENTION.md)\n"
"  --attn-html <file> write a page showing what each token attends to, in every head\n"
"  --attn-top <int>   after each generated token, print on stderr the positions the last\n"
"                     layer attended to most, averaged over its heads\n"
"  --attn-layer <int> the layer --attn-top reads, default the last\n"
"  --print-tokens     print the token ids of the prompt (chat: of each user turn, one line\n"
"                     each, as rendered by the template) and exit without running the model\n"
"  -h, --help         this help\n"
"  --version          the version\n", out);
}

/* The next argument as the value of flag in *value. Returns 0, or -1 if there is none. */
static int flag_value(int argc, char **argv, int *i, const char **value, char err[ERR_MAX]) {
    if (*i + 1 >= argc) return fail(err, "%s: missing value (see --help)", argv[*i]);
    *value = argv[++*i];
    return 0;
}

/* Parses all of s as a finite float in [lo, hi] into *v. Returns 0, or -1 naming the flag. */
static int parse_float(const char *flag, const char *s, float lo, float hi, float *v,
                       char err[ERR_MAX]) {
    char *end;
    errno = 0;
    *v = strtof(s, &end);
    if (end == s || *end != '\0' || errno || !isfinite(*v))
        return fail(err, "%s: '%s' is not a number", flag, s);
    if (*v < lo || *v > hi) return fail(err, "%s: %s is out of range (%g..%g)", flag, s, lo, hi);
    return 0;
}

/* Parses all of s as a whole number in [lo, hi] into *v. Returns 0, or -1 naming the flag. */
static int parse_int(const char *flag, const char *s, long long lo, long long hi, long long *v,
                     char err[ERR_MAX]) {
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno)
        return fail(err, "%s: '%s' is not a whole number", flag, s);
    if (*v < lo || *v > hi)
        return fail(err, "%s: %s is out of range (%lld..%lld)", flag, s, lo, hi);
    return 0;
}

/* Whether flag a is followed by a value. */
static int takes_value(const char *a) {
    static const char *const flags[] = {"-t", "-p", "-k", "--min-p", "-s", "-n", "-i", "-f",
                                        "--stop", "-z", "-m", "-y", "--template", "--logits",
                                        "--attn", "--attn-html", "--attn-top", "--attn-layer",
                                        "--threads", "--ppl", "--ppl-mode", "--kv-type",
                                        "--sinks", "--evict"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(a, flags[i])) return 1;
    return 0;
}

int args_parse(int argc, char **argv, Options *o, char err[ERR_MAX]) {
    *o = (Options){.temperature = 1.0f, .topp = 0.9f, .steps = 256, .template_id = -1,
                   .attn_layer = -1, .sinks = -1};
    o->stops = malloc((argc + 1) * sizeof *o->stops); /* room for the chat end marker too */
    if (!o->stops) return fail(err, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        long long n;
        if (takes_value(a) && flag_value(argc, argv, &i, &v, err)) return ARGS_ERROR;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            args_usage(stdout, args_program_name(argv[0]));
            return ARGS_EXIT;
        } else if (!strcmp(a, "--version")) {
            printf("%s %s\n", args_program_name(argv[0]), VERSION);
            return ARGS_EXIT;
        } else if (!strcmp(a, "-t")) {
            if (parse_float(a, v, 0.0f, INFINITY, &o->temperature, err)) return ARGS_ERROR;
        } else if (!strcmp(a, "-p")) {
            if (parse_float(a, v, 0.0f, 1.0f, &o->topp, err)) return ARGS_ERROR;
        } else if (!strcmp(a, "-k")) {
            if (parse_int(a, v, 0, INT_MAX, &n, err)) return ARGS_ERROR;
            o->top_k = (int)n;
        } else if (!strcmp(a, "--min-p")) {
            if (parse_float(a, v, 0.0f, 1.0f, &o->min_p, err)) return ARGS_ERROR;
        } else if (!strcmp(a, "-s")) {
            if (parse_int(a, v, 0, (long long)UINT32_MAX * 2, &o->seed, err)) return ARGS_ERROR;
        } else if (!strcmp(a, "-n")) {
            if (parse_int(a, v, 0, 1 << 30, &o->steps, err)) return ARGS_ERROR;
        } else if (!strcmp(a, "-i")) {
            o->prompt = v;
        } else if (!strcmp(a, "-f")) {
            o->prompt_file = v;
        } else if (!strcmp(a, "--stop")) {
            if (v[0] == '\0') return fail(err, "--stop: the stop string is empty");
            o->stops[o->n_stops++] = v;
        } else if (!strcmp(a, "-z")) {
            o->tokenizer_path = v;
        } else if (!strcmp(a, "-m")) {
            if (strcmp(v, "generate") && strcmp(v, "chat"))
                return fail(err, "-m: unknown mode '%s' (generate or chat)", v);
            o->chat = !strcmp(v, "chat");
        } else if (!strcmp(a, "-y")) {
            o->system = v;
        } else if (!strcmp(a, "--template")) {
            o->template_id = chat_template_id(v);
            if (o->template_id < 0)
                return fail(err, "--template: unknown template '%s' (llama2, chatml, zephyr, "
                                 "llama3, llama3.1, llama3.2, qwen2.5, qwen3 or smollm2)", v);
        } else if (!strcmp(a, "--think")) {
            o->think = 1;
        } else if (!strcmp(a, "-v")) {
            o->verbose = 1;
        } else if (!strcmp(a, "--logits")) {
            o->logits_path = v;
        } else if (!strcmp(a, "--attn")) {
            o->attn_path = v;
        } else if (!strcmp(a, "--attn-html")) {
            o->attn_html_path = v;
        } else if (!strcmp(a, "--attn-top")) {
            if (parse_int(a, v, 1, 1000, &n, err)) return ARGS_ERROR;
            o->attn_top = (int)n;
        } else if (!strcmp(a, "--attn-layer")) {
            if (parse_int(a, v, 0, INT_MAX, &n, err)) return ARGS_ERROR;
            o->attn_layer = (int)n;
        } else if (!strcmp(a, "--print-tokens")) {
            o->print_tokens = 1;
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, v, 1, 1024, &n, err)) return ARGS_ERROR;
            o->threads = (int)n;
        } else if (!strcmp(a, "--ppl")) {
            o->ppl_path = v;
        } else if (!strcmp(a, "--ppl-mode")) {
            o->ppl_mode = !strcmp(v, "chunks") ? PPL_CHUNKS : !strcmp(v, "stream") ? PPL_STREAM
                        : !strcmp(v, "recompute") ? PPL_RECOMPUTE : -1;
            if (o->ppl_mode < 0)
                return fail(err, "--ppl-mode: unknown mode '%s' (chunks, stream or recompute)", v);
        } else if (!strcmp(a, "--kv-type")) {
            o->kv_type = !strcmp(v, "f32") ? KV_F32 : !strcmp(v, "bf16") ? KV_BF16
                       : !strcmp(v, "q8") ? KV_Q8 : -1;
            if (o->kv_type < 0)
                return fail(err, "--kv-type: unknown type '%s' (f32, bf16 or q8)", v);
        } else if (!strcmp(a, "--sinks")) {
            if (parse_int(a, v, 0, 1 << 20, &n, err)) return ARGS_ERROR;
            o->sinks = (int)n;
        } else if (!strcmp(a, "--evict")) {
            if (parse_int(a, v, 1, 1 << 20, &n, err)) return ARGS_ERROR;
            o->evict = (int)n;
        } else if (!strcmp(a, "--no-shift")) {
            o->no_shift = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = 1;
        } else if (!strcmp(a, "--no-prefill")) {
            o->no_prefill = 1;
        } else if (!strcmp(a, "--no-mmap")) {
            o->no_mmap = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            return fail(err, "%s: unknown option (see --help)", a);
        } else if (!o->checkpoint) {
            o->checkpoint = a;
        } else {
            return fail(err, "%s: unexpected argument; only one model file is read (see "
                             "--help)", a);
        }
    }
    if (!o->checkpoint) return ARGS_USAGE;
    if (o->prompt_file && o->prompt)
        return fail(err, "-f: give the prompt with -i or with -f, not both");
    o->prompt_flag = o->prompt_file ? "-f" : "-i";
    return ARGS_OK;
}
