"""A stand-in for PyTorch, just enough for export.py --pt: torch.load reads a pickle of
{"model_args": dict, "model": {name: numpy array}} and wraps the arrays as tensors."""
import pickle

import numpy as np


class Tensor:
    def __init__(self, array):
        self.array = array
        self.shape = array.shape

    def float(self):
        return Tensor(self.array.astype(np.float32))

    def numpy(self):
        return self.array


def load(path, map_location=None, weights_only=False):
    with open(path, "rb") as f:
        checkpoint = pickle.load(f)
    checkpoint["model"] = {k: Tensor(v) for k, v in checkpoint["model"].items()}
    return checkpoint
