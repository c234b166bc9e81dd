/*
 * chat.c - chat templates: a conversation turned into the token ids a chat model was trained
 * on, one user turn at a time, so the KV cache can keep everything said before.
 *
 * The formats, for a system prompt S, user turns U, U2 and the assistant's answer A ([x] is
 * the special token x, one id; everything else is text):
 *
 *   llama2    <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A</s><s>[INST] U2 [/INST] ...
 *   chatml    <s>[<|im_start|>]system\nS[<|im_end|>]\n[<|im_start|>]user\nU[<|im_end|>]\n
 *             [<|im_start|>]assistant\nA[<|im_end|>]\n[<|im_start|>]user\nU2 ...
 *   zephyr    <s>[<|system|>]\nS</s>\n[<|user|>]\nU</s>\n[<|assistant|>]\nA</s>\n ...
 *   llama3    [<|begin_of_text|>][<|start_header_id|>]system[<|end_header_id|>]\n\nS[<|eot_id|>]
 *             [<|start_header_id|>]user[<|end_header_id|>]\n\nU[<|eot_id|>]
 *             [<|start_header_id|>]assistant[<|end_header_id|>]\n\nA[<|eot_id|>] ...
 *   llama3.1  llama3, but the system message is always there and opens with two dates:
 *             "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" then S
 *   llama3.2  llama3.1 with today's date (the caller's ChatSettings.date), as its template
 *             renders when strftime_now is defined, which it is in transformers and
 *             @huggingface/jinja alike
 *   qwen2.5   chatml without <s>; without S, "You are Qwen, created by Alibaba Cloud. You are a
 *             helpful assistant."
 *   qwen3     chatml without <s>; the assistant's header is followed by the empty thinking
 *             block [<think>]\n\n[</think>]\n\n (the template's enable_thinking=false) unless
 *             the caller asks the model to think
 *   smollm2   chatml without <s>; without S, "You are a helpful AI assistant named SmolLM,
 *             trained by Hugging Face"
 *
 * Zephyr is TinyLlama-1.1B-Chat's format. Where the templates have no default, a missing
 * system prompt leaves its message out. The Llama 3 templates trim the system prompt and each
 * turn of surrounding whitespace (Jinja's trim, Python's str.strip); the others keep the text
 * as it is. Each of the byte-level families is its model's own Jinja chat_template as
 * transformers renders it (add_generation_prompt=True) and its tokenizer then encodes
 * (add_special_tokens=False); tests/test_chat_templates.py holds every id to that.
 *
 * What the KV cache holds. The conversation is fed once: each turn appends the end of the
 * previous answer and the new user turn. The template of a family may render earlier answers
 * differently when it renders the whole conversation again: Qwen3's drops the <think> block
 * of every answer before the last user turn, so after the first answer the cache holds the
 * empty thinking block (or the model's thoughts) that a fresh rendering would leave out; and
 * the Llama 3 templates trim an answer, where the cache holds it as the model wrote it. These
 * are the only differences: the user turns, and everything the model reads before its first
 * answer, are exactly the template's (until the conversation outgrows the context and run
 * makes room by evicting its oldest positions, when the cache holds less than any rendering).
 *
 * Special tokens. A marker such as <|im_start|> is one token when the vocabulary has it (a
 * piece of a SentencePiece vocabulary, an added token of a byte-level one), and plain text
 * otherwise (TinyLlama's <|user|> is not a piece of the Llama 2 vocabulary, so it is spelled
 * out as "<", "|", "user", ...). <s> and </s> are always the model's BOS and EOS ids; the
 * byte-level templates write no <s> (Llama 3's <|begin_of_text|> is in its template's text).
 * Text the user types is only ever text: a byte-level tokenizer encodes it as
 * TOKENIZER_CHAT_TEXT, where the text of a special token stays text.
 *
 * The dummy prefix. sentencepiece puts a space in front of the text it encodes. The text
 * between two special tokens is encoded the way Hugging Face's Llama tokenizer does it
 * (legacy=False, its maintained behaviour): with the space only at the start of the
 * sequence and right after BOS, never after any other special token. For Llama 2 that is
 * exactly Meta's reference and llama2.c: each turn is BOS and one sentencepiece encoding of
 * "[INST] ... [/INST]". Byte-level BPE has no dummy prefix.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "unicode.h"

/* ------------------------------------------------------------------------------------------ */
/* The templates */

enum { STYLE_LLAMA2, STYLE_CHATML, STYLE_ZEPHYR, STYLE_LLAMA3 };

