"""Statistics for registry analytics, on counts and arrays the database has already aggregated.

The lead's SQL produces the counts (events and denominators per modality, region, guidance, stratum);
these pure functions turn them into rates and comparisons with their uncertainty, always carrying the
denominator:

* Wilson score interval for a proportion [wilson-1927] (statsmodels `proportion_confint`);
* risk ratio with the Katz log interval [katz-1978-rr-ci] from one 2×2 table (0.5 added to every cell
  when one is zero, as in the meta-analysis);
* Mantel–Haenszel risk ratio across strata [mantel-1959] with the Greenland–Robins variance
  [greenland-1985-mh], a homogeneity test (Cochran's Q of the stratum log RRs around the MH estimate),
  and the MH odds ratio with the Breslow–Day test [breslow-day-1980] from statsmodels `StratifiedTable`;
* adjusted logistic regression (statsmodels GLM, binomial, frequency weights so that grouped counts give
  the same fit as one row per procedure) returning odds ratios with Wald intervals;
* change from baseline of paired scores (mean difference with a t interval), from the pairs or from the
  SQL aggregates of the differences; means with t intervals and Welch differences of means from summary
  statistics (e.g. graft retention by processing method);
* a registry comparison as a study row, so a clinic's cohort can be pooled beside published trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy import stats

from regenguide.evidence.effects import EffectSizes, Measure, binary_effects
from regenguide.evidence.meta import mh_estimate


class RegistryStatsError(ValueError):
    """Counts or arrays that cannot support the requested statistic (the message says which)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Proportion(_Model):
    events: int
    total: int
    rate: float
    ci_low: float
    ci_high: float
    method: str = "wilson"


def _check_counts(events: np.ndarray, totals: np.ndarray, what: str = "") -> None:
    prefix = f"{what}: " if what else ""
    if events.shape != totals.shape:
        raise RegistryStatsError(f"{prefix}events and totals differ in shape")
    if np.any(~np.isfinite(events)) or np.any(~np.isfinite(totals)):
        raise RegistryStatsError(f"{prefix}counts must be finite numbers")
    if np.any(events < 0) or np.any(totals < 0):
        raise RegistryStatsError(f"{prefix}counts must not be negative")
    if np.any(events > totals):
        i = int(np.flatnonzero(events > totals)[0])
        raise RegistryStatsError(f"{prefix}events ({events.flat[i]:g}) exceed the total ({totals.flat[i]:g})")


def wilson_interval(events: int, total: int, level: float = 0.95) -> Proportion:
    """Proportion with its Wilson score interval [wilson-1927]."""
    e, n = np.asarray([events], dtype=float), np.asarray([total], dtype=float)
    _check_counts(e, n)
    if total == 0:
        raise RegistryStatsError("a rate needs a denominator greater than 0")
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(events, total, alpha=1 - level, method="wilson")
    return Proportion(events=int(events), total=int(total), rate=events / total, ci_low=float(lo), ci_high=float(hi))


def wilson_table(
    frame: pd.DataFrame, events: str = "events", total: str = "total", level: float = 0.95
) -> pd.DataFrame:
    """Add `rate`, `ci_low`, `ci_high` (Wilson) columns to a table of aggregated counts; rows with a
    zero denominator get NaN rates rather than disappearing."""
    for col in (events, total):
        if col not in frame.columns:
            raise RegistryStatsError(f"column {col!r} not found")
    from statsmodels.stats.proportion import proportion_confint

    e = frame[events].to_numpy(dtype=float)
    n = frame[total].to_numpy(dtype=float)
    _check_counts(e, n)
    out = frame.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_n = np.where(n > 0, n, 1.0)
        lo, hi = proportion_confint(e, safe_n, alpha=1 - level, method="wilson")
        out["rate"] = np.where(n > 0, e / safe_n, np.nan)
    out["ci_low"] = np.where(n > 0, lo, np.nan)
    out["ci_high"] = np.where(n > 0, hi, np.nan)
    return out


class RiskRatio(_Model):
    treat_events: int
    treat_total: int
    ctrl_events: int
    ctrl_total: int
    rr: float
    ci_low: float
    ci_high: float
    log_rr: float
    se: float
    p: float
    corrected: bool  # 0.5 added to every cell because one was zero


def _table(a: float, n1: float, c: float, n2: float) -> np.ndarray:
    e = np.asarray([a, c], dtype=float)
    n = np.asarray([n1, n2], dtype=float)
    _check_counts(e, n)
    if n1 <= 0 or n2 <= 0:
        raise RegistryStatsError("both groups need at least one procedure")
    return np.array([[a, n1 - a], [c, n2 - c]], dtype=float)


