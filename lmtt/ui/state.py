"""Session state: the view a user is looking at, restored from and written to the URL, and selections."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import streamlit as st

from lmtt.analysis import Analysis
from lmtt.config import AppConfig
from lmtt.edits import Edit
from lmtt.graph import parse_node

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
ss = st.session_state


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
    prompt = qp.get("prompt")
    ss.prompt = prompt if prompt is not None else (config.sample_prompts[0] if config.sample_prompts else "")
    ss.run = (model, prompt) if prompt is not None else None
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
    ss.dataset = qp.get("dataset", "")
    ss.node, ss.edge = qp.get("node"), qp.get("edge")
    ss.edits = []
    for raw in qp.get_all("edit"):
        try:
            ss.edits.append(str(Edit.parse(raw)))
        except ValueError as e:
            warnings.append(f"Ignored edit={raw!r} in the URL: {e}")
    ss.head = _parse_pair(qp.get("head"), "head", warnings)
    ss.neuron = _parse_pair(qp.get("neuron"), "neuron", warnings)
    ss._warnings = warnings


def validate_against(analysis: Analysis) -> None:
    """Drop selections that do not fit this analysis (a stale URL, another prompt)."""
    warnings = ss.setdefault("_warnings", [])
    t = len(analysis.tokens)
    if ss.token is None:
        ss.token = t - 1
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
            warnings.append(f"Ignored {name} {pair[0]}.{pair[1]}: out of range for this model.")
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
    return kind in ("attention", "residual", "ffn") and 1 <= level <= 2 * analysis.n_layers and 0 <= src <= dst < t


def write_url() -> None:
    params = {"model": ss.model, "threshold": f"{ss.threshold:g}", "norm": "1" if ss.norm else "0"}
    if ss.run:
        params["prompt"] = ss.run[1]
        if ss.token is not None:
            params["token"] = str(ss.token)
    for name in ("node", "edge", "compare", "dataset"):
        if ss.get(name):
            params[name] = ss[name]
    for name in ("head", "neuron"):
        if ss.get(name):
            params[name] = f"{ss[name][0]}.{ss[name][1]}"
    items = list(params.items()) + [("edit", e) for e in ss.get("edits", [])]
    current = [(k, v) for k in st.query_params for v in st.query_params.get_all(k)]
    if sorted(current) != sorted(items):
        st.query_params.from_dict({k: [v for kk, v in items if kk == k] for k in dict(items)})


def select_node(node: str | None) -> None:
    ss.node, ss.edge = node, None


def select_edge(edge: str) -> None:
    ss.edge = edge
    kind, level, _src, dst = parse_edge(edge)
    layer = (level - 1) // 2
    ss.node = f"{'attn' if level % 2 else 'ffn'}:{layer}:{dst}"


def add_edit(edit: Edit) -> None:
    if str(edit) not in ss.setdefault("edits", []):
        ss.edits = [*ss.edits, str(edit)]


def clear_edits() -> None:
    ss.edits = []


def select_head(layer: int, head: int) -> None:
    ss.head = (layer, head)


def select_neuron(layer: int, neuron: int) -> None:
    ss.neuron = (layer, neuron)


def focus_layer() -> int:
    """The layer of the selected node (0 for an embedding)."""
    return max(parse_node(ss.node)[1], 0)


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


def bound(key: str) -> dict:
    """Widget kwargs that keep `key` in session state across pages (widget state itself is per page)."""
    widget_key = f"_w_{key}"
    ss[widget_key] = ss.setdefault(key, "")

    def copy() -> None:
        ss[key] = ss[widget_key]

    return {"key": widget_key, "on_change": copy}