typedef struct {
    const char *name;
    int style;
    const char *default_system; /* the system prompt when none is given, or NULL */
    int dated;                  /* Llama 3.1 and 3.2: 1 the fixed date, 2 the caller's */
    int think_block;            /* Qwen3: the empty <think></think> unless asked to think */
} Template;

static const Template templates[TEMPLATE_COUNT] = {
    [TEMPLATE_NONE] = {"none", STYLE_LLAMA2, NULL, 0, 0},
    [TEMPLATE_LLAMA2] = {"llama2", STYLE_LLAMA2, NULL, 0, 0},
    [TEMPLATE_CHATML] = {"chatml", STYLE_CHATML, NULL, 0, 0},
    [TEMPLATE_ZEPHYR] = {"zephyr", STYLE_ZEPHYR, NULL, 0, 0},
    [TEMPLATE_LLAMA3] = {"llama3", STYLE_LLAMA3, NULL, 0, 0},
    [TEMPLATE_LLAMA31] = {"llama3.1", STYLE_LLAMA3, NULL, 1, 0},
    [TEMPLATE_LLAMA32] = {"llama3.2", STYLE_LLAMA3, NULL, 2, 0},
    [TEMPLATE_QWEN25] = {"qwen2.5", STYLE_CHATML,
                         "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", 0,
                         0},
    [TEMPLATE_QWEN3] = {"qwen3", STYLE_CHATML, NULL, 0, 1},
    [TEMPLATE_SMOLLM2] = {"smollm2", STYLE_CHATML,
                          "You are a helpful AI assistant named SmolLM, trained by Hugging Face", 0,
                          0},
};

/* Llama 3.1's fallback date, which its template always uses and Llama 3.2's uses when it
 * cannot read the clock. */
#define LLAMA3_DEFAULT_DATE "26 Jul 2024"

int chat_template_id(const char *name) {
    for (int i = TEMPLATE_NONE + 1; i < TEMPLATE_COUNT; i++)
        if (strcmp(name, templates[i].name) == 0) return i;
    return -1;
}

const char *chat_template_name(int template_id) {
    if (template_id < TEMPLATE_NONE || template_id >= TEMPLATE_COUNT) return "unknown";
    return templates[template_id].name;
}

/* The template of an id, Llama 2's for one outside the enum. */
static const Template *template_of(int template_id) {
    if (template_id < TEMPLATE_NONE || template_id >= TEMPLATE_COUNT) template_id = TEMPLATE_NONE;
    return &templates[template_id];
}

/* ------------------------------------------------------------------------------------------ */
/* Building a sequence of ids from text and special tokens */

typedef struct {
    const Tokenizer *t;
    int *ids;      /* (cap) the ids so far */
    int n, cap;
    char *text;    /* text not yet encoded: consecutive text is encoded in one piece */
    size_t len, text_cap;
    int at_start;  /* SentencePiece: the pending text follows BOS, so it gets the dummy prefix */
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
    if (!reserve_ids(b, tokenizer_max_tokens(b->t, b->len))) {
        b->failed = 1;
        return;
    }
    int n;
    if (b->t->kind == TOKENIZER_BYTE_BPE)
        n = tokenizer_encode_text(b->t, b->text, b->len, TOKENIZER_CHAT_TEXT, b->ids + b->n);
    else /* only text at the start of the conversation or right after BOS gets the dummy prefix */
        n = b->at_start ? tokenizer_encode(b->t, b->text, 0, 0, b->ids + b->n)
                        : tokenizer_encode_continuation(b->t, b->text, b->ids + b->n);
    if (n < 0) b->failed = 1;
    else b->n += n;
    b->len = 0;
    b->at_start = 0;
}

