"""Cluster (subject) bootstrap intervals for the headline numbers.

Requests of one subject are not independent: they share the subject's key, the same edit batch and often the
same failure.  Resampling *requests* would treat 16 requests on 4 subjects as 16 independent draws and give an
interval too narrow; every interval here resamples **subjects** (clusters) with replacement and keeps all the
requests of a drawn subject (a subject drawn twice counts twice).

The interval is the **percentile** bootstrap: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
statistic over ``n_boot`` resamples (default 2000, fixed ``seed`` so a CSV is reproducible).  It is a plain,
assumption-light interval; with a handful of subjects it is itself rough (with 4 subjects there are only 35
distinct resamples), which is why every interval is printed with its ``n`` and number of subjects.

With a **single cluster** there is nothing to resample: the estimate is given, the interval is undefined
(``low = high = nan``, ``n_clusters = 1``) and :func:`fmt_interval` says so; it is never faked as zero-width.
With no finite value at all the estimate is NaN too.

* :func:`cluster_bootstrap` — estimate and interval of ``stat`` over values grouped in clusters;
* :func:`paired_difference` — mean(a) − mean(b) of two editors on the *same* requests: subjects are resampled
  once and both means are taken on the same resample (the interval of the difference is far narrower than the
  two separate intervals suggest when both editors fail on the same subjects);
* :func:`resample_weights` / :func:`resampled_means` — the building blocks, for statistics that combine several
  means on one resample (e.g. ``overall`` = mean of efficacy, paraphrase, locality);
* :func:`verdict` — "A > B" / "A < B" only when the paired interval excludes 0, else "no clear difference";
* :func:`fmt_interval` — ``"43.8% [25.0, 62.5] (n=16, 4 subjects)"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: resamples of every interval
N_BOOT = 2000
#: confidence level of every interval
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its percentile bootstrap interval.

    Attributes:
        estimate: the statistic on the data as observed.
        low, high: interval bounds; NaN when undefined (fewer than two clusters, or no data).
        n: number of units (values, or pairs for a difference) the estimate rests on.
        n_clusters: number of distinct clusters (subjects) among them.
        level: confidence level.
    """

    estimate: float
    low: float
    high: float
    n: int
    n_clusters: int
    level: float = LEVEL

    @property
    def defined(self) -> bool:
        """Whether the interval exists (two or more clusters and finite bounds)."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def excludes(self, value: float = 0.0) -> bool:
        """Whether a defined interval lies entirely above or below ``value`` (False when undefined)."""
        return self.defined and (self.low > value or self.high < value)

    @property
    def width(self) -> float:
        return self.high - self.low


def _as_arrays(values, clusters) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float).ravel()
    c = np.asarray(clusters, dtype=object).ravel()
    if len(v) != len(c):
        raise ValueError(f"{len(v)} values but {len(c)} cluster labels")
    return v, c


def resample_weights(n_clusters: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_clusters)`` counts: how often each cluster is drawn in each resample (``n_clusters`` draws
    with replacement per resample).  Reuse one matrix for every statistic that must see the same resamples."""
    if n_clusters <= 0:
        return np.zeros((n_boot, 0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    w = np.zeros((n_boot, n_clusters))
    np.add.at(w, (np.repeat(np.arange(n_boot), n_clusters), idx.ravel()), 1.0)
    return w


def resampled_means(values, clusters, universe: Sequence, weights: np.ndarray) -> np.ndarray:
    """Mean of ``values`` on every resample of ``weights`` (rows: resamples, columns: the clusters of
    ``universe`` in order).  NaN values are ignored; a resample that draws none of the values' clusters gives NaN.
    """
    v, c = _as_arrays(values, clusters)
    ok = np.isfinite(v)
    pos = {u: i for i, u in enumerate(universe)}
    missing = {x for x in c[ok] if x not in pos}
    if missing:
        raise ValueError(f"clusters {sorted(map(str, missing))[:3]} are not in the universe")
    col = np.array([pos[x] for x in c[ok]], dtype=int)
    sums = np.bincount(col, weights=v[ok], minlength=len(universe))
    counts = np.bincount(col, minlength=len(universe)).astype(float)
    den = weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (weights @ sums) / np.where(den > 0, den, 1.0), np.nan)


def percentile_interval(estimate: float, boot: np.ndarray, n: int, n_clusters: int,
                        level: float = LEVEL) -> Interval:
    """:class:`Interval` from bootstrap replicates (NaN replicates dropped); undefined with < 2 clusters."""
    b = np.asarray(boot, dtype=float)
    b = b[np.isfinite(b)]
    if n_clusters < 2 or not len(b) or not np.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan, int(n), int(n_clusters), level)
    lo, hi = np.quantile(b, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), int(n), int(n_clusters), level)


def cluster_bootstrap(values, clusters, stat: Callable[[np.ndarray], float] = np.mean, n_boot: int = N_BOOT,
                      seed: int = 0, level: float = LEVEL) -> Interval:
    """Estimate of ``stat`` over ``values`` and its percentile interval, resampling ``clusters`` (subjects).

    Args:
        values: one number per unit (e.g. a request's mean score); NaN values are dropped first.
        clusters: the cluster label of each value (e.g. the request's subject).
        stat: statistic of a 1-D array (default the mean; the mean uses a vectorised path).
        n_boot, seed, level: resamples, random seed, confidence level.

    Returns:
        :class:`Interval` with ``n`` = finite values and ``n_clusters`` = their distinct clusters; the bounds
        are NaN with fewer than two clusters (nothing to resample), the estimate NaN without values.
    """
    v, c = _as_arrays(values, clusters)
    ok = np.isfinite(v)
    v, c = v[ok], c[ok]
    universe = list(dict.fromkeys(c.tolist()))
    k = len(universe)
    if not len(v):
        return Interval(math.nan, math.nan, math.nan, 0, 0, level)
    estimate = float(stat(v))
    if k < 2:
        return Interval(estimate, math.nan, math.nan, len(v), k, level)
    w = resample_weights(k, n_boot, seed)
    if stat is np.mean:
        boot = resampled_means(v, c, universe, w)
    else:
        pos = {u: i for i, u in enumerate(universe)}
        members = [np.flatnonzero([pos[x] == j for x in c]) for j in range(k)]
        boot = np.array([stat(v[np.concatenate([np.repeat(members[j], int(row[j])) for j in range(k)])])
                         for row in w])
    return percentile_interval(estimate, boot, len(v), k, level)


