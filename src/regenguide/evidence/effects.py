"""Study-level effect sizes and their sampling variances (the `escalc` step of a meta-analysis).

Formulas follow metafor's `escalc` [viechtbauer-2010-metafor] so that results can be checked
against it number for number:

* log risk ratio, log odds ratio and risk difference from 2×2 counts; a study with a zero cell gets
  0.5 added to each of its four cells (metafor's default `add=1/2, to="only0"`; the classic
  Haldane–Anscombe correction, discussed in [sweeting-2004-zero-cells]). Studies with no events
  (or only events) in both arms are kept by default, as metafor does (`drop00=FALSE`); pass
  `drop_double_zero=True` to drop them as RevMan does.
* mean difference (variance `sd1²/n1 + sd2²/n2`, metafor's default for MD);
* standardised mean difference as Hedges' g [hedges-1981-g]: Cohen's d with the pooled SD times the
  exact small-sample correction J(m) = Γ(m/2) / (√(m/2) Γ((m−1)/2)), m = n1 + n2 − 2 (metafor's
  `.cmicalc`) or the approximation 1 − 3/(4m − 1); variance `1/n1 + 1/n2 + g²/(2N)` (`vtype="LS"`,
  metafor's default) or the unbiased estimator (`vtype="UB"`).

Effect sizes are computed here by hand because no maintained Python library reproduces metafor's
conventions (statsmodels' `effectsize_smd` uses a different variance approximation, and its
`effectsize_2proportions` has no per-study "only0" correction); tests cross-check with statsmodels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

# Continuity correction added to every cell of a 2×2 table with a zero cell [viechtbauer-2010-metafor].
CONTINUITY_CORRECTION = 0.5


class Measure(StrEnum):
    """Effect measures. Ratio measures (RR, OR) are analysed on the log scale."""

    RR = "RR"
    OR = "OR"
    RD = "RD"
    MD = "MD"
    SMD = "SMD"
    GEN = "GEN"  # precomputed yi / vi

    @property
    def is_ratio(self) -> bool:
        return self in (Measure.RR, Measure.OR)

    @property
    def is_binary(self) -> bool:
        return self in (Measure.RR, Measure.OR, Measure.RD)


class EffectSizeError(ValueError):
    """Study-level data that cannot give an effect size; the message names the study and the field."""


@dataclass(frozen=True)
class EffectSizes:
    """Per-study effect sizes `yi` with sampling variances `vi` (log scale for RR/OR)."""

    measure: Measure
    yi: FloatArray
    vi: FloatArray
    study: tuple[str, ...]
    # Which studies received the continuity correction (binary measures only).
    corrected: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Raw 2×2 counts (columns a, b, c, d = treat events, treat non-events, ctrl events, ctrl non-events),
    # kept so that Mantel–Haenszel pooling can use the uncorrected tables.
    counts: FloatArray | None = None

    @property
    def k(self) -> int:
        return int(self.yi.shape[0])

    @property
    def sei(self) -> FloatArray:
        return np.sqrt(self.vi)


def _as_float(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise EffectSizeError(f"{name} must be a one-dimensional sequence")
    return arr


def _labels(study: Sequence[str] | None, k: int) -> tuple[str, ...]:
    if study is None:
        return tuple(f"study {i + 1}" for i in range(k))
    labels = tuple(str(s) for s in study)
    if len(labels) != k:
        raise EffectSizeError(f"{len(labels)} study labels for {k} studies")
    return labels


def _check_finite(arrays: dict[str, FloatArray], labels: tuple[str, ...]) -> None:
    for name, arr in arrays.items():
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise EffectSizeError(f"{labels[bad[0]]}: {name} is missing or not a number")


def binary_effects(
    treat_events: ArrayLike,
    treat_total: ArrayLike,
    ctrl_events: ArrayLike,
    ctrl_total: ArrayLike,
    measure: Measure | str,
    study: Sequence[str] | None = None,
    add: float = CONTINUITY_CORRECTION,
    drop_double_zero: bool = False,
) -> EffectSizes:
    """Log RR, log OR or RD per study from 2×2 counts (metafor `escalc`, `to="only0"`)."""
    measure = Measure(measure)
    if not measure.is_binary:
        raise EffectSizeError(f"measure {measure} is not a binary-outcome measure")
    a = _as_float(treat_events, "treat_events")
    n1 = _as_float(treat_total, "treat_total")
    c = _as_float(ctrl_events, "ctrl_events")
    n2 = _as_float(ctrl_total, "ctrl_total")
    k = a.shape[0]
    if not (n1.shape[0] == c.shape[0] == n2.shape[0] == k):
        raise EffectSizeError("treat_events, treat_total, ctrl_events and ctrl_total differ in length")
    labels = _labels(study, k)
    _check_finite({"treat_events": a, "treat_total": n1, "ctrl_events": c, "ctrl_total": n2}, labels)
    for name, arr in (("treat_events", a), ("treat_total", n1), ("ctrl_events", c), ("ctrl_total", n2)):
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            raise EffectSizeError(f"{labels[bad[0]]}: {name} is negative ({arr[bad[0]]:g})")
    for ev, tot, name in ((a, n1, "treat"), (c, n2, "ctrl")):
        bad = np.flatnonzero(ev > tot)
        if bad.size:
            i = bad[0]
            raise EffectSizeError(f"{labels[i]}: {name}_events ({ev[i]:g}) exceeds {name}_total ({tot[i]:g})")
        bad = np.flatnonzero(tot == 0)
        if bad.size:
            raise EffectSizeError(f"{labels[bad[0]]}: {name}_total is zero")
    b = n1 - a
    d = n2 - c
    keep = np.ones(k, dtype=bool)
    if drop_double_zero:
        keep = ~(((a == 0) & (c == 0)) | ((b == 0) & (d == 0)))
        if not keep.any():
            raise EffectSizeError("every study has no events (or only events) in both arms")
        a, b, c, d = a[keep], b[keep], c[keep], d[keep]
        labels = tuple(lab for lab, kept in zip(labels, keep, strict=True) if kept)
    counts = np.column_stack([a, b, c, d])
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    aa, bb, cc, dd = (x + np.where(zero, add, 0.0) for x in (a, b, c, d))
    m1, m2 = aa + bb, cc + dd
    p1, p2 = aa / m1, cc / m2
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure is Measure.RR:
            yi = np.log(p1) - np.log(p2)
            vi = 1 / aa - 1 / m1 + 1 / cc - 1 / m2
        elif measure is Measure.OR:
            yi = np.log(aa / bb) - np.log(cc / dd)
            vi = 1 / aa + 1 / bb + 1 / cc + 1 / dd
        else:
            yi = p1 - p2
            vi = p1 * (1 - p1) / m1 + p2 * (1 - p2) / m2
    bad = np.flatnonzero(~np.isfinite(yi) | ~np.isfinite(vi) | (vi <= 0))
    if bad.size:
        raise EffectSizeError(f"{labels[bad[0]]}: no usable {measure} (zero variance); use add > 0 or drop the study")
    return EffectSizes(measure, yi, vi, labels, corrected=zero, counts=counts)


def hedges_j(m: ArrayLike, exact: bool = True) -> FloatArray:
    """Small-sample correction factor of Hedges' g for m = n1 + n2 − 2 degrees of freedom
    [hedges-1981-g]; exact gamma-function form (metafor) or the approximation 1 − 3/(4m − 1)."""
    from scipy.special import gammaln  # deferred: keeps CLI start-up light

    m = np.asarray(m, dtype=float)
    if exact:
        return np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))
    return 1 - 3 / (4 * m - 1)


def continuous_effects(
    treat_mean: ArrayLike,
    treat_sd: ArrayLike,
    treat_n: ArrayLike,
    ctrl_mean: ArrayLike,
    ctrl_sd: ArrayLike,
    ctrl_n: ArrayLike,
    measure: Measure | str,
    study: Sequence[str] | None = None,
    exact_correction: bool = True,
    vtype: str = "LS",
) -> EffectSizes:
    """MD or SMD (Hedges' g) per study from group means, SDs and sizes (metafor `escalc`)."""
    measure = Measure(measure)
    if measure not in (Measure.MD, Measure.SMD):
        raise EffectSizeError(f"measure {measure} is not a continuous-outcome measure")
    if vtype not in ("LS", "UB"):
        raise EffectSizeError("vtype must be 'LS' (large-sample) or 'UB' (unbiased)")
    m1 = _as_float(treat_mean, "treat_mean")
    s1 = _as_float(treat_sd, "treat_sd")
    n1 = _as_float(treat_n, "treat_n")
    m2 = _as_float(ctrl_mean, "ctrl_mean")
    s2 = _as_float(ctrl_sd, "ctrl_sd")
    n2 = _as_float(ctrl_n, "ctrl_n")
    k = m1.shape[0]
    if not all(x.shape[0] == k for x in (s1, n1, m2, s2, n2)):
        raise EffectSizeError("the six continuous-outcome columns differ in length")
    labels = _labels(study, k)
    named = {
        "treat_mean": m1,
        "treat_sd": s1,
        "treat_n": n1,
        "ctrl_mean": m2,
        "ctrl_sd": s2,
        "ctrl_n": n2,
    }
    _check_finite(named, labels)
    for name in ("treat_sd", "ctrl_sd"):
        bad = np.flatnonzero(named[name] <= 0)
        if bad.size:
            raise EffectSizeError(f"{labels[bad[0]]}: {name} must be > 0 (got {named[name][bad[0]]:g})")
    for name in ("treat_n", "ctrl_n"):
        bad = np.flatnonzero(named[name] < 2)
        if bad.size:
            raise EffectSizeError(f"{labels[bad[0]]}: {name} must be at least 2 (got {named[name][bad[0]]:g})")
    if measure is Measure.MD:
        yi = m1 - m2
        vi = s1**2 / n1 + s2**2 / n2
    else:
        m = n1 + n2 - 2
        sdp = np.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / m)
        j = hedges_j(m, exact=exact_correction)
        yi = j * (m1 - m2) / sdp
        if vtype == "LS":
            vi = 1 / n1 + 1 / n2 + yi**2 / (2 * (n1 + n2))
        else:
            vi = 1 / n1 + 1 / n2 + (1 - (m - 2) / (m * j**2)) * yi**2
    return EffectSizes(measure, yi, vi, labels, corrected=np.zeros(k, dtype=bool))


