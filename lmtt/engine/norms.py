"""Norms with their per-position scale frozen: the affine maps that make decompositions exact.

An RMSNorm or LayerNorm maps a row x to

    norm(x) = s(x) * w ⊙ P x + b,     s(x) = 1 / sqrt(mean((P x)^2) + eps)

where P x = x for RMSNorm and P x = x - mean(x) for LayerNorm (P is a
projection, so linear), w is the gain (Gemma's RMSNorm uses 1 + weight) and b
the bias. s(x) is the only non-linear factor. Frozen at its value s_i in one
forward pass, the norm of a sum of parts at position i is

    norm(sum_k z_k) = sum_k s_i * w ⊙ P z_k + b,

an exact sum: each part's image is linear in the part, and b is one extra
constant part. This is how lmtt attributes through norms that sit after a
sublayer (Gemma-2/3, OLMo-2), through the final norm (direct logit
attribution), and through the input norms of a query and a key (QK
attribution). The scale is read off the module's own output where it is known
(so no epsilon name needs guessing), else computed from the formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EPS_NAMES = ("eps", "variance_epsilon", "epsilon")


@dataclass(frozen=True)
class NormSpec:
    """A family's norm, as data: RMSNorm or LayerNorm, and how its weight becomes the gain."""

    kind: str = "rms"  # "rms" | "layer"
    weight_offset: float = 0.0  # Gemma's RMSNorm multiplies by (1 + weight)


@dataclass(frozen=True)
class FrozenNorm:
    """norm(x_i) = scale_i * gain ⊙ P x_i + bias, with scale_i frozen (one per row)."""

    scale: torch.Tensor  # (T,) or () for one row
    gain: torch.Tensor | None  # (d,)
    bias: torch.Tensor | None  # (d,)
    center: bool  # P removes the mean (LayerNorm)

    def linear(self, x: torch.Tensor, rows: slice | int | None = None) -> torch.Tensor:
        """The linear part applied to x (..., d) whose leading row axis matches scale[rows] (or broadcasts)."""
        scale = self.scale if rows is None else self.scale[rows]
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        if self.gain is not None:
            x = x * self.gain
        return x * scale.reshape(*scale.shape, *([1] * (x.dim() - scale.dim())))

    def adjoint(self, d: torch.Tensor, row: int | None = None) -> torch.Tensor:
        """(d,) the read-out that gives a part its effect before the map: d . linear(z) = adjoint(d) . z at that row.

        scale * P(gain ⊙ d), because P and the gain are symmetric. `row` picks the row's scale (None: a 0-d scale).
        """
        x = d if self.gain is None else d * self.gain.to(d.device)
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        scale = self.scale if row is None or self.scale.dim() == 0 else self.scale[row]
        return x * scale.to(x.device)

    def direction(self, x: torch.Tensor) -> torch.Tensor:
        """gain ⊙ P x, without the per-row scale: the part of the map shared by every row."""
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        return x if self.gain is None else x * self.gain


def gain_and_bias(module: nn.Module, spec: NormSpec) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    weight = getattr(module, "weight", None)
    gain = None if weight is None else weight.detach().float() + spec.weight_offset
    bias = getattr(module, "bias", None)
    return gain, (None if bias is None else bias.detach().float())


def epsilon(module: nn.Module) -> float:
    for name in EPS_NAMES:
        value = getattr(module, name, None)
        if isinstance(value, int | float):
            return float(value)
    raise ValueError(f"cannot find the epsilon of norm {type(module).__name__} (looked for {EPS_NAMES})")


def freeze(module: nn.Module, spec: NormSpec, x: torch.Tensor, y: torch.Tensor | None = None) -> FrozenNorm:
    """The frozen map of `module` at inputs x (T, d) or (d,); y, the module's own output, fixes the scale exactly.

    With y: scale_i = <y_i - b, gain ⊙ P x_i> / |gain ⊙ P x_i|^2 (a one-parameter fit that is exact
    when y is that norm's output). Without y: the formula with the module's epsilon.
    """
    gain, bias = gain_and_bias(module, spec)
    center = spec.kind == "layer"
    x = x.float()
    frozen = FrozenNorm(torch.ones(x.shape[:-1], device=x.device), gain, bias, center)
    direction = frozen.direction(x)  # (T, d)
    if y is not None:
        target = y.float() - (0 if bias is None else bias)
        scale = (target * direction).sum(-1) / (direction * direction).sum(-1).clamp_min(torch.finfo(torch.float32).tiny)
    else:
        px = x - x.mean(-1, keepdim=True) if center else x
        scale = torch.rsqrt(px.pow(2).mean(-1) + epsilon(module))
    return FrozenNorm(scale, gain, bias, center)
