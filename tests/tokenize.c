/*
 * tokenize.c - a test tool for the tokenizers: runs a whole corpus through one in a single
 * process so tests/test_tokenizer.py can compare it with sentencepiece and
 * tests/test_bpe_tokenizer.py with Hugging Face's tokenizers.
 *
 *   tokenize [--memory] [--bos] [--eos] TOKENIZER VOCAB_SIZE
 *       encodes records from stdin and prints one line of space-separated ids per record;
 *       the time spent encoding goes to stderr
 *   tokenize --kind 2 [--chat] TOKENIZER VOCAB_SIZE
 *       the same with a byte-level BPE section (export.py --bpe-section), through
 *       tokenizer_encode_text: a generate-mode prompt, or chat text with --chat
 *   tokenize --text-api [--chat] TOKENIZER VOCAB_SIZE
 *       a tokenizer.bin through tokenizer_encode_text as well
 *   tokenize --kind 2 --lookup TOKENIZER VOCAB_SIZE
 *       prints, for each record, tokenizer_lookup's id for its bytes (-1 for none) and 1 if
 *       that id is special, else 0
 *   tokenize [--memory] [--raw] --decode TOKENIZER VOCAB_SIZE
 *       reads lines of ids from stdin; for each line decodes every id, the first as if it
 *       followed BOS, through a Utf8Stream (or as raw bytes with --raw), and prints a record
 *   tokenize --stream
 *       feeds each record from stdin to a Utf8Stream one byte at a time and prints a record of
 *       what came out, then a line with the number of bytes each feed returned
 *   tokenize --check KIND VOCAB_SIZE
 *       loads each record as a tokenizer section of KIND (1 or 2) with tokenizer_load_memory and
 *       prints one line for it: "ok", or the error
 *   tokenize --pieces gpt2|llama3|qwen2|smollm2
 *       pre-tokenizes each record and prints the byte length of each piece on one line
 *   tokenize --nfc
 *       prints a record of the NFC form of each record
 *   tokenize --classes
 *       prints the Unicode class (unicode.h) of every code point as lines FIRST LAST CLASS,
 *       one per run of equal classes, then the Unicode version
 *
 * A record is its byte length in decimal, a newline, then exactly that many bytes, so texts
 * may hold newlines and any byte. --memory reads TOKENIZER as a TLLM tokenizer section (a u32
 * piece count, then the tokenizer.bin body) and loads it with tokenizer_load_memory; --kind 2
 * reads it as a byte-level BPE section.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pretokenizer.h"
#include "tokenizer.h"
#include "unicode.h"

/* The BOS and EOS ids a section is loaded with: SentencePiece's 1 and 2; a byte-level BPE
 * section stands alone here, with no model to name them. */
#define BOS(kind) ((kind) == TOKENIZER_SENTENCEPIECE ? 1 : -1)
#define EOS(kind) ((kind) == TOKENIZER_SENTENCEPIECE ? 2 : -1)

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