def generic_effects(
    yi: ArrayLike, vi: ArrayLike, study: Sequence[str] | None = None, measure: Measure | str = Measure.GEN
) -> EffectSizes:
    """Precomputed effect sizes and sampling variances (e.g. log hazard ratios from papers)."""
    y = _as_float(yi, "yi")
    v = _as_float(vi, "vi")
    if y.shape != v.shape:
        raise EffectSizeError("yi and vi differ in length")
    labels = _labels(study, y.shape[0])
    _check_finite({"yi": y, "vi": v}, labels)
    bad = np.flatnonzero(v <= 0)
    if bad.size:
        raise EffectSizeError(f"{labels[bad[0]]}: vi must be > 0 (got {v[bad[0]]:g})")
    return EffectSizes(Measure(measure), y, v, labels, corrected=np.zeros(y.shape[0], dtype=bool))


def combine(*parts: EffectSizes) -> EffectSizes:
    """Concatenate effect sizes of the same measure (e.g. published studies plus a registry cohort)."""
    if not parts:
        raise EffectSizeError("nothing to combine")
    measure = parts[0].measure
    if any(p.measure != measure for p in parts):
        raise EffectSizeError("cannot combine effect sizes of different measures")
    counts = None
    if all(p.counts is not None for p in parts):
        counts = np.vstack([p.counts for p in parts if p.counts is not None])
    return EffectSizes(
        measure,
        np.concatenate([p.yi for p in parts]),
        np.concatenate([p.vi for p in parts]),
        tuple(s for p in parts for s in p.study),
        corrected=np.concatenate([p.corrected for p in parts]),
        counts=counts,
    )
