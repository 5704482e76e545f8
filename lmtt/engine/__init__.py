"""The engine: one hooked forward pass (runner, Trace), its exact decomposition (attribution) and the graph.

Nothing here imports lmtt.questions, lmtt.analysis, lmtt.viz, lmtt.ui or lmtt.tools (tests/test_architecture.py).
"""
