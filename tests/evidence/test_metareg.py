"""Meta-regression and regression tests for funnel asymmetry against metafor.

* dat.bcg, rma(yi, vi, mods = ~ ablat) (REML): fitted values and standard errors of the first three
  studies to full precision from metafor's test suite (test_misc_list_rma.r: -1.02900878645837,
  -1.34912705666653, -0.97080546460234; se 0.140375124151501, 0.201103941277043, 0.131456743392091).
  metafor stops its Fisher scoring at a τ² change below 1e-5, we solve the REML score to machine
  precision, so agreement is to about 1e-5. Slope −0.0291 (SE 0.0072, z −4.0445), QE(11) = 30.7331 and
  τ² 0.0764 as in metafor's documented output of that model.
* dat.egger2001 (magnesium trials), log OR: regtest(res) z = -4.6686 (REML mixed-effects model with
  sei), regtest(res, model="lm", predictor="sqrtninv") z/t = -5.6083 (test_misc_pub_bias.r).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regenguide.evidence.effects import binary_effects
from regenguide.evidence.meta import MetaAnalysisError, egger_test, meta_analysis
from regenguide.evidence.metareg import meta_regression, regression_test

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bcg_es():
    d = pd.read_csv(DATA / "bcg.csv")
    return d, binary_effects(d.treat_events, d.treat_total, d.ctrl_events, d.ctrl_total, "RR")


def test_bcg_ablat_matches_metafor(bcg_es) -> None:
    d, es = bcg_es
    res = meta_regression(es.yi, es.vi, d.ablat, ["ablat"])
    pred, se = res.predict(d.ablat.to_numpy()[:3])
    np.testing.assert_allclose(pred, [-1.02900878645837, -1.34912705666653, -0.97080546460234], atol=5e-6)
    np.testing.assert_allclose(se, [0.140375124151501, 0.201103941277043, 0.131456743392091], atol=1e-5)
    slope = res.coefficients[1]
    assert slope.term == "ablat"
    assert (round(slope.estimate, 4), round(slope.se, 4), round(slope.statistic, 4)) == (-0.0291, 0.0072, -4.0445)
    assert round(res.qe, 4) == 30.7331 and res.qe_df == 11
    assert res.tau2 == pytest.approx(0.0764, abs=1e-4)


def test_intercept_only_meta_regression_equals_meta_analysis(bcg_es) -> None:
    _, es = bcg_es
    for method in ("REML", "DL", "FE"):
        ref = meta_analysis(es, method)
        res = meta_regression(es.yi, es.vi, np.zeros((es.k, 0)), [], method=method)
        assert res.tau2 == pytest.approx(ref.tau2, rel=1e-9, abs=1e-12)
        assert res.coefficients[0].estimate == pytest.approx(ref.estimate, rel=1e-9)
        assert res.coefficients[0].se == pytest.approx(ref.se, rel=1e-9)
    kh = meta_regression(es.yi, es.vi, np.zeros((es.k, 0)), [], knha=True)
    assert kh.coefficients[0].se == pytest.approx(meta_analysis(es, "REML", knha=True).se, rel=1e-9)


MAGNESIUM = [  # dat.egger2001: ai, n1i, ci, n2i (magnesium vs control, death)
    (1, 40, 2, 36),
    (9, 135, 23, 135),
    (2, 200, 7, 200),
    (1, 48, 1, 46),
    (10, 150, 8, 148),
    (1, 59, 9, 56),
    (1, 25, 3, 23),
    (0, 22, 1, 21),
    (6, 76, 11, 75),
    (1, 27, 7, 27),
    (2, 89, 12, 80),
    (5, 23, 13, 33),
    (4, 130, 8, 122),
    (90, 1159, 118, 1157),
    (4, 107, 17, 108),
    (2216, 29011, 2103, 29039),
]


def test_regtest_matches_metafor_egger2001() -> None:
    a, n1, c, n2 = (np.array([row[j] for row in MAGNESIUM]) for j in range(4))
    es = binary_effects(a, n1, c, n2, "OR")
    rma = regression_test(es.yi, es.vi)
    assert round(rma.statistic, 4) == -4.6686 and rma.df is None
    lm = regression_test(es.yi, es.vi, model="lm", predictor="sqrtninv", ni=n1 + n2)
    assert round(lm.statistic, 4) == -5.6083 and lm.df == 14
    # the classic Egger test (lm with sei) is the one reported in every MetaResult
    classic = regression_test(es.yi, es.vi, model="lm", predictor="sei")
    assert classic.statistic == pytest.approx(egger_test(es.yi, es.vi).t, rel=1e-10)


def test_meta_regression_errors(bcg_es) -> None:
    d, es = bcg_es
    with pytest.raises(MetaAnalysisError, match="collinear"):
        meta_regression(es.yi, es.vi, np.column_stack([d.ablat, 2 * d.ablat]), ["a", "b"])
    with pytest.raises(MetaAnalysisError, match="cannot support"):
        meta_regression(es.yi[:2], es.vi[:2], d.ablat[:2], ["ablat"])
    with pytest.raises(MetaAnalysisError, match="needs the sample sizes"):
        regression_test(es.yi, es.vi, model="lm", predictor="sqrtninv")


def _alloc_design(d: pd.DataFrame, with_year: bool) -> tuple[np.ndarray, list[str]]:
    cols = [(d.alloc == "random").astype(float), (d.alloc == "systematic").astype(float)]  # reference: alternate
    names = ["random", "systematic"]
    if with_year:
        cols.append(d.year.astype(float))
        names.append("year")
    cols.append(d.ablat.astype(float))
    names.append("ablat")
    return np.column_stack(cols), names


def test_wald_tests_match_metafor_anova(bcg_es) -> None:
    """metafor test_misc_anova.r on dat.bcg: rma(yi, vi, mods = ~ ablat + alloc) anova(btt=3:4) QM 1.2850
    (p 0.53), with test="knha" F 0.6007 (p 0.57); mods = ~ factor(alloc) + year + ablat, knha, btt=2:3:
    F 0.6502793."""
    d, es = bcg_es
    x, names = _alloc_design(d, with_year=False)
    res = meta_regression(es.yi, es.vi, x, names)
    qm = res.wald_test(["random", "systematic"])
    assert (round(qm.statistic, 4), round(qm.p, 2), qm.df1, qm.df2) == (1.2850, 0.53, 2, None)
    kh = meta_regression(es.yi, es.vi, x, names, knha=True).wald_test(["random", "systematic"])
    assert (round(kh.statistic, 4), round(kh.p, 2), kh.df2) == (0.6007, 0.57, 9)
    x, names = _alloc_design(d, with_year=True)
    kh2 = meta_regression(es.yi, es.vi, x, names, knha=True).wald_test(["random", "systematic"])
    assert kh2.statistic == pytest.approx(0.6502793, rel=1e-5)
    # single moderator: QM = z²
    one = meta_regression(es.yi, es.vi, d.ablat, ["ablat"])
    assert one.wald_test().statistic == pytest.approx(one.coefficients[1].statistic ** 2, rel=1e-12)
    with pytest.raises(MetaAnalysisError, match="unknown term"):
        one.wald_test(["latitude"])