def index_bootstrap(stat: Callable[[np.ndarray], float], clusters, n_boot: int = N_BOOT, seed: int = 0,
                    level: float = LEVEL) -> Interval:
    """``stat(indices)`` on the data and on every cluster resample of the row indices (a resampled cluster brings
    all its rows), for statistics of several aligned arrays (an AUC of scores and labels); percentile interval.
    ``n`` = rows, ``n_clusters`` = distinct clusters; NaN bounds with fewer than two clusters."""
    c = np.asarray(clusters)
    universe = list(dict.fromkeys(c.tolist()))
    estimate = float(stat(np.arange(len(c)))) if len(c) else math.nan
    if len(universe) < 2:
        return Interval(estimate, math.nan, math.nan, len(c), len(universe), level)
    members = [np.flatnonzero(c == u) for u in universe]
    boot = [stat(np.concatenate([np.tile(members[j], int(k)) for j, k in enumerate(row) if k]))
            for row in resample_weights(len(universe), n_boot, seed)]
    return percentile_interval(estimate, np.asarray(boot, float), len(c), len(universe), level)


def paired_difference(a, b, clusters, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """mean(a) − mean(b) on the same units (requests), subjects resampled once for both.

    Args:
        a, b: one value per unit for each of the two editors, aligned (the same request at the same position).
        clusters: the subject of each unit.

    Only units where both values are finite count (``n`` = such pairs).  Each resample draws subjects with
    replacement and takes both means on that same resample, so what the two editors share (the same hard
    subjects) cancels in the difference.
    """
    va, c = _as_arrays(a, clusters)
    vb, _ = _as_arrays(b, clusters)
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb, c = va[ok], vb[ok], c[ok]
    universe = list(dict.fromkeys(c.tolist()))
    k = len(universe)
    if not len(va):
        return Interval(math.nan, math.nan, math.nan, 0, 0, level)
    estimate = float(va.mean() - vb.mean())
    if k < 2:
        return Interval(estimate, math.nan, math.nan, len(va), k, level)
    w = resample_weights(k, n_boot, seed)
    boot = resampled_means(va, c, universe, w) - resampled_means(vb, c, universe, w)
    return percentile_interval(estimate, boot, len(va), k, level)


def verdict(diff: Interval, name_a: str, name_b: str) -> str:
    """Words for a paired difference ``a − b``: ``"A > B"`` / ``"A < B"`` only when the interval excludes 0,
    ``"no clear difference (interval includes 0)"`` when it does not, and no claim without an interval."""
    if not np.isfinite(diff.estimate):
        return f"{name_a} vs {name_b} cannot be compared"
    if not diff.defined:
        why = f"{diff.n_clusters} subject" if diff.n_clusters == 1 else "no interval"
        return f"{name_a} vs {name_b}: no difference claimed ({why}, interval undefined)"
    if diff.low > 0:
        return f"{name_a} > {name_b}"
    if diff.high < 0:
        return f"{name_a} < {name_b}"
    return f"{name_a} vs {name_b}: no clear difference (interval includes 0)"


def _num(x: float, digits: int, signed: bool) -> str:
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_interval(iv: Interval, pct: bool = True, digits: int = 1, signed: bool = False, scale: float = 1.0,
                 unit: str = "subject", n: bool = True) -> str:
    """``"43.8% [25.0, 62.5] (n=16, 4 subjects)"``.

    Args:
        iv: the interval.
        pct: append ``%`` to the estimate (values already in percent; ``scale=100`` converts fractions).  With
            ``signed`` (a difference) the suffix is ``pp`` (percentage points).
        digits: decimals.  signed: print the sign (differences).  unit: the cluster's name.
        n: append ``(n=…, … subjects)``.

    With one subject the band reads ``[no interval: 1 subject]``; with unknown bounds (NaN, several subjects: a
    table written before the intervals) there is no band; a NaN estimate prints as ``n/a``.
    """
    suffix = ("pp" if signed else "%") if pct else ""
    counts = f" (n={iv.n}, {iv.n_clusters} {unit}{'' if iv.n_clusters == 1 else 's'})" if n else ""
    if not np.isfinite(iv.estimate):
        return f"n/a{counts}"
    est = _num(iv.estimate * scale, digits, signed) + suffix
    if iv.defined:
        band = f" [{_num(iv.low * scale, digits, signed)}, {_num(iv.high * scale, digits, signed)}]"
    elif iv.n_clusters == 1:
        band = f" [no interval: 1 {unit}]"
    else:  # bounds not known (e.g. a table written before the intervals): show none rather than invent one
        band = ""
    return f"{est}{band}{counts}"


__all__ = ["Interval", "LEVEL", "N_BOOT", "cluster_bootstrap", "fmt_interval", "index_bootstrap", "paired_difference",
           "percentile_interval", "resample_weights", "resampled_means", "verdict"]
