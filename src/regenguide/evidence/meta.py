"""Univariate meta-analysis: equal/fixed effects, random effects (DL, REML, PM), Mantel–Haenszel.

What is computed, and from where:

* inverse-variance pooling; Cochran's Q with its χ² p value; H² and I² [higgins-2002-i2];
* τ² by DerSimonian–Laird [dersimonian-1986], REML [viechtbauer-2005-reml] or Paule–Mandel
  [paule-1982]; its confidence interval by the Q-profile method [viechtbauer-2007-qprofile], which also
  bounds I² and H²;
* the Knapp–Hartung adjustment (t distribution with k − 1 df, scaled variance) [knapp-2003];
* a prediction interval μ ± crit·√(SE² + τ²) [higgins-2009-pi] (crit from the normal distribution, or
  t with k − 1 df under Knapp–Hartung, as metafor does);
* Egger's regression test for funnel-plot asymmetry [egger-1997] (standard normal deviate on precision,
  OLS via statsmodels; identical to metafor's `regtest(model="lm")`);
* Mantel–Haenszel pooling for RR, OR and RD [mantel-1959], with the Greenland–Robins variance for RR
  [greenland-1985-mh], Robins–Breslow–Greenland for OR [robins-1986-rbg] and Sato–Greenland–Robins for
  RD [sato-1989-rd].

I² is reported as metafor reports it: for random-effects fits 100·τ²/(τ² + s²) with s² the "typical"
within-study variance (equal to Higgins' (Q − df)/Q under DL), for FE and MH fits 100·max(0, (Q − df)/Q).

Why by hand: statsmodels' `combine_effects` covers FE/DL/PM but not REML, the Q-profile interval,
prediction intervals or Mantel–Haenszel RR/RD; the tests cross-check every shared number with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import optimize, stats

from regenguide.evidence.effects import EffectSizes, FloatArray, Measure


class Method(StrEnum):
    FE = "FE"  # equal/fixed effects, inverse variance
    DL = "DL"
    REML = "REML"
    PM = "PM"
    MH = "MH"  # Mantel–Haenszel (binary measures, fixed effect)


class MetaAnalysisError(ValueError):
    """The data cannot support the requested analysis (the message says why)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(_Model):
    low: float
    high: float


class EggerTest(_Model):
    """Egger's regression test: intercept of (yi/sei) regressed on (1/sei)."""

    intercept: float
    se: float
    t: float
    df: int
    p: float


class ExpSummary(_Model):
    estimate: float
    ci_low: float
    ci_high: float
    pi_low: float | None = None
    pi_high: float | None = None


class StudyEffect(_Model):
    study: str
    yi: float
    vi: float
    ci_low: float
    ci_high: float
    weight: float  # percent of the total weight in the chosen model
    corrected: bool = False  # 0.5 continuity correction applied


class MetaResult(_Model):
    measure: Measure
    method: Method
    knha: bool
    level: float
    k: int
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float  # z, or t under Knapp–Hartung
    df: int | None  # degrees of freedom of the t statistic (Knapp–Hartung)
    p: float
    tau2: float
    tau: float
    tau2_ci: Interval | None
    i2: float  # percent
    i2_ci: Interval | None
    h2: float
    q: float
    q_df: int
    q_p: float
    pi_low: float | None
    pi_high: float | None
    egger: EggerTest | None
    exp: ExpSummary | None  # ratio measures: estimate and intervals exponentiated
    studies: list[StudyEffect]

    def to_json_dict(self) -> dict[str, object]:
        """The `regenguide meta --json` contract: `k, estimate, se, ci_low, ci_high, tau2, i2, q, q_p`,
        plus `tau2_ci, pi_low, pi_high, egger` when k ≥ 3, plus `exp` for ratio measures."""
        out: dict[str, object] = {
            "measure": self.measure.value,
            "method": self.method.value,
            "knha": self.knha,
            "level": self.level,
            "k": self.k,
            "estimate": self.estimate,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "statistic": self.statistic,
            "df": self.df,
            "p": self.p,
            "tau2": self.tau2,
            "tau": self.tau,
            "i2": self.i2,
            "h2": self.h2,
            "q": self.q,
            "q_df": self.q_df,
            "q_p": self.q_p,
        }
        if self.k >= 3:
            out["tau2_ci"] = [self.tau2_ci.low, self.tau2_ci.high] if self.tau2_ci else None
            out["i2_ci"] = [self.i2_ci.low, self.i2_ci.high] if self.i2_ci else None
            out["pi_low"] = self.pi_low
            out["pi_high"] = self.pi_high
            out["egger"] = self.egger.model_dump() if self.egger else None
        if self.exp is not None:
            out["exp"] = self.exp.model_dump(exclude_none=True)
        out["studies"] = [s.model_dump() for s in self.studies]
        return out


