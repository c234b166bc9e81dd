// hf_tokenize.mjs - the reference for tests/test_bpe_tokenizer.py: Hugging Face's tokenizers.js
// (npm's @huggingface/tokenizers, pure JavaScript, offline) encodes a batch of texts with a real
// tokenizer.json, in one process.
//
//   node tests/hf_tokenize.mjs < request.json > reply.json
//
// request: {"dir": DIR holding tokenizer.json (and tokenizer_config.json), "mode": "generate" |
//           "chat", "texts": [string, ...]}
// reply:   {"ids": [[id, ...], ...], "affected": {fix: [index of a text it changed, ...]}}
//
// generate: encode(text) with add_special_tokens=True, what a prompt becomes.
// chat:     encode(text, add_special_tokens=False) with the special added tokens' text kept as
//           text: the Rust library's encode_special_tokens (transformers' split_special_tokens),
//           which tokenizers.js lacks, done by building the tokenizer without them.
//
// Where tokenizers.js is known to differ from the Rust library, which is the reference, the
// script changes it to do what the Rust library does. Each fix is one entry of FIXES below;
// `affected` lists the texts whose ids each fix changed (the ids with every fix but that one
// differ), so the test can show that its corpus reaches every known difference.
//
// Texts may stand for byte strings that are not UTF-8: the character U+F0000 + b (b >= 0x80,
// private use)
// stands for the invalid byte b. Such a character is no letter, number or space, as an invalid
// byte is to our tokenizer (unicode.h); after pre-tokenization, inside each piece, it is turned
// back into the byte b before BPE runs, so the reference merges exactly the bytes we merge.
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const LIBRARY = path.join(ROOT, ".deps/npm/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs");
if (!fs.existsSync(LIBRARY)) {
  console.error("tests/hf_tokenize.mjs: @huggingface/tokenizers is missing: run " +
                "`npm install --prefix .deps/npm @huggingface/tokenizers@0.2.0` in the repository root " +
                "(make test does it: tests/deps.sh)");
  process.exit(1);
}
const { Tokenizer } = await import(LIBRARY);

// GPT-2's byte alphabet, both ways (the same table as export.py's bytes_to_unicode).
const BYTE_TO_CHAR = [];
{
  const keep = (b) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
  let shifted = 0;
  for (let b = 0; b < 256; b++) BYTE_TO_CHAR[b] = String.fromCharCode(keep(b) ? b : 256 + shifted++);
}
const CHAR_TO_BYTE = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));
const STAND_IN = 0xf0000;

// A pre-tokenized piece in the byte alphabet with each stand-in turned back into its byte.
function restore_bytes(piece) {
  const bytes = Uint8Array.from(Array.from(piece, (c) => CHAR_TO_BYTE.get(c)));
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes); // keep a U+FEFF
  if (!/[\u{f0080}-\u{f00ff}]/u.test(text)) return piece;
  const out = [];
  for (const c of text) {
    const cp = c.codePointAt(0);
    if (cp >= STAND_IN + 0x80 && cp <= STAND_IN + 0xff) out.push(cp - STAND_IN);
    else out.push(...new TextEncoder().encode(c));
  }
  return out.map((b) => BYTE_TO_CHAR[b]).join("");
}

// The pre-tokenizers inside a (possibly Sequence) pre-tokenizer.
function pre_tokenizers(p) {
  return !p ? [] : p.tokenizers ? p.tokenizers.flatMap(pre_tokenizers) : [p];
}

