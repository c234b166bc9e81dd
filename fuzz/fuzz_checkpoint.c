/*
 * fuzz_checkpoint.c - libFuzzer target for the checkpoint loaders.
 *
 * Built twice (see `make fuzz`): with FUZZ_TLLM the input is prefixed with the TLLM magic so
 * every run exercises our own format's loader; without it the input is taken as it is, which
 * mostly means the llama2.c loader. A checkpoint the loader accepts must also survive a
 * forward pass: that is what proves every pointer it made lies inside the input.
 *
 * The TLLM build also writes the input's real length into the header's file_size field (at
 * offset 8 in version 2, 104 in version 1), so mutations get past that check and into the
 * offsets and tensors behind it (the check itself is covered by tests/test_bad_inputs.py). Logits are then sampled with every strategy, since
 * a corrupt file's NaN logits once sent top-p sampling out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
#ifdef FUZZ_TLLM
    unsigned char *buf = malloc(size + 4);
    if (!buf) return 0;
    memcpy(buf, "TLLM", 4);
    memcpy(buf + 4, data, size);
    size += 4;
    int at = size >= 8 && buf[4] == 2 ? 8 : 104; /* where the version puts file_size */
    if (size >= (size_t)at + 8)
        for (int i = 0; i < 8; i++) buf[at + i] = (unsigned char)((uint64_t)size >> (8 * i));
#else
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
#endif
    Model m;
    char err[ERR_MAX];
    if (model_load_memory(&m, buf, size, NULL, err) == 0) {
        const Config *c = &m.config;
        int last = c->vocab_size - 1, zero = 0;
        float *logits = model_forward(&m, &last, 1, 0, NULL);
        if (!logits) abort(); /* a loaded model must run every valid token at position 0 */
        for (int k = 0; k < 4; k++) {
            /* greedy, top-p, plain sampling, then top-k with min-p */
            Sampler s;
            float temperature[4] = {0.0f, 1.0f, 1.0f, 1.0f}, topp[4] = {0.9f, 0.9f, 1.0f, 0.9f};
            SamplerSettings set = {.temperature = temperature[k], .topp = topp[k], .seed = 42,
                                   .top_k = k == 3 ? 5 : 0, .min_p = k == 3 ? 0.05f : 0.0f};
            if (sampler_init(&s, c->vocab_size, set) != 0) break;
            int next = sampler_sample(&s, logits); /* may overwrite the logits: last use */
            sampler_free(&s);
            if (next < 0 || next >= c->vocab_size) abort();
        }
        if (c->seq_len > 1) model_forward(&m, &zero, 1, 1, NULL);
        /* the last position of the KV cache, when attending over it all is cheap enough */
        if (c->seq_len > 2 && c->seq_len <= 4096) model_forward(&m, &zero, 1, c->seq_len - 1, NULL);
        if (m.tokenizer_data) {
            Tokenizer t;
            if (tokenizer_load_memory(&t, m.tokenizer_data, m.tokenizer_size,
                                      m.tokenizer_kind, c->vocab_size, c->bos_id,
                                      c->eos_ids[0], err) == 0)
                tokenizer_free(&t);
        }
        model_free(&m);
    }
    free(buf);
    return 0;
}
