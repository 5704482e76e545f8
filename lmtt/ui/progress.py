"""A long question in the page: a progress bar with the step count and an estimate of the time left, and Cancel.

Cancel is a Streamlit button: pressing it asks for a rerun, which stops the running script at its next progress
update. The rerun then says where the question stopped (the callback runs before the page does).
"""

from __future__ import annotations

import time

import streamlit as st

from lmtt.ui.state import ss


class Steps:
    """`steps(done, total)`: the library's on_progress, drawn as a bar under a Cancel button."""

    def __init__(self, name: str, what: str, units: str = "steps"):
        self.name, self.what, self.units = name, what, units
        self.start = time.perf_counter()
        self.holder = st.empty()  # the button and the bar go away when the question is answered
        with self.holder.container():
            st.button("Cancel", key=f"cancel_{name}", on_click=_cancel, args=(name, what, units))
            self.bar = st.progress(0.0, text=f"{what}: starting…")

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        ss[f"_steps_{self.name}"] = (done, total, elapsed)
        text = f"{self.what}: {done} of {total} {self.units} done · {elapsed:.0f} s"
        if 0 < done < total:
            text += f" · about {elapsed / done * (total - done):.0f} s left"
        self.bar.progress(min(done / max(total, 1), 1.0), text=text)

    def close(self) -> None:
        ss.pop(f"_steps_{self.name}", None)
        self.holder.empty()


def _cancel(name: str, what: str, units: str) -> None:
    done, total, elapsed = ss.pop(f"_steps_{name}", (0, 0, 0.0))
    ss[f"_cancelled_{name}"] = f"{what} cancelled with {done} of {total} {units} done ({elapsed:.0f} s)."


def cancelled(name: str) -> str | None:
    """What the last Cancel of question `name` stopped, once (None when it was not cancelled)."""
    return ss.pop(f"_cancelled_{name}", None)