# --- heterogeneity estimators -------------------------------------------------------------------


def _weighted_mean(yi: FloatArray, w: FloatArray) -> float:
    return float(np.sum(w * yi) / np.sum(w))


def generalised_q(yi: FloatArray, vi: FloatArray, tau2: float) -> float:
    """Σ wᵢ(yᵢ − μ̂)² with wᵢ = 1/(vᵢ + τ²); Cochran's Q at τ² = 0."""
    w = 1.0 / (vi + tau2)
    mu = _weighted_mean(yi, w)
    return float(np.sum(w * (yi - mu) ** 2))


def _upper_bracket(f: Callable[[float], float], start: float) -> float:
    hi = max(start, 1e-4)
    for _ in range(200):
        if f(hi) < 0:
            return hi
        hi *= 2.0
    raise MetaAnalysisError("could not bracket the heterogeneity estimate")


def tau2_dl(yi: FloatArray, vi: FloatArray) -> float:
    """DerSimonian–Laird moment estimator, truncated at 0 [dersimonian-1986]."""
    w = 1.0 / vi
    q = generalised_q(yi, vi, 0.0)
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    return max(0.0, float((q - (yi.size - 1)) / c))


def tau2_pm(yi: FloatArray, vi: FloatArray) -> float:
    """Paule–Mandel: τ² such that the generalised Q equals its expectation k − 1 [paule-1982]."""
    df = yi.size - 1

    def g(t: float) -> float:
        return generalised_q(yi, vi, t) - df

    if g(0.0) <= 0:
        return 0.0
    hi = _upper_bracket(g, float(np.var(yi)))
    return float(optimize.brentq(g, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))


def tau2_reml(yi: FloatArray, vi: FloatArray) -> float:
    """Restricted maximum likelihood: root of the REML score [viechtbauer-2005-reml],
    Σ wᵢ²(yᵢ − μ̂)² − (Σ wᵢ − Σ wᵢ²/Σ wᵢ) = 0, truncated at 0 (as metafor does)."""

    def score(t: float) -> float:
        w = 1.0 / (vi + t)
        mu = _weighted_mean(yi, w)
        sw = np.sum(w)
        return float(np.sum(w**2 * (yi - mu) ** 2) - (sw - np.sum(w**2) / sw))

    if score(0.0) <= 0:
        return 0.0
    hi = _upper_bracket(score, float(np.var(yi)))
    return float(optimize.brentq(score, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))


def tau2_q_profile(yi: FloatArray, vi: FloatArray, level: float = 0.95) -> Interval:
    """Q-profile confidence interval for τ² [viechtbauer-2007-qprofile]: the τ² values at which the
    generalised Q equals the upper and lower χ²(k − 1) quantiles (bounds truncated at 0)."""
    k = yi.size
    if k < 2:
        raise MetaAnalysisError("a τ² confidence interval needs at least 2 studies")
    alpha = 1 - level
    crit_hi = stats.chi2.ppf(1 - alpha / 2, k - 1)  # gives the lower bound of τ²
    crit_lo = stats.chi2.ppf(alpha / 2, k - 1)  # gives the upper bound of τ²

    def solve(crit: float) -> float:
        def g(t: float) -> float:
            return generalised_q(yi, vi, t) - crit

        if g(0.0) <= 0:
            return 0.0
        hi = _upper_bracket(g, float(np.var(yi)))
        return float(optimize.brentq(g, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))

    return Interval(low=solve(crit_hi), high=solve(crit_lo))


