"""The locate-then-edit editors: MEMIT-style multi-layer spreading with a choice of update rule.

=================  =====================  ======================================
editor             value optimisation     update rule at each layer
=================  =====================  ======================================
``memit``          per request            covariance  ``R Kᵀ (λC + KKᵀ)⁻¹``
``memit-merge``    joint per subject      covariance
``alphaedit``      per request            null-space projection of C (+ earlier keys)
``rose``           HKI per subject        isotropic  ``R Kᵀ (αI + KKᵀ)⁻¹``  (IGA)
``rose-no-iga``    HKI per subject        covariance
``rose-no-hki``    joint per subject      isotropic
``rome``           per request, one layer rank-one, requests applied one after another
=================  =====================  ======================================

``revive(<editor>, tau=0.9)`` wraps any of them and protects the dominant singular subspace of the
current weight: ``ΔW' = (I − U_kU_kᵀ) ΔW (I − V_kV_kᵀ)`` (:func:`geomprobe.linalg.revive_filter`;
``revive_mode="block"`` removes only the ``U_kᵀΔW V_k`` block).

The update rules are solved by one registry, :mod:`geomprobe.editors.rules` (the deviation probe's
counterfactual rules use the same); the settings live in :mod:`geomprobe.editors.config`.

For the layers ``l_1 < … < L`` in order: keys ``K`` and the current residual at ``L`` are recomputed on
the partially edited model, ``R = (Z − H_cur) / (#layers left)``, ``ΔW_l`` is solved in float64 and
applied, exactly as MEMIT does.  As in MEMIT's ``compute_ks`` a key is ½ the bare prompt's key plus ½
the mean over its context-prefixed copies, and ``H_cur`` is read on the bare prompt (``memit_main``).

ROME (``compute_u``/``compute_v``): its own value settings (:data:`~geomprobe.editors.config.ROME_VALUE`:
20 steps, clamp 4 and weight decay against the MLP output ``v``, ROME's 20 context prefixes); the update
direction is ``C⁻¹k̄`` with ``k̄`` the flat mean key over the bare prompt and its prefixed copies, scaled so
that ``ΔW k = v* − W k`` at the bare prompt's key ``k`` (``right_vector = (v* − W k) / (kᵀ C⁻¹k̄)``).  The weights are restored bit-exactly before ``compute`` returns: the
update is handed back as an :class:`EditUpdate`, never left applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import linalg
from ..data.requests import EditRequest
from ..errors import GeomprobeError
from ..hooks import read
from ..models.load import LM
from ..positions import tokenize
from ..stats import key_covariance
from . import rules
from .config import ROME_VALUE, RULES, EditorConfig, Mode, Rule, ValueConfig
from .memory import PeakMemory as _PeakMemory
from .presets import preset_for
from .update import EditUpdate, restoring
from .value import ValueResult, edit_prompts, group_names, optimize_values

__all__ = ["Editor", "EditorConfig", "RULES", "ValueConfig"]  # the configs live in .config; re-exported here


@dataclass
class Editor:
    """A locate-then-edit editor: value optimisation mode + update rule (see the module table).

    Use :func:`geomprobe.editors.get` to build one by name with the model's preset.
    """

    name: str
    mode: Mode
    rule: Rule
    config: EditorConfig | None = None
    overrides: dict = field(default_factory=dict)
    revive: bool = False

    def resolve_config(self, lm: LM) -> EditorConfig:
        """The explicit config, else the model's preset; for ``rome`` with ROME's value settings
        (:data:`~geomprobe.editors.config.ROME_VALUE`); then the overrides on top."""
        base = self.config if self.config is not None else preset_for(lm)
        if self.rule == "rank-one":
            base = base.with_(**{f"value_{k}": v for k, v in ROME_VALUE.items()})
        return base.with_(**dict(self.overrides)) if self.overrides else base

    def _filter(self, cfg: EditorConfig, lm: LM, layer: int, delta: torch.Tensor) -> torch.Tensor:
        """REVIVE: protect the dominant singular subspace of the current W (``cfg.revive_mode``)."""
        if not self.revive:
            return delta
        filtered, _ = linalg.revive_filter(delta, lm.weight(layer).detach(), cfg.tau, mode=cfg.revive_mode)
        return filtered

    def compute(self, lm: LM, requests: Sequence[EditRequest], history: Sequence[EditUpdate] = (),
                log: Callable[[str], None] | None = None, value: ValueResult | None = None) -> EditUpdate:
        """Compute the update for ``requests`` on ``lm`` (weights unchanged afterwards).

        Args:
            history: updates applied before this one (sequential editing); AlphaEdit adds their keys to K_p.
            value: a :class:`~geomprobe.editors.value.ValueResult` already optimised for exactly these requests in
                this editor's mode at its last layer (e.g. ``rose``'s for ``rose-no-iga``); the targets are
                reused instead of re-optimised.  ``EditUpdate.seconds`` / ``peak_memory_mb`` then still include
                the value optimisation's own measured time / peak (``hparams["value_reused"]`` is True).
        """
        requests = list(requests)
        if not requests:
            raise GeomprobeError("no requests to edit; pass at least one EditRequest")
        cfg = self.resolve_config(lm)
        layers = list(cfg.layers if self.rule != "rank-one" else cfg.layers[-1:])
        for l in layers:
            lm._check_layer(l)
        if value is not None:
            _check_reusable(value, requests, self, layers[-1])
        t0 = time.perf_counter()
        with _PeakMemory(lm.device_of(layers[-1])) as mem, restoring(lm, layers):
            if self.rule == "rank-one":
                out = self._rome(lm, requests, cfg, layers[0], log)
            else:
                out = self._spread(lm, requests, cfg, layers, history, log, value)
        seconds, peak = time.perf_counter() - t0, mem.peak_mb
        if value is not None:  # count the reused optimisation as part of this edit's cost
            seconds += value.seconds
            peak = max(peak, value.peak_memory_mb)
        deltas, keys, resids, value_out = out
        return EditUpdate(
            editor=self.name, layers=tuple(layers), deltas=deltas, keys=keys, resids=resids,
            z=value_out.z, h=value_out.h, columns=value_out.groups, requests=tuple(requests),
            hparams={"mode": self.mode, "rule": self.rule, "revive": self.revive, "value_reused": value is not None,
                     **cfg.as_dict()}, value=value_out,
            seconds=seconds, peak_memory_mb=peak, model=dict(lm.identity),
            dtype=str(lm.dtype).replace("torch.", ""),
        )

    # ---- pieces ------------------------------------------------------------------------------
    def _covariance(self, lm: LM, cfg: EditorConfig, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        stats = key_covariance(lm, list(layers), corpus=cfg.corpus, n_tokens=cfg.n_tokens, max_len=cfg.max_len)
        return {l: stats[l].C for l in layers}

    def _column_reads(self, lm: LM, requests: Sequence[EditRequest], members: Sequence[Sequence[int]],
                      cfg: EditorConfig, key_layer: int, resid_layer: int,
                      key_weighting: str = "memit") -> tuple[torch.Tensor, torch.Tensor]:
        """Keys at ``key_layer`` (m, n_cols) and residuals at ``resid_layer`` (d, n_cols) at the subject's last
        token, on the current weights; a column averages over its requests.

        A request's key is ½ its bare edit prompt's key + ½ the mean over the context-prefixed copies
        (``key_weighting="memit"``, ``compute_ks``), the flat mean over all of them (``"flat"``, ROME's
        ``compute_u``) or the bare prompt's alone (``"bare"``, ROME's ``cur_input``); its residual is the bare
        prompt's (MEMIT's ``cur_zs``).
        """
        prompts, req_of, is_bare = [], [], []
        flat = [i for idx in members for i in idx]
        for j, i in enumerate(flat):
            for t, p in enumerate(edit_prompts(lm, requests[i], cfg.value)):
                prompts.append(p)
                req_of.append(j)
                is_bare.append(t == 0)
        batch = tokenize(lm.tokenizer, prompts)
        with torch.no_grad(), read(lm, sorted({key_layer, resid_layer}), ("key", "resid"),
                                   positions=batch.subject_last, stop=True) as r:
            lm.forward(batch)
        keys, resid = r["key"][key_layer].float().cpu(), r["resid"][resid_layer].float().cpu()
        req_t, bare_t = torch.tensor(req_of), torch.tensor(is_bare)
        n_req = len(flat)

        def mean_by(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(n_req, x.shape[1]).index_add_(0, req_t[sel], x[sel])
            return out / torch.bincount(req_t[sel], minlength=n_req).clamp_min(1).float()[:, None]

        k_bare, k_ctx, k_all = mean_by(keys, bare_t), mean_by(keys, ~bare_t), mean_by(keys, torch.ones_like(bare_t))
        if key_weighting == "flat":
            k_req = k_all
        elif key_weighting == "bare":
            k_req = k_bare
        else:
            k_req = 0.5 * k_bare + 0.5 * k_ctx if bool((~bare_t).any()) else k_bare
        h_req = mean_by(resid, bare_t)
        col_t = torch.tensor([c for c, idx in enumerate(members) for _ in idx])
        n = len(members)
        count = torch.bincount(col_t, minlength=n).float()[:, None]
        k = torch.zeros(n, lm.d_mlp).index_add_(0, col_t, k_req) / count
        h = torch.zeros(n, lm.d_model).index_add_(0, col_t, h_req) / count
        return k.T.contiguous(), h.T.contiguous()

    def _solve(self, lm: LM, layer: int, R: torch.Tensor, K: torch.Tensor, cfg: EditorConfig,
               C: torch.Tensor | None, K_prev: torch.Tensor | None) -> torch.Tensor:
        """ΔW at ``layer`` by this editor's rule (:func:`geomprobe.editors.rules.solve`), on the layer's device."""
        dev = lm.device_of(layer)
        return rules.solve(self.rule, R.to(dev), K.to(dev), cfg, None if C is None else C.to(dev),
                           None if K_prev is None else K_prev.to(dev))

    def _spread(self, lm, requests, cfg, layers, history, log, value=None):
        if value is None:
            value = optimize_values(lm, requests, layers[-1], self.mode, cfg.value, seed=cfg.seed, log=log)
        C = self._covariance(lm, cfg, layers) if rules.get_rule(self.rule).needs_covariance else {}
        deltas, keys, resids = {}, {}, {}
        for i, layer in enumerate(layers):
            K, H = self._column_reads(lm, requests, value.members, cfg, layer, layers[-1])
            R = (value.z - H) / (len(layers) - i)
            K_prev = None
            if self.rule == "projection" and history:
                prev = [u.keys[layer] for u in history if layer in u.keys]
                K_prev = torch.cat(prev, dim=1) if prev else None
            delta = self._filter(cfg, lm, layer, self._solve(lm, layer, R, K, cfg, C.get(layer), K_prev))
            with torch.no_grad():
                w = lm.weight(layer)
                w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
            deltas[layer], keys[layer], resids[layer] = delta.float(), K, R
            if log is not None:
                log(f"layer {layer}: ‖R‖ {float(R.norm()):.3g}, ‖ΔW‖ {float(delta.norm()):.3g}")
        return deltas, keys, resids, value

    def _rome(self, lm, requests, cfg, layer, log):
        """ROME: one request at a time, each rank-one update applied before the next is computed."""
        C = self._covariance(lm, cfg, [layer])[layer]
        total = torch.zeros_like(lm.weight(layer), dtype=torch.float32)
        values, ks, rs = [], [], []
        for i, r in enumerate(requests):
            value = optimize_values(lm, [r], layer, "per-request", cfg.value, seed=cfg.seed + i, log=log)
            k, _ = self._column_reads(lm, [r], [[0]], cfg, layer, layer, key_weighting="flat")
            k_bare, _ = self._column_reads(lm, [r], [[0]], cfg, layer, layer, key_weighting="bare")
            dev = lm.device_of(layer)
            W = lm.weight(layer).detach().float()
            delta = self._filter(cfg, lm, layer, rules.solve("rank-one", value.delta.to(dev), k.to(dev), cfg,
                                                             C.to(dev), W=W, K_read=k_bare.to(dev)))
            with torch.no_grad():
                w = lm.weight(layer)
                w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
            total += delta.to(total.device)
            values.append(value)
            ks.append(k)
            rs.append(value.delta)
        merged = _merge_values(values)
        return {layer: total}, {layer: torch.cat(ks, 1)}, {layer: torch.cat(rs, 1)}, merged


def _check_reusable(value: ValueResult, requests: Sequence[EditRequest], editor: Editor, layer: int) -> None:
    """A reused ValueResult must come from the same requests, grouping and layer."""
    if editor.rule == "rank-one":
        raise GeomprobeError("rome optimises each value on the model edited so far; it cannot reuse targets")
    n = sum(len(m) for m in value.members)
    expected = tuple(group_names(requests, editor.mode)[0])
    if value.layer != layer or n != len(requests) or tuple(value.groups) != expected or value.mode != editor.mode:
        raise GeomprobeError(f"the reused value targets do not match this edit ({value.mode} at layer {value.layer}, "
                             f"{n} requests; {editor.name} needs {editor.mode} at layer {layer}, {len(requests)}); "
                             "optimise them for this batch")


def _merge_values(values: Sequence[ValueResult]) -> ValueResult:
    offset, members = 0, []
    for v in values:
        members.extend(tuple(i + offset for i in m) for m in v.members)
        offset += sum(len(m) for m in v.members)
    return ValueResult(
        layer=values[0].layer, groups=tuple(g for v in values for g in v.groups), members=tuple(members),
        h=torch.cat([v.h for v in values], 1), delta=torch.cat([v.delta for v in values], 1),
        losses=tuple(sum(v.losses[i] if i < len(v.losses) else v.losses[-1] for v in values) / len(values)
                     for i in range(max(len(v.losses) for v in values))),
        relation_grads={s: {k: g for v in values for k, g in v.relation_grads.get(s, {}).items()}
                        for s in sorted({s for v in values for s in v.relation_grads})},
        steps_run=max(v.steps_run for v in values), seconds=sum(v.seconds for v in values),
    )
