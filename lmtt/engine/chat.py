"""The tokenizer's chat template for instruct models: a user message wrapped as the model saw it in training."""

from __future__ import annotations

from lmtt.engine.runner import ModelRunner, PromptError, check_prompt


def has_chat_template(runner: ModelRunner) -> bool:
    return runner.tokenizer is not None and bool(getattr(runner.tokenizer, "chat_template", None))


def chat_prompt(runner: ModelRunner, message: str) -> str:
    """The text the model reads for one user turn, ending where the assistant's answer starts."""
    check_prompt(message)
    if not has_chat_template(runner):
        raise PromptError(f"model {runner.name!r} has no chat template: turn the chat template off")
    return runner.tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True)
