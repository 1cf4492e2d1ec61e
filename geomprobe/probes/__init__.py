"""Probes: geometric measurements of edits, each returning a tidy pandas DataFrame.

=========================  ===============================================================
``tolerance_radius``       ρ of the optimised value by Monte Carlo noise injection (fast / reference), per form
``directional_tolerance``  tolerance of δ along −δ̂ and the edited model's measured drift
``edit_drift``             the edited model's actual residual change at (layer, subject) vs δ, per form
``patch_transfer``         patch h + δ into the unedited / edited model per form; ``delta_scaling`` curve
``activation_deviation``   Δ = ‖ΔW (k_form − k_decl)‖ per form and update rule
``gradient_conflict``      1 − |cos| between relation gradients of one subject
``key_similarity``         key cosines across forms, subjects and layers
``covariance_spectrum``    eigenvalues of C, condition number, effective rank; ``drift_in_spectrum``
``subspace_drift``         LS_k, SS_i, norm ratio, top-k energy over sequential edits; ``perplexity``
``whitened_key_similarity`` REP's whitened similarity of paraphrase / long-context keys
``key_heatmap``            two subjects × three forms, ordered-pair key cosines at one layer (Fig. 4)
``near_duplicate_key_cosines`` key cosines of near-duplicate twin subjects; ``mean_target_logprob``
=========================  ===============================================================
"""

from .conflict import conflict_score, conflict_table, gradient_conflict
from .deviation import activation_deviation, counterfactual_delta
from .drift import perplexity, subspace_drift
from .edit_drift import edit_drift
from .key_heatmap import key_heatmap
from .key_similarity import cosine_matrix, form_keys, key_similarity
from .layers import subject_switch_rate
from .near_duplicates import mean_target_logprob, near_duplicate_key_cosines
from .spectrum import covariance_spectrum, drift_in_spectrum
from .tolerance import directional_tolerance, tolerance_radius
from .transfer import delta_scaling, patch_transfer
from .whitened import whitened_key_similarity, whitened_similarity

__all__ = ["activation_deviation", "conflict_score", "conflict_table", "cosine_matrix", "counterfactual_delta",
           "covariance_spectrum", "delta_scaling", "directional_tolerance", "drift_in_spectrum", "edit_drift",
           "form_keys", "gradient_conflict", "key_heatmap", "key_similarity", "mean_target_logprob",
           "near_duplicate_key_cosines", "patch_transfer", "perplexity", "subject_switch_rate", "subspace_drift",
           "tolerance_radius", "whitened_key_similarity", "whitened_similarity"]
