"""Probes: geometric measurements of edits, each returning a tidy pandas DataFrame."""

from .key_similarity import cosine_matrix, form_keys, key_similarity

__all__ = ["cosine_matrix", "form_keys", "key_similarity"]
