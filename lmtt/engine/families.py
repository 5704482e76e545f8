"""The supported-families table of the README, generated from the adapters and the checks.

tests/test_families.py measures the checks on the tiny random model of every
family and fails when the README's copy differs from this table;
`python -m tests.test_families` prints the table to paste.
"""

from __future__ import annotations

import torch

from lmtt.engine.adapters import ADAPTERS, REFUSED, Adapter
from lmtt.engine.check import TOLERANCE

EXAMPLES = {
    "gpt2": "gpt2, distilgpt2",
    "llama": "meta-llama/Llama-3.2-1B, Llama-3.1-8B",
    "mistral": "mistralai/Mistral-7B-v0.3",
    "qwen2": "Qwen/Qwen2.5-0.5B",
    "qwen3": "Qwen/Qwen3-1.7B",
    "gemma": "google/gemma-2b",
    "gemma2": "google/gemma-2-2b",
    "gemma3_text": "google/gemma-3-1b-pt",
    "smollm3": "HuggingFaceTB/SmolLM3-3B",
    "gpt_neox": "EleutherAI/pythia-70m … 12b",
    "opt": "facebook/opt-125m",
    "phi": "microsoft/phi-2",
    "phi3": "microsoft/Phi-3-mini-4k-instruct, microsoft/phi-4",
    "olmo2": "allenai/OLMo-2-0425-1B",
    "gptj": "EleutherAI/gpt-j-6b",
    "granite": "ibm-granite/granite-3.3-2b-base",
    "cohere": "CohereForAI/c4ai-command-r-v01",
    "starcoder2": "bigcode/starcoder2-3b",
    "mixtral": "mistralai/Mixtral-8x7B-v0.1",
    "olmoe": "allenai/OLMoE-1B-7B-0924",
    "qwen2_moe": "Qwen/Qwen1.5-MoE-A2.7B",
    "qwen3_moe": "Qwen/Qwen3-30B-A3B",
    "gpt_oss": "openai/gpt-oss-20b",
}

HEADER = "| family | example checkpoints | twists handled | `lmtt check` on a tiny random model |\n|---|---|---|---|"


def twists(adapter: Adapter) -> str:
    """The adapter's non-default fields, in words."""
    words = [{"rms": "RMSNorm", "layer": "LayerNorm"}[adapter.norm.kind] + (" (1 + w)" if adapter.norm.weight_offset else "")]
    if adapter.parallel_default or adapter.parallel_attr:
        words.append("parallel block" + (f" (per `{adapter.parallel_attr}`)" if adapter.parallel_attr else ""))
    if adapter.attn_post_norm:
        words.append("norms after attention and FFN")
    if adapter.residual_multiplier:
        words.append("residual multiplier")
    if adapter.logit_multiplier or adapter.logit_divisor:
        words.append("logit scale")
    if adapter.logit_softcap:
        words.append("final logit softcap")
    if adapter.experts:
        words.append("mixture of experts" + (" + shared expert" if adapter.shared_expert else ""))
    if adapter.conv1d:
        words.append("Conv1D weights")
    return ", ".join(words)


def model_twists(model) -> list[str]:
    """Twists a loaded model has that lmtt's attention and experts functions handle (read off its config and modules)."""
    config, names = model.config, [n for n, _ in model.named_modules()]
    found = []
    if getattr(config, "attn_logit_softcapping", None):
        found.append("attention softcap")
    if getattr(config, "embedding_multiplier", 1.0) not in (None, 1.0):
        found.append("embedding multiplier")
    if any(n.endswith("sinks") for n, _ in model.named_parameters()):
        found.append("attention sinks")
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        found.append("sliding-window layers")
    if any(n.endswith("q_norm") for n in names):
        found.append("q/k norms")
    if any(n.endswith("qkv_proj") for n in names):
        found.append("fused qkv")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        found.append(f"{rope['rope_type']} RoPE scaling")
    return found


def verdict(error: float) -> str:
    """The stated float32 tolerance that the checks met, not the measured error: rounding differs between CPUs."""
    tolerance = TOLERANCE[torch.float32]
    return f"all 5 identities within {tolerance:.0e}" if error <= tolerance else f"FAILS: relative error {error:.1e}"


def markdown_table(worst_errors: dict[str, float], tested_twists: dict[str, list[str]]) -> str:
    """The README table; `worst_errors` maps model_type to the largest relative error of its checks,
    `tested_twists` to the twists its tiny models exercised (model_twists)."""
    rows = []
    for family in sorted(ADAPTERS):
        checked = verdict(worst_errors[family]) if family in worst_errors else "not tested"
        handled = ", ".join([twists(ADAPTERS[family]), *tested_twists.get(family, [])])
        rows.append(f"| `{family}` | {EXAMPLES.get(family, '')} | {handled} | {checked} |")
    refused = "\n".join(f"- `{family}`: {why}." for family, why in sorted(REFUSED.items()))
    return f"{HEADER}\n" + "\n".join(rows) + f"\n\nRefused, with this message in the app and the CLI:\n{refused}\n"