/* Appends len bytes of text to the pending text. */
static void add_bytes(Builder *b, const char *s, size_t len) {
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

static void add_text(Builder *b, const char *s) {
    add_bytes(b, s, strlen(s));
}

/* 1 if cp is whitespace to Python's str.strip(), which Jinja's trim filter calls: the
 * characters of bidirectional type WS, B or S or of category Zs. */
static int is_strip_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Appends s without the whitespace at either end (Jinja's `| trim`). An invalid byte is no
 * whitespace, so it ends the trimming there. */
static void add_trimmed(Builder *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t start = 0, end = strlen(s);
    uint32_t cp;
    while (start < end) {
        int k = utf8_decode(p + start, end - start, &cp);
        if (!is_strip_space(cp)) break;
        start += (size_t)k;
    }
    while (end > start) {
        /* the last character starts at most 3 bytes before the end, after its continuation
         * bytes; it counts only if it decodes to exactly the bytes up to the end */
        size_t at = end - 1;
        while (at > start && end - at < 4 && (p[at] & 0xC0) == 0x80) at--;
        if ((size_t)utf8_decode(p + at, end - at, &cp) != end - at || !is_strip_space(cp)) break;
        end = at;
    }
    add_bytes(b, s + start, end - start);
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
 * vocabulary has it, else text. */
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
/* Rendering one turn */

static void render_llama2(Builder *b, const ChatSettings *s, const char *user, int first) {
    if (!first) add_special(b, "</s>"); /* closes the previous answer */
    add_special(b, "<s>");
    add_text(b, "[INST] ");
    if (first && s->system && s->system[0]) {
        add_text(b, "<<SYS>>\n");
        add_text(b, s->system);
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

static void render_roles(Builder *b, const Template *tp, const ChatSettings *s,
                         const char *user, int first) {
    int chatml = tp->style == STYLE_CHATML;
    if (first) {
        /* BOS is what Hugging Face's Llama 2 tokenizer puts before the template's text; a
         * byte-level template's text is the whole sequence */
        if (b->t->kind == TOKENIZER_SENTENCEPIECE) add_special(b, "<s>");
        const char *system = s->system && s->system[0] ? s->system : tp->default_system;
        if (system) {
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
    if (tp->think_block && !s->think) {
        add_special(b, "<think>");
        add_text(b, "\n\n");
        add_special(b, "</think>");
        add_text(b, "\n\n");
    }
}

/* Llama 3's message header: [<|start_header_id|>]role[<|end_header_id|>]\n\n */
static void llama3_header(Builder *b, const char *role) {
    add_special(b, "<|start_header_id|>");
    add_text(b, role);
    add_special(b, "<|end_header_id|>");
    add_text(b, "\n\n");
}

static void render_llama3(Builder *b, const Template *tp, const ChatSettings *s,
                          const char *user, int first) {
    if (first) {
        add_special(b, "<|begin_of_text|>");
        const char *system = s->system ? s->system : "";
        if (tp->dated) {
            const char *date = tp->dated == 2 && s->date ? s->date : LLAMA3_DEFAULT_DATE;
            llama3_header(b, "system");
            add_text(b, "Cutting Knowledge Date: December 2023\nToday Date: ");
            add_text(b, date);
            add_text(b, "\n\n");
            add_trimmed(b, system);
            add_special(b, "<|eot_id|>");
        } else if (system[0]) {
            llama3_header(b, "system");
            add_trimmed(b, system);
            add_special(b, "<|eot_id|>");
        }
    } else {
        add_special(b, "<|eot_id|>"); /* closes the previous answer */
    }
    llama3_header(b, "user");
    add_trimmed(b, user);
    add_special(b, "<|eot_id|>");
    llama3_header(b, "assistant");
}

int *chat_encode_turn(const Tokenizer *t, const ChatSettings *s, const char *user, int first,
                      int *n) {
    const Template *tp = template_of(s->template_id);
    /* a later turn continues the conversation: its first text gets no dummy prefix */
    Builder b = {.t = t, .at_start = first};
    if (tp->style == STYLE_CHATML || tp->style == STYLE_ZEPHYR)
        render_roles(&b, tp, s, user, first);
    else if (tp->style == STYLE_LLAMA3)
        render_llama3(&b, tp, s, user, first);
    else
        render_llama2(&b, s, user, first);
    flush_text(&b);
    free(b.text);
    if (b.failed) {
        free(b.ids);
        return NULL;
    }
    *n = b.n;
    return b.ids;
}

/* The marker that ends an answer in a template's own text, or NULL (Llama 2 and Zephyr end
 * with EOS). */
static const char *end_marker(int template_id) {
    int style = template_of(template_id)->style;
    return style == STYLE_CHATML ? "<|im_end|>" : style == STYLE_LLAMA3 ? "<|eot_id|>" : NULL;
}

int chat_end_token(const Tokenizer *t, int template_id) {
    const char *marker = end_marker(template_id);
    return marker ? tokenizer_lookup(t, marker, (int)strlen(marker)) : -1;
}

const char *chat_end_text(const Tokenizer *t, int template_id) {
    const char *marker = end_marker(template_id);
    return marker && chat_end_token(t, template_id) < 0 ? marker : NULL;
}
