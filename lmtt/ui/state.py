"""Session state: the view a user is looking at, restored from and written to the URL, and selections."""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

import streamlit as st

from lmtt.analysis import Analysis
from lmtt.engine.config import AppConfig
from lmtt.engine.edits import Edit
from lmtt.engine.graph import parse_node
from lmtt.engine.levels import kind_of, layer_of, n_levels, unit_name
from lmtt.questions.curation import Curation
from lmtt.ui.links import prompt_from, prompt_params

PAGES = (
    ("app.py", "Graph"),
    ("pages/contributions.py", "Contributions"),
    ("pages/interpretation.py", "Interpretation"),
    ("pages/compare.py", "Compare"),
    ("pages/target.py", "Target"),
    ("pages/faithfulness.py", "Faithfulness"),
    ("pages/patching.py", "Patching"),
    ("pages/dataset.py", "Dataset"),
)
THRESHOLD_MAX = 0.5
# What a share link carries on each page, besides model, prompt, token, threshold, norm, the generation boundary and edits.
PAGE_PARAMS = {
    "graph": ("root", "node", "edge", "head"),
    "contributions": ("node", "head", "neuron"),
    "interpretation": ("node", "head", "neuron"),
    "compare": ("compare",),
    "target": ("node",),  # the node its graph rings (and its workbench acts on)
    "faithfulness": (),
    "patching": (),
    "dataset": (),
}
TABS = {  # each page's tabs, first the default: the open one is in the link as tab=
    "target": ("Graph", "Heads", "Neurons", "Logit lens", "Why a head attends"),
    "interpretation": ("Head", "Neuron", "Logit lens", "Search by token", "Probe", "Intervene"),
    "patching": ("Residual stream", "Attention output", "FFN output", "Heads"),
}
# A question page's choices in its link: (URL name, session key, kind). Widget keys are set before the widget is drawn,
# so a fresh browser opens with them. Target A and contrast B are token ids (ui.questions' sentinels for the defaults).
CHOICE_PARAMS = {
    "graph": (("pinned_only", "subgraph_only", bool),),  # the workbench's "Show only the pinned subgraph"
    "target": (
        ("a", "q_target", int),
        ("b", "q_contrast", int),
        ("tab", "target_tab", TABS["target"]),
        ("qk_layer", "q_qk_layer", int),
        ("qk_head", "q_qk_head", int),
        ("qk_key", "q_qk_key", int),
        ("qk_vs", "q_qk_other", int),
        ("pinned_only", "subgraph_only", bool),
    ),
    "faithfulness": (("a", "q_target", int), ("b", "q_contrast", int), ("ablation", "q_ablation", ("mean", "zero"))),
    "patching": (("a", "q_target", int), ("b", "q_contrast", int), ("corrupt", "patch", str), ("tab", "patching_tab", TABS["patching"])),
    "interpretation": (
        ("lens", "lens_mode", ("top token", "probability", "rank")),
        ("follow", "lens_follow", str),
        ("tab", "interpretation_tab", TABS["interpretation"]),
    ),
}
DEFAULT_CHOICES = {"q_target": -1, "q_contrast": -5, "q_ablation": "mean", "lens_mode": "top token", "patch": "", "lens_follow": "",
                   "subgraph_only": False}
DEFAULT_CHOICES |= {f"{page}_tab": labels[0] for page, labels in TABS.items()}
# Cleared by a new Run, prompt or model unless the user pins them.
SELECTIONS = ("root", "node", "edge", "head", "neuron", "compare", "dataset_head", "curation")
ss = st.session_state
log = logging.getLogger("lmtt.app")


