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
        "llama3_rope_scaling": tf.LlamaConfig(
            **_llama_like(3),
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
        "qwen3": tf.Qwen3Config(**_llama_like(2), head_dim=8),
        "smollm3": tf.SmolLM3Config(**_llama_like(2), no_rope_layers=[1, 0], pad_token_id=0),
        "phi3": tf.Phi3Config(**_llama_like(2), pad_token_id=0),
        "starcoder2": tf.Starcoder2Config(**_llama_like(2), sliding_window=4),
        "gptj": tf.GPTJConfig(n_layer=2, n_head=4, n_embd=32, rotary_dim=4, n_positions=64, bos_token_id=0, eos_token_id=0, **COMMON),
        "cohere": tf.CohereConfig(**_llama_like(2), logit_scale=0.5, use_qk_norm=True),
        "granite": tf.GraniteConfig(
            **_llama_like(2),
            embedding_multiplier=2.0,
            attention_multiplier=0.3,
            residual_multiplier=0.5,
            logits_scaling=3.0,
            attention_bias=True,
        ),
        "gemma2": tf.Gemma2Config(
            **_llama_like(3),
            head_dim=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            attn_logit_softcapping=2.0,  # small enough that the cap bends real scores
            final_logit_softcapping=5.0,
            query_pre_attn_scalar=8,
        ),
        "gemma3_text": tf.Gemma3TextConfig(
            **_llama_like(3),
            head_dim=8,
            sliding_window=4,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=5.0,
            query_pre_attn_scalar=8,
        ),
        "olmo2": tf.Olmo2Config(**_llama_like(2)),
        "mixtral": tf.MixtralConfig(**_llama_like(2), num_local_experts=4, num_experts_per_tok=2),
        "olmoe": tf.OlmoeConfig(**_llama_like(2), num_experts=4, num_experts_per_tok=2),
        "qwen2_moe": tf.Qwen2MoeConfig(
            **_llama_like(3),
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            shared_expert_intermediate_size=16,
            mlp_only_layers=[1],  # one dense layer between MoE layers
        ),
        "qwen3_moe": tf.Qwen3MoeConfig(**_llama_like(2), head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=12),
        "gpt_oss": tf.GptOssConfig(
            **_llama_like(2),
            head_dim=8,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            attention_bias=True,
        ),
    }


def _llama_like(n_layers: int) -> dict:
    """The common shape of the Llama-style tiny configs: 4 heads over 2 key/value heads, d=32."""
    return dict(num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=40, **COMMON)


FAMILIES = tuple(_configs())


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    config = _configs()[name]
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():  # biases start at zero: give them values so bias handling is tested
        for pname, p in model.named_parameters():
            if pname.endswith(("bias", "sinks")) or "norm" in pname or "ln" in pname:
                p.add_(0.1 * torch.randn_like(p))
    return model


def token_ids(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, COMMON["vocab_size"], (n,), generator=g)


def tiny_tokenizer(bos: bool = False):
    """A real word-level tokenizer over the tiny vocabulary: "w0 w1 ..." -> ids, "<unk>" for others.

    bos=True: it puts "w1" first as its BOS token, as Llama's, Gemma's and Mistral's tokenizers add one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, COMMON["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="w1 $A", special_tokens=[("w1", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="w1")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
