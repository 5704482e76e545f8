"""Files for an analysis: the graph (JSON, GraphML), its contributions (CSV) and the predictions (CSV).

The same bytes back the dashboard's download buttons and `python -m lmtt analyze --out DIR`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import networkx as nx
import pandas as pd

from lmtt.analysis import Analysis
from lmtt.graph import Subgraph, parse_node


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
    """One row per edge: layer, kind, source and target token, weight."""
    rows = []
    for edge in sub.edges():
        kind, layer, target = parse_node(edge["target"])
        source = parse_node(edge["source"])[2]
        rows.append(
            {
                "layer": layer,
                "into": kind,
                "kind": edge["kind"],
                "source_position": source,
                "source_token": analysis.tokens[source],
                "target_position": target,
                "target_token": analysis.tokens[target],
                "weight": edge["weight"],
            }
        )
    return pd.DataFrame(
        rows, columns=["layer", "into", "kind", "source_position", "source_token", "target_position", "target_token", "weight"]
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


def export_files(analysis: Analysis, token: int = -1, threshold: float = 0.04) -> dict[str, bytes]:
    """File name -> bytes for the paths_to(token, threshold) view."""
    sub = analysis.paths_to(token, threshold)
    return {
        "graph.json": graph_json(analysis, sub),
        "graph.graphml": graph_graphml(analysis, sub),
        "contributions.csv": contributions_table(analysis, sub).to_csv(index=False).encode(),
        "predictions.csv": predictions_table(analysis, token).to_csv(index=False).encode(),
    }


def write_files(analysis: Analysis, out_dir: str | Path, token: int = -1, threshold: float = 0.04) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in export_files(analysis, token, threshold).items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written
