/*
 * fuzz_args.c - libFuzzer target for run's command-line parser (args.c).
 *
 * The input is split at NUL bytes into an argument list (argv[0] is "run"), which goes to
 * args_parse. Every outcome is fine except a crash: a bad flag must come back as ARGS_ERROR
 * with a message, and whatever is accepted must be inside the ranges --help states. --help
 * and --version print to stdout, which libFuzzer's -close_fd_mask=1 silences. The input's
 * first piece is also tried as an argv[0]: the name it gives must hold no control byte.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "attention.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    char **argv = malloc((size + 3) * sizeof *argv);
    if (!buf || !argv) abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    int argc = 0;
    argv[argc++] = "run";
    for (size_t i = 0; i <= size; i += strlen(buf + i) + 1) argv[argc++] = buf + i;
    argv[argc] = NULL;
    for (const unsigned char *p = (const unsigned char *)args_program_name(buf); *p; p++)
        if (*p < 0x20 || *p == 0x7f) abort();

    Options o;
    char err[ERR_MAX];
    err[0] = '\0';
    int rc = args_parse(argc, argv, &o, err);
    if (rc == ARGS_ERROR) {
        if (err[0] == '\0') abort(); /* a reason (die() escapes any newline quoted in it) */
    } else if (rc == ARGS_OK) {
        if (!o.checkpoint || !(o.temperature >= 0.0f) || !(o.topp >= 0.0f && o.topp <= 1.0f) ||
            !(o.min_p >= 0.0f && o.min_p <= 1.0f) || o.top_k < 0 || o.steps < 0 ||
            o.n_stops > argc || (o.prompt && o.prompt_file) || o.kv_type < KV_F32 ||
            o.kv_type > KV_Q8 || o.sinks < -1 || o.evict < 0 || o.ppl_mode < PPL_CHUNKS ||
            o.ppl_mode > PPL_RECOMPUTE)
            abort();
        for (int i = 0; i < o.n_stops; i++)
            if (o.stops[i][0] == '\0') abort();
    }
    free(o.stops);
    free(argv);
    free(buf);
    return 0;
}