def typical_within_variance(vi: FloatArray) -> float:
    """s² = (k − 1)Σw / ((Σw)² − Σw²), the 'typical' sampling variance in I² = τ²/(τ² + s²)."""
    w = 1.0 / vi
    return float((vi.size - 1) * np.sum(w) / (np.sum(w) ** 2 - np.sum(w**2)))


# --- Egger ----------------------------------------------------------------------------------------


def egger_test(yi: FloatArray, vi: FloatArray) -> EggerTest:
    """Egger's test [egger-1997]: OLS of yᵢ/seᵢ on 1/seᵢ; the intercept measures asymmetry."""
    if yi.size < 3:
        raise MetaAnalysisError("Egger's test needs at least 3 studies")
    from statsmodels.regression.linear_model import OLS  # deferred: statsmodels is slow to import

    sei = np.sqrt(vi)
    if np.ptp(1.0 / sei) <= 1e-12 * float(np.max(1.0 / sei)):
        raise MetaAnalysisError("Egger's test needs studies of different precision")
    exog = np.column_stack([np.ones_like(sei), 1.0 / sei])
    fit = OLS(yi / sei, exog).fit()
    return EggerTest(
        intercept=float(fit.params[0]),
        se=float(fit.bse[0]),
        t=float(fit.tvalues[0]),
        df=int(fit.df_resid),
        p=float(fit.pvalues[0]),
    )


def _egger_or_none(yi: FloatArray, vi: FloatArray) -> EggerTest | None:
    """Egger's test when it is defined (k ≥ 3 and studies of different precision)."""
    try:
        return egger_test(yi, vi)
    except MetaAnalysisError:
        return None


# --- pooling --------------------------------------------------------------------------------------


def _crit(level: float, df: int | None) -> float:
    alpha = 1 - level
    if df is None:
        return float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.t.ppf(1 - alpha / 2, df))


def _study_rows(es: EffectSizes, w: FloatArray, level: float) -> list[StudyEffect]:
    z = _crit(level, None)
    sei = es.sei
    pct = 100 * w / np.sum(w)
    corrected = es.corrected if es.corrected.size == es.k else np.zeros(es.k, dtype=bool)
    return [
        StudyEffect(
            study=es.study[i],
            yi=float(es.yi[i]),
            vi=float(es.vi[i]),
            ci_low=float(es.yi[i] - z * sei[i]),
            ci_high=float(es.yi[i] + z * sei[i]),
            weight=float(pct[i]),
            corrected=bool(corrected[i]),
        )
        for i in range(es.k)
    ]


def _heterogeneity(
    yi: FloatArray, vi: FloatArray, tau2: float, random: bool, level: float
) -> tuple[float, int, float, float, float, Interval | None, Interval | None]:
    k = yi.size
    q = generalised_q(yi, vi, 0.0)
    q_df = k - 1
    q_p = float(stats.chi2.sf(q, q_df)) if q_df > 0 else float("nan")
    if k < 2:
        return q, q_df, q_p, 0.0, 1.0, None, None
    s2 = typical_within_variance(vi)
    if random:
        i2 = 100 * tau2 / (tau2 + s2)
        h2 = (tau2 + s2) / s2
    else:
        i2 = 100 * max(0.0, (q - q_df) / q) if q > 0 else 0.0
        h2 = q / q_df
    tau2_ci = i2_ci = None
    if k >= 3:
        tau2_ci = tau2_q_profile(yi, vi, level)
        i2_ci = Interval(low=100 * tau2_ci.low / (tau2_ci.low + s2), high=100 * tau2_ci.high / (tau2_ci.high + s2))
    return q, q_df, q_p, i2, h2, tau2_ci, i2_ci


def _exp_summary(
    measure: Measure, est: float, lo: float, hi: float, pi_lo: float | None, pi_hi: float | None
) -> ExpSummary | None:
    if not measure.is_ratio:
        return None
    return ExpSummary(
        estimate=math.exp(est),
        ci_low=math.exp(lo),
        ci_high=math.exp(hi),
        pi_low=None if pi_lo is None else math.exp(pi_lo),
        pi_high=None if pi_hi is None else math.exp(pi_hi),
    )