/* --pieces: records to lines of piece lengths. */
static int pieces_mode(const char *name) {
    int kind = 0;
    for (int k = 1; pretokenizer_name(k); k++)
        if (strcmp(pretokenizer_name(k), name) == 0) kind = k;
    if (!kind) {
        fprintf(stderr, "tokenize: unknown pre-tokenizer %s\n", name);
        return 1;
    }
    long len;
    while ((len = read_record_length()) >= 0) {
        char *text = read_record(len);
        size_t *ends = malloc(((size_t)len + 1) * sizeof *ends), n;
        if (!ends || pretokenize(kind, text, (size_t)len, ends, &n) != 0) {
            fprintf(stderr, "tokenize: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < n; i++)
            printf("%s%zu", i ? " " : "", ends[i] - (i ? ends[i - 1] : 0));
        printf("\n");
        free(text);
        free(ends);
    }
    return 0;
}

/* --nfc: records to their NFC form. */
static int nfc_mode(void) {
    long len;
    while ((len = read_record_length()) >= 0) {
        char *text = read_record(len);
        size_t n;
        char *nfc = unicode_nfc(text, (size_t)len, &n);
        if (!nfc) {
            fprintf(stderr, "tokenize: out of memory\n");
            return 1;
        }
        write_record(nfc, n);
        free(nfc);
        free(text);
    }
    return 0;
}

/* --classes: every code point's class, as runs. */
static int classes_mode(void) {
    uint32_t first = 0;
    int cls = unicode_class(0);
    for (uint32_t cp = 1; cp <= 0x110000; cp++) {
        int c = cp < 0x110000 ? unicode_class(cp) : -1;
        if (c == cls) continue;
        printf("%u %u %d\n", (unsigned)first, (unsigned)cp - 1, cls);
        first = cp;
        cls = c;
    }
    printf("%s\n", unicode_version());
    return 0;
}

/* --check: each record loaded as a section; "ok" or the error. */
static int check_mode(int kind, int vocab_size) {
    long len;
    while ((len = read_record_length()) >= 0) {
        char *data = read_record(len);
        Tokenizer t;
        char err[ERR_MAX];
        if (tokenizer_load_memory(&t, data, (size_t)len, kind, vocab_size, BOS(kind), EOS(kind), err) == 0) {
            printf("ok\n");
            tokenizer_free(&t);
        } else {
            printf("%s\n", err);
        }
        free(data);
    }
    return 0;
}

/* --lookup: records to "id special" lines. */
static int lookup_mode(const Tokenizer *t) {
    long len;
    while ((len = read_record_length()) >= 0) {
        char *text = read_record(len);
        int id = tokenizer_lookup(t, text, (int)len);
        printf("%d %d\n", id, id >= 0 && tokenizer_is_special(t, id));
        free(text);
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

/* Default mode: records of text to lines of ids. With mode -1 (SentencePiece only), the record
 * up to its first NUL through tokenizer_encode; otherwise the whole record through
 * tokenizer_encode_text in mode TOKENIZER_PROMPT or TOKENIZER_CHAT_TEXT. */
static int encode_mode(const Tokenizer *t, int bos, int eos, int mode) {
    long len;
    double seconds = 0;
    size_t total = 0;
    int text_api = mode >= 0;
    while ((len = read_record_length()) >= 0) {
        char *text = read_record(len);
        int *ids = malloc(tokenizer_max_tokens(t, (size_t)len) * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "tokenize: out of memory\n");
            return 1;
        }
        double start = now_seconds();
        int n = text_api ? tokenizer_encode_text(t, text, (size_t)len, mode, ids)
                    : tokenizer_encode(t, text, bos, eos, ids);
        seconds += now_seconds() - start;
        total += text_api ? (size_t)len : strlen(text);
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
    int memory = 0, bos = 0, eos = 0, decode = 0, raw = 0, stream = 0, kind = 1, chat = 0,
        lookup = 0, text_api = 0;
    const char *args[2];
    int n_args = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--memory") == 0) memory = 1;
        else if (strcmp(argv[i], "--bos") == 0) bos = 1;
        else if (strcmp(argv[i], "--eos") == 0) eos = 1;
        else if (strcmp(argv[i], "--decode") == 0) decode = 1;
        else if (strcmp(argv[i], "--raw") == 0) raw = 1;
        else if (strcmp(argv[i], "--stream") == 0) stream = 1;
        else if (strcmp(argv[i], "--chat") == 0) chat = 1;
        else if (strcmp(argv[i], "--text-api") == 0) text_api = 1;
        else if (strcmp(argv[i], "--lookup") == 0) lookup = 1;
        else if (strcmp(argv[i], "--nfc") == 0) return nfc_mode();
        else if (strcmp(argv[i], "--classes") == 0) return classes_mode();
        else if (strcmp(argv[i], "--pieces") == 0 && i + 1 < argc) return pieces_mode(argv[++i]);
        else if (strcmp(argv[i], "--check") == 0 && i + 2 < argc)
            return check_mode(atoi(argv[i + 1]), atoi(argv[i + 2]));
        else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc) kind = atoi(argv[++i]);
        else if (n_args < 2 && argv[i][0] != '-') args[n_args++] = argv[i];
        else {
            fprintf(stderr, "tokenize: unexpected argument %s\n", argv[i]);
            return 1;
        }
    }
    if (stream) return stream_mode();
    if (n_args != 2) {
        fprintf(stderr, "usage: tokenize [--memory | --kind 2] [--bos] [--eos] [--chat] "
                        "[--lookup] [--decode [--raw]] TOKENIZER VOCAB_SIZE | tokenize --stream "
                        "| --nfc | --classes | --pieces NAME | --check KIND VOCAB_SIZE\n");
        return 1;
    }
    const char *path = args[0];
    int vocab_size = atoi(args[1]);

    Tokenizer t;
    char err[ERR_MAX];
    int rc;
    if (memory || kind != 1) {
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
        rc = tokenizer_load_memory(&t, data, size, kind, vocab_size, BOS(kind), EOS(kind), err);
        free(data); /* the tokenizer keeps copies of everything it needs */
    } else {
        rc = tokenizer_load(&t, path, vocab_size, 1, 2, err);
    }
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    rc = decode ? decode_mode(&t, raw)
       : lookup ? lookup_mode(&t)
       : encode_mode(&t, bos, eos,
                     kind == 1 && !text_api ? -1 : chat ? TOKENIZER_CHAT_TEXT : TOKENIZER_PROMPT);
    tokenizer_free(&t);
    return rc;
}