def risk_ratio(
    treat_events: int, treat_total: int, ctrl_events: int, ctrl_total: int, level: float = 0.95
) -> RiskRatio:
    """Risk ratio (treated vs control, e.g. image-guided vs landmark) with the Katz log interval."""
    # Computed with the meta-analysis effect-size code, not statsmodels' Table2x2: its shift_zeros adds 0.5
    # only to the zero cell (not to all four, as metafor does) and writes into the caller's array.
    _table(treat_events, treat_total, ctrl_events, ctrl_total)
    es = binary_effects([treat_events], [treat_total], [ctrl_events], [ctrl_total], Measure.RR)
    log_rr, se = float(es.yi[0]), float(np.sqrt(es.vi[0]))
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    return RiskRatio(
        treat_events=int(treat_events),
        treat_total=int(treat_total),
        ctrl_events=int(ctrl_events),
        ctrl_total=int(ctrl_total),
        rr=math.exp(log_rr),
        ci_low=math.exp(log_rr - z * se),
        ci_high=math.exp(log_rr + z * se),
        log_rr=log_rr,
        se=se,
        p=float(2 * stats.norm.sf(abs(log_rr / se))),
        corrected=bool(es.corrected[0]),
    )


class StratifiedRiskRatio(_Model):
    strata: int
    treat_events: int
    treat_total: int
    ctrl_events: int
    ctrl_total: int
    rr: float
    ci_low: float
    ci_high: float
    p: float
    homogeneity_q: float
    homogeneity_df: int
    homogeneity_p: float
    or_mh: float | None
    or_ci_low: float | None
    or_ci_high: float | None
    breslow_day_p: float | None
    strata_used: int  # strata with participants in both arms


def mantel_haenszel_rr(
    treat_events: ArrayLike,
    treat_total: ArrayLike,
    ctrl_events: ArrayLike,
    ctrl_total: ArrayLike,
    level: float = 0.95,
) -> StratifiedRiskRatio:
    """Mantel–Haenszel risk ratio across strata (e.g. modality × region) with Greenland–Robins CI,
    a homogeneity test of the stratum risk ratios, and the MH odds ratio with Breslow–Day."""
    a = np.asarray(treat_events, dtype=float)
    n1 = np.asarray(treat_total, dtype=float)
    c = np.asarray(ctrl_events, dtype=float)
    n2 = np.asarray(ctrl_total, dtype=float)
    _check_counts(a, n1, "treated")
    _check_counts(c, n2, "control")
    if not (a.shape == c.shape == n1.shape == n2.shape) or a.ndim != 1:
        raise RegistryStatsError("the four count arrays must be one-dimensional and equally long")
    used = (n1 > 0) & (n2 > 0)  # a stratum with an empty arm carries no comparison
    if not used.any():
        raise RegistryStatsError("no stratum has procedures in both groups")
    a, n1, c, n2 = a[used], n1[used], c[used], n2[used]
    counts = np.column_stack([a, n1 - a, c, n2 - c])
    try:
        log_rr, se, _ = mh_estimate(counts, Measure.RR)
    except ValueError as exc:
        raise RegistryStatsError(str(exc)) from exc
    z = stats.norm.ppf(1 - (1 - level) / 2)
    es = binary_effects(a, n1, c, n2, Measure.RR)
    q = float(np.sum((es.yi - log_rr) ** 2 / es.vi))
    q_df = int(a.size - 1)
    or_mh = or_lo = or_hi = bd_p = None
    from statsmodels.stats.contingency_tables import StratifiedTable

    tables = np.stack([np.array([[x[0], x[1]], [x[2], x[3]]]) for x in counts], axis=2)
    st_tab = StratifiedTable(tables)
    r = np.sum(counts[:, 0] * counts[:, 3] / counts.sum(axis=1))
    s = np.sum(counts[:, 1] * counts[:, 2] / counts.sum(axis=1))
    if r > 0 and s > 0:
        or_mh = float(st_tab.oddsratio_pooled)
        lo, hi = st_tab.oddsratio_pooled_confint(alpha=1 - level)
        or_lo, or_hi = float(lo), float(hi)
        if a.size >= 2:
            bd_p = float(st_tab.test_equal_odds().pvalue)
    return StratifiedRiskRatio(
        strata=int(used.size),
        strata_used=int(used.sum()),
        treat_events=int(a.sum()),
        treat_total=int(n1.sum()),
        ctrl_events=int(c.sum()),
        ctrl_total=int(n2.sum()),
        rr=math.exp(log_rr),
        ci_low=math.exp(log_rr - z * se),
        ci_high=math.exp(log_rr + z * se),
        p=float(2 * stats.norm.sf(abs(log_rr / se))),
        homogeneity_q=q,
        homogeneity_df=q_df,
        homogeneity_p=float(stats.chi2.sf(q, q_df)) if q_df > 0 else float("nan"),
        or_mh=or_mh,
        or_ci_low=or_lo,
        or_ci_high=or_hi,
        breslow_day_p=bd_p,
    )


