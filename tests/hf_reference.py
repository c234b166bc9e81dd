"""hf_logits: the Hugging Face LlamaForCausalLM forward in numpy float64, from its semantics
(rotate-half RoPE on the unpermuted q_proj/k_proj rows, repeat_kv for grouped-query attention,
causal softmax). It is deliberately independent of tests/reference.py, which uses the engine's
convention (RoPE rotating adjacent pairs), so comparing the two on an exported file checks
export.py's permutation of the q and k rows without trusting either convention's code."""
import numpy as np


def rmsnorm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1 + np.exp(-x))


def causal_attention(q, k, v):
    """q (heads, T, hd); k, v (heads, T, hd) -> (T, heads * hd)."""
    heads, T, hd = q.shape
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ v).transpose(1, 0, 2).reshape(T, heads * hd)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def hf_logits(w, config, tokens):
    """w: {HF tensor name: float array}; config: the config.json dict. -> (T, vocab)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    hd = config.get("head_dim") or config["hidden_size"] // n_heads
    eps, theta = config["rms_norm_eps"], config.get("rope_theta", 10000.0)
    T = len(tokens)
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    freqs = np.outer(np.arange(T), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)  # (T, hd)
    cos, sin = np.cos(emb), np.sin(emb)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, n_heads, hd).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, n_kv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, n_kv, hd).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = n_heads // n_kv  # repeat_kv: query head j uses key/value head j // rep
        k = np.broadcast_to(k[:, None], (n_kv, rep, T, hd)).reshape(n_heads, T, hd)
        v = np.broadcast_to(v[:, None], (n_kv, rep, T, hd)).reshape(n_heads, T, hd)
        x = x + causal_attention(q, k, v) @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return x @ head.T
