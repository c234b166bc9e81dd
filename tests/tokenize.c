/*
 * tokenize.c - a test tool for tokenizer.c: runs a whole corpus through the tokenizer in one
 * process so tests/test_tokenizer.py can compare it with sentencepiece.
 *
 *   tokenize [--memory] [--bos] [--eos] TOKENIZER VOCAB_SIZE
 *       encodes records from stdin and prints one line of space-separated ids per record;
 *       the time spent encoding goes to stderr
 *   tokenize [--memory] [--raw] --decode TOKENIZER VOCAB_SIZE
 *       reads lines of ids from stdin; for each line decodes every id, the first as if it
 *       followed BOS, through a Utf8Stream (or as raw bytes with --raw), and prints a record
 *   tokenize --stream
 *       feeds each record from stdin to a Utf8Stream one byte at a time and prints a record of
 *       what came out, then a line with the number of bytes each feed returned
 *
 * A record is its byte length in decimal, a newline, then exactly that many bytes, so texts
 * may hold newlines and any byte. --memory reads TOKENIZER as a TLLM tokenizer section (a u32
 * piece count, then the tokenizer.bin body) and loads it with tokenizer_load_memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

/* Reads the whole of f into a NUL-terminated buffer. Returns it (free it), or NULL. */
static char *read_all(FILE *f, size_t *size) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, 2 * cap + 1);
        if (!bigger) {
            free(buf);
            return NULL;
        }
        buf = bigger;
        cap *= 2;
    }
    if (buf) buf[n] = '\0';
    *size = n;
    return buf;
}

/* Reads one record header "LEN\n" from stdin. Returns the length, or -1 at the end of input. */
static long read_record_length(void) {
    long len;
    if (scanf("%ld", &len) != 1) return -1;
    if (getchar() != '\n' || len < 0) {
        fprintf(stderr, "tokenize: bad record header\n");
        exit(1);
    }
    return len;
}

/* Reads a record's bytes into a fresh NUL-terminated buffer (free it). */
static char *read_record(long len) {
    char *text = malloc((size_t)len + 1);
    if (!text || fread(text, 1, (size_t)len, stdin) != (size_t)len) {
        fprintf(stderr, "tokenize: truncated record\n");
        exit(1);
    }
    text[len] = '\0';
    return text;
}

/* Prints bytes as a record: the length, a newline, the bytes. */
static void write_record(const char *bytes, size_t len) {
    printf("%zu\n", len);
    fwrite(bytes, 1, len, stdout);
}

/* Wall-clock seconds (C11 timespec_get), for timing the encoder alone. */
static double now_seconds(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --stream: byte by byte through a Utf8Stream. */
static int stream_mode(void) {
    long len;
    while ((len = read_record_length()) >= 0) {
        char *in = read_record(len);
        char *out = malloc((size_t)len + 5);
        size_t *counts = malloc(((size_t)len + 1) * sizeof *counts);
        if (!out || !counts) {
            fprintf(stderr, "tokenize: out of memory\n");
            return 1;
        }
        Utf8Stream s = {{0}, 0};
        size_t k = 0;
        for (long i = 0; i < len; i++) {
            counts[i] = utf8_stream_feed(&s, in + i, 1, out + k);
            k += counts[i];
        }
        utf8_stream_reset(&s);
        write_record(out, k);
        for (long i = 0; i < len; i++) printf("%s%zu", i ? " " : "", counts[i]);
        printf("\n");
        free(in);
        free(out);
        free(counts);
    }
    return 0;
}

/* --decode: lines of ids to records of bytes. */
static int decode_mode(const Tokenizer *t, int raw) {
    char line[1 << 16];
    char *out = NULL;
    size_t cap = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (strchr(line, '\n') == NULL && !feof(stdin)) {
            fprintf(stderr, "tokenize: line of ids too long\n");
            return 1;
        }
        Utf8Stream s = {{0}, 0};
        size_t k = 0;
        int prev = t->bos_id;
        char *p = line, *end;
        for (long id = strtol(p, &end, 10); end != p; id = strtol(p, &end, 10)) {
            p = end;
            int len;
            const char *bytes = tokenizer_decode(t, prev, (int)id, &len);
            if (!bytes) {
                fprintf(stderr, "tokenize: id %ld is outside the vocabulary\n", id);
                return 1;
            }
            if (k + (size_t)len + 4 > cap) {
                cap = 2 * (k + (size_t)len + 4);
                char *bigger = realloc(out, cap);
                if (!bigger) {
                    fprintf(stderr, "tokenize: out of memory\n");
                    return 1;
                }
                out = bigger;
            }
            if (raw) {
                memcpy(out + k, bytes, (size_t)len);
                k += (size_t)len;
            } else {
                k += utf8_stream_feed(&s, bytes, (size_t)len, out + k);
            }
            prev = (int)id;
        }
        write_record(out ? out : "", k);
    }
    free(out);
    return 0;
}

/* Default mode: records of text to lines of ids. */
static int encode_mode(const Tokenizer *t, int bos, int eos) {
    long len;
    double seconds = 0;
    size_t total = 0;
    while ((len = read_record_length()) >= 0) {
        char *text = read_record(len);
        int *ids = malloc(((size_t)len + 3) * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "tokenize: out of memory\n");
            return 1;
        }
        double start = now_seconds();
        int n = tokenizer_encode(t, text, bos, eos, ids);
        seconds += now_seconds() - start;
        total += strlen(text);
        if (n < 0) {
            fprintf(stderr, "tokenize: encoding failed\n");
            return 1;
        }
        for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        free(text);
        free(ids);
    }
    fprintf(stderr, "encoded %zu bytes in %.6f s\n", total, seconds);
    return 0;
}

int main(int argc, char **argv) {
    int memory = 0, bos = 0, eos = 0, decode = 0, raw = 0, stream = 0;
    const char *args[2];
    int n_args = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--memory") == 0) memory = 1;
        else if (strcmp(argv[i], "--bos") == 0) bos = 1;
        else if (strcmp(argv[i], "--eos") == 0) eos = 1;
        else if (strcmp(argv[i], "--decode") == 0) decode = 1;
        else if (strcmp(argv[i], "--raw") == 0) raw = 1;
        else if (strcmp(argv[i], "--stream") == 0) stream = 1;
        else if (n_args < 2 && argv[i][0] != '-') args[n_args++] = argv[i];
        else {
            fprintf(stderr, "tokenize: unexpected argument %s\n", argv[i]);
            return 1;
        }
    }
    if (stream) return stream_mode();
    if (n_args != 2) {
        fprintf(stderr, "usage: tokenize [--memory] [--bos] [--eos] [--decode [--raw]] "
                        "TOKENIZER VOCAB_SIZE | tokenize --stream\n");
        return 1;
    }
    const char *path = args[0];
    int vocab_size = atoi(args[1]);

    Tokenizer t;
    char err[ERR_MAX];
    int rc;
    if (memory) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "%s: cannot open\n", path);
            return 1;
        }
        size_t size;
        char *data = read_all(f, &size);
        fclose(f);
        if (!data) {
            fprintf(stderr, "%s: out of memory\n", path);
            return 1;
        }
        rc = tokenizer_load_memory(&t, data, size, vocab_size, 1, 2, err);
        free(data); /* the tokenizer keeps copies of everything it needs */
    } else {
        rc = tokenizer_load(&t, path, vocab_size, 1, 2, err);
    }
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    rc = decode ? decode_mode(&t, raw) : encode_mode(&t, bos, eos);
    tokenizer_free(&t);
    return rc;
}
