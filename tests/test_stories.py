"""The engine on a real trained model: stories260K.bin with tok512.bin (../shared/models).

  greedy text     `-t 0 -n 200` prints exactly the text ../shared/models/README.md shows
  logits          every position's logits equal the numpy reference's (tests/reference.py)
  sampling        `-t 1.0 -s 42` and `-t 0.8 -p 0.9 -s 7` choose the tokens llama2.c's sampler
                  would, given the engine's own logits
  perplexity      `--ppl` on a short story (tests/story.txt) equals the reference's; bf16 and
                  Q8_0 copies keep it within 0.5% and 2% of float32, and greedy bf16 text
                  equals float32 text

How the sampling tests know which tokens the engine chose, without parsing its text: the
python sampler (reference.Sampler, a transcription of llama2.c's) is fed the engine's logits
rows in order and picks a token from each. Then two independent checks must both hold:
  1. the reference forward pass run on exactly those tokens reproduces every logits row the
     engine wrote, which can only happen if the engine fed the same token at every position;
  2. those tokens, decoded, are exactly the text the engine printed.
"""
import os
import re
import subprocess

import numpy as np

import common
import reference
from test_forward import check_logits, engine_tokens

STEPS = 200


def readme_text():
    """The greedy output quoted in ../shared/models/README.md: the indented block after
    'begins:', its lines joined by newlines."""
    path = os.path.join(common.SHARED, "README.md")
    assert os.path.isfile(path), f"{path} is missing: the tests need ../shared/models"
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("begins:")) + 2
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    assert len(block) >= 4, f"{path}: expected the greedy text as an indented block"
    return "\n".join(block)


def decode_text(pieces, tokens):
    """The bytes llama2.c prints for a token sequence starting with BOS."""
    return b"".join(reference.decode(pieces, prev, tok) for prev, tok in zip(tokens, tokens[1:]))


def reference_model():
    config, weights = reference.read_llama2c(common.stories()[0])
    return config, weights, reference.Transformer(config, weights)


def engine_run(tag, extra):
    """Runs the engine on stories260K with --logits; returns (stdout bytes, logits rows)."""
    model, tok = common.stories()
    logits_path = common.tmp_path(f"stories_{tag}.logits")
    p = common.run_ok([model, "-z", tok, "-n", STEPS, "--logits", logits_path] + extra)
    return p.stdout, common.read_logits(logits_path, 512)


def test_reference_reproduces_readme():
    # The reference alone, no engine: greedy decoding must give the known text, which checks
    # the reference (and the checkpoint reader) against the model's own training.
    config, _, model = reference_model()
    pieces, _ = reference.read_tokenizer(common.stories()[1], config.vocab_size)
    tokens = [config.bos_id]
    for pos in range(STEPS):
        nxt = reference.greedy(model.forward(tokens[-1], pos))
        if nxt == config.bos_id:
            break
        tokens.append(nxt)
    assert decode_text(pieces, tokens).decode() == readme_text()


def test_greedy_text():
    # llama2.c prints the pieces as they come, then one newline when the loop ends.
    out, _ = engine_run("greedy", ["-t", 0])
    expected = readme_text() + "\n"
    assert out.decode(errors="replace") == expected, (
        f"stdout differs from README.md's text.\n--- expected\n{expected!r}\n"
        f"--- got\n{out.decode(errors='replace')!r}")


def test_greedy_logits_match_reference():
    # All 200 positions: the reference takes well under a second on this model.
    _, logits = engine_run("greedy_logits", ["-t", 0])
    tokens = engine_tokens(logits, [1], STEPS)
    assert len(tokens) == STEPS, f"greedy run stopped after {len(tokens)} positions"
    _, _, model = reference_model()
    worst, pos = check_logits(logits, tokens, model, "stories260K greedy", 1)
    print(f"     largest relative error {worst:.2e} (position {pos})")


def check_sampling(tag, temperature, topp, seed):
    """Runs the engine with this sampler setting and checks it chose what llama2.c's sampler
    chooses from the same logits (see the module docstring for why this is a sound check)."""
    out, logits = engine_run(tag, ["-t", temperature, "-p", topp, "-s", seed])
    sampler = reference.Sampler(512, temperature, topp, seed)
    # tokens: what the python sampler chose, after BOS. Every one is printed, the one chosen
    # at the last step too; only a BOS ends the text unprinted.
    tokens = [1]
    for pos, row in enumerate(logits):
        nxt = sampler.sample(row)
        if nxt == 1 or pos + 1 == STEPS:
            assert pos == len(logits) - 1, (
                f"{tag}: the engine went on after position {pos}, where the python sampler "
                f"{'chose BOS' if nxt == 1 else 'ran out of steps'}")
            if nxt != 1:
                tokens.append(nxt)
            break
        tokens.append(nxt)
    else:
        assert False, f"{tag}: the engine stopped after {len(logits)} positions; the python " \
                      f"sampler wanted more (its last choice: {nxt})"
    # 1. The engine ran exactly these tokens: the input at each position it wrote logits for.
    _, _, model = reference_model()
    inputs = tokens[:len(logits)]
    worst, pos = check_logits(logits, inputs, model,
                              f"stories260K {tag} (tokens from the python sampler)",
                              len(inputs))  # sampled, not argmax: no argmax check
    print(f"     {tag}: largest relative error {worst:.2e} (position {pos})")
    # 2. And printed them.
    pieces, _ = reference.read_tokenizer(common.stories()[1], 512)
    expected = decode_text(pieces, tokens) + b"\n"
    assert out == expected, (f"{tag}: stdout differs from the sampled tokens' text.\n"
                             f"--- expected\n{expected!r}\n--- got\n{out!r}")
    # A sampled story differs from the greedy one; if not, the sampler did nothing.
    assert expected.decode() != readme_text() + "\n", f"{tag}: sampling gave the greedy text"
    return tokens