class OddsRatioTerm(_Model):
    term: str
    coef: float
    se: float
    odds_ratio: float
    ci_low: float
    ci_high: float
    p: float


class LogisticSummary(_Model):
    n: int  # procedures (sum of frequency weights)
    events: int
    terms: list[OddsRatioTerm]
    converged: bool
    level: float


def logistic_regression(
    data: pd.DataFrame,
    outcome: str,
    predictors: Sequence[str],
    weights: str | None = None,
    level: float = 0.95,
) -> LogisticSummary:
    """Adjusted logistic regression: `outcome` (0/1) on `predictors` (numeric or already dummy-coded)
    with an intercept; `weights` names a frequency-weight column (the count of procedures in each
    aggregated row). Returns odds ratios with Wald CIs (statsmodels GLM binomial)."""
    needed = [outcome, *predictors, *([weights] if weights else [])]
    for col in needed:
        if col not in data.columns:
            raise RegistryStatsError(f"column {col!r} not found")
    if not predictors:
        raise RegistryStatsError("at least one predictor is needed")
    frame = data[needed].apply(pd.to_numeric, errors="coerce")
    bad = frame.isna().any(axis=1).to_numpy()
    if bad.any():
        raise RegistryStatsError(f"row {int(np.flatnonzero(bad)[0])}: missing or non-numeric value")
    y = frame[outcome].to_numpy(dtype=float)
    if not np.isin(y, (0.0, 1.0)).all():
        raise RegistryStatsError(f"{outcome} must be 0 or 1")
    fw = frame[weights].to_numpy(dtype=float) if weights else np.ones_like(y)
    if np.any(fw < 0):
        raise RegistryStatsError("frequency weights must not be negative")
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.tools.tools import add_constant

    x = add_constant(frame[list(predictors)].astype(float), has_constant="add")
    model = GLM(y, x, family=families.Binomial(), freq_weights=fw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation is detected below and reported as an error
        try:
            fit = model.fit()
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise RegistryStatsError(f"logistic regression failed: {exc}") from exc
    fitted = np.asarray(fit.fittedvalues, dtype=float)
    used = fw > 0
    if np.any((fitted[used] < 1e-8) | (fitted[used] > 1 - 1e-8)) or np.any(np.abs(fit.params) > 30):
        raise RegistryStatsError(
            "odds ratios are not estimable: a predictor level has no events (or only events) "
            "(complete or quasi-complete separation); report the counts, a risk ratio with continuity "
            "correction or a Mantel–Haenszel estimate instead"
        )
    ci = fit.conf_int(alpha=1 - level)
    terms = [
        OddsRatioTerm(
            term=str(name),
            coef=float(fit.params[name]),
            se=float(fit.bse[name]),
            odds_ratio=math.exp(float(fit.params[name])),
            ci_low=math.exp(float(ci.loc[name, 0])),
            ci_high=math.exp(float(ci.loc[name, 1])),
            p=float(fit.pvalues[name]),
        )
        for name in fit.params.index
    ]
    converged = bool(getattr(fit, "converged", True))
    return LogisticSummary(
        n=int(round(fw.sum())),
        events=int(round(float(np.sum(fw * y)))),
        terms=terms,
        converged=converged,
        level=level,
    )


class ChangeFromBaseline(_Model):
    n: int
    mean_baseline: float | None  # None when computed from summary statistics of the differences
    mean_follow_up: float | None
    mean_change: float
    sd_change: float
    ci_low: float
    ci_high: float
    t: float
    p: float


def change_from_baseline(baseline: ArrayLike, follow_up: ArrayLike, level: float = 0.95) -> ChangeFromBaseline:
    """Paired mean change (follow-up − baseline) with a t interval on n − 1 df; pairs with a missing
    value are an error, not silently dropped (the caller decides how to report incomplete pairs)."""
    b = np.asarray(baseline, dtype=float)
    f = np.asarray(follow_up, dtype=float)
    if b.shape != f.shape or b.ndim != 1:
        raise RegistryStatsError("baseline and follow-up must be equally long one-dimensional arrays")
    bad = np.flatnonzero(~np.isfinite(b) | ~np.isfinite(f))
    if bad.size:
        raise RegistryStatsError(f"pair {int(bad[0])}: missing baseline or follow-up value")
    if b.size < 2:
        raise RegistryStatsError("change from baseline needs at least 2 pairs")
    d = f - b
    summary = change_from_summary(int(b.size), float(d.mean()), float(d.std(ddof=1)), level)
    return summary.model_copy(update={"mean_baseline": float(b.mean()), "mean_follow_up": float(f.mean())})


def change_from_summary(n: int, mean_change: float, sd_change: float, level: float = 0.95) -> ChangeFromBaseline:
    """Paired change from the SQL aggregates of the per-patient differences (count, mean, SD with
    n − 1): same interval and test as `change_from_baseline` on the raw pairs."""
    if n < 2:
        raise RegistryStatsError("change from baseline needs at least 2 pairs")
    if not (math.isfinite(mean_change) and math.isfinite(sd_change)) or sd_change < 0:
        raise RegistryStatsError("mean and SD of the change must be finite, SD ≥ 0")
    mean, sd = float(mean_change), float(sd_change)
    se = sd / math.sqrt(n)
    crit = float(stats.t.ppf(1 - (1 - level) / 2, n - 1))
    if se > 0:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
    else:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p = 0.0 if mean else 1.0
    return ChangeFromBaseline(
        n=n,
        mean_baseline=None,
        mean_follow_up=None,
        mean_change=mean,
        sd_change=sd,
        ci_low=mean - crit * se,
        ci_high=mean + crit * se,
        t=t,
        p=p,
    )


class MeanDifference(_Model):
    n1: int
    mean1: float
    n2: int
    mean2: float
    difference: float  # mean1 − mean2
    se: float
    df: float  # Welch–Satterthwaite
    ci_low: float
    ci_high: float
    t: float
    p: float


def difference_in_means(
    n1: int, mean1: float, sd1: float, n2: int, mean2: float, sd2: float, level: float = 0.95
) -> MeanDifference:
    """Welch difference of two means from summary statistics (e.g. graft retention by processing
    method, aggregated in SQL): t test via scipy `ttest_ind_from_stats(equal_var=False)`, CI on the
    Welch–Satterthwaite df."""
    if n1 < 2 or n2 < 2:
        raise RegistryStatsError("each group needs at least 2 observations")
    if sd1 < 0 or sd2 < 0 or not all(math.isfinite(x) for x in (mean1, sd1, mean2, sd2)):
        raise RegistryStatsError("means and SDs must be finite, SDs ≥ 0")
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        raise RegistryStatsError("both groups have zero spread: no test is possible")
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    res = stats.ttest_ind_from_stats(mean1, sd1, n1, mean2, sd2, n2, equal_var=False)
    crit = float(stats.t.ppf(1 - (1 - level) / 2, df))
    diff = mean1 - mean2
    return MeanDifference(
        n1=n1,
        mean1=mean1,
        n2=n2,
        mean2=mean2,
        difference=diff,
        se=se,
        df=df,
        ci_low=diff - crit * se,
        ci_high=diff + crit * se,
        t=float(res.statistic),
        p=float(res.pvalue),
    )


def mean_table(
    frame: pd.DataFrame, n: str = "n", mean: str = "mean", sd: str = "sd", level: float = 0.95
) -> pd.DataFrame:
    """Add t-based `ci_low`/`ci_high` for each row's mean (SQL aggregates: count, mean, sample SD);
    rows with n < 2 get NaN intervals rather than disappearing."""
    for col in (n, mean, sd):
        if col not in frame.columns:
            raise RegistryStatsError(f"column {col!r} not found")
    nn = frame[n].to_numpy(dtype=float)
    mm = frame[mean].to_numpy(dtype=float)
    ss = frame[sd].to_numpy(dtype=float)
    if np.any(nn < 0) or np.any(ss[np.isfinite(ss)] < 0):
        raise RegistryStatsError("counts and SDs must not be negative")
    ok = nn >= 2
    df = np.where(ok, nn - 1, 1.0)
    crit = stats.t.ppf(1 - (1 - level) / 2, df)
    half = crit * ss / np.sqrt(np.where(ok, nn, 1.0))
    out = frame.copy()
    out["ci_low"] = np.where(ok, mm - half, np.nan)
    out["ci_high"] = np.where(ok, mm + half, np.nan)
    return out


def registry_study_row(
    label: str,
    treat_events: int,
    treat_total: int,
    ctrl_events: int,
    ctrl_total: int,
    measure: Measure | str = Measure.RR,
) -> EffectSizes:
    """A registry comparison (e.g. this clinic's image-guided vs landmark complications) as one study
    row, to be `combine`d with published studies and pooled. Label it clearly as registry data: it is
    observational and starts at GRADE 'low'."""
    return binary_effects([treat_events], [treat_total], [ctrl_events], [ctrl_total], measure, study=[label])
