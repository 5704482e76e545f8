"""Interventions on heads and neurons: what to change, and how it is applied during a forward pass.

A head edit changes that head's context vector (its slice of the attention
output projection's input); a neuron edit changes that neuron's activation (its
slice of the FFN output projection's input; in a mixture-of-experts layer the
neuron id is virtual, see lmtt.engine.experts); an expert edit scales the router
weight of one expert wherever it was chosen (zero or scale only). Modes:
  zero   the slice becomes 0
  scale  the slice is multiplied by `factor`
  mean   the slice at position i becomes its mean over positions 0..i (causal_mean): a position never sees
         later tokens, so an edited run explains a generated token as if the prompt ended there
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

MODES = ("zero", "mean", "scale")
KINDS = ("head", "neuron", "expert")


@dataclass(frozen=True)
class Edit:
    kind: str  # "head" | "neuron" | "expert"
    layer: int
    index: int
    mode: str = "zero"
    factor: float = 0.0  # for mode "scale"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"edit kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in MODES:
            raise ValueError(f"edit mode must be one of {MODES}, got {self.mode!r}")
        if not torch.isfinite(torch.tensor(float(self.factor))):
            raise ValueError(f"edit factor must be finite, got {self.factor!r}")

    def __str__(self) -> str:
        suffix = f"x{self.factor:g}" if self.mode == "scale" else self.mode
        return f"{self.kind}:{self.layer}.{self.index}:{suffix}"

    @classmethod
    def parse(cls, text: str) -> Edit:
        """'head:3.2:zero', 'neuron:5.100:mean', 'head:3.2:x0.5', 'expert:1.3:zero' (the form str() writes)."""
        m = re.fullmatch(r"(head|neuron|expert):(\d+)\.(\d+):(zero|mean|x(-?[0-9.]+(?:e-?\d+)?))", text.strip())
        if not m:
            raise ValueError(f"not an edit: {text!r} (expected e.g. head:3.2:zero, neuron:5.100:mean, head:3.2:x0.5, expert:1.3:zero)")
        kind, layer, index, mode, factor = m.groups()
        if factor is not None:
            return cls(kind, int(layer), int(index), "scale", float(factor))
        return cls(kind, int(layer), int(index), mode)

    @property
    def part_scale(self) -> float:
        """How the edited unit's attributable parts scale (a mean-ablated head writes no source-attributable part)."""
        return {"zero": 0.0, "mean": 0.0, "scale": self.factor}[self.mode]


def causal_mean(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """x with position i along `dim` replaced by the mean of positions 0..i: the mean that position i can see."""
    count = torch.arange(1, x.shape[dim] + 1, device=x.device, dtype=x.dtype)  # (T,)
    return x.cumsum(dim) / count.reshape(-1, *([1] * (x.dim() - 1 - dim % x.dim())))


def apply(x: torch.Tensor, edits: list[Edit], width: int) -> torch.Tensor:
    """A copy of a projection input (..., T, units * width) with the edits applied to units along the last dim.

    Positions are the second-to-last dimension ((B, T, .)) or, for models that
    flatten the batch (OPT's FFN), the first of a 2-D input.
    """
    x = x.clone()
    units = x.view(*x.shape[:-1], -1, width)  # (..., T, units, width)
    for e in edits:
        if e.mode == "zero":
            units[..., e.index, :] = 0
        elif e.mode == "scale":
            units[..., e.index, :] *= e.factor
        else:
            units[..., e.index, :] = causal_mean(units[..., e.index, :], dim=-2)  # (..., T, width)
    return x
