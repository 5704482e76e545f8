"""How many bytes an analysis holds: what a memory-bounded cache weighs its entries by."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


def held_bytes(*objects) -> int:
    """Bytes of every tensor and array reachable through dataclasses, tuples, lists and dicts, each storage once.

    Storages shared between fields (one mask object for every layer, numpy views of tensors, expanded
    biases) are counted once, so the figure is what freeing the objects would give back.
    """
    seen: set[int] = set()
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj.base if isinstance(obj.base, np.ndarray) else obj  # a numpy view of a tensor has the tensor's address
            if base.ctypes.data not in seen:
                seen.add(base.ctypes.data)
                total += base.nbytes
        elif isinstance(obj, (tuple, list)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
    return total
