"""Source checkpoints the export tests write themselves: Hugging Face directories (config.json,
safetensors, tokenizer.model) and llama2.c-style .pt pickles. llama2.c version-0 files come
from tests/checkpoints.py and are read back with tests/reference.py."""
import json
import os
import pickle
import shutil
import struct

import numpy as np

def bf16_truncate(x):
    """float32 -> bf16 bits by truncation (any bf16 value will do as test data)."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_safetensors(path, tensors, dtype):
    """tensors: {name: float32 array}, stored as dtype F32, F16 or BF16. Returns the values as
    stored, widened back to float32."""
    header, chunks, stored, pos = {"__metadata__": {"format": "pt"}}, [], {}, 0
    for name, x in tensors.items():
        if dtype == "F32":
            raw = np.ascontiguousarray(x, "<f4")
            stored[name] = raw.copy()
        elif dtype == "F16":
            raw = x.astype("<f2")
            stored[name] = raw.astype(np.float32)
        else:
            raw = bf16_truncate(x).astype("<u2")
            stored[name] = (raw.astype(np.uint32) << 16).view(np.float32)
        b = raw.tobytes()
        header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [pos, pos + len(b)]}
        chunks.append(b)
        pos += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in chunks:
            f.write(b)
    return stored


def hf_config(dim=64, hidden=160, layers=2, heads=4, kv_heads=2, vocab=32000, theta=10000.0,
              tied=False, arch="LlamaForCausalLM", head_dim=None, **extra):
    """A config.json dict of a small Llama-family model."""
    c = {"architectures": [arch], "model_type": "mistral" if "Mistral" in arch else "llama",
         "hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": layers,
         "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
         "rope_theta": theta, "rms_norm_eps": 1e-5, "tie_word_embeddings": tied,
         "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2,
         "hidden_act": "silu", "rope_scaling": None, "attention_bias": False,
         "torch_dtype": "float32"}
    if head_dim:
        c["head_dim"] = head_dim
    if "Mistral" in arch:
        c["sliding_window"] = None
    c.update(extra)
    return c


def write_hf_dir(folder, config, tokenizer_model, dtype="F32", shards=1, seed=0,
                 chat_template=None, generation_config=None, extra_tensors=None):
    """A Hugging Face directory with random weights; returns {name: stored float32 value}.
    The family decides the attention tensors, as transformers' modelling code has them:
    q/k/v biases for Qwen2 (and attention_bias), q_norm/k_norm of head_dim for Qwen3.
    generation_config: a dict written as generation_config.json; extra_tensors: more
    {name: array} to store (a tensor the export must refuse)."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    d, hid, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    nh = config["num_attention_heads"]
    nkv = config["num_key_value_heads"]
    hd = config.get("head_dim") or d // nh

    def mat(rows, cols, scale=1.0):
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm():
        return (1 + 0.2 * rng.standard_normal(d)).astype(np.float32)

    def vec(n, mean, std):
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    w = {"model.embed_tokens.weight": mat(V, d, 2.0)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = mat(nh * hd, d, 2.0)
        w[p + "self_attn.k_proj.weight"] = mat(nkv * hd, d, 2.0)
        w[p + "self_attn.v_proj.weight"] = mat(nkv * hd, d)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = vec(nh * hd, 0, 0.5)
            w[p + "self_attn.k_proj.bias"] = vec(nkv * hd, 0, 0.5)
            w[p + "self_attn.v_proj.bias"] = vec(nkv * hd, 0, 0.2)
        if config["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = vec(hd, 1, 0.3)
            w[p + "self_attn.k_norm.weight"] = vec(hd, 1, 0.3)
        w[p + "self_attn.o_proj.weight"] = mat(d, nh * hd, 0.5)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = mat(hid, d)
        w[p + "mlp.up_proj.weight"] = mat(hid, d)
        w[p + "mlp.down_proj.weight"] = mat(d, hid, 0.5)
    w["model.norm.weight"] = norm()
    if not config.get("tie_word_embeddings"):
        w["lm_head.weight"] = mat(V, d, 2.0)
    w.update(extra_tensors or {})

    names = list(w)
    stored = {}
    if shards == 1:
        stored = write_safetensors(os.path.join(folder, "model.safetensors"), w, dtype)
    else:
        weight_map = {}
        for s in range(shards):
            part = names[s::shards]  # interleaved, so a layer's tensors span shards
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            stored.update(write_safetensors(os.path.join(folder, fname),
                                            {n: w[n] for n in part}, dtype))
            weight_map.update({n: fname for n in part})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    if tokenizer_model:
        shutil.copy(tokenizer_model, os.path.join(folder, "tokenizer.model"))
    if chat_template is not None:
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump({"chat_template": chat_template}, f)
    if generation_config is not None:
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump(generation_config, f)
    return stored


def write_fake_pt(path, model_args, state):
    """A pickle that tests/fake_torch/torch.py's load() reads like a llama2.c .pt file."""
    with open(path, "wb") as f:
        pickle.dump({"model_args": model_args, "model": state}, f)


def llama2c_to_state(weights):
    """Weights as reference.read_llama2c returns them -> the state dict names of llama2.c's
    model.py (classifier tied)."""
    s = {"tok_embeddings.weight": weights["token_embedding"], "norm.weight": weights["final_norm"],
         "output.weight": weights["token_embedding"].copy()}
    for i, layer in enumerate(weights["layers"]):
        p = f"layers.{i}."
        s[p + "attention_norm.weight"] = layer["attn_norm"]
        s[p + "ffn_norm.weight"] = layer["ffn_norm"]
        for n in ("wq", "wk", "wv", "wo"):
            s[p + f"attention.{n}.weight"] = layer[n]
        for n in ("w1", "w2", "w3"):
            s[p + f"feed_forward.{n}.weight"] = layer[n]
    return s
