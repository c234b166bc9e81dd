/*
 * format.h - reading a model file: the header, the metadata, the tensor directory, and every
 * check that a file describes a model the engine can run (models/FORMAT.md).
 *
 * Three layouts are read, told apart by their first bytes: TLLM version 2 (key/value metadata
 * and a tensor directory), TLLM version 1 (a fixed header and a fixed tensor order) and
 * llama2.c's "version 0" checkpoints. Each becomes the same ModelFile: the hyperparameters and
 * a list of named tensors pointing into the file's bytes, which model.c binds to the weights.
 */
#ifndef FORMAT_H
#define FORMAT_H

#include <stddef.h>

#include "error.h"
#include "model.h"

#define FORMAT_MAX_NAME 64

/* A tensor as the file stores it: a vector (dim) is one row, (1, dim). */
typedef struct {
    char name[FORMAT_MAX_NAME]; /* "token_embedding", "layers.3.wq", ... (FORMAT.md) */
    int type, group_size;       /* WEIGHT_*, and Q8_0's weights per scale (else 0) */
    int rows, cols;
    const void *data;           /* inside the file's bytes */
    size_t bytes;
} FileTensor;

typedef struct {
    Config config;
    FileTensor *tensors;        /* (n_tensors), the one allocation */
    int n_tensors;
    const void *tokenizer;      /* the embedded tokenizer section, or NULL */
    size_t tokenizer_size;
    int tokenizer_kind;         /* TOKENIZER_SENTENCEPIECE or TOKENIZER_BYTE_BPE (FORMAT.md) */
    int is_llama2c;             /* llama2.c files end their stories with BOS, not EOS */
} ModelFile;

/* Reads the model file in data (size bytes), checking every field and every tensor against
 * the bytes there are. The tensors point into data. Returns 0, or -1 naming the first problem
 * in err (the caller frees nothing on failure). */
int model_file_read(ModelFile *f, const void *data, size_t size, char err[ERR_MAX]);

/* The tensor called name, or NULL if the file has none. */
const FileTensor *model_file_tensor(const ModelFile *f, const char *name);

void model_file_free(ModelFile *f);

#endif
