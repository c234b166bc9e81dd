"""Chat mode (-m chat): the templates' exact tokens, the KV cache kept across turns, the end of
an answer, and a session in a real terminal (tmux).

  templates       `--print-tokens` ids of two turns of each template on the Llama 2 vocabulary
                  equal sentencepiece's encoding of the text between the special tokens plus
                  the special ids (the oracle: ../shared/models/tokenizer.model)
  KV cache        two turns through a pipe on stories260K: -v says only the new tokens were
                  prefilled, and every logits row equals the numpy reference run once over the
                  whole conversation, so the second turn saw the first one's cache
  end of answer   a model built to always say one token ends its answer at <|im_end|> or EOS
  terminal        tmux: type a line at the "User: " prompt, read the answer, leave with Ctrl-D
"""
import os
import re
import shutil
import subprocess
import time

import numpy as np

import checkpoints
import common
import reference
from test_forward import check_logits

SYSTEM = "You are terse."
TURNS = ["Hello there, who are you?", "Tell me a joke about </s> and <|im_end|>."]


# ---------------------------------------------------------------------------------------------
# Oracles and models

def sentencepiece_pair():
    """(sp, sp_without_dummy_prefix) for the Llama 2 tokenizer.model. The second is the same
    model with normalizer_spec.add_dummy_prefix set to false, edited in the serialized proto:
    ModelProto field 3 is the NormalizerSpec, whose field 3 is add_dummy_prefix."""
    import sentencepiece as spm
    proto = common.read_bytes(common.shared_model("tokenizer.model"))

    def varint(data, at):
        value = shift = 0
        while True:
            b = data[at]
            at += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, at

    def put_varint(value):
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    def fields(data):
        """(field number, wire type, raw bytes of the whole field) for each field."""
        at = 0
        while at < len(data):
            start = at
            key, at = varint(data, at)
            wire = key & 7
            if wire == 0:
                _, at = varint(data, at)
            elif wire == 1:
                at += 8
            elif wire == 2:
                n, at = varint(data, at)
                at += n
            elif wire == 5:
                at += 4
            else:
                raise ValueError(f"wire type {wire}")
            yield key >> 3, wire, data[start:at]

    out = bytearray()
    edited = False
    for number, wire, raw in fields(proto):
        if number == 3 and wire == 2:
            _, body_at = varint(raw, 0)
            _, body_at = varint(raw, body_at)
            body = raw[body_at:]
            spec = b"".join(r for n, _, r in fields(body) if n != 3) + b"\x18\x00"
            raw = b"\x1a" + put_varint(len(spec)) + spec
            edited = True
        out += raw
    assert edited, "tokenizer.model has no normalizer_spec"
    plain = common.sentencepiece()
    bare = spm.SentencePieceProcessor()
    bare.LoadFromSerializedProto(bytes(out))
    assert plain.encode("Hi") != bare.encode("Hi"), "the dummy prefix edit had no effect"
    return plain, bare


def llama2_pieces(extra=()):
    """The Llama 2 vocabulary (tokenizer.bin) with extra pieces appended."""
    pieces, scores = reference.read_tokenizer(common.shared_model("tokenizer.bin"), 32000)
    return pieces + [p.encode() for p in extra], scores + [0.0] * len(extra)


def write_model(name, extra=(), template="none", says=None, seed=1):
    """A tiny TLLM model on the Llama 2 vocabulary plus extra pieces. With says=ID its
    greedy choice is always ID: every embedding is the same vector, the layers add nothing
    (wo and w2 are zero), and only classifier row ID is non-zero. Returns the path."""
    pieces, scores = llama2_pieces(extra)
    c = reference.Config(dim=8, hidden_dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
                         vocab_size=len(pieces), seq_len=512, shared_classifier=says is None)
    w = checkpoints.random_weights(c, seed)
    if says is not None:
        w["token_embedding"] = np.ones((c.vocab_size, c.dim))
        for layer in w["layers"]:
            layer["wo"] = np.zeros_like(layer["wo"])
            layer["w2"] = np.zeros_like(layer["w2"])
        w["classifier"] = np.zeros((c.vocab_size, c.dim))
        w["classifier"][says] = 1.0
    path = common.tmp_path(name)
    checkpoints.export_tllm(path, c, w, pieces, scores, chat_template=template)
    return path


