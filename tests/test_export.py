"""Exports: JSON and GraphML hold the same graph as paths_to; CSVs hold its edges and the predictions."""

import io
import json
from pathlib import Path

import jsonschema
import networkx as nx
import pandas as pd
import pytest

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
    expected = ["contributions.csv", "graph-neuronpedia.json", "graph.graphml", "graph.json", "predictions.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    assert json.loads((tmp_path / "graph.json").read_text())["edges"] == json.loads(proc.stdout)["graph"]["edges"]


# Neuronpedia's graph schema (hijohnnylin/neuronpedia, apps/webapp/app/api/graph/graph-schema.json): its required fields
# and their types, re-stated here; the viewer's other demands (numeric layers, a logit's "(p=...)") are asserted below.
GRAPH_SCHEMA = {
    "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["slug", "scan", "prompt_tokens", "prompt"],
            "properties": {
                "slug": {"type": "string", "pattern": "^[a-zA-Z0-9_.-]+$"},
                "scan": {"type": "string", "pattern": "^[a-zA-Z0-9_.-]+$"},
                "prompt_tokens": {"type": "array", "items": {"type": "string"}},
                "prompt": {"type": "string"},
                "node_threshold": {"type": "number"},
            },
        },
        "qParams": {
            "type": "object",
            "properties": {
                "pinnedIds": {"type": "array", "items": {"type": "string"}},
                "supernodes": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
                "linkType": {"type": "string"},
                "clickedId": {"type": "string"},
                "sg_pos": {"type": "string"},
            },
        },
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"],
                "properties": {
                    "node_id": {"type": "string"},
                    "feature": {"type": ["integer", "null"]},
                    "layer": {"type": ["string", "integer"]},
                    "ctx_idx": {"type": "integer"},
                    "feature_type": {"type": "string"},
                    "jsNodeId": {"type": "string"},
                    "clerp": {"type": "string"},
                    "influence": {"type": ["number", "null"]},
                    "activation": {"type": ["number", "null"]},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "weight"],
                "properties": {"source": {"type": "string"}, "target": {"type": "string"}, "weight": {"type": "number"}},
            },
        },
    },
}


def test_the_neuronpedia_file_follows_the_viewers_schema(default_runner):
    """The route as Neuronpedia / circuit-tracer graph JSON: schema-valid, every link between two of its nodes, the
    viewers' drawn node types, and pins, a group and a label carried into qParams and the clerps."""
    from lmtt.questions.neuronpedia import neuronpedia_graph

    a = lmtt.analyze(default_runner, "The capital of France is")
    sub = a.paths_to(-1, 0.04)
    graph = neuronpedia_graph(
        a, sub, pinned=("ffn:29:4", "attn:23:4"), groups={"country mover": ["attn:23:4", "ffn:22:3"]},
        labels={"attn:23:4": "moves the country"}, clicked="ffn:29:4",
    )  # fmt: skip
    jsonschema.validate(json.loads(json.dumps(graph)), GRAPH_SCHEMA)
    ids = {n["node_id"] for n in graph["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in graph["links"])
    assert {n["feature_type"] for n in graph["nodes"]} == {"embedding", "cross layer transcoder", "logit"}
    assert max(int(n["layer"]) for n in graph["nodes"] if n["layer"].isdigit() and n["feature_type"] != "logit") > 0
    logit = next(n for n in graph["nodes"] if n["feature_type"] == "logit")
    assert logit["clerp"].startswith("Output ␣Paris (p=0.77")  # as the other clerps write tokens
    by_lmtt = {n.get("lmtt_node"): n for n in graph["nodes"]}
    assert by_lmtt["attn:23:4"]["clerp"] == "moves the country"
    assert by_lmtt["ffn:22:3"]["clerp"] == "L22 ffn · ␣France" and by_lmtt["emb:3"]["clerp"] == "emb · ␣France"
    assert graph["qParams"]["pinnedIds"] == [by_lmtt["ffn:29:4"]["node_id"], by_lmtt["attn:23:4"]["node_id"]]
    assert graph["qParams"]["supernodes"] == [["country mover", by_lmtt["attn:23:4"]["node_id"], by_lmtt["ffn:22:3"]["node_id"]]]
    assert len(graph["links"]) <= len(sub)  # a residual and an FFN edge between two states are one link
    total = sum(link["weight"] for link in graph["links"] if link["target"] != logit["node_id"])
    assert total == pytest.approx(float(sub.weight.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="not on this route"):
        neuronpedia_graph(a, sub, pinned=("ffn:29:0",))  # the top state of token 0 feeds no later token's route


@pytest.mark.default_model
def test_cli_writes_only_the_neuronpedia_file(cli, tmp_path):
    proc = cli("analyze", "--prompt", "The capital of France is", "--out", str(tmp_path), "--format", "neuronpedia")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["graph-neuronpedia.json"]
    jsonschema.validate(json.loads((tmp_path / "graph-neuronpedia.json").read_text()), GRAPH_SCHEMA)
