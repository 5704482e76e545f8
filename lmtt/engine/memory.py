"""Memory: how many bytes an analysis holds (what the app's cache weighs), and handing freed memory back."""

from __future__ import annotations

import ctypes
import dataclasses
import functools

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


def release_freed_memory() -> bool:
    """Hand freed heap memory back to the system (glibc's malloc_trim); False where there is no glibc.

    An analysis allocates and frees GBs of tensors from several threads; glibc keeps the freed
    pages in its per-thread arenas. Measured here (80 analyses of 16-2,000 tokens, 4 threads, the
    app's 4 GB cache holding 2.6 GB): RSS 11.1 GB without a trim after each analysis, 3.6 GB with it.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # returns whether anything was released; either way the call worked
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
