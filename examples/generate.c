/*
 * generate.c - the engine as a library: load a model, encode a prompt, continue it greedily
 * and print the text. It prints what `tllm-run MODEL -t 0 -n STEPS -i PROMPT` prints on
 * stdout (the tests check that), without the command line's options.
 *
 *   make install PREFIX=$HOME/.local
 *   export PKG_CONFIG_PATH=$HOME/.local/lib/pkgconfig
 *   cc examples/generate.c $(pkg-config --cflags --libs tllm) -o generate
 *   ./generate models/stories260K.tllm "Once upon a time" 100
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tllm/model.h>
#include <tllm/sampler.h>
#include <tllm/tokenizer.h>

/* Prints the text of token after prev through the UTF-8 filter, as run does. */
static void print_token(const Tokenizer *t, Utf8Stream *utf8, int prev, int token) {
    int len;
    const char *piece = tokenizer_decode(t, prev, token, &len);
    if (!piece) return;
    char out[len + 4];
    fwrite(out, 1, utf8_stream_feed(utf8, piece, (size_t)len, out), stdout);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT STEPS  (a TLLM file: its tokenizer is inside)\n",
                argv[0]);
        return 1;
    }
    const char *path = argv[1], *prompt = argv[2];
    int steps = atoi(argv[3]); /* positions to run, the prompt's included, as run's -n */

    /* The library never prints: a failure comes back as -1 with one line in err. */
    char err[ERR_MAX];
    Model model;
    Tokenizer tok;
    Sampler sampler;
    if (model_load(&model, path, NULL, err) != 0) { /* NULL: the default options */
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    const Config *c = &model.config;
    if (!model.tokenizer_data) {
        fprintf(stderr, "%s: no tokenizer inside (a llama2.c file: see export.py)\n", path);
        return 1;
    }
    if (tokenizer_load_memory(&tok, model.tokenizer_data, model.tokenizer_size,
                              model.tokenizer_kind, c->vocab_size, c->bos_id, c->eos_ids[0],
                              err) != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    /* temperature 0: always the most likely token (raise it to sample; the seed then counts) */
    if (sampler_init(&sampler, c->vocab_size, (SamplerSettings){.temperature = 0, .seed = 1})) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    /* The prompt as Hugging Face's encode(text) gives it (BOS first for SentencePiece and
     * Llama 3; a tokenizer that adds nothing starts an empty prompt from BOS), echoed (BOS and
     * other special tokens print as nothing); then all of it through the network in one call. */
    size_t len = strlen(prompt);
    int *tokens = malloc((tokenizer_max_tokens(&tok, len) + 1) * sizeof *tokens);
    int n = tokens ? tokenizer_encode_text(&tok, prompt, len, TOKENIZER_PROMPT, tokens) : -1;
    if (n == 0) tokens[n++] = c->bos_id;
    if (n < 1 || n > steps || steps > c->seq_len) {
        fprintf(stderr, "the prompt must fit in STEPS, and STEPS in the context (%d)\n",
                c->seq_len);
        return 1;
    }
    Utf8Stream utf8 = {0};
    for (int i = 0; i < n; i++) print_token(&tok, &utf8, i ? tokens[i - 1] : -1, tokens[i]);
    float *logits = model_forward(&model, tokens, n, 0, NULL);

    /* Then one token at a time, each fed back at the next position, until the model ends
     * the text (a model may have several end tokens; with a SentencePiece tokenizer, BOS
     * starts the next story) or the steps are used up. */
    int prev = tokens[n - 1];
    for (int pos = n;; pos++) {
        int next = sampler_sample(&sampler, logits);
        int end = tok.kind == TOKENIZER_SENTENCEPIECE && next == c->bos_id;
        for (int i = 0; i < c->n_eos; i++) end |= next == c->eos_ids[i];
        if (end) break;
        print_token(&tok, &utf8, prev, next);
        if (pos == steps) break;
        logits = model_forward(&model, &next, 1, pos, NULL);
        prev = next;
    }
    putchar('\n');

    free(tokens);
    sampler_free(&sampler);
    tokenizer_free(&tok);
    model_free(&model);
    return 0;
}
