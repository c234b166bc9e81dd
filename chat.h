/*
 * chat.h - chat templates: a conversation as token ids, one user turn at a time. The formats
 * and the encoding rules are described at the top of chat.c.
 */
#ifndef CHAT_H
#define CHAT_H

#include "tokenizer.h"

/* The templates, by the number a version-1 model file stores (0..3) and the name a version-2
 * file stores (chat_template_name). */
enum {
    TEMPLATE_NONE = 0,
    TEMPLATE_LLAMA2 = 1,   /* "llama2": Llama 2's [INST] */
    TEMPLATE_CHATML = 2,   /* "chatml": plain ChatML */
    TEMPLATE_ZEPHYR = 3,   /* "zephyr": <|user|> ... </s> (TinyLlama-1.1B-Chat) */
    TEMPLATE_LLAMA3 = 4,   /* "llama3": Llama 3 Instruct's headers */
    TEMPLATE_LLAMA31 = 5,  /* "llama3.1": Llama 3.1's headers with a dated system message */
    TEMPLATE_LLAMA32 = 6,  /* "llama3.2": the same, dated today */
    TEMPLATE_QWEN25 = 7,   /* "qwen2.5": ChatML with Qwen2.5's default system prompt */
    TEMPLATE_QWEN3 = 8,    /* "qwen3": ChatML with Qwen3's <think> block */
    TEMPLATE_SMOLLM2 = 9,  /* "smollm2": ChatML with SmolLM2's default system prompt */
    TEMPLATE_COUNT
};

/* The TEMPLATE_* value of a name ("llama2", "chatml", ..., "smollm2"); -1 for any other name,
 * "none" included. */
int chat_template_id(const char *name);

/* The name of a TEMPLATE_* value ("none" for TEMPLATE_NONE, "unknown" outside the enum). */
const char *chat_template_name(int template_id);

/* How a conversation is rendered: the template and what it leaves to the caller. */
typedef struct {
    int template_id;    /* TEMPLATE_*; TEMPLATE_NONE renders Llama 2's */
    const char *system; /* the system prompt; NULL or "" for none (a template with a default
                           system prompt then uses its own) */
    int think;          /* Qwen3: 1 lets the model think before it answers; 0 renders the empty
                           <think></think> block its template writes with enable_thinking=false */
    const char *date;   /* Llama 3.2's "Today Date" ("30 Nov 2025"); NULL for the template's own
                           fallback, 26 Jul 2024 */
} ChatSettings;

/* The ids to feed before the assistant answers user: on the first turn what opens the
 * conversation (BOS or the template's own start, the system message) and the user turn; on
 * later turns what closes the previous answer, then the user turn. Both end with the
 * assistant's header. Returns a malloc'd array of *n ids, or NULL if memory ran out. */
int *chat_encode_turn(const Tokenizer *t, const ChatSettings *s, const char *user, int first,
                      int *n);

/* The id that ends the assistant's answer besides EOS: <|im_end|> for the ChatML templates,
 * <|eot_id|> for Llama 3's, when the vocabulary has it as one token; -1 when there is none. */
int chat_end_token(const Tokenizer *t, int template_id);

/* The text that ends the answer when the end marker is not one token ("<|im_end|>" for
 * ChatML on a vocabulary without it), for the caller to treat as a stop string; or NULL. */
const char *chat_end_text(const Tokenizer *t, int template_id);

#endif
