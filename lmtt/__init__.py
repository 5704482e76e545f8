"""lmtt: see how a Transformer language model reaches its prediction.

import lmtt
runner = lmtt.load_model()                 # the default model from config.yaml
analysis = lmtt.analyze(runner, "The capital of France is")
analysis.predictions()[0].token            # ' Paris'
analysis.paths_to(-1, threshold=0.04)      # the important subgraph
"""

from lmtt.analysis import Analysis, InterventionResult, analyze
from lmtt.engine.config import AppConfig, ConfigError, ModelEntry, load_config
from lmtt.engine.edits import Edit
from lmtt.engine.loading import LoadError, load_model
from lmtt.engine.runner import ModelRunner, PromptError, Trace

__all__ = [
    "Analysis",
    "AppConfig",
    "ConfigError",
    "Edit",
    "InterventionResult",
    "LoadError",
    "ModelEntry",
    "ModelRunner",
    "PromptError",
    "Trace",
    "analyze",
    "load_config",
    "load_model",
]
