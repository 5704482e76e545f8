"""An lmtt route as an attribution-graph file that Neuronpedia's graph viewer and circuit-tracer's local UI load.

Their format (circuit-tracer's `create_graph_files`, Neuronpedia's graph schema): `metadata` (slug, scan, prompt,
prompt_tokens), `qParams` (pinnedIds, supernodes as [label, node_id, ...] lists, linkType, clickedId, sg_pos),
`nodes` (node_id, feature, layer, ctx_idx, feature_type, jsNodeId, clerp) and `links` (source and target node_ids,
weight). Their nodes are transcoder features; lmtt's are residual-stream states. The mapping:

- an embedding state `emb:P` is an "embedding" node at layer "E";
- the state after layer l's attention or FFN, `attn:l:P` / `ffn:l:P`, is a node at layer = its graph level
  (1 .. 2L), so the viewer stacks them in lmtt's order, of feature_type "cross layer transcoder" (the type every
  viewer draws), with `clerp`, the viewer's label, naming the state ("L23 attn · ␣is", graph.states_label) or the user's own label;
- the explained token's prediction is a "logit" node that the top state feeds with weight 1;
- edges are links; a residual and an FFN edge between the same two states are one link, their weights summed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import TYPE_CHECKING

from lmtt.engine.graph import Subgraph, node_id, states_label
from lmtt.engine.levels import level_of
from lmtt.engine.tokens import readable_tokens, visible

if TYPE_CHECKING:
    from lmtt.analysis import Analysis

REQUIRED = {
    "metadata": ("slug", "scan", "prompt_tokens", "prompt"),
    "node": ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"),
    "link": ("source", "target", "weight"),
}


def _cantor(a: int, b: int) -> int:
    """The viewers' feature id for (layer, index) in schema version 1."""
    return (a + b) * (a + b + 1) // 2 + b


def _ids(level: int, position: int, token_id: int) -> tuple[str, str, int, str]:
    """(node_id, jsNodeId, feature, layer) of an lmtt state in the viewers' conventions."""
    if level == 0:
        return f"E_{token_id}_{position}", f"E_{token_id}-{position}", position, "E"
    return f"{level}_0_{position}", f"{level}_0-{position}", _cantor(level, 0), str(level)


def neuronpedia_graph(
    analysis: Analysis,
    sub: Subgraph,
    pinned: tuple[str, ...] = (),
    groups: dict[str, list[str]] | None = None,
    labels: dict[str, str] | None = None,
    clicked: str | None = None,
) -> dict:
    """The route `sub` as a graph file (module docstring). `pinned`, `groups` ({label: [node, ...]}) and `labels`
    ({node: text}) use lmtt node ids ("ffn:23:4"); they become qParams' pinnedIds and supernodes, and the nodes' clerps."""
    labels, groups = labels or {}, groups or {}
    token_ids = analysis.trace.token_ids.tolist()
    shown = readable_tokens(analysis)
    nodes, lmtt_to_np = [], {}
    for level, position in sub.node_keys():
        name = node_id(level, position)
        nid, js, feature, layer = _ids(level, position, token_ids[position])
        lmtt_to_np[name] = nid
        default = states_label([name], shown)
        feature_type = "embedding" if level == 0 else "cross layer transcoder"
        nodes.append(
            {"node_id": nid, "feature": feature, "layer": layer, "ctx_idx": position, "feature_type": feature_type,
             "jsNodeId": js, "clerp": labels.get(name, default), "influence": None, "activation": None, "lmtt_node": name}
        )  # fmt: skip
    root_level, root_position = sub.root
    top = analysis.predictions(root_position, 1)[0]
    logit_id = f"{2 * analysis.n_layers + 1}_{top.token_id}_{root_position}"
    nodes.append(
        {"node_id": logit_id, "feature": top.token_id, "layer": str(2 * analysis.n_layers + 1), "ctx_idx": root_position,
         "feature_type": "logit", "jsNodeId": f"L_{top.token_id}-{root_position}",
         "clerp": f"Output {visible(top.token)} (p={top.score:.3f})", "influence": None, "activation": None,
         "token_prob": top.score, "is_target_logit": True}
    )  # fmt: skip
    weights: dict[tuple[str, str], float] = {}
    for edge in sub.edges():
        pair = (lmtt_to_np[edge["source"]], lmtt_to_np[edge["target"]])
        weights[pair] = weights.get(pair, 0.0) + float(edge["weight"])
    links = [{"source": s, "target": t, "weight": w} for (s, t), w in weights.items()]
    if root_level == level_of("ffn", analysis.n_layers - 1):  # the output reads the top state whole
        links.append({"source": lmtt_to_np[node_id(*sub.root)], "target": logit_id, "weight": 1.0})
    missing = [n for n in (*pinned, *labels, *(m for ms in groups.values() for m in ms)) if n not in lmtt_to_np]
    if missing:
        raise ValueError(f"not on this route, so not in the file: {', '.join(sorted(set(missing)))}")
    digest = hashlib.sha1(json.dumps([analysis.tokens, sub.root, sub.threshold]).encode("utf-8", "surrogatepass")).hexdigest()[:10]
    slug = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"lmtt-{analysis.model_name}-{digest}")
    return {
        "metadata": {
            "slug": slug,
            "scan": re.sub(r"[^a-zA-Z0-9_.-]", "-", analysis.model_name),
            "prompt_tokens": list(analysis.tokens),
            "prompt": "".join(analysis.tokens),
            "node_threshold": sub.threshold,
            "schema_version": 1,
            "info": {
                "description": f"lmtt information-flow route to token {root_position} at threshold {sub.threshold}",
                "generator": {"name": "lmtt"},
                "create_time_ms": int(time.time() * 1000),
            },
        },
        "qParams": {
            "pinnedIds": [lmtt_to_np[n] for n in pinned],
            "supernodes": [[label, *(lmtt_to_np[m] for m in members)] for label, members in groups.items()],
            "linkType": "both",
            "clickedId": lmtt_to_np.get(clicked or "", ""),
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def neuronpedia_json(analysis: Analysis, sub: Subgraph, **kwargs) -> bytes:
    return json.dumps(neuronpedia_graph(analysis, sub, **kwargs), ensure_ascii=False).encode()
