"""Token text a person can read: the pieces of a multi-byte character show as their bytes.

A byte-level tokenizer can split one character (an emoji, a CJK character) over
several tokens; decoding each token alone gives `�`. Here each such piece shows
its bytes, `⟨F0 9F 98⟩`, and the token that completes the character shows its
bytes followed by the character: `⟨80⟩😀`.
"""

from __future__ import annotations

import re
from functools import lru_cache

REPLACEMENT = "\ufffd"
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def piece_bytes(piece: str) -> bytes | None:
    """The bytes behind a tokenizer piece (byte-level BPE, or SentencePiece's <0xAB>); None when unknown."""
    if m := _SP_BYTE.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    decoder = _byte_decoder()
    if piece and all(ch in decoder for ch in piece):
        return bytes(decoder[ch] for ch in piece)
    return None


def _sequence_length(lead: int) -> int:
    """How many bytes a UTF-8 character starting with `lead` has; 0 for a byte that cannot start one."""
    if lead < 0x80:
        return 1
    for n, (low, high) in ((2, (0xC2, 0xDF)), (3, (0xE0, 0xEF)), (4, (0xF0, 0xF4))):
        if low <= lead <= high:
            return n
    return 0


def _hex(data: bytes | list[int]) -> str:
    return "⟨" + " ".join(f"{b:02X}" for b in data) + "⟩"


def byte_texts(texts: list[str], pieces: list[bytes | None]) -> list[str]:
    """Each token's text; tokens whose text has `�` are rebuilt from their bytes, carrying a split character across tokens."""
    out, carry = [], b""
    for text, data in zip(texts, pieces):
        if REPLACEMENT not in text or data is None:
            out.append(text)
            carry = b""
            continue
        parts, here = [], []  # `here`: bytes of the character in progress that this token holds
        for byte in data:
            if carry and 0x80 <= byte <= 0xBF:
                carry += bytes([byte])
                here.append(byte)
            else:
                if carry:  # a character cut short: its bytes stay bytes
                    parts.append(_hex(here))
                carry, here = b"", []
                n = _sequence_length(byte)
                if n == 1:
                    parts.append(chr(byte))
                    continue
                if n == 0:
                    parts.append(_hex([byte]))
                    continue
                carry, here = bytes([byte]), [byte]
            if len(carry) == _sequence_length(carry[0]):
                char = carry.decode("utf-8", errors="replace")
                parts.append(char if len(here) == len(carry) else _hex(here) + char)
                carry, here = b"", []
        if here:
            parts.append(_hex(here))
        out.append("".join(parts))
    return out


def token_text(runner, token_id: int) -> str:
    """One vocabulary token's text (a prediction, a lens entry): a piece of a multi-byte character shows its bytes,
    `⟨E2 80⟩`, instead of decoding to `�`."""
    text = runner.decode(token_id)
    tokenizer = getattr(runner, "tokenizer", None)
    if tokenizer is None or REPLACEMENT not in text:
        return text
    return byte_texts([text], [piece_bytes(tokenizer.convert_ids_to_tokens([token_id])[0])])[0]


def readable_tokens(analysis) -> tuple[str, ...]:
    """The analysed prompt's tokens as readable text (see the module docstring)."""
    tokens = analysis.tokens
    tokenizer = getattr(analysis.runner, "tokenizer", None)
    if tokenizer is None or not any(REPLACEMENT in t for t in tokens):
        return tokens
    pieces = [piece_bytes(p) for p in tokenizer.convert_ids_to_tokens(analysis.trace.token_ids.tolist())]
    return tuple(byte_texts(list(tokens), pieces))


BYTES = re.compile(r"(⟨[0-9A-F]{2}(?: [0-9A-F]{2})*⟩)")  # the bytes of a split character, kept as they are


def visible(token: str) -> str:
    """A token with whitespace and control characters made visible (plain text, not escaped)."""
    return "".join(part if BYTES.fullmatch(part) else _visible_chars(part) for part in BYTES.split(token)) or "∅"


def _visible_chars(token: str) -> str:
    out = []
    for ch in token:
        if ch == " ":
            out.append("␣")
        elif ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        elif not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)
