"""Text inside Streamlit's Markdown (st.markdown, st.warning, st.error, st.info): what a user typed, a token, or an
error that quotes either is shown as written, never as Markdown, LaTeX or HTML."""

from __future__ import annotations

import re


def plain(text: str) -> str:
    """Text safe inside Markdown: Markdown, LaTeX ($) and HTML characters are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~$<>&:])", r"\\\1", text)


def excerpt(text: str, max_chars: int) -> str:
    """A prompt quoted in a line of Markdown: its white space as single spaces, cut at `max_chars` with "…", escaped."""
    line = " ".join(text.split())
    return plain(line if len(line) <= max_chars else line[:max_chars] + "…")
