"""How a prompt travels in a share link: as text when short, compressed when long, by reference when very long.

- up to RAW_MAX characters: `prompt=` the text itself (readable, editable in the address bar);
- longer: `pz=` the UTF-8 text, zlib-compressed and base64url-encoded. A 4,000-token English prompt (16,779
  characters) becomes 7,602: the whole link stays under 8,000 characters, and it opens on any server;
- when even that is over COMPRESSED_MAX: `ph=` a SHA-256 prefix of the text, which the server that wrote the link
  resolves from memory (the last STORE_SIZE prompts). After that server restarts, the link says the prompt is gone
  and asks for it again; every other choice in the link still applies.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import OrderedDict

import streamlit as st

RAW_MAX = 1500  # characters a prompt keeps as plain text in a link
COMPRESSED_MAX = 7800  # characters of the compressed form; past this the link carries a reference
STORE_SIZE = 2000  # prompts the server remembers for `ph=` links


@st.cache_resource
def _store() -> OrderedDict:
    """Server-wide: prompt hash -> prompt, the most recent last."""
    return OrderedDict()


def prompt_params(prompt: str) -> list[tuple[str, str]]:
    """The link parameter that carries `prompt` (module docstring)."""
    if len(prompt) <= RAW_MAX:
        return [("prompt", prompt)]
    packed = base64.urlsafe_b64encode(zlib.compress(prompt.encode("utf-8", "surrogatepass"), 9)).decode().rstrip("=")
    if len(packed) <= COMPRESSED_MAX:
        return [("pz", packed)]
    key = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    store = _store()
    store[key] = prompt
    store.move_to_end(key)
    while len(store) > STORE_SIZE:
        store.popitem(last=False)
    return [("ph", key)]


def prompt_from(params, max_chars: int) -> tuple[str | None, str | None]:
    """(the link's prompt or None, a message when the link names one that cannot be read)."""
    if (text := params.get("prompt")) is not None:
        return text, None
    if (packed := params.get("pz")) is not None:
        try:
            raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
            inflater = zlib.decompressobj()
            data = inflater.decompress(raw, 4 * max_chars + 4)  # a bounded inflate: no decompression bombs
            if inflater.unconsumed_tail:
                return None, f"The link's prompt is longer than this server's limit of {max_chars:,} characters."
            return data.decode("utf-8", "surrogatepass"), None
        except (ValueError, zlib.error, UnicodeDecodeError):
            return None, "The link's compressed prompt (pz=) is damaged: it was probably cut when copied. Paste the prompt instead."
    if (key := params.get("ph")) is not None:
        if (text := _store().get(key)) is not None:
            return text, None
        return None, (
            "This link refers to a long prompt that the server kept in memory, and the server has restarted since. "
            "Paste the prompt and press Run: the link's other choices still apply."
        )
    return None, None
