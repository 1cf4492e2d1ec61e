"""Built-in toy worlds: a synthetic fact world and the tiny models trained on it."""

from .world import Fact, World, build_tokenizer, toy_relation_templates, toy_requests, toy_world

__all__ = ["Fact", "World", "build_tokenizer", "toy_relation_templates", "toy_requests", "toy_world"]
