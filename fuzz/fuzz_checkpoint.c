/*
 * fuzz_checkpoint.c - libFuzzer target for the checkpoint loaders.
 *
 * Built twice (see `make fuzz`): with FUZZ_TLLM the input is prefixed with the TLLM magic so
 * every run exercises our own format's loader; without it the input is taken as it is, which
 * mostly means the llama2.c loader. A checkpoint the loader accepts must also survive a
 * forward pass: that is what proves every pointer it made lies inside the input.
 */
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
#ifdef FUZZ_TLLM
    unsigned char *buf = malloc(size + 4);
    if (!buf) return 0;
    memcpy(buf, "TLLM", 4);
    memcpy(buf + 4, data, size);
    size += 4;
#else
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
#endif
    Model m;
    char err[ERR_MAX];
    if (model_load_memory(&m, buf, size, err) == 0) {
        const Config *c = &m.config;
        model_forward(&m, c->vocab_size - 1, 0);
        if (c->seq_len > 1) model_forward(&m, 0, 1);
        if (m.tokenizer_data) {
            Tokenizer t;
            if (tokenizer_load_memory(&t, m.tokenizer_data, m.tokenizer_size, c->vocab_size,
                                      err) == 0)
                tokenizer_free(&t);
        }
        model_free(&m);
    }
    free(buf);
    return 0;
}