def meta_analysis(
    es: EffectSizes,
    method: Method | str = Method.REML,
    knha: bool = False,
    level: float = 0.95,
) -> MetaResult:
    """Pool study effect sizes. `method` is FE, DL, REML, PM or MH (binary measures only);
    `knha=True` applies the Knapp–Hartung adjustment (not with FE/MH)."""
    method = Method(method)
    if not 0 < level < 1:
        raise MetaAnalysisError("level must be between 0 and 1")
    if es.k < 1:
        raise MetaAnalysisError("no studies to pool")
    if method is Method.MH:
        if knha:
            raise MetaAnalysisError("Knapp–Hartung does not apply to Mantel–Haenszel pooling")
        return mantel_haenszel(es, level=level)
    if knha and method is Method.FE:
        raise MetaAnalysisError("Knapp–Hartung applies to random-effects models (DL, REML, PM)")
    if knha and es.k < 2:
        raise MetaAnalysisError("Knapp–Hartung needs at least 2 studies")
    yi, vi = es.yi, es.vi
    k = es.k
    if method is Method.FE or k == 1:
        tau2 = 0.0
    elif method is Method.DL:
        tau2 = tau2_dl(yi, vi)
    elif method is Method.REML:
        tau2 = tau2_reml(yi, vi)
    else:
        tau2 = tau2_pm(yi, vi)
    w = 1.0 / (vi + tau2)
    mu = _weighted_mean(yi, w)
    se = math.sqrt(1.0 / float(np.sum(w)))
    df: int | None = None
    if knha:
        df = k - 1
        se = math.sqrt(float(np.sum(w * (yi - mu) ** 2)) / (df * float(np.sum(w))))
    crit = _crit(level, df)
    stat = mu / se
    p = float(2 * (stats.norm.sf(abs(stat)) if df is None else stats.t.sf(abs(stat), df)))
    random = method is not Method.FE
    q, q_df, q_p, i2, h2, tau2_ci, i2_ci = _heterogeneity(yi, vi, tau2, random, level)
    pi_half = crit * math.sqrt(se**2 + tau2)
    pi_low, pi_high = mu - pi_half, mu + pi_half
    egger = _egger_or_none(yi, vi)
    ci_low, ci_high = mu - crit * se, mu + crit * se
    return MetaResult(
        measure=es.measure,
        method=method,
        knha=knha,
        level=level,
        k=k,
        estimate=mu,
        se=se,
        ci_low=ci_low,
        ci_high=ci_high,
        statistic=stat,
        df=df,
        p=p,
        tau2=tau2,
        tau=math.sqrt(tau2),
        tau2_ci=tau2_ci,
        i2=i2,
        i2_ci=i2_ci,
        h2=h2,
        q=q,
        q_df=q_df,
        q_p=q_p,
        pi_low=pi_low,
        pi_high=pi_high,
        egger=egger,
        exp=_exp_summary(es.measure, mu, ci_low, ci_high, pi_low, pi_high),
        studies=_study_rows(es, w, level),
    )


# --- Mantel–Haenszel ------------------------------------------------------------------------------


