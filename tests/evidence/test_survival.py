"""Survival summaries against published reference values.

* Freireich et al. 1963 leukaemia remission data (lifelines `load_leukemia`, 6-MP `Rx=0` vs placebo
  `Rx=1`, 21 patients each): log-rank χ² = 16.79 (1 df) and medians 23 and 8 weeks, as tabled in
  Kleinbaum & Klein, *Survival Analysis*; Cox HR 4.817 (coef 1.572, se 0.412, Efron ties) as R's
  `coxph` reports for these data.
* Waltons (lifelines docs): log-rank test statistic 122.25.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_leukemia, load_waltons

from regenguide.evidence.survival import SurvivalInputError, cox_model, kaplan_meier


def test_freireich_logrank_and_medians() -> None:
    d = load_leukemia()
    res = kaplan_meier(d.t, d.status, d.Rx)
    assert res.logrank is not None
    assert round(res.logrank.chi2, 2) == 16.79
    assert res.logrank.df == 1
    assert res.logrank.p == pytest.approx(4.17e-5, rel=1e-2)
    by = {g.group: g for g in res.groups}
    assert (by["0"].n, by["0"].events, by["0"].median) == (21, 9, 23.0)
    assert (by["1"].n, by["1"].events, by["1"].median) == (21, 21, 8.0)
    # 6-MP: the upper confidence band never falls below 0.5 → the median's upper bound is not reached
    assert by["0"].median_ci_high is None and by["0"].median_ci_low == 13.0
    assert (by["1"].median_ci_low, by["1"].median_ci_high) == (4.0, 11.0)
    js = res.to_json_dict()
    assert set(js["groups"]["1"]) >= {"n", "events", "median"}
    assert set(js["logrank"]) == {"chi2", "df", "p"}


def test_freireich_cox() -> None:
    d = load_leukemia()
    cox = cox_model(d, "t", "status", ["Rx"])
    (term,) = cox.terms
    assert round(term.coef, 3) == 1.572
    assert round(term.hr, 3) == 4.817
    assert round(term.se, 3) == 0.412
    assert term.ci_low == pytest.approx(math.exp(term.coef - 1.959964 * term.se), rel=1e-5)
    assert cox.n == 42 and cox.events == 30
    assert term.p < 0.001


def test_cox_engines_agree() -> None:
    d = load_leukemia()
    a = cox_model(d, "t", "status", ["Rx", "logWBC"])
    b = cox_model(d, "t", "status", ["Rx", "logWBC"], engine="statsmodels")
    assert b.concordance is None and a.concordance is not None and 0.5 < a.concordance <= 1
    for ta, tb in zip(a.terms, b.terms, strict=True):
        assert ta.covariate == tb.covariate
        assert ta.coef == pytest.approx(tb.coef, rel=1e-5)
        assert ta.se == pytest.approx(tb.se, rel=1e-4)
        assert ta.ci_high == pytest.approx(tb.ci_high, rel=1e-4)
    assert a.log_likelihood_ratio_p == pytest.approx(b.log_likelihood_ratio_p, rel=1e-3)
    # stratified by sex: both engines again agree
    sa = cox_model(d, "t", "status", ["Rx"], strata=["sex"])
    sb = cox_model(d, "t", "status", ["Rx"], strata=["sex"], engine="statsmodels")
    assert sa.terms[0].coef == pytest.approx(sb.terms[0].coef, rel=1e-5)


def test_waltons_logrank() -> None:
    w = load_waltons()
    res = kaplan_meier(w["T"], w["E"], w["group"])
    assert res.logrank is not None and round(res.logrank.chi2, 2) == 122.25
    assert {g.group for g in res.groups} == {"control", "miR-137"}


def test_km_median_closed_form_without_censoring() -> None:
    # no censoring: S(t) = fraction surviving = 0.8, 0.6, 0.4, ... → median 3
    res = kaplan_meier([1, 2, 3, 4, 5], [1, 1, 1, 1, 1])
    (g,) = res.groups
    assert (g.group, g.n, g.events, g.median) == ("all", 5, 5, 3.0)
    assert res.logrank is None
    # where S(t) equals 0.5 exactly over an interval, lifelines takes the first time S(t) < 0.5
    # (R's survfit would report the midpoint, 3.5); the documentation states this convention
    assert kaplan_meier([1, 2, 3, 4, 5, 6], [1] * 6).groups[0].median == 4.0


def test_median_not_reached_is_none() -> None:
    res = kaplan_meier([5, 6, 7, 8], [1, 0, 0, 0])
    assert res.groups[0].median is None


def test_logrank_two_groups_hand_computed() -> None:
    """Group A events at t=1,3; group B at t=2,4 (no censoring). Hand computation of the log-rank
    O−E and variance at each of the 4 event times gives χ² = (O_A − E_A)² / V."""
    t = [1, 3, 2, 4]
    e = [1, 1, 1, 1]
    g = ["A", "A", "B", "B"]
    # at risk (A, B) and events: t1 (2,2) A; t2 (1,2) B; t3 (1,1) A; t4 (0,1) B
    o_minus_e = (1 - 2 / 4) + (0 - 1 / 3) + (1 - 1 / 2) + 0
    var = (2 * 2 * 1 * 3) / (4**2 * 3) + (1 * 2 * 1 * 2) / (3**2 * 2) + (1 * 1 * 1 * 1) / (2**2 * 1)
    res = kaplan_meier(t, e, g)
    assert res.logrank is not None
    assert res.logrank.chi2 == pytest.approx(o_minus_e**2 / var, rel=1e-10)


@pytest.mark.parametrize(
    ("time", "event", "message"),
    [
        ([1, -2], [1, 0], "row 2: time is negative"),
        ([1, float("nan")], [1, 0], "row 2: time is missing"),
        ([1, 2], [1, 2], "row 2: event must be 0"),
    ],
)
def test_bad_survival_input(time: list[float], event: list[int], message: str) -> None:
    with pytest.raises(SurvivalInputError, match=message):
        kaplan_meier(time, event)


def test_cox_missing_column() -> None:
    with pytest.raises(SurvivalInputError, match="column 'age' not found"):
        cox_model(pd.DataFrame({"t": [1, 2], "e": [1, 0]}), "t", "e", ["age"])


def test_boolean_events_and_many_groups() -> None:
    rng = np.random.default_rng(3)
    n = 300
    g = rng.choice(["a", "b", "c"], n)
    t = rng.exponential(np.where(g == "a", 1.0, 2.0))
    e = rng.random(n) < 0.8
    res = kaplan_meier(t, e, g)
    assert res.logrank is not None and res.logrank.df == 2
    assert sum(x.n for x in res.groups) == n
    assert sum(x.events for x in res.groups) == int(e.sum())


def test_frequency_weights_equal_expanded_rows() -> None:
    """Aggregated (time, event, group, count) rows, as SQL GROUP BY returns them, give the same KM
    medians, intervals and log-rank statistic as one row per patient."""
    d = load_leukemia()
    agg = d.groupby(["t", "status", "Rx"]).size().reset_index(name="n")
    assert len(agg) < len(d)
    full = kaplan_meier(d.t, d.status, d.Rx)
    grouped = kaplan_meier(agg.t, agg.status, agg.Rx, weights=agg.n)
    assert grouped.groups == full.groups
    assert grouped.logrank is not None and full.logrank is not None
    assert grouped.logrank.chi2 == pytest.approx(full.logrank.chi2, rel=1e-10)
    with pytest.raises(SurvivalInputError, match="weight must be a whole number"):
        kaplan_meier([1, 2], [1, 1], weights=[1, 0.5])


@pytest.mark.parametrize("engine", ["lifelines", "statsmodels"])
def test_cox_without_events_in_a_group_is_a_clear_error(engine: str) -> None:
    df = pd.DataFrame({"t": [1, 2, 3, 4, 5, 6, 7, 8], "e": [0, 0, 0, 0, 1, 1, 1, 1], "g": [1, 1, 1, 1, 0, 0, 0, 0]})
    with pytest.raises(SurvivalInputError, match="Cox model could not be fitted"):
        cox_model(df, "t", "e", ["g"], engine=engine)  # type: ignore[arg-type]
