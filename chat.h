/*
 * chat.h - chat templates: a conversation as token ids, one user turn at a time. The formats
 * and the encoding rules are described at the top of chat.c.
 */
#ifndef CHAT_H
#define CHAT_H

#include "tokenizer.h"

enum { TEMPLATE_NONE = 0, TEMPLATE_LLAMA2 = 1, TEMPLATE_CHATML = 2, TEMPLATE_ZEPHYR = 3 };

/* TEMPLATE_LLAMA2, TEMPLATE_CHATML or TEMPLATE_ZEPHYR for "llama2", "chatml" or "zephyr";
 * -1 for any other name. */
int chat_template_id(const char *name);

/* The name of a TEMPLATE_* value ("none" for TEMPLATE_NONE). */
const char *chat_template_name(int template_id);

/* The ids to feed before the assistant answers user: on the first turn BOS, the system
 * prompt (NULL or "" for none) and the user turn; on later turns the end of the previous
 * answer, then the user turn. Both end with the assistant's header. Returns a malloc'd array
 * of *n ids, or NULL if memory ran out. */
int *chat_encode_turn(const Tokenizer *t, int template_id, const char *system, const char *user,
                      int first, int *n);

/* The id that ends the assistant's answer besides EOS: <|im_end|> for ChatML when the
 * vocabulary has it; -1 when there is none. */
int chat_end_token(const Tokenizer *t, int template_id);

/* The text that ends the answer when the end marker is not one token ("<|im_end|>" for
 * ChatML on a vocabulary without it), for the caller to treat as a stop string; or NULL. */
const char *chat_end_text(const Tokenizer *t, int template_id);

#endif