def mh_estimate(counts: FloatArray, measure: Measure | str) -> tuple[float, float, FloatArray]:
    """Mantel–Haenszel pooled estimate (log scale for RR/OR) and its standard error from a k×4 array
    of (a, b, c, d) = (treat events, treat non-events, ctrl events, ctrl non-events); also returns the
    per-stratum MH weights (for display). Raises when the pooled estimate is undefined."""
    measure = Measure(measure)
    a, b, c, d = (counts[:, j].astype(float) for j in range(4))
    n1, n2 = a + b, c + d
    n = n1 + n2
    if np.any(n <= 0):
        raise MetaAnalysisError("a stratum has no participants")
    if measure is Measure.OR:
        r, s = a * d / n, b * c / n
        sr, ss = r.sum(), s.sum()
        if sr <= 0 or ss <= 0:
            raise MetaAnalysisError("Mantel–Haenszel OR undefined: no discordant products (ad or bc all 0)")
        pp, qq = (a + d) / n, (b + c) / n
        var = np.sum(pp * r) / (2 * sr**2) + np.sum(pp * s + qq * r) / (2 * sr * ss) + np.sum(qq * s) / (2 * ss**2)
        return math.log(sr / ss), math.sqrt(var), s
    if measure is Measure.RR:
        r, s = a * n2 / n, c * n1 / n
        sr, ss = r.sum(), s.sum()
        if sr <= 0 or ss <= 0:
            raise MetaAnalysisError("Mantel–Haenszel RR undefined: no events in one arm of every stratum")
        var = np.sum((n1 * n2 * (a + c) - a * c * n) / n**2) / (sr * ss)
        return math.log(sr / ss), math.sqrt(var), s
    if measure is Measure.RD:
        wts = n1 * n2 / n
        sw = wts.sum()
        rd = float(np.sum((a * n2 - c * n1) / n) / sw)
        pk = (n1**2 * c - n2**2 * a + n1 * n2 * (n2 - n1) / 2) / n**2
        qk = (a * (n2 - c) + c * (n1 - a)) / (2 * n)
        var = (rd * np.sum(pk) + np.sum(qk)) / sw**2
        return rd, math.sqrt(var), wts
    raise MetaAnalysisError(f"Mantel–Haenszel pooling needs a binary measure, not {measure}")


def mantel_haenszel(es: EffectSizes, level: float = 0.95) -> MetaResult:
    """Mantel–Haenszel fixed-effect pooling of 2×2 tables (uncorrected counts). As metafor's
    `rma.mh` does, Q (and I², the τ² interval, Egger) uses the per-study continuity-corrected yi/vi
    around the MH estimate, leaving out studies with no events (or only events) in both arms, which
    carry no information on the comparison; they still count in k and add nothing to the MH sums."""
    if not es.measure.is_binary or es.counts is None:
        raise MetaAnalysisError("Mantel–Haenszel pooling needs 2×2 counts (RR, OR or RD)")
    est, se, mh_w = mh_estimate(es.counts, es.measure)
    crit = _crit(level, None)
    a, b, c, d = (es.counts[:, j] for j in range(4))
    informative = ~(((a == 0) & (c == 0)) | ((b == 0) & (d == 0)))
    yi, vi = es.yi[informative], es.vi[informative]
    k = es.k
    k_q = int(informative.sum())
    q = float(np.sum((yi - est) ** 2 / vi))
    q_df = max(k_q - 1, 0)
    q_p = float(stats.chi2.sf(q, q_df)) if q_df > 0 else float("nan")
    i2 = 100 * max(0.0, (q - q_df) / q) if (q > 0 and q_df > 0) else 0.0
    h2 = q / q_df if q_df > 0 else 1.0
    tau2_ci = i2_ci = None
    if k_q >= 3:
        tau2_ci = tau2_q_profile(yi, vi, level)
        s2 = typical_within_variance(vi)
        i2_ci = Interval(low=100 * tau2_ci.low / (tau2_ci.low + s2), high=100 * tau2_ci.high / (tau2_ci.high + s2))
    ci_low, ci_high = est - crit * se, est + crit * se
    stat = est / se
    return MetaResult(
        measure=es.measure,
        method=Method.MH,
        knha=False,
        level=level,
        k=k,
        estimate=est,
        se=se,
        ci_low=ci_low,
        ci_high=ci_high,
        statistic=stat,
        df=None,
        p=float(2 * stats.norm.sf(abs(stat))),
        tau2=0.0,
        tau=0.0,
        tau2_ci=tau2_ci,
        i2=i2,
        i2_ci=i2_ci,
        h2=h2,
        q=q,
        q_df=q_df,
        q_p=q_p,
        pi_low=ci_low,
        pi_high=ci_high,
        egger=_egger_or_none(yi, vi),
        exp=_exp_summary(es.measure, est, ci_low, ci_high, ci_low, ci_high),
        studies=_study_rows(es, np.asarray(mh_w, dtype=float), level),
    )
