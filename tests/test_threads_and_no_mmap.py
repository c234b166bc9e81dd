"""More threads, and weights copied out of the mapping (`run --no-mmap`), give bit-identical
logits: threads split the rows of each matrix and a row is summed by one thread in one order,
and a copied matrix is read by the same kernels as a mapped one."""
import numpy as np

import common

PROMPT = ("The quick brown fox jumps over the lazy dog, and then it runs far away into the "
          "forest where the tall trees grow; nobody sees it again until the next morning.")


def logits_of(model, vocab_size, steps, *flags):
    path = common.tmp_path("threads_mmap.logits")
    common.run_ok([model, "-t", 0, "-n", steps, "-i", PROMPT, "--logits", path] + list(flags))
    return common.read_logits(path, vocab_size)


def test_threads_give_the_same_logits():
    for dtype in ("f32", "q8_0"):
        model = common.export(common.tmp_path(f"threads_{dtype}.bin"), "--random",
                              "256,688,2,8,4,1000,200", "--dtype", dtype, "--seed", "6",
                              timeout=300)
        one = logits_of(model, 1000, 160, "--threads", 1)
        two = logits_of(model, 1000, 160, "--threads", 2)
        assert len(one) == 160 and np.array_equal(one, two), f"{dtype}: --threads 2 changed the logits"


def test_no_mmap_gives_the_same_logits():
    for dtype in ("f32", "bf16", "q8_0"):
        model = common.export(common.tmp_path(f"no_mmap_{dtype}.bin"), "--random",
                              "96,200,2,6,2,320,200", "--dtype", dtype, "--seed", "7",
                              timeout=300)
        mapped = logits_of(model, 320, 190)
        copied = logits_of(model, 320, 190, "--no-mmap")
        assert len(mapped) == 190 and np.array_equal(mapped, copied), (
            f"{dtype}: --no-mmap changed the logits")
    # and a llama2.c file (its classifier shared with the embedding, read from the mapping)
    model, tok = common.stories()
    texts = [common.run_ok([model, "-z", tok, "-t", 0, "-n", 120, "-i", "Once upon a time"]
                           + flags).stdout for flags in ([], ["--no-mmap"])]
    assert len(texts[0]) > 200 and texts[0] == texts[1], "--no-mmap changed stories260K's text"
