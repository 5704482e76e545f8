"""A curated route: pinned nodes, named groups (supernodes) and free-text labels, as circuit researchers keep them.

One value carries all three, in the forms they travel in: URL parameters (compact: node ids joined by commas),
a JSON file (download and upload, or a named save), and the Neuronpedia graph file's qParams and clerps. The
subgraph view keeps only the pinned nodes and groups, with the route's edges between them; a group is one node
whose edges are the sums of its members' edges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lmtt.engine.graph import Subgraph, node_id, parse_node

if TYPE_CHECKING:
    from lmtt.analysis import Analysis

MAX_LABEL = 200  # characters of a label or a group name


@dataclass(frozen=True)
class Curation:
    """Pins (lmtt node ids, in order), groups {name: members} and labels {node or group name: text}."""

    pins: tuple[str, ...] = ()
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pins or self.groups or self.labels)

    @property
    def nodes(self) -> set[str]:
        """Every node the subgraph view shows: the pins and every group's members."""
        return set(self.pins).union(*self.groups.values())

    @property
    def grouped(self) -> set[str]:
        """Every group's members."""
        return {m for members in self.groups.values() for m in members}

    @property
    def items(self) -> list[str]:
        """What the subgraph view draws as one node each: the groups (by name), then the pins outside them."""
        grouped = self.grouped
        return [*self.groups, *(p for p in self.pins if p not in grouped)]

    @property
    def positions(self) -> set[int]:
        """The token positions of the shown nodes: a packed graph keeps their columns."""
        return {parse_node(n)[2] for n in self.nodes}

    def pin(self, node: str) -> Curation:
        return self if node in self.pins else Curation((*self.pins, node), self.groups, self.labels)

    def unpin(self, node: str) -> Curation:
        return Curation(tuple(p for p in self.pins if p != node), self.groups, self.labels)

    def group(self, name: str, members: tuple[str, ...]) -> Curation:
        name = name.strip()[:MAX_LABEL]
        if not name or len(members) < 2:
            raise ValueError("a group needs a name and at least two nodes")
        return Curation(self.pins, {**self.groups, name: tuple(members)}, self.labels)

    def dissolve(self, name: str) -> Curation:
        return Curation(self.pins, {k: v for k, v in self.groups.items() if k != name}, self.labels)

    def rename(self, old: str, new: str) -> Curation:
        """The group `old` named `new`; unchanged when `new` is empty or already another group's name."""
        new = new.strip()[:MAX_LABEL]
        if not new or new == old or new in self.groups:
            return self
        return Curation(self.pins, {(new if k == old else k): v for k, v in self.groups.items()}, self.labels)

    def label(self, node: str, text: str) -> Curation:
        labels = {k: v for k, v in self.labels.items() if k != node}
        if text.strip():
            labels[node] = text.strip()[:MAX_LABEL]
        return Curation(self.pins, self.groups, labels)

    # ---- the forms it travels in --------------------------------------------------------
    def to_params(self) -> list[tuple[str, str]]:
        """URL parameters: pin=a,b,c; grp=name~a,b (repeated); lbl=node~text (repeated). Node ids hold no "~" or ","."""
        params = [("pin", ",".join(self.pins))] if self.pins else []
        params += [("grp", f"{name}~{','.join(members)}") for name, members in self.groups.items()]
        return params + [("lbl", f"{node}~{text}") for node, text in self.labels.items()]

    @classmethod
    def from_params(cls, pins: str | None, groups: list[str], labels: list[str]) -> Curation:
        pinned = tuple(p for p in (pins or "").split(",") if p)
        grouped = {}
        for raw in groups:
            name, _, members = raw.rpartition("~")
            if name and members:
                grouped[name[:MAX_LABEL]] = tuple(m for m in members.split(",") if m)
        texts = {}
        for raw in labels:
            node, sep, text = raw.partition("~")
            if sep and text:
                texts[node] = text[:MAX_LABEL]
        return cls(pinned, grouped, texts)

    def to_json(self, analysis: Analysis | None = None, name: str = "") -> str:
        groups = {k: list(v) for k, v in self.groups.items()}
        data = {"name": name, "pins": list(self.pins), "groups": groups, "labels": self.labels}
        if analysis is not None:
            data.update(model=analysis.model_name, tokens=list(analysis.tokens))
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> Curation:
        try:
            data = json.loads(text)
            pins = tuple(str(p) for p in data.get("pins", []))
            groups = {str(k)[:MAX_LABEL]: tuple(str(m) for m in v) for k, v in data.get("groups", {}).items()}
            labels = {str(k): str(v)[:MAX_LABEL] for k, v in data.get("labels", {}).items()}
        except (ValueError, AttributeError, TypeError) as e:
            raise ValueError(f"not a saved subgraph (JSON with pins, groups and labels): {e}") from None
        return cls(pins, groups, labels)

    def checked(self, analysis: Analysis) -> tuple[Curation, list[str]]:
        """This curation with every node that does not fit the analysis dropped, and what was dropped and why."""
        problems = []

        def fits(node: str) -> bool:
            try:
                analysis.state(node)  # a node of this prompt and model
                if analysis.trace.parallel and node.startswith("attn:"):
                    raise ValueError("a parallel block has no state after attention")
                return True
            except (ValueError, IndexError) as e:
                problems.append(f"{node}: {e}")
                return False

        pins = tuple(p for p in self.pins if fits(p))
        groups = {k: kept for k, v in self.groups.items() if len(kept := tuple(m for m in v if fits(m))) >= 2}
        labels = {k: v for k, v in self.labels.items() if k in groups or fits(k)}
        return Curation(pins, groups, labels), problems


def pinned_subgraph(sub: Subgraph, curation: Curation) -> Subgraph:
    """The route's edges between shown nodes only (pins and group members): what the subgraph view draws."""
    shown = curation.nodes
    ends = zip(sub.source_level.tolist(), sub.source.tolist(), sub.level.tolist(), sub.target.tolist())
    keep = np.array([node_id(sl, s) in shown and node_id(lv, t) in shown for sl, s, lv, t in ends], dtype=bool)  # (E,)
    return sub.only(keep)


def group_edges(sub: Subgraph, curation: Curation) -> list[tuple[str, str, float]]:
    """(source, target, weight) between shown nodes, with each group as one node (named by the group) and the weights
    of its members' edges summed; edges inside a group are dropped."""
    owner = {m: name for name, members in curation.groups.items() for m in members}
    summed: dict[tuple[str, str], float] = {}
    rows = zip(*(x.tolist() for x in (sub.source_level, sub.source, sub.level, sub.target, sub.weight)))
    for sl, s, lv, t, w in rows:
        a, b = node_id(sl, s), node_id(lv, t)
        a, b = owner.get(a, a), owner.get(b, b)
        if a != b:
            summed[a, b] = summed.get((a, b), 0.0) + w
    return [(a, b, w) for (a, b), w in summed.items()]


def lone_items(sub: Subgraph, curation: Curation) -> list[str]:
    """The groups (by name) and ungrouped pins that no route edge joins to another pin or group: the subgraph view
    draws them as lone dots, since it draws only direct edges between shown nodes."""
    joined = {end for a, b, _w in group_edges(pinned_subgraph(sub, curation), curation) for end in (a, b)}
    return [item for item in curation.items if item not in joined]
