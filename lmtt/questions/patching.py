"""Activation patching between two prompts, through the engine's one patch API (lmtt.engine.hooks).

Activation patching (Meng et al. 2022; Heimersheim & Nanda 2024): run the
corrupted prompt, put one clean activation back, and measure how much of the
clean logit difference returns:

    restored = (m(patched) - m(corrupted)) / (m(clean) - m(corrupted)),   m = logit(A) - logit(B)

1 means this activation alone carries everything that differs; 0 nothing.
Cells run batched: copy b of the corrupted prompt has one cell (layer, position)
or (layer, head) patched, and one forward pass covers up to `max_batch` cells.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmtt.engine import hooks
from lmtt.engine.runner import ModelRunner, PromptError
from lmtt.questions.dla import Target, fraction_restored, json_number


@torch.no_grad()
def record(
    runner: ModelRunner, ids: torch.Tensor, sites: tuple[str, ...] = hooks.SITES
) -> tuple[dict[tuple[str, int], torch.Tensor], torch.Tensor]:
    """Every activation at `sites` of one prompt (T,): {(site, layer): (T, .)}, and its (T, V) logits."""
    seen: dict[tuple[str, int], torch.Tensor] = {}

    def keep(site: str, layer: int, x: torch.Tensor) -> None:
        if site in sites:
            seen[site, layer] = x[0].detach().clone()

    logits = runner.run_patched(ids.reshape(1, -1), keep)
    return seen, logits[0]


# ---- activation patching between a clean and a corrupted prompt ----------------------------

# each grid and the hook site it patches: block inputs, attention and FFN outputs, head contexts
SITE_OF = {"resid": "resid", "attn": "attn_update", "ffn": "ffn_update", "heads": "head_context"}
GRIDS = tuple(SITE_OF)


@dataclass(frozen=True)
class PatchingResult:
    """Restored fraction of the clean logit difference for each patched activation (see the module docstring).

    L layers, T tokens, H heads. NaN rows are not computed.
    """

    target: Target  # position, A and B (B optional: then m = logit(A))
    clean_tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    clean_value: float  # m on the clean prompt
    corrupted_value: float  # m on the corrupted prompt
    resid: torch.Tensor  # (L, T) the block input at (layer, position)
    attn: torch.Tensor  # (L, T) the attention output at (layer, position)
    ffn: torch.Tensor  # (L, T) the FFN output at (layer, position)
    heads: torch.Tensor  # (L, H) one head's output at every position
    seconds: float
    passes: int  # batched forward passes

    def to_dict(self) -> dict:
        return {
            "target": self.target.to_dict(),
            "quantity": self.target.describe(),
            "clean_tokens": list(self.clean_tokens),
            "corrupted_tokens": list(self.corrupted_tokens),
            "clean_value": self.clean_value,
            "corrupted_value": self.corrupted_value,
            "resid": _json_grid(self.resid),
            "attn": _json_grid(self.attn),
            "ffn": _json_grid(self.ffn),
            "heads": _json_grid(self.heads),
            "seconds": self.seconds,
            "passes": self.passes,
        }


def _json_grid(grid: torch.Tensor) -> list[list[float | None]]:
    """A grid for JSON: undefined or uncomputed cells (NaN) are null."""
    return [[json_number(x) for x in row] for row in grid.tolist()]


def check_lengths(clean: int, corrupted: int) -> None:
    """Patching pairs positions: a PromptError that says so when the prompts' token counts differ."""
    if corrupted != clean:
        raise PromptError(
            f"the clean prompt has {clean} tokens and the corrupted one {corrupted}: patching needs the same length "
            "(change a word for one of the same token length)"
        )


@torch.no_grad()
def patch_prompts(
    runner: ModelRunner,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    target: Target,
    max_batch: int = 128,
    sites: tuple[str, ...] = GRIDS,
    on_progress: Callable[[int, int], None] | None = None,
) -> PatchingResult:
    """Patch clean activations into the corrupted run, one at a time, and measure what each restores.

    The prompts must have the same number of tokens. Copies of the corrupted prompt run in batches of
    `max_batch`, each copy patching one cell of a grid (copies of one batch may patch different layers),
    so a grid of L x T cells costs ceil(L T / max_batch) passes. `on_progress(done, total)` follows the passes.
    """
    clean_ids, corrupted_ids = clean_ids.reshape(-1), corrupted_ids.reshape(-1)
    t = clean_ids.numel()
    check_lengths(t, corrupted_ids.numel())
    if not 0 <= target.position < t:
        raise IndexError(f"target position {target.position} is out of range for {t} tokens")
    start = time.perf_counter()
    n_layers, n_heads, hd = len(runner.blocks), runner.n_heads, runner.head_dim
    for name in sites:
        if name not in SITE_OF:
            raise ValueError(f"unknown patching site {name!r}; choose from {', '.join(GRIDS)}")
    total = 2 + sum(math.ceil(n_layers * (n_heads if name == "heads" else t) / max_batch) for name in sites)
    report = on_progress or (lambda _done, _total: None)
    report(0, total)
    clean, clean_logits = record(runner, clean_ids, tuple(SITE_OF[name] for name in sites))  # only what the grids put back
    corrupted_logits = runner.run_patched(corrupted_ids[None], lambda *_: None, at=target.position)  # (1, 1, V)
    passes = 0  # the grid's batched passes (the clean and corrupted runs are the first two of `total`)
    report(2, total)
    m_clean = float(target.measure(clean_logits[target.position]))
    m_corr = float(target.measure(corrupted_logits[0, 0]))
    grids = {name: torch.full((n_layers, n_heads if name == "heads" else t), float("nan")) for name in GRIDS}
    for name in sites:
        width = n_heads if name == "heads" else t
        cells = [(layer, unit) for layer in range(n_layers) for unit in range(width)]  # the whole grid, row by row
        for lo in range(0, len(cells), max_batch):
            chunk = cells[lo : lo + max_batch]  # copy b patches cell chunk[b]
            by_layer: dict[int, list[tuple[int, int]]] = {}
            for b, (layer, unit) in enumerate(chunk):
                by_layer.setdefault(layer, []).append((b, unit))

            def patch(site, layer, x, name=name, by_layer=by_layer):
                if site != SITE_OF[name] or layer not in by_layer:
                    return None
                source = clean[site, layer]  # (T, .)
                x = x.clone()
                for b, unit in by_layer[layer]:
                    if name == "heads":
                        x[b, :, unit * hd : (unit + 1) * hd] = source[:, unit * hd : (unit + 1) * hd]
                    else:
                        x[b, unit] = source[unit]
                return x

            logits = runner.run_patched(corrupted_ids[None].expand(len(chunk), t), patch, at=target.position)  # (B, 1, V)
            passes += 1
            report(2 + passes, total)
            m = target.measure(logits[:, 0]).cpu()  # (B,)
            restored = fraction_restored(m, m_corr, m_clean)  # NaN (undefined) when clean and corrupted m nearly agree
            for b, (layer, unit) in enumerate(chunk):
                grids[name][layer, unit] = restored[b]
    return PatchingResult(
        target,
        runner.token_strings(clean_ids),
        runner.token_strings(corrupted_ids),
        m_clean,
        m_corr,
        grids["resid"],
        grids["attn"],
        grids["ffn"],
        grids["heads"],
        time.perf_counter() - start,
        passes,
    )
