"""Registry statistics against hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from regenguide.evidence.effects import combine, generic_effects
from regenguide.evidence.meta import meta_analysis
from regenguide.evidence.registry import (
    RegistryStatsError,
    change_from_baseline,
    change_from_summary,
    difference_in_means,
    logistic_regression,
    mantel_haenszel_rr,
    mean_table,
    registry_study_row,
    risk_ratio,
    wilson_interval,
    wilson_table,
)

Z = stats.norm.ppf(0.975)


def _wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def test_wilson_closed_form() -> None:
    r = wilson_interval(3, 40)
    lo, hi = _wilson(3, 40)
    assert (r.events, r.total, r.rate) == (3, 40, 0.075)
    assert r.ci_low == pytest.approx(lo, rel=1e-12) and r.ci_high == pytest.approx(hi, rel=1e-12)
    zero = wilson_interval(0, 20)
    assert zero.ci_low == pytest.approx(0, abs=1e-15) and zero.ci_high == pytest.approx(_wilson(0, 20)[1])
    with pytest.raises(RegistryStatsError, match="denominator"):
        wilson_interval(0, 0)
    with pytest.raises(RegistryStatsError, match="exceed"):
        wilson_interval(5, 4)


@pytest.mark.parametrize(
    ("events", "total", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998_table(events: int, total: int, low: float, high: float) -> None:
    """Newcombe (1998), Stat Med 17:857, Table I, method 3 (score interval without continuity correction)."""
    r = wilson_interval(events, total)
    assert (round(r.ci_low, 4), round(r.ci_high, 4)) == (low, high)


def test_wilson_table_keeps_zero_denominators() -> None:
    df = pd.DataFrame({"modality": ["prp", "nanofat", "car_t"], "events": [3, 0, 0], "total": [40, 20, 0]})
    out = wilson_table(df)
    assert list(out["modality"]) == ["prp", "nanofat", "car_t"]
    assert out.loc[0, "ci_low"] == pytest.approx(_wilson(3, 40)[0])
    assert np.isnan(out.loc[2, "rate"]) and np.isnan(out.loc[2, "ci_high"])
    assert "rate" not in df.columns  # input untouched


def test_risk_ratio_katz() -> None:
    # 10/100 vs 20/100: RR 0.5, se(log RR) = sqrt(1/10 - 1/100 + 1/20 - 1/100)
    r = risk_ratio(10, 100, 20, 100)
    se = math.sqrt(1 / 10 - 1 / 100 + 1 / 20 - 1 / 100)
    assert r.rr == pytest.approx(0.5)
    assert r.se == pytest.approx(se)
    assert r.ci_low == pytest.approx(math.exp(math.log(0.5) - Z * se))
    assert r.ci_high == pytest.approx(math.exp(math.log(0.5) + Z * se))
    assert not r.corrected
    z0 = risk_ratio(0, 50, 4, 50)
    assert z0.corrected and z0.rr == pytest.approx((0.5 / 51) / (4.5 / 51))
    # cross-check the uncorrected case with statsmodels Table2x2
    from statsmodels.stats.contingency_tables import Table2x2

    ref = Table2x2(np.array([[10.0, 90.0], [20.0, 80.0]]))
    assert r.rr == pytest.approx(ref.riskratio) and r.ci_low == pytest.approx(ref.riskratio_confint()[0])


def test_mantel_haenszel_rr_hand_computed() -> None:
    # two strata: (a, n1, c, n2) = (2, 10, 4, 10) and (3, 20, 5, 10)
    a, n1, c, n2 = np.array([2, 3]), np.array([10, 20]), np.array([4, 5]), np.array([10, 10])
    n = n1 + n2
    rr = np.sum(a * n2 / n) / np.sum(c * n1 / n)
    var = np.sum((n1 * n2 * (a + c) - a * c * n) / n**2) / (np.sum(a * n2 / n) * np.sum(c * n1 / n))
    res = mantel_haenszel_rr(a, n1, c, n2)
    assert res.rr == pytest.approx(rr, rel=1e-12)
    from statsmodels.stats.contingency_tables import StratifiedTable

    tables = np.stack([np.array([[a[i], n1[i] - a[i]], [c[i], n2[i] - c[i]]]) for i in range(2)], axis=2)
    assert res.rr == pytest.approx(StratifiedTable(tables.astype(float)).riskratio_pooled, rel=1e-12)
    assert res.ci_low == pytest.approx(rr * math.exp(-Z * math.sqrt(var)), rel=1e-10)
    # MH odds ratio Σ(ad/N)/Σ(bc/N)
    b, d = n1 - a, n2 - c
    assert res.or_mh == pytest.approx(np.sum(a * d / n) / np.sum(b * c / n), rel=1e-12)
    # homogeneity Q of the stratum log RRs around the MH estimate
    y = np.log((a / n1) / (c / n2))
    v = 1 / a - 1 / n1 + 1 / c - 1 / n2
    assert res.homogeneity_q == pytest.approx(np.sum((y - math.log(rr)) ** 2 / v), rel=1e-10)
    assert res.homogeneity_df == 1
    assert res.breslow_day_p is not None and 0 <= res.breslow_day_p <= 1
    assert (res.treat_events, res.treat_total, res.ctrl_events, res.ctrl_total) == (5, 30, 9, 20)


def test_mantel_haenszel_skips_strata_with_an_empty_arm() -> None:
    res = mantel_haenszel_rr([2, 1], [10, 5], [4, 0], [10, 0])
    assert res.strata == 2 and res.strata_used == 1
    assert res.rr == pytest.approx(0.5)


def test_logistic_single_binary_predictor_is_cross_product_ratio() -> None:
    # guided: 5 events / 100; landmark: 15 / 100 → OR = (5*85)/(95*15), Woolf SE
    grouped = pd.DataFrame(
        {
            "event": [1, 0, 1, 0],
            "guided": [1, 1, 0, 0],
            "n": [5, 95, 15, 85],
        }
    )
    res = logistic_regression(grouped, "event", ["guided"], weights="n")
    term = {t.term: t for t in res.terms}["guided"]
    or_ = (5 * 85) / (95 * 15)
    se = math.sqrt(1 / 5 + 1 / 95 + 1 / 15 + 1 / 85)
    assert term.odds_ratio == pytest.approx(or_, rel=1e-6)
    assert term.se == pytest.approx(se, rel=1e-6)
    assert term.ci_high == pytest.approx(math.exp(math.log(or_) + Z * se), rel=1e-5)
    assert (res.n, res.events) == (200, 20)


def test_logistic_frequency_weights_equal_expanded_rows() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for guided in (0, 1):
        for fat in (0, 1):
            for event in (0, 1):
                rows.append({"guided": guided, "fat": fat, "event": event, "n": int(rng.integers(5, 60))})
    grouped = pd.DataFrame(rows)
    expanded = grouped.loc[grouped.index.repeat(grouped["n"])].reset_index(drop=True)
    a = logistic_regression(grouped, "event", ["guided", "fat"], weights="n")
    b = logistic_regression(expanded, "event", ["guided", "fat"])
    for ta, tb in zip(a.terms, b.terms, strict=True):
        assert ta.odds_ratio == pytest.approx(tb.odds_ratio, rel=1e-8)
        assert ta.se == pytest.approx(tb.se, rel=1e-8)
    with pytest.raises(RegistryStatsError, match="column 'age' not found"):
        logistic_regression(grouped, "event", ["age"])


def test_change_from_baseline_hand_computed() -> None:
    base = [10, 12, 9, 14]
    follow = [12, 15, 10, 17]  # differences 2, 3, 1, 3: mean 2.25, sd sqrt(0.9166…)
    res = change_from_baseline(base, follow)
    d = np.array([2, 3, 1, 3], dtype=float)
    sd = d.std(ddof=1)
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert res.mean_change == pytest.approx(2.25)
    assert res.sd_change == pytest.approx(sd)
    assert (res.ci_low, res.ci_high) == (pytest.approx(2.25 - half), pytest.approx(2.25 + half))
    assert res.p == pytest.approx(stats.ttest_rel(follow, base).pvalue, rel=1e-10)
    with pytest.raises(RegistryStatsError, match="pair 1"):
        change_from_baseline([1, float("nan")], [2, 3])


def test_registry_cohort_pooled_beside_published_studies() -> None:
    row = registry_study_row("RegenGuide registry 2026", 4, 400, 12, 380, "RR")
    assert row.study == ("RegenGuide registry 2026",)
    assert row.yi[0] == pytest.approx(math.log((4 / 400) / (12 / 380)))
    published = generic_effects([-0.5, -0.9], [0.09, 0.16], ["trial A", "trial B"], measure="RR")
    pooled = meta_analysis(combine(published, row), "REML")
    assert pooled.k == 3
    assert [s.study for s in pooled.studies][-1] == "RegenGuide registry 2026"
    assert pooled.exp is not None and pooled.exp.estimate < 1


def test_change_from_summary_equals_raw_pairs() -> None:
    base = np.array([10.0, 12, 9, 14, 11])
    follow = np.array([12.0, 15, 10, 17, 11])
    d = follow - base
    raw = change_from_baseline(base, follow)
    agg = change_from_summary(5, float(d.mean()), float(d.std(ddof=1)))
    assert agg.mean_baseline is None and raw.mean_baseline == pytest.approx(11.2)
    for field in ("mean_change", "sd_change", "ci_low", "ci_high", "t", "p"):
        assert getattr(agg, field) == pytest.approx(getattr(raw, field), rel=1e-12)
    with pytest.raises(RegistryStatsError, match="at least 2"):
        change_from_summary(1, 1.0, 0.0)


def test_difference_in_means_matches_welch_on_raw_data() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.55, 0.10, 23)  # e.g. graft retention, one processing method
    y = rng.normal(0.45, 0.15, 31)
    res = difference_in_means(23, float(x.mean()), float(x.std(ddof=1)), 31, float(y.mean()), float(y.std(ddof=1)))
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert res.t == pytest.approx(ref.statistic, rel=1e-10)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (res.ci_low, res.ci_high) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert res.df == pytest.approx(ref.df, rel=1e-10)


def test_mean_table_t_intervals() -> None:
    df = pd.DataFrame(
        {
            "method": ["coleman", "nanofat", "single"],
            "n": [10, 4, 1],
            "mean": [0.5, 0.4, 0.3],
            "sd": [0.1, 0.2, float("nan")],
        }
    )
    out = mean_table(df)
    half = stats.t.ppf(0.975, 9) * 0.1 / math.sqrt(10)
    assert out.loc[0, "ci_low"] == pytest.approx(0.5 - half)
    assert out.loc[1, "ci_high"] == pytest.approx(0.4 + stats.t.ppf(0.975, 3) * 0.2 / 2)
    assert np.isnan(out.loc[2, "ci_low"]) and list(out["method"]) == ["coleman", "nanofat", "single"]


def test_logistic_separation_is_a_clear_error() -> None:
    # no complication at all among guided procedures: the OR is not estimable
    df = pd.DataFrame({"event": [1, 0, 1, 0], "guided": [1, 1, 0, 0], "n": [0, 100, 15, 85]})
    with pytest.raises(RegistryStatsError, match="not estimable"):
        logistic_regression(df, "event", ["guided"], weights="n")
    # the risk ratio still works, with the continuity correction flagged
    rr = risk_ratio(0, 100, 15, 100)
    assert rr.corrected and rr.rr < 1