@dataclass(frozen=True)
class View:
    """What a page shows: the analysis and the user's choices on it."""

    config: AppConfig
    analysis: Analysis
    token: int  # position of the output token to explain
    threshold: float
    final_norm: bool
    node: str | None
    edge: str | None
    head: tuple[int, int] | None  # (layer, head)
    neuron: tuple[int, int] | None  # (layer, neuron)
    edits: tuple[Edit, ...] = ()  # interventions to compare against the plain run

    def focus(self) -> tuple[str, int, int]:
        """(kind, layer, position) of the selected node, else the output token's top node."""
        if self.node:
            return parse_node(self.node)
        return "ffn", self.analysis.n_layers - 1, self.token


# ---- state -----------------------------------------------------------------


def _parse_pair(raw: str | None, name: str, warnings: list[str]) -> tuple[int, int] | None:
    if not raw:
        return None
    m = re.fullmatch(r"(\d{1,4})\.(\d{1,6})", raw)
    if not m:
        warnings.append(f"Ignored {name}={raw!r} in the URL: expected LAYER.INDEX")
        return None
    return int(m.group(1)), int(m.group(2))


def _choice(raw: str, kind) -> object | None:
    """A link's value for a choice of `kind` (int: a token id; str: any text; bool: 1 or 0; a tuple: one of its
    values), or None."""
    if kind is bool:
        return {"1": True, "0": False}.get(raw)
    if kind is int:
        return int(raw) if re.fullmatch(r"-?\d{1,9}", raw) else None
    if kind is str:
        return raw
    return raw if raw in kind else None


def restore_from_url(config: AppConfig) -> None:
    """Once per session: the view the URL describes, with every bad value named and dropped."""
    if ss.get("_restored"):
        return
    qp, warnings = st.query_params, []
    ss._restored = True
    model = qp.get("model", config.default_model)
    if model not in config.models:
        warnings.append(f"Unknown model {model!r} in the URL; using {config.default_model!r}.")
        model = config.default_model
    ss.model = model
    prompt, problem = prompt_from(qp, config.max_prompt_chars)
    if problem:  # the link named a prompt that cannot be read: say so, and run nothing in its place
        warnings.append(problem)
        prompt = ""
    ss.prompt = prompt if prompt is not None else (config.sample_prompts[0] if config.sample_prompts else "")
    ss.intro = prompt is None and bool(ss.prompt)  # a first visit: the default prompt's graph, with a word on what to do
    ss.run = (model, ss.prompt) if ss.prompt else None
    ss.chat = qp.get("chat") == "1" and ss.run is not None  # chat=1: the sidebar analyses the text's chat form
    ss._link_chat = ss.chat
    ss._run_box = sidebar_input()
    ss.token = None
    if (raw := qp.get("token")) is not None:
        try:
            ss.token = int(raw)
        except ValueError:
            warnings.append(f"Ignored token={raw!r} in the URL: not an integer.")
    ss.threshold = config.default_threshold
    if (raw := qp.get("threshold")) is not None:
        try:
            value = float(raw)
            if not math.isfinite(value) or not 0 <= value <= THRESHOLD_MAX:
                raise ValueError
            ss.threshold = value
        except ValueError:
            warnings.append(f"Ignored threshold={raw!r} in the URL: expected a number from 0 to {THRESHOLD_MAX}.")
    ss.norm = qp.get("norm", "1") != "0"
    ss.compare = qp.get("compare", "")
    ss.generated_from = None
    if (raw := qp.get("gen")) is not None:
        if raw.isdigit() and int(raw) > 0:
            ss.generated_from = int(raw)
        else:
            warnings.append(f"Ignored gen={raw!r} in the URL: expected the number of prompt tokens.")
    ss.node, ss.edge, ss.root = qp.get("node"), qp.get("edge"), qp.get("root")
    ss.edits = []
    for raw in qp.get_all("edit"):
        try:
            ss.edits.append(str(Edit.parse(raw)))
        except ValueError as e:
            warnings.append(f"Ignored edit={raw!r} in the URL: {e}")
    ss.curation = Curation.from_params(qp.get("pin"), qp.get_all("grp"), qp.get_all("lbl"))
    by_name: dict[str, list[tuple[str, object]]] = {}  # a name may belong to several pages (tab=): each takes what it can
    for name, key, kind in {c for choices in CHOICE_PARAMS.values() for c in choices}:
        by_name.setdefault(name, []).append((key, kind))
    for name, options in sorted(by_name.items()):
        if (raw := qp.get(name)) is None:
            continue
        taken = [(key, value) for key, kind in options if (value := _choice(raw, kind)) is not None]
        for key, value in taken:
            ss[key] = value
        if not taken:
            kinds = {kind for _key, kind in options}
            values = sorted({v for k in kinds if isinstance(k, tuple) for v in k})
            expected = "a token id" if int in kinds else "1 or 0" if bool in kinds else "one of " + ", ".join(values)
            warnings.append(f"Ignored {name}={raw!r} in the URL: expected {expected}.")
    ss.head = _parse_pair(qp.get("head"), "head", warnings)
    ss.neuron = _parse_pair(qp.get("neuron"), "neuron", warnings)
    ss._warnings = warnings


