"""Progress in the page: a gate that keeps updates rare, and a long question's bar with the step count, an estimate
of the time left, and Cancel.

Each update is a message that the browser draws, on the cores the question runs on: on 2 cores, the bar and Cancel
drawn at the start of a 0.5 s faithfulness curve slowed its passes by a fifth. So a question shows them only once it
has run SHOW_AFTER_S, and updates them at most every EVERY_S.

Cancel is a Streamlit button: pressing it asks for a rerun, which stops the running script at its next progress
update. The rerun then says where the question stopped (the callback runs before the page does).
"""

from __future__ import annotations

import math
import time

import streamlit as st

from lmtt.ui.state import ss

SHOW_AFTER_S = 0.4  # a question answered sooner draws no bar (nothing to cancel in that time)
EVERY_S = 0.25


class Gate:
    """Called once per update: True at most every `every_s`, and not before `after_s` from `start` (by default the
    first call)."""

    def __init__(self, every_s: float, after_s: float = 0.0, start: float | None = None):
        self.every_s, self.after_s, self.start = every_s, after_s, start
        self.last = -math.inf

    def __call__(self) -> bool:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        if now - self.start < self.after_s or now - self.last < self.every_s:
            return False
        self.last = now
        return True


class Steps:
    """`steps(done, total)`: the library's on_progress, drawn as a bar under a Cancel button."""

    def __init__(self, name: str, what: str, units: str = "steps", show_after_s: float = SHOW_AFTER_S, every_s: float = EVERY_S, at=None):
        """`at`: the two placeholders (st.empty) that Cancel and the bar replace, by default two new ones. A question
        passes its pressed button's place and the next one: what the page drew there before would otherwise stay,
        faded, under the bar until the question ends."""
        self.name, self.what, self.units = name, what, units
        self.start = time.perf_counter()
        self.due = Gate(every_s, show_after_s, self.start)
        self.places = at if at is not None else (st.empty(), st.empty())  # emptied when the question is answered
        for place in self.places:
            place.empty()
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        ss[f"_steps_{self.name}"] = (done, total, elapsed)  # for Cancel's message, whether drawn or not
        if not self.due():
            return
        if self.bar is None:
            self.places[0].button("Cancel", key=f"cancel_{self.name}", on_click=_cancel, args=(self.name, self.what, self.units))
            self.bar = self.places[1].progress(0.0)
        text = f"{self.what}: {done} of {total} {self.units} done · {elapsed:.0f} s"
        if 0 < done < total:
            text += f" · about {elapsed / done * (total - done):.0f} s left"
        self.bar.progress(min(done / max(total, 1), 1.0), text=text)

    def close(self) -> None:
        ss.pop(f"_steps_{self.name}", None)
        for place in self.places:
            place.empty()


def _cancel(name: str, what: str, units: str) -> None:
    done, total, elapsed = ss.pop(f"_steps_{name}", (0, 0, 0.0))
    ss[f"_cancelled_{name}"] = f"{what} cancelled with {done} of {total} {units} done ({elapsed:.0f} s)."


def cancelled(name: str) -> str | None:
    """What the last Cancel of question `name` stopped, once (None when it was not cancelled)."""
    return ss.pop(f"_cancelled_{name}", None)
