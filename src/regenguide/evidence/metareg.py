"""Meta-regression (mixed-effects model yᵢ = xᵢ'β + uᵢ + εᵢ) and regression tests for funnel-plot
asymmetry, as metafor's `rma(yi, vi, mods=...)` and `regtest` [viechtbauer-2010-metafor].

τ² for the residual heterogeneity is estimated by REML (root of the restricted score
tr(P) = y'PPy, P = W − WX(X'WX)⁻¹X'W [viechtbauer-2005-reml]), DerSimonian–Laird's moment estimator
generalised to moderators, or fixed at 0 (FE). Coefficients are weighted least squares with weights
1/(vᵢ + τ²); tests use z, or t with k − p df and the Knapp–Hartung scale [knapp-2003].

`regression_test` is Egger's idea [egger-1997] in metafor's two forms: `model="lm"` (weighted least
squares with a free multiplicative scale; with predictor "sei" this is the classic Egger test) and
`model="rma"` (the mixed-effects meta-regression above; metafor's default). The predictor is the
standard error (`sei`) or √(1/nᵢ) (`sqrtninv`).

Why by hand: statsmodels has no heteroscedastic random-effects meta-regression with REML τ².
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy import optimize, stats

from regenguide.evidence.meta import MetaAnalysisError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Coefficient(_Model):
    term: str
    estimate: float
    se: float
    statistic: float
    p: float
    ci_low: float
    ci_high: float


class WaldTest(_Model):
    terms: list[str]
    statistic: float  # QM (χ²) or F under Knapp–Hartung
    df1: int
    df2: int | None
    p: float


class MetaRegressionResult(_Model):
    method: str
    knha: bool
    k: int
    p: int
    tau2: float
    qe: float  # residual heterogeneity
    qe_df: int
    qe_p: float
    df: int | None  # t df under Knapp–Hartung
    coefficients: list[Coefficient]
    vcov: list[list[float]]  # covariance matrix of the coefficients (intercept first)

    def wald_test(self, terms: Sequence[str] | None = None) -> WaldTest:
        """Omnibus test that the named coefficients (default: all moderators) are zero, as metafor's
        QM / `anova(res, btt=...)`: χ² with m df, or F(m, k − p) = QM/m under Knapp–Hartung."""
        names = [c.term for c in self.coefficients]
        chosen = list(terms) if terms is not None else names[1:]
        if not chosen:
            raise MetaAnalysisError("no moderator to test")
        unknown = [t for t in chosen if t not in names]
        if unknown:
            raise MetaAnalysisError(f"unknown term(s): {', '.join(unknown)} (have: {', '.join(names)})")
        idx = [names.index(t) for t in chosen]
        beta = np.array([self.coefficients[i].estimate for i in idx])
        cov = np.array(self.vcov)[np.ix_(idx, idx)]
        qm = float(beta @ np.linalg.solve(cov, beta))
        m = len(idx)
        if self.df is None:
            return WaldTest(terms=chosen, statistic=qm, df1=m, df2=None, p=float(stats.chi2.sf(qm, m)))
        f = qm / m
        return WaldTest(terms=chosen, statistic=f, df1=m, df2=self.df, p=float(stats.f.sf(f, m, self.df)))

    def predict(self, moderators: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Predicted average effect and its standard error at moderator values (rows; no intercept
        column), as metafor's `predict(res, newmods=...)`."""
        mods = np.asarray(moderators, dtype=float)
        if mods.ndim == 1:
            mods = mods[:, None] if self.p == 2 else mods[None, :]
        x = np.column_stack([np.ones(mods.shape[0]), mods])
        if x.shape[1] != self.p:
            raise MetaAnalysisError(f"expected {self.p - 1} moderator value(s) per row")
        beta = np.array([c.estimate for c in self.coefficients])
        cov = np.array(self.vcov)
        return x @ beta, np.sqrt(np.einsum("ij,jk,ik->i", x, cov, x))


def _design(moderators: ArrayLike, names: Sequence[str] | None, k: int) -> tuple[np.ndarray, list[str]]:
    mods = np.asarray(moderators, dtype=float)
    if mods.ndim == 1:
        mods = mods[:, None]
    if mods.shape[0] != k:
        raise MetaAnalysisError(f"moderators have {mods.shape[0]} rows for {k} studies")
    if not np.all(np.isfinite(mods)):
        raise MetaAnalysisError("moderators must be finite numbers")
    x = np.column_stack([np.ones(k), mods])
    labels = ["intercept", *(names or [f"x{i + 1}" for i in range(mods.shape[1])])]
    if len(labels) != x.shape[1]:
        raise MetaAnalysisError("one name per moderator column is needed")
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise MetaAnalysisError("moderators are collinear with each other or the intercept")
    return x, labels


