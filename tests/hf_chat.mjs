// hf_chat.mjs - the reference for tests/test_chat_templates.py: a model's own Jinja chat
// template rendered by npm's @huggingface/jinja (the engine transformers.js uses) and the text
// encoded by Hugging Face's tokenizers.js, as transformers' apply_chat_template(tokenize=True)
// does: encode(text, add_special_tokens=False). Offline, one process for a batch.
//
//   node tests/hf_chat.mjs < request.json > reply.json
//
// request: {"dir": DIR holding tokenizer.json and tokenizer_config.json,
//           "template": the chat_template text,
//           "chats": [{"messages": [{"role", "content"}, ...], "add_generation_prompt": bool,
//                      "vars": {name: value, ...}, "typed": [string, ...]}, ...],
//           "texts": [string, ...]}
// reply:   {"rendered": [text per chat], "ids": [[id, ...] per chat],
//           "text_ids": [[id, ...] per text]}
//
// vars are passed to the template beside messages, add_generation_prompt and the
// tokenizer_config.json's special tokens (bos_token, eos_token, ...): enable_thinking, for
// instance. strftime_now, with which Llama 3.2's template dates its system message, is the
// library's own: the local clock, and month names in the default locale (run this with
// LC_ALL=C for English ones, as transformers' Python writes them).
//
// typed: text a user typed, which must stay text. Hugging Face encodes a rendered chat whole,
// so special-token text inside a message becomes that token; the engine's promise is that typed
// text never does. For such a chat the rendered text is cut at the special tokens the template
// itself wrote (every special token's text outside the first occurrence of each typed string,
// in order), those become their ids, and each stretch between them is encoded with the special
// tokens' text kept as text (the Rust library's split_special_tokens, done here as
// hf_tokenize.mjs does, by building the tokenizer without them). Without typed text the two
// ways agree, which the test checks.
//
// texts: strings encoded alone, add_special_tokens=False, special tokens' text kept as text
// (an assistant's answer, as the model would have written it).
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const NPM = path.join(ROOT, ".deps/npm/node_modules/@huggingface");
const TOKENIZERS = path.join(NPM, "tokenizers/dist/tokenizers.mjs");
const JINJA = path.join(NPM, "jinja/dist/index.js");
for (const lib of [TOKENIZERS, JINJA]) {
  if (!fs.existsSync(lib)) {
    console.error(`tests/hf_chat.mjs: ${lib} is missing: run tests/deps.sh (make test does it)`);
    process.exit(1);
  }
}
const { Tokenizer } = await import(TOKENIZERS);
const { Template } = await import(JINJA);

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const json = JSON.parse(fs.readFileSync(path.join(request.dir, "tokenizer.json"), "utf8"));
const config_path = path.join(request.dir, "tokenizer_config.json");
const config = fs.existsSync(config_path) ? JSON.parse(fs.readFileSync(config_path, "utf8")) : {};
const full = new Tokenizer(json, config);
const specials = json.added_tokens.filter((t) => t.special);
const plain = new Tokenizer({ ...json, added_tokens: json.added_tokens.filter((t) => !t.special) },
                            config);

// A tokenizer_config.json special token: a string, or {"content": ...}.
const token_text = (v) => (v && typeof v === "object" ? v.content : v);
const special_vars = {};
for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
  if (config[key] !== undefined) special_vars[key] = token_text(config[key]) ?? null;
}

// The ids of rendered text in which the spans [start, end) of typed stay text.
function encode_typed(text, spans) {
  const ids = [];
  let stretch = 0; // where the text not yet encoded starts
  const flush = (end) => {
    if (end > stretch) ids.push(...plain.encode(text.slice(stretch, end), { add_special_tokens: false }).ids);
  };
  for (let at = 0; at < text.length;) {
    const span = spans.find(([s, e]) => s <= at && at < e);
    if (span) {
      at = span[1];
      continue;
    }
    // the longest special token starting here, as the Rust library's matcher picks it
    const hit = specials.filter((t) => text.startsWith(t.content, at))
                        .sort((a, b) => b.content.length - a.content.length)[0];
    if (!hit) {
      at++;
      continue;
    }
    flush(at);
    ids.push(hit.id);
    at += hit.content.length;
    stretch = at;
  }
  flush(text.length);
  return ids;
}

const template = new Template(request.template);
const rendered = [], ids = [];
for (const chat of request.chats) {
  const vars = { ...special_vars, ...(chat.vars || {}), messages: chat.messages,
                 add_generation_prompt: chat.add_generation_prompt };
  const text = template.render(vars);
  rendered.push(text);
  if (!chat.typed || chat.typed.length === 0) {
    ids.push(full.encode(text, { add_special_tokens: false }).ids);
    continue;
  }
  const spans = [];
  let from = 0;
  for (const typed of chat.typed) {
    const start = text.indexOf(typed, from);
    if (start < 0) throw new Error(`typed text ${JSON.stringify(typed)} is not in the rendering`);
    spans.push([start, start + typed.length]);
    from = start + typed.length;
  }
  ids.push(encode_typed(text, spans));
}
const text_ids = (request.texts || []).map((t) => plain.encode(t, { add_special_tokens: false }).ids);
process.stdout.write(JSON.stringify({ rendered, ids, text_ids }));
