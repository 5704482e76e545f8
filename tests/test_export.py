"""Exports: JSON and GraphML hold the same graph as paths_to; CSVs hold its edges and the predictions."""

import io
import json
from pathlib import Path

import networkx as nx
import pandas as pd

import lmtt
from lmtt.engine.graph import parse_node
from lmtt.questions.export import export_files

ROOT = Path(__file__).resolve().parent.parent


def test_files_describe_the_same_graph(default_runner):
    analysis = lmtt.analyze(default_runner, "The capital of France is")
    sub = analysis.paths_to(-1, 0.05)
    files = export_files(analysis, -1, 0.05)
    data = json.loads(files["graph.json"])
    assert data["tokens"] == list(analysis.tokens) and len(data["edges"]) == len(sub)
    g = nx.read_graphml(io.BytesIO(files["graph.graphml"]))
    assert g.number_of_edges() == len(sub) and g.nodes["emb:3"]["token"] == " France"
    edges = pd.read_csv(io.BytesIO(files["contributions.csv"]))
    assert len(edges) == len(sub) and abs(edges["weight"].sum() - float(sub.weight.sum())) < 1e-3
    for row, edge in zip(edges.itertuples(), sub.edges()):  # each row is the same edge as the JSON
        kind, layer, target = parse_node(edge["target"])
        assert (row.layer, row.into, row.kind, row.target_position) == (layer, kind, edge["kind"], target)
        assert row.source_position == parse_node(edge["source"])[2] and row.source_token == analysis.tokens[row.source_position]
    preds = pd.read_csv(io.BytesIO(files["predictions.csv"]))
    assert preds["token"].iloc[0] == " Paris"


def test_cli_out_writes_the_files(cli, tmp_path):
    proc = cli("analyze", "--prompt", "The capital of France is", "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contributions.csv", "graph.graphml", "graph.json", "predictions.csv"]
    assert json.loads((tmp_path / "graph.json").read_text())["edges"] == json.loads(proc.stdout)["graph"]["edges"]
