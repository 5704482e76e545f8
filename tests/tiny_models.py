"""Tiny random-weight models of every supported family, built from configs (no downloads).

Weights are initialised with a large std so that attention is far from
uniform and the identities are tested on non-trivial numbers.
"""

from __future__ import annotations

import torch
import transformers as tf

COMMON = {"vocab_size": 97, "initializer_range": 0.3}


def _configs() -> dict[str, tf.PretrainedConfig]:
    return {
        "gpt2": tf.GPT2Config(n_layer=3, n_head=4, n_embd=32, n_positions=64, bos_token_id=0, eos_token_id=0, **COMMON),
        "llama_gqa_bias": tf.LlamaConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=40,
            attention_bias=True,
            mlp_bias=True,
            **COMMON,
        ),
        "mistral": tf.MistralConfig(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=32, intermediate_size=40, **COMMON
        ),
        "mistral_sliding_window": tf.MistralConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=40,
            sliding_window=4,  # shorter than the test prompts: a real (boolean) mask reaches the attention
            **COMMON,
        ),
        "qwen2": tf.Qwen2Config(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=40, **COMMON
        ),
        "gemma": tf.GemmaConfig(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=32, intermediate_size=40, head_dim=8, **COMMON
        ),
        "gpt_neox_parallel": tf.GPTNeoXConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=40,
            rotary_pct=0.5,
            use_parallel_residual=True,
            **COMMON,
        ),
        "gpt_neox_sequential": tf.GPTNeoXConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=40,
            rotary_pct=0.25,
            use_parallel_residual=False,
            **COMMON,
        ),
        "opt": tf.OPTConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            ffn_dim=40,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            **COMMON,
        ),
        "phi": tf.PhiConfig(
            num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=40, partial_rotary_factor=0.5, **COMMON
        ),
    }


FAMILIES = tuple(_configs())


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    config = _configs()[name]
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():  # biases start at zero: give them values so bias handling is tested
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname or "ln" in pname:
                p.add_(0.1 * torch.randn_like(p))
    return model


def token_ids(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, COMMON["vocab_size"], (n,), generator=g)


def tiny_tokenizer():
    """A real word-level tokenizer over the tiny vocabulary: "w0 w1 ..." -> ids, "<unk>" for others."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, COMMON["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