def _wls(y: np.ndarray, v: np.ndarray, x: np.ndarray, tau2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = 1.0 / (v + tau2)
    xtwx_inv = np.linalg.inv(x.T @ (w[:, None] * x))
    beta = xtwx_inv @ (x.T @ (w * y))
    return beta, xtwx_inv, w


def _p_matrix(v: np.ndarray, x: np.ndarray, tau2: float) -> np.ndarray:
    w = 1.0 / (v + tau2)
    wx = w[:, None] * x
    return np.diag(w) - wx @ np.linalg.inv(x.T @ wx) @ wx.T


def _tau2_reml(y: np.ndarray, v: np.ndarray, x: np.ndarray) -> float:
    def score(t: float) -> float:
        p = _p_matrix(v, x, t)
        py = p @ y
        return float(py @ py - np.trace(p))

    if score(0.0) <= 0:
        return 0.0
    hi = max(float(np.var(y)), 1e-4)
    for _ in range(200):
        if score(hi) < 0:
            break
        hi *= 2.0
    else:
        raise MetaAnalysisError("could not bracket the REML estimate")
    return float(optimize.brentq(score, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))


def _tau2_dl(y: np.ndarray, v: np.ndarray, x: np.ndarray) -> float:
    k, p = x.shape
    p0 = _p_matrix(v, x, 0.0)
    qe = float(y @ p0 @ y)
    return max(0.0, (qe - (k - p)) / float(np.trace(p0)))


def meta_regression(
    yi: ArrayLike,
    vi: ArrayLike,
    moderators: ArrayLike,
    names: Sequence[str] | None = None,
    method: Literal["REML", "DL", "FE"] = "REML",
    knha: bool = False,
    level: float = 0.95,
) -> MetaRegressionResult:
    """Mixed-effects meta-regression of `yi` (variances `vi`) on `moderators` (one column per
    moderator; an intercept is added)."""
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    if y.shape != v.shape or y.ndim != 1:
        raise MetaAnalysisError("yi and vi must be equally long one-dimensional arrays")
    if np.any(v <= 0) or not np.all(np.isfinite(y)):
        raise MetaAnalysisError("vi must be > 0 and yi finite")
    k = y.size
    x, labels = _design(moderators, names, k)
    p = x.shape[1]
    if k <= p:
        raise MetaAnalysisError(f"{k} studies cannot support {p} coefficients")
    if method == "REML":
        tau2 = _tau2_reml(y, v, x)
    elif method == "DL":
        tau2 = _tau2_dl(y, v, x)
    elif method == "FE":
        tau2 = 0.0
    else:
        raise MetaAnalysisError(f"unknown method {method!r} (REML, DL or FE)")
    beta, cov, w = _wls(y, v, x, tau2)
    df: int | None = None
    if knha:
        df = k - p
        resid = y - x @ beta
        cov = cov * float(np.sum(w * resid**2)) / df
    se = np.sqrt(np.diag(cov))
    stat = beta / se
    if df is None:
        pvals = 2 * stats.norm.sf(np.abs(stat))
        crit = float(stats.norm.ppf(1 - (1 - level) / 2))
    else:
        pvals = 2 * stats.t.sf(np.abs(stat), df)
        crit = float(stats.t.ppf(1 - (1 - level) / 2, df))
    p0 = _p_matrix(v, x, 0.0)
    qe = float(y @ p0 @ y)
    coefs = [
        Coefficient(
            term=labels[j],
            estimate=float(beta[j]),
            se=float(se[j]),
            statistic=float(stat[j]),
            p=float(pvals[j]),
            ci_low=float(beta[j] - crit * se[j]),
            ci_high=float(beta[j] + crit * se[j]),
        )
        for j in range(p)
    ]
    return MetaRegressionResult(
        method=method,
        knha=knha,
        k=k,
        p=p,
        tau2=tau2,
        qe=qe,
        qe_df=k - p,
        qe_p=float(stats.chi2.sf(qe, k - p)),
        df=df,
        coefficients=coefs,
        vcov=cov.tolist(),
    )


class RegressionTest(_Model):
    model: str
    predictor: str
    statistic: float  # z (model="rma") or t (model="lm")
    df: int | None
    p: float
    slope: float


def regression_test(
    yi: ArrayLike,
    vi: ArrayLike,
    model: Literal["lm", "rma"] = "rma",
    predictor: Literal["sei", "sqrtninv"] = "sei",
    ni: ArrayLike | None = None,
    method: Literal["REML", "DL", "FE"] = "REML",
) -> RegressionTest:
    """Regression test for funnel-plot asymmetry (metafor `regtest`): regress yᵢ on the predictor
    (standard error, or √(1/nᵢ) with total sample sizes `ni`) and test its slope."""
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    if y.size < 3:
        raise MetaAnalysisError("a regression test needs at least 3 studies")
    if predictor == "sei":
        pred = np.sqrt(v)
    elif predictor == "sqrtninv":
        if ni is None:
            raise MetaAnalysisError("predictor 'sqrtninv' needs the sample sizes ni")
        n = np.asarray(ni, dtype=float)
        if n.shape != y.shape or np.any(n <= 0):
            raise MetaAnalysisError("ni must be positive, one per study")
        pred = np.sqrt(1.0 / n)
    else:
        raise MetaAnalysisError(f"unknown predictor {predictor!r}")
    if model == "rma":
        res = meta_regression(y, v, pred, names=[predictor], method=method)
        c = res.coefficients[1]
        return RegressionTest(model=model, predictor=predictor, statistic=c.statistic, df=None, p=c.p, slope=c.estimate)
    if model == "lm":
        from statsmodels.regression.linear_model import WLS  # deferred: statsmodels is slow to import

        fit = WLS(y, np.column_stack([np.ones_like(pred), pred]), weights=1.0 / v).fit()
        return RegressionTest(
            model=model,
            predictor=predictor,
            statistic=float(fit.tvalues[1]),
            df=int(fit.df_resid),
            p=float(fit.pvalues[1]),
            slope=float(fit.params[1]),
        )
    raise MetaAnalysisError(f"unknown model {model!r} (lm or rma)")