// Known differences of tokenizers.js from the Rust library, each as a switch on a tokenizer.
const FIXES = {
  // Digits: the Rust library splits on char::is_numeric, the Unicode numbers (N), so "½" and
  // "²" are digits; tokenizers.js uses \d, ASCII 0-9 only (../shared/tokenizers/README.md).
  digits(tok) {
    return pre_tokenizers(tok.pre_tokenizer).filter((p) => p.constructor.name === "Digits").map((p) => {
      const each = p.config.individual_digits;
      return [p, "pattern", new RegExp(`[^\\p{N}]+|\\p{N}${each ? "" : "+"}`, "gu")];
    });
  },
  // ByteLevel's GPT-2 regex: the Rust library runs it in Oniguruma, whose \s is the White_Space
  // property (U+0085 in, U+FEFF out); tokenizers.js runs it as a JavaScript regex, whose \s is
  // not (U+0085 out, U+FEFF in). (Its Split regexes already get \p{White_Space}.)
  white_space(tok) {
    const ws = "\\p{White_Space}";
    const regex = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${ws}\\p{L}\\p{N}]+|` +
                             `${ws}+(?!\\P{White_Space})|${ws}+`, "gu");
    return pre_tokenizers(tok.pre_tokenizer)
      .filter((p) => p.constructor.name === "ByteLevel" && p.use_regex).map((p) => [p, "pattern", regex]);
  },
  // (?i:'s|...) in Llama 3's and Qwen2's Split regex: Oniguruma folds case by Unicode, where
  // U+017F (long s) folds to s, so "'ſ" is a contraction; tokenizers.js folds ASCII only.
  long_s(tok) {
    return pre_tokenizers(tok.pre_tokenizer).filter((p) => p.constructor.name === "Split" &&
                                                     p.pattern.source.includes("'[sS]")).map((p) =>
      [p, "pattern", new RegExp(p.pattern.source.replace("'[sS]", "'[sS\\u017f]"), p.pattern.flags)]);
  },
  // A byte with no token (SmolLM2 has none for 21 bytes): the Rust library leaves it out of the
  // word before merging (BPE::merge_word skips a character missing from the vocabulary when
  // there is no unk_token), so its neighbours may merge; tokenizers.js merges first and drops
  // it after, so they cannot.
  missing_bytes(tok) {
    const model = tok.model;
    const missing = BYTE_TO_CHAR.filter((c) => !model.tokens_to_ids.has(c));
    if (missing.length === 0) return [];
    const bpe = model.bpe;
    const skip = (t) => bpe.call(model, Array.from(t).filter((c) => model.tokens_to_ids.has(c)).join(""));
    return [[model, "bpe", skip]];
  },
};

// A tokenizer with every fix switchable: {tok, fixes: {name: [on(), off()]}}.
function build(json, config) {
  const tok = new Tokenizer(json, config);
  const pre = tok.pre_tokenizer;
  tok.pre_tokenizer = (text, options) => pre(text, options).map(restore_bytes);
  const fixes = {};
  for (const [name, find] of Object.entries(FIXES)) {
    const sites = find({ pre_tokenizer: pre, model: tok.model });
    if (sites.length === 0) continue;
    const saved = sites.map(([obj, key]) => obj[key]);
    fixes[name] = [() => sites.forEach(([obj, key, value]) => { obj[key] = value; }),
                   () => sites.forEach(([obj, key], i) => { obj[key] = saved[i]; })];
  }
  return { tok, fixes };
}

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const json = JSON.parse(fs.readFileSync(path.join(request.dir, "tokenizer.json"), "utf8"));
const config_path = path.join(request.dir, "tokenizer_config.json");
const config = fs.existsSync(config_path) ? JSON.parse(fs.readFileSync(config_path, "utf8")) : {};
const chat = request.mode === "chat";
if (chat) json.added_tokens = json.added_tokens.filter((t) => !t.special);
const { tok, fixes } = build(json, config);
const encode = (text) => tok.encode(text, { add_special_tokens: !chat }).ids;

for (const [on] of Object.values(fixes)) on();
const ids = request.texts.map(encode);
const affected = {};
for (const [name, [on, off]] of Object.entries(fixes)) {
  off();
  affected[name] = [];
  request.texts.forEach((text, i) => {
    if (JSON.stringify(encode(text)) !== JSON.stringify(ids[i])) affected[name].push(i);
  });
  on();
}
process.stdout.write(JSON.stringify({ ids, affected }));