# session keys of choices that belong to one prompt's questions (their widgets' keys start with _w_ + these)
QUESTION_CHOICES = ("q_target", "q_contrast", "q_qk_", "patch", "_w_q_target", "_w_q_contrast", "_w_patch")


def sidebar_input() -> tuple[str, bool]:
    """The sidebar's prompt text and whether the chat template wraps it: what a run is started from."""
    return ss.get("prompt", ""), bool(ss.get("chat"))


def start_run(model: str, prompt: str, generated_from: int | None = None) -> None:
    """Make (model, prompt) the analysed run. Edits and selections belong to the old run: cleared unless pinned."""
    ss.run, ss.token = (model, prompt), None
    ss._run_box = sidebar_input()  # what the run came from (its prompt may be the text's chat form)
    ss.generated_from = generated_from
    if not ss.get("pin"):
        clear_selections()


def clear_selections() -> None:
    """Selections, edits and the questions' choices (target A, contrast B, the corrupted prompt, the QK head and key)."""
    log.info("selections cleared by a new run (head %s, neuron %s, node %s)", ss.get("head"), ss.get("neuron"), ss.get("node"))
    for name in SELECTIONS:
        ss[name] = "" if name == "compare" else Curation() if name == "curation" else None
    ss.edits = []
    for name in [k for k in ss if isinstance(k, str) and k.startswith(QUESTION_CHOICES)]:
        del ss[name]


def validate_against(analysis: Analysis) -> None:
    """Drop selections that do not fit this analysis (a stale URL, another prompt)."""
    warnings = ss.setdefault("_warnings", [])
    t = len(analysis.tokens)
    if ss.get("generated_from") is not None and not 0 < ss.generated_from < t:
        warnings.append(f"Ignored gen={ss.generated_from}: the text has {t} tokens.")
        ss.generated_from = None
    if ss.token is None:  # by default explain the first generated token (its prediction is made at the prompt's last one)
        ss.token = ss.generated_from - 1 if ss.get("generated_from") else t - 1
    elif not -t <= ss.token < t:
        warnings.append(f"Token {ss.token} is out of range for {t} tokens; showing the last token.")
        ss.token = t - 1
    ss.token %= t
    if ss.node:
        try:
            analysis.state(ss.node)
        except (ValueError, IndexError) as e:
            warnings.append(f"Ignored the selected node: {e}")
            ss.node = None
    if ss.get("root"):
        try:
            analysis.paths_to_node(ss.root, 0.5)  # a node of this prompt that has paths (not a parallel block's mid state)
        except (ValueError, IndexError) as e:
            warnings.append(f"Ignored the graph's root node: {e}")
            ss.root = None
    if ss.get("curation"):
        ss.curation, dropped = ss.curation.checked(analysis)
        warnings.extend(f"Ignored a pinned, grouped or labelled node: {d}" for d in dropped)
    if ss.edge and not _edge_fits(ss.edge, analysis):
        warnings.append("Ignored the selected edge: it does not fit this prompt.")
        ss.edge = None
    kept = []
    for raw in ss.get("edits", []):
        try:
            analysis.runner.check_edit(Edit.parse(raw))
            kept.append(raw)
        except (ValueError, IndexError) as e:
            warnings.append(f"Ignored the edit {raw}: {e}")
    ss.edits = kept
    weights = analysis.runner.layer_weights
    for name, limit in (("head", lambda _layer: analysis.n_heads), ("neuron", lambda layer: weights[layer].w_down.shape[0])):
        pair = ss.get(name)
        if pair and not (0 <= pair[0] < analysis.n_layers and 0 <= pair[1] < limit(pair[0])):
            link = f"{name}={pair[0]}.{pair[1]}"
            warnings.append(f"Ignored {name} {unit_name(name, *pair)} ({link} in the link): out of range for this model.")
            ss[name] = None


