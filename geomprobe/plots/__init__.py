"""Plotting: one function per figure kind; input tidy DataFrames, output a matplotlib Figure."""

from .key_similarity import plot_key_heatmap, plot_key_layers
from .style import EDITOR_COLORS, editor_color, save, setup

__all__ = ["EDITOR_COLORS", "editor_color", "plot_key_heatmap", "plot_key_layers", "save", "setup"]
