/*
 * chat.c - chat templates: a conversation turned into the token ids a chat model was trained
 * on, one user turn at a time, so the KV cache can keep everything said before.
 *
 * The three formats, for a system prompt S, a user turn U and the assistant's answer A:
 *
 *   Llama 2  <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A</s><s>[INST] U2 [/INST] ...
 *   ChatML   <s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n
 *            <|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\n ...
 *   Zephyr   <s><|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\nA</s>\n<|user|>\n ...
 *
 * (Zephyr is TinyLlama-1.1B-Chat's format.) Without a system prompt its part is left out.
 *
 * Special tokens. A marker such as <|im_start|> is one token when the vocabulary has it as a
 * piece, and plain text otherwise (TinyLlama's <|user|> is not a piece of the Llama 2
 * vocabulary, so it is spelled out as "<", "|", "user", ...). <s> and </s> are always the
 * model's BOS and EOS ids. Text the user types is only ever text.
 *
 * The dummy prefix. sentencepiece puts a space in front of the text it encodes. The text
 * between two special tokens is encoded the way Hugging Face's Llama tokenizer does it
 * (legacy=False, its maintained behaviour): with the space only at the start of the
 * sequence and right after BOS, never after any other special token. For Llama 2 that is
 * exactly Meta's reference and llama2.c: each turn is BOS and one sentencepiece encoding of
 * "[INST] ... [/INST]".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

/* ------------------------------------------------------------------------------------------ */
/* Names */

static const char *const template_names[] = {"none", "llama2", "chatml", "zephyr"};

int chat_template_id(const char *name) {
    for (int i = TEMPLATE_LLAMA2; i <= TEMPLATE_ZEPHYR; i++)
        if (strcmp(name, template_names[i]) == 0) return i;
    return -1;
}

const char *chat_template_name(int template_id) {
    if (template_id < TEMPLATE_NONE || template_id > TEMPLATE_ZEPHYR) return "unknown";
    return template_names[template_id];
}

/* ------------------------------------------------------------------------------------------ */
/* Building a sequence of ids from text and special tokens */

typedef struct {
    const Tokenizer *t;
    int *ids;      /* (cap) the ids so far */
    int n, cap;
    char *text;    /* text not yet encoded: consecutive text is encoded in one piece */
    size_t len, text_cap;
    int at_start;  /* the pending text follows BOS: it gets the dummy prefix */
    int failed;    /* out of memory */
} Builder;

/* Makes room for `more` ids. */
static int reserve_ids(Builder *b, size_t more) {
    if (b->n + more <= (size_t)b->cap) return 1;
    size_t cap = 2 * (b->n + more);
    int *ids = cap < (size_t)1 << 30 ? realloc(b->ids, cap * sizeof *ids) : NULL;
    if (!ids) return 0;
    b->ids = ids;
    b->cap = (int)cap;
    return 1;
}

/* Encodes the pending text, if any. */
static void flush_text(Builder *b) {
    if (b->len == 0 || b->failed) return;
    b->text[b->len] = '\0';
    if (!reserve_ids(b, b->len + 3)) {
        b->failed = 1;
        return;
    }
    /* only text at the start of the conversation or right after BOS gets the dummy prefix */
    int n = b->at_start ? tokenizer_encode(b->t, b->text, 0, 0, b->ids + b->n)
                        : tokenizer_encode_continuation(b->t, b->text, b->ids + b->n);
    if (n < 0) b->failed = 1;
    else b->n += n;
    b->len = 0;
    b->at_start = 0;
}

static void add_text(Builder *b, const char *s) {
    size_t len = strlen(s);
    if (b->failed || len == 0) return;
    if (b->len + len + 1 > b->text_cap) {
        size_t cap = 2 * (b->len + len + 1);
        char *text = realloc(b->text, cap);
        if (!text) {
            b->failed = 1;
            return;
        }
        b->text = text;
        b->text_cap = cap;
    }
    memcpy(b->text + b->len, s, len);
    b->len += len;
}

static void add_id(Builder *b, int id) {
    flush_text(b);
    if (b->failed) return;
    if (!reserve_ids(b, 1)) {
        b->failed = 1;
        return;
    }
    b->ids[b->n++] = id;
}

/* A special token: <s> and </s> are BOS and EOS; any other marker is one token if the
 * vocabulary has it as a piece, else text. */
static void add_special(Builder *b, const char *marker) {
    int id;
    if (strcmp(marker, "<s>") == 0) id = b->t->bos_id;
    else if (strcmp(marker, "</s>") == 0) id = b->t->eos_id;
    else id = tokenizer_lookup(b->t, marker, (int)strlen(marker));
    if (id < 0) {
        add_text(b, marker);
        return;
    }
    add_id(b, id);
    b->at_start = id == b->t->bos_id;
}

/* ------------------------------------------------------------------------------------------ */
/* The templates */

static void render_llama2(Builder *b, const char *system, const char *user, int first) {
    if (!first) add_special(b, "</s>"); /* closes the previous answer */
    add_special(b, "<s>");
    add_text(b, "[INST] ");
    if (first && system && system[0]) {
        add_text(b, "<<SYS>>\n");
        add_text(b, system);
        add_text(b, "\n<</SYS>>\n\n");
    }
    add_text(b, user);
    add_text(b, " [/INST]");
}

/* ChatML and Zephyr differ only in how a message opens and what closes it:
 *   ChatML  <|im_start|>role\n ... <|im_end|>\n
 *   Zephyr  <|role|>\n ... </s>\n */
static void open_message(Builder *b, int chatml, const char *role) {
    if (chatml) {
        add_special(b, "<|im_start|>");
        add_text(b, role);
    } else {
        char marker[32];
        snprintf(marker, sizeof marker, "<|%s|>", role);
        add_special(b, marker);
    }
    add_text(b, "\n");
}

static void close_message(Builder *b, int chatml) {
    add_special(b, chatml ? "<|im_end|>" : "</s>");
    add_text(b, "\n");
}

static void render_roles(Builder *b, int chatml, const char *system, const char *user,
                         int first) {
    if (first) {
        add_special(b, "<s>");
        if (system && system[0]) {
            open_message(b, chatml, "system");
            add_text(b, system);
            close_message(b, chatml);
        }
    } else {
        close_message(b, chatml); /* closes the previous answer */
    }
    open_message(b, chatml, "user");
    add_text(b, user);
    close_message(b, chatml);
    open_message(b, chatml, "assistant");
}

int *chat_encode_turn(const Tokenizer *t, int template_id, const char *system, const char *user,
                      int first, int *n) {
    /* a later turn continues the conversation: its first text gets no dummy prefix */
    Builder b = {.t = t, .at_start = first};
    if (template_id == TEMPLATE_CHATML || template_id == TEMPLATE_ZEPHYR)
        render_roles(&b, template_id == TEMPLATE_CHATML, system, user, first);
    else
        render_llama2(&b, system, user, first);
    flush_text(&b);
    free(b.text);
    if (b.failed) {
        free(b.ids);
        return NULL;
    }
    *n = b.n;
    return b.ids;
}

int chat_end_token(const Tokenizer *t, int template_id) {
    if (template_id == TEMPLATE_CHATML) return tokenizer_lookup(t, "<|im_end|>", 10);
    return -1;
}

const char *chat_end_text(const Tokenizer *t, int template_id) {
    if (template_id == TEMPLATE_CHATML && chat_end_token(t, template_id) < 0) return "<|im_end|>";
    return NULL;
}