def print_tokens(model, args=(), turns=TURNS, system=SYSTEM):
    """The ids --print-tokens gives each turn (the first from -i, the rest from stdin)."""
    cmd = [model, "-m", "chat", "--print-tokens", "-i", turns[0]] + list(args)
    if system is not None:
        cmd += ["-y", system]
    p = common.run_ok(cmd, input="\n".join(turns[1:]).encode() + b"\n")
    lines = p.stdout.decode().splitlines()
    assert len(lines) == len(turns), f"{len(lines)} lines of ids for {len(turns)} turns: {lines}"
    return [[int(t) for t in line.split()] for line in lines]


# ---------------------------------------------------------------------------------------------
# The templates, token for token

def expected(template, sp, bare, specials):
    """The two turns of TURNS as each template's reference tokenization renders them:
    sp.encode for text at the start or after BOS, bare.encode (no dummy prefix) after any
    other special token; `specials` maps a marker to its id when it is one token."""
    def render(parts, at_start):
        ids, text, after_bos = [], "", at_start
        def flush():
            nonlocal text, after_bos
            if text:
                ids.extend(sp.encode(text) if after_bos else bare.encode(text))
            text, after_bos = "", False
        for kind, value in parts:
            if kind == "special" and value in specials:
                flush()
                ids.append(specials[value])
                after_bos = value == "<s>"
            else:
                text += value
        flush()
        return ids

    S, T = lambda v: ("special", v), lambda v: ("text", v)
    u1, u2 = TURNS
    if template == "llama2":
        first = [S("<s>"), T(f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{u1} [/INST]")]
        second = [S("</s>"), S("<s>"), T(f"[INST] {u2} [/INST]")]
    elif template == "chatml":
        def user(u):
            return [S("<|im_start|>"), T(f"user\n{u}"), S("<|im_end|>"), T("\n"),
                    S("<|im_start|>"), T("assistant\n")]
        first = [S("<s>"), S("<|im_start|>"), T(f"system\n{SYSTEM}"), S("<|im_end|>"),
                 T("\n")] + user(u1)
        second = [S("<|im_end|>"), T("\n")] + user(u2)
    else:
        def user(u):
            return [S("<|user|>"), T(f"\n{u}"), S("</s>"), T("\n"), S("<|assistant|>"), T("\n")]
        first = [S("<s>"), S("<|system|>"), T(f"\n{SYSTEM}"), S("</s>"), T("\n")] + user(u1)
        second = [S("</s>"), T("\n")] + user(u2)
    # the second turn continues the sequence: only text after its own BOS gets the prefix
    return [render(first, True), render(second, False)]


def test_templates_exact_tokens_llama2_vocabulary():
    """Each template on the plain Llama 2 vocabulary, where <|im_start|> and <|user|> are text
    and only <s> and </s> are special ids."""
    sp, bare = sentencepiece_pair()
    model = write_model("chat_vocab32000.bin", template="zephyr")  # the header says zephyr
    specials = {"<s>": 1, "</s>": 2}
    for name in ("llama2", "chatml", "zephyr"):
        got = print_tokens(model, ["--template", name])
        want = expected(name, sp, bare, specials)
        for turn in range(2):
            assert got[turn] == want[turn], (
                f"{name} turn {turn + 1}:\n got  {got[turn]}\n want {want[turn]}\n"
                f" got  {[sp.id_to_piece(i) for i in got[turn]]}\n"
                f" want {[sp.id_to_piece(i) for i in want[turn]]}")
    # Llama 2 as llama2.c renders it: BOS, then one sentencepiece encoding of the whole turn
    llama2 = print_tokens(model, ["--template", "llama2"])
    assert llama2[0] == [1] + sp.encode(
        f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{TURNS[0]} [/INST]")
    # Text the user types is never a special token, even when it spells one.
    assert 2 not in llama2[1][2:], f"the user's '</s>' became EOS: {llama2[1]}"
    # Without --template the header's zephyr is used; the flag overrides it.
    assert print_tokens(model) == print_tokens(model, ["--template", "zephyr"])
    assert print_tokens(model) != llama2
    # Without a system prompt its part is left out.
    no_system = print_tokens(model, ["--template", "zephyr"], system=None)
    assert no_system[0] == [1] + sp.encode(f"<|user|>\n{TURNS[0]}") + [2] + bare.encode(
        "\n<|assistant|>\n")


def test_templates_exact_tokens_chatml_vocabulary():
    """ChatML on a vocabulary that has <|im_start|> and <|im_end|> as pieces (as a ChatML
    fine-tune adds them): each is one id, and the text after it has no dummy prefix."""
    sp, bare = sentencepiece_pair()
    model = write_model("chat_vocab32002.bin", extra=["<|im_start|>", "<|im_end|>"], template="chatml")
    got = print_tokens(model)
    want = expected("chatml", sp, bare, {"<s>": 1, "</s>": 2, "<|im_start|>": 32000,
                                         "<|im_end|>": 32001})
    assert got == want, f"\n got  {got}\n want {want}"
    assert got[0][:2] == [1, 32000] and got[1][0] == 32001, got
    # the user's own "<|im_end|>" stays text: 32001 appears only where the template puts it
    assert got[1].count(32001) == 2, got[1]


def test_llama2c_file_defaults_to_llama2():
    """A llama2.c file names no template: Llama 2's is used, the same as --template llama2."""
    model, tok = common.shared_model("stories260K.bin"), common.shared_model("tok512.bin")
    default = print_tokens(model, ["-z", tok])
    assert default == print_tokens(model, ["-z", tok, "--template", "llama2"])
    assert default != print_tokens(model, ["-z", tok, "--template", "chatml"])
    assert default[0][0] == 1 and default[1][:2] == [2, 1], default


# ---------------------------------------------------------------------------------------------
# The end of an answer

def stats(stderr):
    """The `key: value` lines of -v."""
    return {k: float(v) for k, v in re.findall(r"^(\w+): ([0-9.]+)$", stderr.decode(), re.M)}


def test_answer_ends_at_end_marker_or_eos():
    """A model that always says <|im_end|> (ChatML) or </s> (Zephyr) answers with nothing, and
    the next turn starts right after: only the prompts are ever fed."""
    cases = [("chatml", ["<|im_start|>", "<|im_end|>"], 32001),
             ("zephyr", [], 2), ("llama2", [], 2)]
    for name, extra, says in cases:
        model = write_model(f"chat_says_{says}_{name}.bin", extra=extra, says=says)
        turns = print_tokens(model, ["--template", name])
        logits = common.tmp_path(f"chat_says_{name}.logits")
        p = common.run_ok([model, "-m", "chat", "--template", name, "-y", SYSTEM, "-i",
                           TURNS[0], "-t", "0", "-v", "--logits", logits],
                          input=TURNS[1].encode() + b"\n")
        st = stats(p.stderr)
        assert st["generated_tokens"] == 0, (name, p.stderr.decode())
        assert st["prompt_tokens"] == len(turns[0]) + len(turns[1]), (name, st, turns)
        rows = common.read_logits(logits, 32000 + len(extra))
        assert len(rows) == st["prompt_tokens"], (name, len(rows), st)
        out = p.stdout.decode()
        assert out.count("Assistant: \n") == 2, (name, out)


def test_answer_cut_by_n_feeds_its_last_token_next_turn():
    """A model that always says "Hi" with -n 3: each answer is three tokens, the third one
    shown but not yet fed; the next turn feeds it first, then the template's closing."""
    hi = reference.read_tokenizer(common.shared_model("tokenizer.bin"), 32000)[0].index(b" Hi")
    model = write_model("chat_says_hi.bin", says=hi)
    turns = print_tokens(model, ["--template", "zephyr"])
    p = common.run_ok([model, "-m", "chat", "--template", "zephyr", "-y", SYSTEM, "-i", TURNS[0],
                       "-t", "0", "-n", "3", "-v"], input=TURNS[1].encode() + b"\n")
    st = stats(p.stderr)
    assert st["generated_tokens"] == 6, p.stderr.decode()
    assert st["prompt_tokens"] == len(turns[0]) + 1 + len(turns[1]), (st, turns)
    assert p.stdout.decode().count("Assistant: Hi Hi Hi\n") == 2, p.stdout.decode()


# ---------------------------------------------------------------------------------------------
# Two turns through a pipe: the cache is kept, nothing is processed twice

def test_chat_pipe_keeps_the_kv_cache():
    model, tok = common.shared_model("stories260K.bin"), common.shared_model("tok512.bin")
    turns = ["Once upon a time", "The dog ran"]
    n = 5
    ids = print_tokens(model, ["-z", tok], turns=turns, system=None)
    logits_path = common.tmp_path("chat_pipe.logits")
    p = common.run_ok([model, "-z", tok, "-m", "chat", "-t", "0", "-n", n, "-v",
                       "--logits", logits_path], input=("\n".join(turns) + "\n").encode())
    st = stats(p.stderr)
    # Each answer is cut by -n after 5 tokens; its last one is fed at the next turn's start.
    assert st["generated_tokens"] == 2 * n, p.stderr.decode()
    assert st["prompt_tokens"] == len(ids[0]) + 1 + len(ids[1]), (st, ids)
    rows = common.read_logits(logits_path, 512)
    # every position once: the prompts, plus 4 of each answer's 5 tokens
    assert len(rows) == st["prompt_tokens"] + 2 * (n - 1), (len(rows), st)

    # Rebuild the conversation as the engine ran it (greedy: each answer token is the argmax
    # of the row before it) and replay it through the reference in one pass.
    tokens, answers = [], []
    at = 0
    for turn in range(2):
        feed = ids[turn] if turn == 0 else [answers[-1][-1]] + ids[turn]
        tokens += feed
        at += len(feed)
        answer = [reference.greedy(rows[at - 1])]
        for _ in range(n - 1):
            tokens.append(answer[-1])
            at += 1
            answer.append(reference.greedy(rows[at - 1]))
        answers.append(answer)
    assert at == len(rows)
    config, weights = reference.read_llama2c(model)
    check_logits(rows, tokens, reference.Transformer(config, weights), "chat", len(ids[0]))

    # The transcript: each user line, then the decoded answer.
    pieces, _ = reference.read_tokenizer(tok, 512)
    out = p.stdout.decode()
    for turn in range(2):
        prev = ids[turn][-1]
        text = b""
        for t in answers[turn]:
            text += reference.decode(pieces, prev, t)
            prev = t
        expect = f"User: {turns[turn]}\nAssistant: {text.decode().lstrip(' ')}\n"
        assert expect in out, f"expected {expect!r} in\n{out}"


def test_chat_context_full_ends_cleanly():
    """A conversation longer than the context with --no-shift: a message on stderr, exit
    status 0 (without it the oldest turns make way: tests/test_past_context.py)."""
    model, tok = common.shared_model("stories260K.bin"), common.shared_model("tok512.bin")
    lines = "\n".join(["and then the little dog ran to the park to play"] * 40) + "\n"
    p = common.run_ok([model, "-z", tok, "-m", "chat", "-t", "0", "-n", "20", "--no-shift"],
                      input=lines.encode())
    assert b"context of 512 tokens is full" in p.stderr, p.stderr
    assert p.stdout.count(b"Assistant: ") >= 3, p.stdout


def test_chat_long_user_line():
    """A user turn of 100 000 bytes is read whole (no fixed buffer) and, being longer than
    the context, ends the chat with the message rather than a crash."""
    model, tok = common.shared_model("stories260K.bin"), common.shared_model("tok512.bin")
    line = ("a" * 100000) + "\n"
    p = common.run_ok([model, "-z", tok, "-m", "chat", "--print-tokens"], input=line.encode())
    ids = p.stdout.split()
    assert len(ids) > 1000, len(ids)
    p = common.run_ok([model, "-z", tok, "-m", "chat"], input=line.encode())
    assert b"context of 512 tokens is full" in p.stderr, p.stderr


# ---------------------------------------------------------------------------------------------
# A person at a terminal

def test_chat_in_tmux():
    assert shutil.which("tmux"), "tmux is not installed"
    model, tok = common.shared_model("stories260K.bin"), common.shared_model("tok512.bin")
    socket = f"chat-test-{os.getpid()}"  # a private tmux server, ended below
    tmux = ["tmux", "-L", socket]
    root = os.getcwd()
    engine = os.path.abspath(common.RUN)
    cmd = f"cd {root} && {engine} {model} -z {tok} -m chat -t 0 -n 12; echo EXITED=$?; sleep 60"

    def screen():
        return subprocess.run(tmux + ["capture-pane", "-p", "-t", "chat"], capture_output=True,
                              text=True).stdout

    def wait_for(pattern, what):
        deadline = time.time() + 20
        while time.time() < deadline:
            text = screen()
            if re.search(pattern, text, re.S | re.M):
                return text
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen()}")

    subprocess.run(tmux + ["new-session", "-d", "-s", "chat", "-x", "120", "-y", "30", cmd],
                   check=True)
    try:
        # capture-pane drops trailing spaces: the prompt "User: " shows as "User:"
        wait_for(r"^User:$", "the first prompt")
        subprocess.run(tmux + ["send-keys", "-t", "chat", "Once upon a time", "Enter"], check=True)
        text = wait_for(r"Assistant: \S.*\nUser:$", "the answer and the next prompt")
        assert "User: Once upon a time\nAssistant: " in text, text
        subprocess.run(tmux + ["send-keys", "-t", "chat", "C-d"], check=True)
        text = wait_for(r"EXITED=\d", "the engine to exit")
        assert "EXITED=0" in text, text
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)
