"""The one patch API: a function that may replace the activation at a named site, during any forward pass.

    patch(site, layer, x) -> a replacement of x's shape, or None to leave x alone

x is seen as (B, T, .) (per-head norms aside), whatever shape the module used (OPT's FFN flattens to (B*T, .)).
Each site name has one meaning, single-prompt traces and batched passes alike:

  "resid"         the block's input hidden state (B, T, d)
  "head_context"  the attention output projection's input (B, T, H*hd), after any edits: head h is slice h*hd:(h+1)*hd
  "neuron_acts"   a dense FFN's output projection input (B, T, N), after any edits
  "attn_update"   what the residual receives from attention (B, T, d): after a post-norm where the family has one,
                  before a residual multiplier (Granite applies it after the block's hooks)
  "ffn_update"    the same for the FFN (a mixture-of-experts block's whole output)
  "attn_in"       the attention module's input hidden state (B, T, d): after the family's input norm, if any
  "q_norm"        the input of a query norm inside the attention (Qwen3, OLMo-2, Gemma-3, Cohere): (B, T, H*hd), or
                  per head in the module's own layout, (B, T, H, hd) or (B, H, T, hd)
  "k_norm"        likewise for keys. For these two, a replacement is taken as the norm's *output*

The runner installs the hooks once (lmtt.engine.runner); they call the patch held in a ContextVar,
so a thread or session that is not patching sees a no-op and two sessions never see each other's patch.
`runner.trace(ids, patch=...)` records a patched pass; `runner.run_patched(ids, patch)` runs B copies, recording nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

Patch = Callable[[str, int, torch.Tensor], "torch.Tensor | None"]
SITES = ("resid", "head_context", "neuron_acts", "attn_update", "ffn_update")  # what activation patching records
_ACTIVE: contextvars.ContextVar[tuple[Patch, int, int] | None] = contextvars.ContextVar("lmtt_patch", default=None)


@contextmanager
def patching(patch: Patch | None, batch: int, n_tokens: int) -> Iterator[None]:
    """Within the block, forward passes on (batch, n_tokens) inputs in this context go through `patch`."""
    token = _ACTIVE.set(None if patch is None else (patch, batch, n_tokens))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def apply(site: str, layer: int, x: torch.Tensor | tuple) -> torch.Tensor | tuple | None:
    """The active patch's replacement of x at a site, in x's own shape (a module's (output, extras) tuple too); None: unchanged."""
    active = _ACTIVE.get()
    if active is None:
        return None
    if isinstance(x, tuple):
        new = apply(site, layer, x[0])
        return None if new is None else (new, *x[1:])
    patch, b, t = active
    shape = x.shape if x.dim() > 3 else (b, t, x.shape[-1])  # per-head q/k norms keep their own layout
    out = patch(site, layer, x.reshape(shape))
    return None if out is None else out.to(x.dtype).reshape(x.shape)
