"""A layer's neuron value vectors, read where the weights are and upcast a request at a time.

W_down holds a neuron's value vector as one row: a dense FFN's (N, d), or, in a mixture of experts,
each expert's (N_e, d) then the shared expert's (N_s, d), numbered as one list of virtual ids (expert
e's neuron n is row e * N_e + n). The rows are views of the model's own parameters, in its dtype:
a float32 copy of every layer's W_down would be 7.5 GB beside an 8B model's 16 GB of bf16 weights,
and a Mixtral's experts 60 GB. Reads return float32, for the rows asked for only.
"""

from __future__ import annotations

import torch

BUDGET_BYTES = 64 * 2**20  # the float32 rows that one step of a weighted sum upcasts at most


class ValueVectors:
    """(N, d) value vectors as row blocks of the weights (views, in the model's dtype)."""

    def __init__(self, blocks: list[torch.Tensor]):
        self.blocks = [b.detach() for b in blocks]  # each (n_i, d), a view of a parameter
        sizes = torch.tensor([b.shape[0] for b in self.blocks])
        self.starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])  # (P + 1,) first row of each block
        self.shape = torch.Size((int(self.starts[-1]), self.blocks[0].shape[1]))
        self.dtype = self.blocks[0].dtype
        self.device = self.blocks[0].device

    def __getitem__(self, ids: int | torch.Tensor) -> torch.Tensor:
        """Float32 rows: (d,) for one id, (*ids.shape, d) for a tensor of ids."""
        if isinstance(ids, int):
            if not -self.shape[0] <= ids < self.shape[0]:
                raise IndexError(f"row {ids} is out of range for {self.shape[0]} value vectors")
            ids %= self.shape[0]
            part = int(torch.searchsorted(self.starts, torch.tensor(ids), right=True)) - 1
            return self.blocks[part][ids - int(self.starts[part])].float()
        flat = ids.reshape(-1).long().to(self.device)  # (M,)
        if len(self.blocks) == 1:
            return self.blocks[0][flat].float().reshape(*ids.shape, -1)
        out = torch.empty(flat.shape[0], self.shape[1], device=self.device)  # (M, d)
        part = torch.searchsorted(self.starts.to(self.device), flat, right=True) - 1  # (M,)
        for p in torch.unique(part).tolist():
            pick = (part == p).nonzero(as_tuple=True)[0]
            out[pick] = self.blocks[p][flat[pick] - int(self.starts[p])].float()
        return out.reshape(*ids.shape, -1)

    def weighted_sum(self, acts: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """(T, d) sum_m acts[t, m] * row(ids[t, m]) (row m where ids is None), in float32 steps of BUDGET_BYTES.

        acts (T, M); ids (T, M) virtual ids (a mixture of experts), or None for all rows in order.
        """
        t, m = acts.shape
        d = self.shape[1]
        out = torch.zeros(t, d, device=acts.device)  # (T, d)
        if ids is None:  # rows in order: a step is a slice of neurons
            step = max(1, BUDGET_BYTES // (4 * d))
            for s in range(0, m, step):
                out += acts[:, s : s + step] @ self[torch.arange(s, min(s + step, m))].to(acts.device)
            return out
        step = max(1, BUDGET_BYTES // (4 * d * m))  # positions per step: (step, M, d) float32 rows
        for s in range(0, t, step):
            out[s : s + step] = torch.einsum("tm,tmd->td", acts[s : s + step], self[ids[s : s + step]].to(acts.device))
        return out


def times_transposed(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(..., out) float32 x @ w.T for a weight w (out, in) in any dtype: a slice of w's rows upcast at a time.

    The unembedding is (V, d): a float32 copy of a bf16 8B model's is 2.1 GB per call.
    """
    x = x.float().to(w.device)
    if w.dtype == torch.float32:
        return x @ w.T
    step = max(1, BUDGET_BYTES // (4 * w.shape[1]))
    return torch.cat([x @ w[s : s + step].float().T for s in range(0, w.shape[0], step)], dim=-1)
