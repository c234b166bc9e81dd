"""hf_logits: the Hugging Face forward of LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM and Qwen3ForCausalLM in numpy float64, from the semantics of transformers'
modelling code: rotate-half RoPE on the unpermuted q_proj/k_proj rows (with rope_scaling
"linear" or "llama3" applied to inv_freq as transformers' rope initialisers do), the q, k and v
biases of Qwen2 (and of attention_bias), Qwen3's RMSNorm of each query and key head before
RoPE, an explicit head_dim, repeat_kv for grouped-query attention, causal softmax, and the
embedding as the classifier when tie_word_embeddings. It is deliberately independent of
tests/reference.py, which uses the engine's convention (RoPE rotating adjacent pairs), so
comparing the two on an exported file checks export.py's permutations without trusting either
convention's code."""
import numpy as np


def rmsnorm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1 + np.exp(-x))


def causal_attention(q, k, v, sliding_window=None):
    """q (heads, T, hd); k, v (heads, T, hd) -> (T, heads * hd). With a sliding window, as
    transformers' masking_utils: kv_idx <= q_idx and kv_idx > q_idx - sliding_window."""
    heads, T, hd = q.shape
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    q_idx, kv_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = kv_idx <= q_idx
    if sliding_window is not None:
        mask &= kv_idx > q_idx - sliding_window
    scores = np.where(mask, scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ v).transpose(1, 0, 2).reshape(T, heads * hd)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def inv_freq(config, hd):
    """RoPE's inv_freq as transformers computes it for config's rope_scaling: the default
    base ** (-arange(0, hd, 2) / hd); "linear" divides it by factor; "llama3" (Llama 3.1's
    _compute_llama3_parameters) divides the wavelengths above original / low_freq_factor by
    factor, keeps those below original / high_freq_factor, and interpolates the band between
    with smooth = (original / wavelength - low) / (high - low)."""
    base = config.get("rope_theta", 10000.0)
    freq = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    scaling = config.get("rope_scaling")
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return freq
    factor = scaling["factor"]
    if kind == "linear":
        return freq / factor
    assert kind == "llama3", kind
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * np.pi / freq
    scaled = np.where(wavelen > low_freq_wavelen, freq / factor, freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled)


def layer_windows(config):
    """The sliding window of each layer (None: full attention), as the configuration classes
    decide it: an explicit layer_types list; Qwen2's use_sliding_window with the layers from
    max_window_layers on; else (Mistral) sliding_window for every layer."""
    n, window = config["num_hidden_layers"], config.get("sliding_window")
    if config.get("model_type") in ("qwen2", "qwen3"):
        window = window if config.get("use_sliding_window") else None
        types = config.get("layer_types") or [
            "sliding_attention" if window is not None and i >= config.get("max_window_layers", n)
            else "full_attention" for i in range(n)]
    else:
        types = config.get("layer_types") or ["sliding_attention"] * n
    return [window if t == "sliding_attention" else None for t in types]


def hf_logits(w, config, tokens):
    """w: {HF tensor name: float array}; config: the config.json dict. -> (T, vocab)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    hd = config.get("head_dim") or config["hidden_size"] // n_heads
    eps = config["rms_norm_eps"]
    model_type = config["model_type"]
    qkv_bias = model_type == "qwen2" or config.get("attention_bias", False)
    qk_norm = model_type == "qwen3"
    T = len(tokens)
    freqs = np.outer(np.arange(T), inv_freq(config, hd))
    emb = np.concatenate([freqs, freqs], axis=-1)  # (T, hd)
    cos, sin = np.cos(emb), np.sin(emb)
    x = w["model.embed_tokens.weight"][tokens]
    windows = layer_windows(config)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."

        def proj(name, heads):
            y = h @ w[p + name + "_proj.weight"].T
            if qkv_bias:
                y = y + w[p + name + "_proj.bias"]
            return y.reshape(T, heads, hd)  # (T, heads, hd): hidden_shape

        h = rmsnorm(x, w[f"model.layers.{i}.input_layernorm.weight"], eps)
        q, k, v = proj("q", n_heads), proj("k", n_kv), proj("v", n_kv)
        if qk_norm:  # Qwen3: q_norm(q_proj(h).view(hidden_shape)), before the transpose
            q = rmsnorm(q, w[p + "q_norm.weight"], eps)
            k = rmsnorm(k, w[p + "k_norm.weight"], eps)
        q, k, v = (t.transpose(1, 0, 2) for t in (q, k, v))  # (heads, T, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = n_heads // n_kv  # repeat_kv: query head j uses key/value head j // rep
        k = np.broadcast_to(k[:, None], (n_kv, rep, T, hd)).reshape(n_heads, T, hd)
        v = np.broadcast_to(v[:, None], (n_kv, rep, T, hd)).reshape(n_heads, T, hd)
        x = x + causal_attention(q, k, v, windows[i]) @ w[p + "o_proj.weight"].T
        p = f"model.layers.{i}."
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return x @ head.T
