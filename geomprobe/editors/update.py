"""EditUpdate: what an editor computed, applied and reverted bit-exactly."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from ..data.requests import EditRequest
from ..errors import GeomprobeError, NumericalError
from ..models.load import LM
from .config import EditorConfig


@dataclass(frozen=True)
class EditUpdate:
    """The result of ``editor.compute(lm, requests)``.

    Attributes:
        editor: editor name.
        layers: edited layers, in order.
        deltas: {layer: ΔW (d_model, d_mlp)} float32, on the device of that layer's weight.
        keys: {layer: K (d_mlp, n_cols)} float32 CPU — the keys the closed form used (one column per
            request, or per subject for merged editors).
        resids: {layer: R (d_model, n_cols)} float32 CPU — the residual each layer was asked to write.
        z: (d_model, n_cols) float32 CPU targets at the last edit layer; ``h`` the residual before the edit.
        columns: name of each column (case_id or subject).
        requests: the requests edited.
        hparams: hyperparameters (plain data).
        value: the :class:`~geomprobe.editors.value.ValueResult` (loss curve, relation gradients); for an
            update imported with :meth:`from_weights` (no value optimisation ran) a stand-in with ``mode ==
            "imported"`` whose ``delta`` is ``z − h``, the value the edited model delivers (no losses, no gradients).
        seconds: wall time of ``compute``; peak_memory_mb: peak memory during it (CUDA allocator, or
            the process's peak RSS growth on CPU).
        model: the LM identity it was computed for (applying it to another model is refused).
        dtype: the model dtype it was computed in.
    """

    editor: str
    layers: tuple[int, ...]
    deltas: dict[int, torch.Tensor] = field(repr=False)
    keys: dict[int, torch.Tensor] = field(repr=False)
    resids: dict[int, torch.Tensor] = field(repr=False)
    z: torch.Tensor = field(repr=False)
    h: torch.Tensor = field(repr=False)
    columns: tuple[str, ...]
    requests: tuple[EditRequest, ...] = field(repr=False)
    hparams: dict[str, Any] = field(default_factory=dict)
    value: Any = field(default=None, repr=False)
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    model: dict = field(default_factory=dict, repr=False)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if tuple(sorted(self.deltas)) != tuple(sorted(self.layers)):
            raise GeomprobeError("EditUpdate.deltas must have one ΔW per edited layer")
        self._check_shapes()
        for layer, d in self.deltas.items():
            if not torch.isfinite(d).all():
                raise NumericalError(f"ΔW at layer {layer} holds NaN/Inf; the editor diverged — lower lr or raise lam")

    def _check_shapes(self) -> None:
        """Shapes across fields: K (m, n) and R (d, n) per layer, z and h (d, n), ΔW (d, m), n = len(columns)."""
        n = len(self.columns)

        def bad(what: str, shape: tuple, want: str) -> GeomprobeError:
            return GeomprobeError(f"EditUpdate.{what} is {shape}, not {want} ({n} columns); "
                                  "build the update from one editor's keys, residuals and targets")

        for name in ("z", "h"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[1] != n:
                raise bad(name, tuple(t.shape), "(d, n_columns)")
        d = self.z.shape[0]
        if self.h.shape[0] != d:
            raise bad("h", tuple(self.h.shape), f"({d}, {n}) like z")
        for layer in self.layers:
            if layer not in self.keys or layer not in self.resids:
                raise GeomprobeError(f"EditUpdate has no keys/residuals for edited layer {layer}; "
                                     "pass keys and resids for every layer")
            K, R, delta = self.keys[layer], self.resids[layer], self.deltas[layer]
            if K.dim() != 2 or K.shape[1] != n:
                raise bad(f"keys[{layer}]", tuple(K.shape), "(m, n_columns)")
            if R.dim() != 2 or tuple(R.shape) != (d, n):
                raise bad(f"resids[{layer}]", tuple(R.shape), f"({d}, {n})")
            if tuple(delta.shape) != (d, K.shape[0]):
                raise bad(f"deltas[{layer}]", tuple(delta.shape), f"(d, m) = ({d}, {K.shape[0]})")

    def editor_config(self) -> EditorConfig:
        """The :class:`EditorConfig` the update was computed with, rebuilt from :attr:`hparams`
        (the value settings included; fields missing from ``hparams`` take their defaults, ``layers`` the
        update's own — an imported update's hparams hold no editor settings)."""
        known = {k: v for k, v in self.hparams.items() if k in EditorConfig.__dataclass_fields__}
        return EditorConfig.from_dict({"layers": list(self.layers), **known})

    @classmethod
    def from_weights(cls, lm: LM, edited: Any, requests: Sequence[EditRequest], name: str = "imported", *,
                     key_weighting: str = "bare", config: EditorConfig | None = None) -> "EditUpdate":
        """An update for an edit made elsewhere (:mod:`geomprobe.editors.imported` has the details).

        Args:
            lm: the *unedited* model the edit was made on; its weights are bit-identical afterwards.
            edited: a state dict of edited weights (full, or only the MLP output projections), a ``{layer: ΔW}``
                mapping, or the path of a saved model directory or a ``.safetensors`` / ``.pt`` / ``.bin`` file.
            requests: the requests the edit wrote; one column each (its ``case_id``).
            name: the update's ``editor`` name.
            key_weighting: ``"bare"`` (default: the bare edit prompt's key), ``"memit"`` or ``"flat"`` (with the
                context prefixes of ``config``'s value settings, default the model's preset).

        Returns:
            the changed layers, ΔW per layer (float32, out×in), keys K_l read on the edited model (what MEMIT
            reads solving layer l after the layers below), ``h`` / ``z`` the unedited / edited residual after the
            last changed layer, ``R_l = ΔW_l K_l``; ``value`` the stand-in
            :func:`~geomprobe.editors.imported.delivered_value` (``delta = z − h``, the value the edited model
            delivers at the last changed layer on the bare prompt: probes that read δ, the tolerance radius ρ
            included, measure around it), ``hparams["source"] == "imported"`` (:attr:`is_imported`).

        Raises:
            GeomprobeError: another architecture or shape, NaN/Inf, nothing changed, or changed parameters other
                than the MLP output projection weights (one line naming them).
        """
        from .imported import check_requests, column_names, delivered_value, read_columns, read_edit, value_config

        requests = check_requests(requests, key_weighting)
        edit = read_edit(lm, edited)
        vcfg = value_config(lm, key_weighting, config)
        last = edit.layers[-1]
        # the unedited residual first: context prefixes (memit/flat) are generated on the unedited model
        _, h = read_columns(lm, requests, [last], key_weighting, vcfg)
        with restoring(lm, edit.layers):  # the edited weights themselves, restored bit-exactly on exit
            with torch.no_grad():
                for layer in edit.layers:
                    lm.weight(layer).copy_(edit.weights[layer])
            # K_l depends only on the layers below l: on the edited model it is what MEMIT reads solving layer l
            keys, z = read_columns(lm, requests, edit.layers, key_weighting, vcfg)
        resids = {layer: (edit.deltas[layer].cpu() @ keys[layer]).contiguous() for layer in edit.layers}
        columns = column_names(requests)
        return cls(editor=name, layers=edit.layers, deltas=dict(edit.deltas), keys=keys, resids=resids, z=z, h=h,
                   columns=columns, requests=tuple(requests), hparams=edit.hparams(key_weighting),
                   value=delivered_value(last, columns, h, z), seconds=0.0, peak_memory_mb=0.0,
                   model=dict(lm.identity),
                   dtype=str(lm.dtype).replace("torch.", ""))

    @property
    def is_imported(self) -> bool:
        """True for an update read from edited weights (:meth:`from_weights`): no editor settings in
        :attr:`hparams`, and :attr:`value` is the delivered δ = z − h rather than an optimised one."""
        return self.hparams.get("source") == "imported"

    def check_model(self, lm: LM) -> None:
        if self.model and self.model.get("config_sha") != lm.identity.get("config_sha"):
            raise GeomprobeError(f"this update was computed for {self.model.get('name')!r}, not {lm.name!r}; "
                                 "compute it on the model you apply it to")
        for layer, d in self.deltas.items():
            if tuple(d.shape) != tuple(lm.weight(layer).shape):
                raise GeomprobeError(f"ΔW shape {tuple(d.shape)} does not fit layer {layer} "
                                     f"{tuple(lm.weight(layer).shape)}; compute the update on this model")

    def apply(self, lm: LM) -> "AppliedEdit":
        """Add ΔW to the weights (in the model dtype); returns a handle whose ``revert()`` restores them."""
        self.check_model(lm)
        saved = {layer: lm.rewrite_module(layer).weight.detach().clone() for layer in self.layers}
        with torch.no_grad():
            for layer in self.layers:
                w = lm.weight(layer)
                w.copy_((w.float() + self.deltas[layer].to(w.device)).to(w.dtype))
        return AppliedEdit(lm, saved)

    @contextmanager
    def applied(self, lm: LM) -> Iterator[LM]:
        """Apply inside the block; the weights are restored bit-exactly on exit, also on exceptions."""
        handle = self.apply(lm)
        try:
            yield lm
        finally:
            handle.revert()

    def delta_norms(self) -> dict[int, float]:
        return {layer: float(d.norm()) for layer, d in self.deltas.items()}


@dataclass
class AppliedEdit:
    """Handle of an applied update: ``revert()`` copies the saved weights back (bit-exact)."""

    lm: LM
    saved: dict[int, torch.Tensor]
    reverted: bool = False

    def revert(self) -> None:
        if self.reverted:
            return
        with torch.no_grad():
            for layer, w in self.saved.items():
                self.lm.rewrite_module(layer).weight.copy_(w)
        self.reverted = True


@contextmanager
def restoring(lm: LM, layers) -> Iterator[None]:
    """Save the rewrite weights of ``layers`` and copy them back on exit (editors modify as they go)."""
    saved = {layer: lm.rewrite_module(layer).weight.detach().clone() for layer in layers}
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, w in saved.items():
                lm.rewrite_module(layer).weight.copy_(w)