def parse_edge(edge: str) -> tuple[str, int, int, int]:
    """(kind, target level, source position, target position) from the graph's edge handle."""
    _, kind, level, src, dst = edge.split("|")
    return kind, int(level), int(src), int(dst)


def _edge_fits(edge: str, analysis: Analysis) -> bool:
    try:
        kind, level, src, dst = parse_edge(edge)
    except ValueError:
        return False
    t = len(analysis.tokens)
    return kind in ("attention", "residual", "ffn") and 1 <= level < n_levels(analysis.n_layers) and 0 <= src <= dst < t


def share_params(page: str) -> list[tuple[str, str]]:
    """Exactly the state of the open view, as URL parameters (never a server path)."""
    model = ss.run[0] if ss.get("run") else ss.model  # the analysed model, not one chosen and not yet run
    params = [("model", model), ("threshold", f"{ss.threshold:g}"), ("norm", "1" if ss.norm else "0")]
    if ss.get("run"):
        text, chat = ss.get("_run_box", ("", False))
        if chat and text != ss.run[1]:  # a chat run (the toggle on, another text analysed): the words; chat=1 wraps them again
            params += [*prompt_params(text), ("chat", "1")]
        else:
            params += prompt_params(ss.run[1])
        if ss.get("generated_from"):
            params.append(("gen", str(ss.generated_from)))
        if ss.get("token") is not None:
            params.append(("token", str(ss.token)))
    for name in PAGE_PARAMS[page]:
        value = ss.get(name)
        if name == "head" and page == "graph" and not (ss.get("edge") or "").startswith("edge|attention|"):
            value = None  # on the Graph page a head is a part of the selected attention edge
        if isinstance(value, tuple):
            value = f"{value[0]}.{value[1]}"
        if value:
            params.append((name, value))
    if page in ("graph", "target") and ss.get("curation"):
        params += ss.curation.to_params()
    defaults = {**DEFAULT_CHOICES, **ss.get("_link_defaults", {})}
    for name, key, _kind in CHOICE_PARAMS.get(page, ()):
        value = ss.get(key)
        if value is not None and value != defaults.get(key):
            params.append((name, str(int(value)) if isinstance(value, bool) else str(value)))
    return params + [("edit", e) for e in ss.get("edits", [])]


def write_url(page: str) -> None:
    items = share_params(page)
    current = [(k, v) for k in st.query_params for v in st.query_params.get_all(k)]
    if sorted(current) != sorted(items):
        st.query_params.from_dict({k: [v for kk, v in items if kk == k] for k in dict(items)})


def share_link() -> str:
    """The address of the open view, every value of a repeated parameter (edit=, grp=, lbl=) included."""
    base = (st.context.url or "").split("?")[0]
    return f"{base}?{urlencode([(k, v) for k in st.query_params for v in st.query_params.get_all(k)])}"


