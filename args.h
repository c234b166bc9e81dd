/*
 * args.h - run's command line: its options, and the parser that fills them.
 *
 * The parser reports a bad flag by writing one line into err and returning ARGS_ERROR rather
 * than exiting, so that fuzz/fuzz_args.c can run it on arbitrary argument lists; run.c prints
 * the line and exits.
 */
#ifndef ARGS_H
#define ARGS_H

#include <stdio.h>

#include "error.h"

#define VERSION "0.1.0"

typedef struct {
    const char *checkpoint;
    const char *tokenizer_path; /* -z, or NULL */
    const char *prompt;         /* -i, or the contents of -f */
    char *prompt_file_text;     /* what -f read, to free */
    const char *prompt_flag;    /* "-i" or "-f", for messages */
    const char *prompt_file;    /* -f, read by main */
    const char *system;         /* -y */
    const char *logits_path;    /* --logits */
    int chat;                   /* -m chat */
    float temperature, topp, min_p;
    int top_k;
    long long seed, steps;
    int template_id;            /* --template, or -1: the model file's */
    int think;                  /* --think: Qwen3 thinks before it answers */
    const char **stops;         /* --stop, n_stops of them */
    int n_stops;
    int verbose, print_tokens;
    int threads;                /* --threads, or 0: all cores */
    const char *ppl_path;       /* --ppl */
    int ppl_mode;               /* --ppl-mode: PPL_* */
    int no_prefill;             /* --no-prefill */
    int no_mmap;                /* --no-mmap */
    int kv_type;                /* --kv-type: KV_* */
    int sinks;                  /* --sinks, or -1: the model's default */
    int evict;                  /* --evict, or 0: a quarter of the positions after the sinks */
    int no_shift;               /* --no-shift: stop at the end of the context */
    int ignore_eos;             /* --ignore-eos: only -n ends the text */
    const char *attn_path, *attn_html_path; /* --attn, --attn-html, or NULL */
    int attn_top, attn_layer;               /* --attn-top K (0 = off), --attn-layer (-1 = last) */
} Options;

/* How --ppl reads a text longer than the context */
enum { PPL_CHUNKS = 0, PPL_STREAM = 1, PPL_RECOMPUTE = 2 };

enum { ARGS_OK = 0, ARGS_EXIT = 1, ARGS_ERROR = -1, ARGS_USAGE = -2 }; /* ERROR: fail()'s -1 */


/* Fills *o from the command line. Returns ARGS_OK; ARGS_EXIT after printing --help or
 * --version; ARGS_USAGE when no model file is named; ARGS_ERROR with the reason in err. Free
 * o->stops whatever the result (it is NULL if memory ran out). The -f file is not read here:
 * o->prompt_file names it. */
int args_parse(int argc, char **argv, Options *o, char err[ERR_MAX]);

/* Prints --help to out, naming the program name (args_program_name). */
void args_usage(FILE *out, const char *name);

/* The name the program was run by (the last part of argv[0]: "run", or "tllm-run" when
 * installed), for --help, --version and the messages; "run" if there is none, or if it holds
 * a control byte (a newline would break the one-line messages). */
const char *args_program_name(const char *argv0);

#endif