def test_sampling_temperature_1():
    check_sampling("t1_s42", 1.0, 0.0, 42)


def test_sampling_top_p():
    check_sampling("t08_p09_s7", 0.8, 0.9, 7)


def test_python_sampler_rng():
    # The first outputs of llama2.c's random_u32 (seed 42) and random_f32 (seed 7), printed
    # by its C functions compiled on their own; then the two sampling paths on a made-up
    # distribution where the answer is known by inspection.
    s = reference.Sampler(4, 1.0, 0.0, 42)
    got = [s.random_u32() for _ in range(5)]
    assert got == [1456360119, 3359763283, 3393612768, 4054632243, 3283045847], got
    s = reference.Sampler(4, 1.0, 0.0, 7)
    got = [s.random_f32() for _ in range(3)]
    expected = np.array([0.820246637, 0.928290129, 0.0893495679], dtype=np.float32)
    assert np.array_equal(np.array(got, dtype=np.float32), expected), got
    probs = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    assert reference.sample_cdf(probs, np.float32(0.05)) == 0
    assert reference.sample_cdf(probs, np.float32(0.35)) == 2
    assert reference.sample_cdf(probs, np.float32(0.999)) == 3
    # top-p 0.5 keeps 0.4 and 0.3 (0.7 > 0.5); the coin scales to 0.7 of that mass.
    assert reference.sample_topp(probs, np.float32(0.5), np.float32(0.5)) == 3  # 0.35 < 0.4
    assert reference.sample_topp(probs, np.float32(0.5), np.float32(0.6)) == 2  # 0.42 >= 0.4


STORY = os.path.join("tests", "story.txt")


# ------------------------------------------------------------------------------------------
# Perplexity, and stories260K in three weight types

def stories_as(dtype):
    """stories260K as dtype: the llama2.c file itself for f32, else exported once."""
    model, tok = common.stories()
    if dtype == "f32":
        return model
    out = common.tmp_path(f"stories260K_{dtype}.bin")
    if not os.path.exists(out):
        common.export(out, "--llama2c", model, "--tokenizer", tok, "--dtype", dtype,
                      timeout=300)
    return out


def perplexity(model):
    """(tokens, nll, perplexity) that `run --ppl` prints for the story."""
    args = [model, "--ppl", STORY]
    if model.endswith("stories260K.bin"):
        args += ["-z", common.shared_model("tok512.bin")]
    out = common.run_ok(args).stdout.decode()
    m = re.fullmatch(r"ppl: tokens=(\d+) nll=([\d.]+) perplexity=([\d.]+)\n", out)
    assert m, f"--ppl printed {out!r}"
    return int(m[1]), float(m[2]), float(m[3])


def test_perplexity_f32_matches_reference():
    # The numpy reference scores the same tokens with the same windows: seq_len positions,
    # each window starting at position 0 on the last token of the one before.
    tokens_n, nll, ppl = perplexity(stories_as("f32"))
    with open(STORY, "rb") as f:
        text = f.read()
    text = text[:-1] if text.endswith(b"\n") else text  # --ppl reads files as -f does
    frame = str(len(text)).encode() + b"\n" + text
    p = subprocess.run([os.path.join(common.BIN, "tokenize"), "--bos",
                        common.shared_model("tok512.bin"), "512"], input=frame,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    ids = [int(x) for x in p.stdout.split()]
    config, weights = reference.read_llama2c(common.shared_model("stories260K.bin"))
    assert len(ids) > config.seq_len, "the story should be longer than one context window"
    total, count, start = 0.0, 0, 0
    while start < len(ids) - 1:
        model = reference.Transformer(config, weights)
        window = ids[start:start + config.seq_len]
        for pos in range(len(window) - 1):
            logits = model.forward(window[pos], pos)
            top = logits.max()
            total += top + np.log(np.exp(logits - top).sum()) - logits[window[pos + 1]]
            count += 1
        start += len(window) - 1
    assert tokens_n == count, f"engine scored {tokens_n} tokens, the reference {count}"
    # --ppl prints nll to 6 decimals, 4e-7 of this one; observed 2e-7 from the reference
    assert abs(nll - total / count) < 2e-6 * total / count, (
        f"engine nll {nll} vs reference {total / count}")
    assert 1.0 < ppl < 20.0, f"perplexity {ppl} of a TinyStories model on a tiny story"


def test_perplexity_bf16_and_q8_0():
    n32, _, p32 = perplexity(stories_as("f32"))
    for dtype, bound in (("bf16", 0.005), ("q8_0", 0.02)):
        n, _, p = perplexity(stories_as(dtype))
        assert n == n32, f"{dtype}: {n} tokens scored, f32 {n32}"
        assert abs(p / p32 - 1) < bound, (
            f"{dtype} perplexity {p:.4f} is {100 * (p / p32 - 1):+.2f}% from f32's {p32:.4f} "
            f"(allowed {100 * bound}%)")


def test_greedy_bf16_equals_f32():
    texts = {}
    for dtype in ("f32", "bf16"):
        args = [stories_as(dtype), "-t", 0, "-n", 101]  # BOS, then 100 tokens
        if dtype == "f32":
            args += ["-z", common.shared_model("tok512.bin")]
        texts[dtype] = common.run_ok(args).stdout
    assert texts["bf16"] == texts["f32"], (
        f"bf16 greedy text differs:\n{texts['bf16'][:300]!r}\nf32:\n{texts['f32'][:300]!r}")
