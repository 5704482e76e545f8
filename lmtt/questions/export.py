"""Files for an analysis: the graph (JSON, GraphML), its contributions (CSV) and the predictions (CSV).

The same bytes back the dashboard's download buttons and `python -m lmtt analyze --out DIR`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import pandas as pd

from lmtt.engine.graph import EDGE_KINDS, Subgraph, node_id, parse_node
from lmtt.engine.levels import kind_of, layer_of
from lmtt.questions.curation import Curation
from lmtt.questions.neuronpedia import neuronpedia_json

NEURONPEDIA_FILE = "graph-neuronpedia.json"  # for Neuronpedia's graph viewer and circuit-tracer's local UI

if TYPE_CHECKING:  # questions take an Analysis; they never import the facade
    from lmtt.analysis import Analysis


def graph_json(analysis: Analysis, sub: Subgraph) -> bytes:
    data = {"model": analysis.model_name, "tokens": list(analysis.tokens), "threshold": sub.threshold, **sub.to_dict()}
    return json.dumps(data, ensure_ascii=False, indent=1).encode()


def graph_graphml(analysis: Analysis, sub: Subgraph) -> bytes:
    g = sub.to_networkx()
    for node, attrs in g.nodes(data=True):
        attrs["token"] = analysis.tokens[parse_node(node)[2]]
    buffer = io.BytesIO()
    nx.write_graphml(g, buffer)
    return buffer.getvalue()


def contributions_table(analysis: Analysis, sub: Subgraph) -> pd.DataFrame:
    """One row per edge: layer, kind, source and target token, weight (built from the subgraph's arrays)."""
    tokens = np.array(analysis.tokens, dtype=object)
    return pd.DataFrame(
        {
            "layer": layer_of(sub.level),
            "into": [kind_of(lv) for lv in sub.level.tolist()],
            "kind": np.array(EDGE_KINDS, dtype=object)[sub.kind],
            "source_node": [node_id(lv, p) for lv, p in zip(sub.source_level.tolist(), sub.source.tolist())],
            "source_position": sub.source,
            "source_token": tokens[sub.source],
            "target_position": sub.target,
            "target_token": tokens[sub.target],
            "weight": sub.weight,
        }
    )


def predictions_table(analysis: Analysis, token: int = -1, k: int = 20) -> pd.DataFrame:
    preds = analysis.predictions(token, k)
    return pd.DataFrame(
        {
            "rank": range(1, len(preds) + 1),
            "token": [p.token for p in preds],
            "id": [p.token_id for p in preds],
            "prob": [p.score for p in preds],
        }
    )


def export_files(
    analysis: Analysis, token: int = -1, threshold: float = 0.04, node: str | None = None, curation: Curation | None = None
) -> dict[str, bytes]:
    """File name -> bytes for the paths_to(token, threshold) view, or the paths to `node`; the Neuronpedia file carries
    the curation's pins, groups and labels that are on that route."""
    sub = analysis.paths_to(token, threshold) if node is None else analysis.paths_to_node(node, threshold)
    on_route = {n["id"] for n in sub.nodes()}
    c = curation or Curation()
    groups = {k: list(m) for k, v in c.groups.items() if len(m := [x for x in v if x in on_route]) >= 2}
    curated = {
        "pinned": tuple(p for p in c.pins if p in on_route),
        "groups": groups,
        "labels": {k: v for k, v in c.labels.items() if k in on_route},
    }
    return {
        "graph.json": graph_json(analysis, sub),
        "graph.graphml": graph_graphml(analysis, sub),
        "contributions.csv": contributions_table(analysis, sub).to_csv(index=False).encode(),
        "predictions.csv": predictions_table(analysis, token).to_csv(index=False).encode(),
        NEURONPEDIA_FILE: neuronpedia_json(analysis, sub, clicked=node, **curated),
    }


def write_files(
    analysis: Analysis, out_dir: str | Path, token: int = -1, threshold: float = 0.04, node: str | None = None, only: str | None = None
) -> list[Path]:
    """Write the view's files (or only the one named `only`) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in export_files(analysis, token, threshold, node).items():
        if only is not None and name != only:
            continue
        (out / name).write_bytes(data)
        written.append(out / name)
    return written
