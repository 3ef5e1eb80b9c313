"""Time-to-event summaries on lifelines [lifelines-2019]: Kaplan–Meier curves with the median and its
confidence interval [kaplan-meier-1958], the log-rank test for two or more groups [mantel-1966-logrank],
and Cox proportional-hazards summaries [cox-1972].

Conventions (lifelines'): the pointwise KM confidence band uses the exponential Greenwood (log(−log))
transform; the median's interval is read off that band (an upper bound of `None` means the band never
falls below 0.5, i.e. not reached). Cox ties are handled by Efron's method. A registry uses this for
durability, e.g. time to retreatment after PRP or fat grafting, censored at the last follow-up.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict


class SurvivalInputError(ValueError):
    """Bad time/event/group data; the message names the row and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupSummary(_Model):
    group: str
    n: int
    events: int
    median: float | None  # None: the curve never reaches 0.5
    median_ci_low: float | None
    median_ci_high: float | None


class LogRank(_Model):
    chi2: float
    df: int
    p: float


class SurvivalResult(_Model):
    level: float
    groups: list[GroupSummary]
    logrank: LogRank | None

    def to_json_dict(self) -> dict[str, object]:
        """The `regenguide survival --json` contract: per group `n, events, median`; `logrank`
        {chi2, df, p} when grouped."""
        out: dict[str, object] = {
            "level": self.level,
            "groups": {g.group: g.model_dump(exclude={"group"}) for g in self.groups},
        }
        if self.logrank is not None:
            out["logrank"] = self.logrank.model_dump()
        return out


class CoxTerm(_Model):
    covariate: str
    coef: float
    se: float
    hr: float
    ci_low: float
    ci_high: float
    z: float
    p: float