def show_link(page: str) -> None:
    """Write the URL and show it to copy; the page's body can rewrite both (rewrite_link)."""
    write_url(page)
    ss._link_at = (page, st.empty())
    ss._link_at[1].code(share_link(), language=None)


def rewrite_link() -> None:
    """The URL and the shown link again, after the page's body changed a choice they carry (the sidebar wrote them
    before the body ran: a changed target would otherwise reach the link one click late)."""
    if (at := ss.get("_link_at")) is not None:
        write_url(at[0])
        at[1].code(share_link(), language=None)


def link_default(**defaults: object) -> None:
    """Choices whose default the page works out (the QK tab's start head): at these values the link leaves them out."""
    ss.setdefault("_link_defaults", {}).update(defaults)


def select_node(node: str | None) -> None:
    ss.node, ss.edge = node, None


def select_edge(edge: str) -> None:
    """An edge handle: its target node is selected too; a head belongs to one edge, so the old one is dropped."""
    if edge != ss.get("edge"):
        ss.head = None
    ss.edge = edge
    kind, level, _src, dst = parse_edge(edge)
    ss.node = f"{kind_of(level)}:{layer_of(level)}:{dst}"


def set_edit(edit: Edit) -> None:
    """Add an edit; one of the same head or neuron is replaced (a second click changes the mode, it does not stack)."""
    kept = [e for e in ss.get("edits", []) if _unit(Edit.parse(e)) != _unit(edit)]
    ss.edits = [*kept, str(edit)]


def _unit(edit: Edit) -> tuple[str, int, int]:
    return edit.kind, edit.layer, edit.index


def clear_edits() -> None:
    ss.edits = []


def remove_edit(edit: str) -> None:
    ss.edits = [e for e in ss.get("edits", []) if e != edit]


def describe_edit(edit: Edit) -> str:
    """'head L23.H4 zeroed', 'neuron L5.N100 mean-ablated', 'expert L1.E3 scaled ×0.5'."""
    done = {"zero": "zeroed", "mean": "mean-ablated", "scale": f"scaled ×{edit.factor:g}"}[edit.mode]
    return f"{edit.kind} {unit_name(edit.kind, edit.layer, edit.index)} {done}"


def select_head(layer: int, head: int) -> None:
    ss.head = (layer, head)


def select_neuron(layer: int, neuron: int) -> None:
    ss.neuron = (layer, neuron)


T = TypeVar("T")


def kept(name: str, analysis: Analysis, key: Hashable, build: Callable[[], T]) -> T:
    """What `build` makes of `analysis` for `key`, kept in the session until either changes: a rerun that shows the same
    view (a node click) reuses it. The analysis is held weakly, so that the analysis cache can still free it."""
    held = ss.get("_kept", {}).get(name)
    if held is not None and held[0]() is analysis and held[1] == key:
        return held[2]
    value = build()
    ss.setdefault("_kept", {})[name] = (weakref.ref(analysis), key, value)
    return value


def curation_key() -> tuple:
    """The session's curation as a value (a key for `kept`): pins, groups and labels as the link writes them."""
    curation = ss.get("curation")
    return tuple(curation.to_params()) if curation else ()


def chart_click(key: str) -> dict | None:
    """The newest click on a plotly chart (on_select="rerun"), once: None when nothing new."""
    state = ss.get(key)
    points = list(state["selection"]["points"]) if state and state.get("selection") else []
    signature = repr(points)
    if not points or ss.get(f"_seen_{key}") == signature:
        return None
    ss[f"_seen_{key}"] = signature
    return dict(points[0])


# ---- widgets -----------------------------------------------------------------


def bound(key: str, default="") -> dict:
    """Widget kwargs that keep `key` (first `default`) in session state across pages (widget state itself is per page)."""
    widget_key = f"_w_{key}"
    ss[widget_key] = ss.setdefault(key, default)

    def copy() -> None:
        ss[key] = ss[widget_key]

    return {"key": widget_key, "on_change": copy}
