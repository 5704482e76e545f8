"""Questions asked of one traced prompt: direct logit attribution, QK, patching, faithfulness, projections, ...

Each takes a runner and a Trace (or an Analysis passed in) and imports only the engine and other questions.
"""