class CoxSummary(_Model):
    n: int
    events: int
    level: float
    concordance: float | None  # None with the statsmodels engine
    log_likelihood_ratio_p: float
    terms: list[CoxTerm]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def validate_survival_data(
    time: ArrayLike, event: ArrayLike, group: ArrayLike | None = None, *, first_row: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check durations (finite, ≥ 0) and events (0/1 or booleans); row numbers start at `first_row`
    (2 for a CSV with a header). Returns float durations, int events and string groups."""
    t_raw = np.asarray(time)
    if t_raw.dtype.kind in "iuf":
        t = t_raw.astype(float, copy=False)
    else:
        t = pd.to_numeric(pd.Series(t_raw), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise SurvivalInputError(f"row {bad[0] + first_row}: time is missing or not a number")
    bad = np.flatnonzero(t < 0)
    if bad.size:
        raise SurvivalInputError(f"row {bad[0] + first_row}: time is negative ({t[bad[0]]:g})")
    e_raw = np.asarray(event)
    raw_e = pd.Series(e_raw)
    if e_raw.dtype == bool:
        e = e_raw.astype(int)
    elif e_raw.dtype.kind in "iu" and np.isin(e_raw, (0, 1)).all():
        e = e_raw.astype(int, copy=False)
    else:
        e_num = pd.to_numeric(raw_e, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isin(e_num, (0.0, 1.0)))
        if bad.size:
            raise SurvivalInputError(
                f"row {bad[0] + first_row}: event must be 0 (censored) or 1 (event), got {raw_e.iloc[bad[0]]!r}"
            )
        e = e_num.astype(int)
    if t.shape != e.shape:
        raise SurvivalInputError("time and event differ in length")
    if t.size == 0:
        raise SurvivalInputError("no rows")
    g = None
    if group is not None:
        gs = pd.Series(np.asarray(group, dtype=object))
        if gs.shape[0] != t.shape[0]:
            raise SurvivalInputError("group and time differ in length")
        missing = np.flatnonzero(gs.isna().to_numpy())
        if missing.size:
            raise SurvivalInputError(f"row {missing[0] + first_row}: group is missing")
        g = gs.astype(str).to_numpy()
    return t, e, g


def _km_group(label: str, t: np.ndarray, e: np.ndarray, w: np.ndarray | None, level: float) -> GroupSummary:
    kmf = KaplanMeierFitter(alpha=1 - level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines warns that weights are non-integer floats
        kmf.fit(t, e, weights=w)
    median = _finite(kmf.median_survival_time_)
    ci = median_survival_times(kmf.confidence_interval_)
    lo, hi = (float(x) for x in ci.iloc[0].to_numpy())
    n = int(t.size) if w is None else int(round(float(w.sum())))
    events = int(e.sum()) if w is None else int(round(float(np.sum(w * e))))
    return GroupSummary(
        group=label,
        n=n,
        events=events,
        median=median,
        median_ci_low=_finite(lo),
        median_ci_high=_finite(hi),
    )


def _frequency_weights(weights: ArrayLike | None, size: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=float)
    if w.shape != (size,):
        raise SurvivalInputError("weights and time differ in length")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0) | (w != np.round(w)))
    if bad.size:
        raise SurvivalInputError(f"row {bad[0] + 1}: weight must be a whole number ≥ 0 (got {w[bad[0]]:g})")
    return w


def kaplan_meier(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike | None = None,
    level: float = 0.95,
    weights: ArrayLike | None = None,
) -> SurvivalResult:
    """Kaplan–Meier summary (n, events, median with CI) overall or per group, with the log-rank test
    across groups when there are at least two.

    `weights` are frequency weights (whole numbers): one row per distinct (time, event, group) with
    its count, as a SQL `GROUP BY` returns, gives the same result as one row per procedure (tested)."""
    t, e, g = validate_survival_data(time, event, group)
    w = _frequency_weights(weights, t.size)
    if g is None:
        return SurvivalResult(level=level, groups=[_km_group("all", t, e, w, level)], logrank=None)
    codes, uniques = pd.factorize(g, sort=True)
    labels = [str(u) for u in uniques]
    groups = [
        _km_group(lab, t[codes == i], e[codes == i], None if w is None else w[codes == i], level)
        for i, lab in enumerate(labels)
    ]
    logrank = None
    if len(labels) >= 2:
        # integer group codes: half the time of strings
        res = multivariate_logrank_test(t, codes, e, weights=w)
        logrank = LogRank(chi2=float(res.test_statistic), df=int(res.degrees_of_freedom), p=float(res.p_value))
    return SurvivalResult(level=level, groups=groups, logrank=logrank)


def cox_model(
    data: pd.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str] | None = None,
    strata: Sequence[str] | None = None,
    level: float = 0.95,
    engine: Literal["lifelines", "statsmodels"] = "lifelines",
) -> CoxSummary:
    """Cox proportional-hazards fit with Efron ties: hazard ratio, CI and p per covariate.
    Categorical covariates must be dummy-coded by the caller (the lead's SQL does this).

    `engine="lifelines"` (CoxPHFitter, default; also reports the concordance index) or
    `"statsmodels"` (PHReg), which gives the same estimates about three times faster on large
    registries (checked equal in the tests) and skips the O(n log n) concordance index."""
    for col in [duration_col, event_col, *(covariates or []), *(strata or [])]:
        if col not in data.columns:
            raise SurvivalInputError(f"column {col!r} not found (have: {', '.join(map(str, data.columns))})")
    validate_survival_data(data[duration_col], data[event_col])
    covs = list(covariates or [c for c in data.columns if c not in (duration_col, event_col, *(strata or []))])
    if not covs:
        raise SurvivalInputError("a Cox model needs at least one covariate")
    cols = [duration_col, event_col, *covs]
    cols += [s for s in (strata or []) if s not in cols]
    frame = data[cols]
    bad = frame[covs].apply(pd.to_numeric, errors="coerce").isna().any(axis=1).to_numpy()
    if bad.any():
        raise SurvivalInputError(f"row {int(np.flatnonzero(bad)[0]) + 1}: covariate missing or not numeric")
    if engine == "statsmodels":
        return _cox_statsmodels(frame, duration_col, event_col, covs, list(strata or []), level)
    if engine != "lifelines":
        raise SurvivalInputError(f"unknown Cox engine {engine!r}")
    cph = CoxPHFitter(alpha=1 - level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cph.fit(frame, duration_col=duration_col, event_col=event_col, strata=list(strata) if strata else None)
        except (ConvergenceError, ValueError, np.linalg.LinAlgError) as exc:
            raise SurvivalInputError(f"Cox model could not be fitted: {exc}".splitlines()[0]) from exc
    s = cph.summary
    lo_col = [c for c in s.columns if c.startswith("exp(coef) lower")][0]
    hi_col = [c for c in s.columns if c.startswith("exp(coef) upper")][0]
    terms = [
        CoxTerm(
            covariate=str(name),
            coef=float(row["coef"]),
            se=float(row["se(coef)"]),
            hr=float(row["exp(coef)"]),
            ci_low=float(row[lo_col]),
            ci_high=float(row[hi_col]),
            z=float(row["z"]),
            p=float(row["p"]),
        )
        for name, row in s.iterrows()
    ]
    lr = cph.log_likelihood_ratio_test()
    return CoxSummary(
        n=int(frame.shape[0]),
        events=int(frame[event_col].sum()),
        level=level,
        concordance=float(cph.concordance_index_),
        log_likelihood_ratio_p=float(lr.p_value),
        terms=terms,
    )


def _cox_statsmodels(
    frame: pd.DataFrame, duration_col: str, event_col: str, covs: list[str], strata: list[str], level: float
) -> CoxSummary:
    from scipy import stats
    from statsmodels.duration.hazard_regression import PHReg

    strata_codes = None
    if strata:
        strata_codes = frame[strata].astype(str).agg("|".join, axis=1).to_numpy()
    x = frame[covs].to_numpy(dtype=float)
    model = PHReg(
        frame[duration_col].to_numpy(dtype=float),
        x,
        status=frame[event_col].to_numpy(dtype=float),
        strata=strata_codes,
        ties="efron",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = model.fit()
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise SurvivalInputError(f"Cox model could not be fitted: {exc}".splitlines()[0]) from exc
    if not np.all(np.isfinite(fit.bse)) or np.any(np.abs(fit.params) > 30):
        raise SurvivalInputError("Cox model could not be fitted: hazard ratios not estimable (no events in a group?)")
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    terms = []
    for i, name in enumerate(covs):
        coef, se = float(fit.params[i]), float(fit.bse[i])
        terms.append(
            CoxTerm(
                covariate=name,
                coef=coef,
                se=se,
                hr=math.exp(coef),
                ci_low=math.exp(coef - z * se),
                ci_high=math.exp(coef + z * se),
                z=coef / se,
                p=float(2 * stats.norm.sf(abs(coef / se))),
            )
        )
    null_llf = model.loglike(np.zeros(len(covs)))
    lr_stat = 2 * (float(fit.llf) - float(null_llf))
    return CoxSummary(
        n=int(frame.shape[0]),
        events=int(frame[event_col].sum()),
        level=level,
        concordance=None,
        log_likelihood_ratio_p=float(stats.chi2.sf(lr_stat, len(covs))),
        terms=terms,
    )
