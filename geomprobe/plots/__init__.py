"""Plotting: one function per figure kind; input tidy DataFrames, output a matplotlib Figure.

Colours: one colour-blind-safe (Okabe–Ito) colour per editor, the same in every figure (:mod:`.style`).
The figure catalogue (``analyses/<id>.py``) calls these; ``geomprobe figures --replot`` redraws from CSVs.
"""

from .key_similarity import plot_key_heatmap, plot_key_layers
from .report import plot_compare_deviation, plot_compare_metrics, plot_diagnose
from .results import plot_metric_bars, plot_overhead, plot_sequential, plot_similar_subjects
from .spectral import (plot_cov_spectrum, plot_gradient_conflict, plot_key_orthogonality, plot_spectral_drift,
                       plot_spectral_energy, plot_whitened_similarity)
from .style import EDITOR_COLORS, editor_color, save, setup
from .tolerance import (plot_deviation_vs_radius, plot_hki_sensitivity, plot_layer_sensitivity, plot_restoration,
                        plot_tolerance_radius)

__all__ = ["EDITOR_COLORS", "editor_color", "plot_compare_deviation", "plot_compare_metrics", "plot_cov_spectrum",
           "plot_deviation_vs_radius", "plot_diagnose", "plot_gradient_conflict", "plot_hki_sensitivity",
           "plot_key_heatmap", "plot_key_layers", "plot_key_orthogonality", "plot_layer_sensitivity",
           "plot_metric_bars", "plot_overhead", "plot_restoration", "plot_sequential", "plot_similar_subjects",
           "plot_spectral_drift", "plot_spectral_energy", "plot_tolerance_radius", "plot_whitened_similarity",
           "save", "setup"]
