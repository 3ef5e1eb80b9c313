"""Meta-analysis validated against metafor's documented/test-suite values and statsmodels.

Reference values (metafor test suite, tests/testthat):
* dat.bcg, RR/OR/RD, FE and DL: test_misc_metan_vs_rma.uni_with_dat.bcg.r (also checked against Stata metan);
* dat.bcg, Mantel–Haenszel RR/OR/RD: test_misc_metan_vs_rma.mh_with_dat.bcg.r;
* dat.bcg, DL confint (τ² Q-profile CI, I², H² CIs): test_misc_confint.r;
* dat.bcg, REML: metafor's documented `rma(yi, vi, data=dat)` output (−0.7145, se 0.1798, τ² 0.3132,
  I² 92.22 %, H² 12.86), and predict(res, transf=exp) (0.49 [0.34, 0.70], PI [0.15, 1.55]);
* dat.normand1999 MD: test_analysis_example_normand1999.r (Normand 1999, Tables VIII–IX);
* SMD yi/vi: metafor escalc values quoted in statsmodels' test_meta.py (Chen & Peace example).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.meta_analysis import combine_effects, effectsize_smd

from regenguide.evidence.effects import (
    EffectSizeError,
    binary_effects,
    combine,
    continuous_effects,
    generic_effects,
    hedges_j,
)
from regenguide.evidence.meta import (
    MetaAnalysisError,
    egger_test,
    meta_analysis,
    tau2_dl,
    tau2_pm,
    tau2_q_profile,
    tau2_reml,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bcg() -> pd.DataFrame:
    return pd.read_csv(DATA / "bcg.csv")


def _bcg(df: pd.DataFrame, measure: str):
    return binary_effects(df.treat_events, df.treat_total, df.ctrl_events, df.ctrl_total, measure, study=list(df.study))


# --- metafor reference values ------------------------------------------------------------------

# (measure, method): (estimate, ci_low, ci_high, z, Q, tau2, I2) — None where metafor does not test it
METAFOR_BCG = {
    ("RR", "FE"): (-0.4303, -0.5097, -0.3509, -10.6247, 152.2330, None, None),
    ("RR", "DL"): (-0.7141, -1.0644, -0.3638, -3.9952, None, 0.3088, 92.1173),
    ("OR", "FE"): (-0.4361, -0.5190, -0.3533, -10.3190, 163.1649, None, None),
    ("OR", "DL"): (-0.7474, -1.1242, -0.3706, -3.8873, None, 0.3663, 92.6455),
    ("RD", "FE"): (-0.0009, -0.0014, -0.0005, -4.0448, 276.4737, None, None),
    ("RD", "DL"): (-0.0071, -0.0101, -0.0040, -4.5128, None, 0.0000, 95.6596),
    ("RR", "MH"): (-0.4537, -0.5308, -0.3766, -11.5338, 152.5676, None, None),
    ("OR", "MH"): (-0.4734, -0.5538, -0.3930, -11.5444, 163.9426, None, None),
    ("RD", "MH"): (-0.0033, -0.0039, -0.0027, -11.4708, 386.7759, None, None),
}


@pytest.mark.parametrize(("measure", "method"), list(METAFOR_BCG))
def test_bcg_matches_metafor(bcg: pd.DataFrame, measure: str, method: str) -> None:
    est, lo, hi, z, q, tau2, i2 = METAFOR_BCG[(measure, method)]
    res = meta_analysis(_bcg(bcg, measure), method)
    assert res.k == 13
    assert round(res.estimate, 4) == pytest.approx(est, abs=1e-12)
    assert round(res.ci_low, 4) == pytest.approx(lo, abs=1e-12)
    assert round(res.ci_high, 4) == pytest.approx(hi, abs=1e-12)
    assert round(res.statistic, 4) == pytest.approx(z, abs=1e-12)
    if q is not None:
        assert round(res.q, 4) == pytest.approx(q, abs=1e-12)
    if tau2 is not None:
        assert round(res.tau2, 4) == pytest.approx(tau2, abs=1e-12)
    if i2 is not None:
        assert round(res.i2, 4) == pytest.approx(i2, abs=1e-12)


def test_bcg_exponentiated_matches_metafor(bcg: pd.DataFrame) -> None:
    fe = meta_analysis(_bcg(bcg, "RR"), "FE")
    assert fe.exp is not None
    assert (round(fe.exp.estimate, 4), round(fe.exp.ci_low, 4), round(fe.exp.ci_high, 4)) == (
        0.6503,
        0.6007,
        0.7040,
    )
    dl = meta_analysis(_bcg(bcg, "RR"), "DL")
    assert dl.exp is not None
    assert (round(dl.exp.estimate, 4), round(dl.exp.ci_low, 4), round(dl.exp.ci_high, 4)) == (
        0.4896,
        0.3449,
        0.6950,
    )
    mh = meta_analysis(_bcg(bcg, "OR"), "MH")
    assert mh.exp is not None
    assert (round(mh.exp.estimate, 4), round(mh.exp.ci_low, 4), round(mh.exp.ci_high, 4)) == (
        0.6229,
        0.5748,
        0.6750,
    )


def test_bcg_confint_matches_metafor(bcg: pd.DataFrame) -> None:
    """confint(rma(..., method='DL')): τ² 0.3088 [0.1197, 1.1115], I² 92.1173 [81.9177, 97.6781],
    H² 12.6861 [5.5303, 43.0680]."""
    res = meta_analysis(_bcg(bcg, "RR"), "DL")
    assert res.tau2_ci is not None and res.i2_ci is not None
    assert round(res.tau2_ci.low, 4) == 0.1197
    assert round(res.tau2_ci.high, 4) == 1.1115
    # metafor finds the bounds with uniroot's default tolerance (about 1e-4), so bounds derived from
    # them agree to 2 decimals; ours solve Q(τ²) = χ² quantile to machine precision (checked below).
    assert round(res.i2_ci.low, 2) == 81.92
    assert round(res.i2_ci.high, 2) == 97.68
    assert round(res.h2, 4) == 12.6861
    es = _bcg(bcg, "RR")
    from scipy import stats

    from regenguide.evidence.meta import generalised_q

    assert generalised_q(es.yi, es.vi, res.tau2_ci.low) == pytest.approx(stats.chi2.ppf(0.975, 12), rel=1e-10)
    assert generalised_q(es.yi, es.vi, res.tau2_ci.high) == pytest.approx(stats.chi2.ppf(0.025, 12), rel=1e-10)


def test_bcg_reml_matches_metafor_documentation(bcg: pd.DataFrame) -> None:
    res = meta_analysis(_bcg(bcg, "RR"), "REML")
    assert round(res.estimate, 4) == -0.7145
    assert round(res.se, 4) == 0.1798
    assert round(res.ci_low, 4) == -1.0669
    assert round(res.ci_high, 4) == -0.3622
    assert round(res.statistic, 4) == -3.9744
    assert round(res.tau2, 4) == 0.3132
    assert round(res.i2, 2) == 92.22
    assert round(res.h2, 2) == 12.86
    assert round(res.q, 4) == 152.2330
    assert res.q_p < 1e-4
    assert res.exp is not None
    assert (round(res.exp.estimate, 2), round(res.exp.ci_low, 2), round(res.exp.ci_high, 2)) == (0.49, 0.34, 0.70)
    assert (round(res.exp.pi_low or 0, 2), round(res.exp.pi_high or 0, 2)) == (0.15, 1.55)
    # Q-profile CI does not depend on the τ² estimator
    assert res.tau2_ci is not None and round(res.tau2_ci.low, 4) == 0.1197


def test_bcg_knapp_hartung_closed_form(bcg: pd.DataFrame) -> None:
    es = _bcg(bcg, "RR")
    res = meta_analysis(es, "REML", knha=True)
    w = 1 / (es.vi + res.tau2)
    mu = float(np.sum(w * es.yi) / np.sum(w))
    se = math.sqrt(float(np.sum(w * (es.yi - mu) ** 2)) / (12 * float(np.sum(w))))
    assert res.df == 12
    assert res.se == pytest.approx(se, rel=1e-12)
    from scipy import stats

    assert res.ci_high - res.estimate == pytest.approx(stats.t.ppf(0.975, 12) * se, rel=1e-12)
    assert res.p == pytest.approx(2 * stats.t.sf(abs(mu / se), 12), rel=1e-10)
    # regression guard: our values from the closed form above (no published reference was at hand)
    assert (round(res.se, 4), round(res.statistic, 4)) == (0.1808, -3.9522)


@pytest.mark.parametrize(("method", "sm_method"), [("DL", "dl"), ("PM", "pm")])
def test_agrees_with_statsmodels_combine_effects(bcg: pd.DataFrame, method: str, sm_method: str) -> None:
    es = _bcg(bcg, "RR")
    ref = combine_effects(es.yi, es.vi, method_re=sm_method, atol=1e-12, maxiter=1000)
    res = meta_analysis(es, method)
    assert res.tau2 == pytest.approx(ref.tau2, rel=1e-7)
    assert res.estimate == pytest.approx(ref.mean_effect_re, rel=1e-8)
    assert res.se == pytest.approx(ref.sd_eff_w_re, rel=1e-7)
    assert res.q == pytest.approx(ref.q, rel=1e-12)
    fe = meta_analysis(es, "FE")
    assert fe.estimate == pytest.approx(ref.mean_effect_fe, rel=1e-12)
    assert fe.se == pytest.approx(ref.sd_eff_w_fe, rel=1e-12)
    kh = meta_analysis(es, method, knha=True)
    assert kh.se == pytest.approx(math.sqrt(ref.var_hksj_re), rel=1e-7)


def test_normand_md_matches_metafor() -> None:
    df = pd.read_csv(DATA / "normand1999.csv")
    sdp = np.sqrt(((df.treat_n - 1) * df.treat_sd**2 + (df.ctrl_n - 1) * df.ctrl_sd**2) / (df.treat_n + df.ctrl_n - 2))
    es = continuous_effects(df.treat_mean, sdp, df.treat_n, df.ctrl_mean, sdp, df.ctrl_n, "MD", list(df.study))
    assert list(es.yi) == [-20, -2, -55, -71, -4, 1, 11, -10, 7]
    assert list(np.round(es.vi, 2)) == [40.59, 2.05, 15.28, 150.22, 20.19, 1.22, 95.38, 8.03, 20.69]
    fe = meta_analysis(es, "FE")
    assert (round(fe.estimate, 2), round(fe.ci_low, 2), round(fe.ci_high, 2)) == (-3.49, -5.03, -1.96)
    dl = meta_analysis(es, "DL")
    assert (round(dl.estimate, 2), round(dl.ci_low, 2), round(dl.ci_high, 2)) == (-14.10, -24.45, -3.75)
    assert round(dl.tau2, 2) == 218.72
    reml = meta_analysis(es, "REML")
    assert (round(reml.estimate, 2), round(reml.ci_low, 2), round(reml.ci_high, 2)) == (-15.12, -32.67, 2.43)
    assert round(reml.tau2, 2) == 685.20
    assert fe.exp is None


def test_smd_matches_metafor_escalc() -> None:
    df = pd.read_csv(DATA / "chen_peace_smd.csv")
    args = (df.treat_mean, df.treat_sd, df.treat_n, df.ctrl_mean, df.ctrl_sd, df.ctrl_n)
    yi = [
        0.09452415852032972,
        0.27735586626551018,
        0.36654442951591998,
        0.66438496832691396,
        0.46180628128769841,
        0.18516443739910043,
    ]
    vi_ls = [
        0.03337056173559990,
        0.03106510106366112,
        0.05083971761755720,
        0.01055175923267344,
        0.04334466980873156,
        0.02363025255552155,
    ]
    vi_ub = [
        0.03337176211751222,
        0.03107388569950075,
        0.05088098670518214,
        0.01055698026322296,
        0.04339077140867459,
        0.02363252645927709,
    ]
    ls = continuous_effects(*args, measure="SMD")
    np.testing.assert_allclose(ls.yi, yi, rtol=1e-12)
    np.testing.assert_allclose(ls.vi, vi_ls, rtol=1e-12)
    ub = continuous_effects(*args, measure="SMD", vtype="UB")
    np.testing.assert_allclose(ub.vi, vi_ub, rtol=1e-12)
    # statsmodels uses the approximate correction 1 - 3/(4N - 9) = 1 - 3/(4m - 1): same yi exactly
    approx = continuous_effects(*args, measure="SMD", exact_correction=False)
    sm_y, sm_v = effectsize_smd(*(np.asarray(a, dtype=float) for a in args))
    np.testing.assert_allclose(approx.yi, sm_y, rtol=1e-12)
    np.testing.assert_allclose(approx.vi, sm_v, rtol=2e-3)  # statsmodels' variance uses N - 3.94


def test_hedges_j_closed_form() -> None:
    # m = 10: J = Γ(5) / (√5 Γ(4.5)), Γ(4.5) = 105√π/16
    assert hedges_j(10) == pytest.approx(24 / (math.sqrt(5) * 105 * math.sqrt(math.pi) / 16), rel=1e-12)
    assert hedges_j(10, exact=False) == pytest.approx(1 - 3 / 39, rel=1e-12)


def test_continuity_correction_only_for_tables_with_a_zero() -> None:
    es = binary_effects([0, 5], [10, 10], [3, 2], [10, 10], "OR", ["zero", "full"])
    assert list(es.corrected) == [True, False]
    # zero study: (0.5/10.5)/(3.5/7.5); full study uncorrected: (5/5)/(2/8)
    assert es.yi[0] == pytest.approx(math.log((0.5 / 10.5) / (3.5 / 7.5)))
    assert es.vi[0] == pytest.approx(1 / 0.5 + 1 / 10.5 + 1 / 3.5 + 1 / 7.5)
    assert es.yi[1] == pytest.approx(math.log(1 / (2 / 8)))
    rr = binary_effects([0], [10], [3], [10], "RR")
    assert rr.yi[0] == pytest.approx(math.log((0.5 / 11) / (3.5 / 11)))
    assert rr.vi[0] == pytest.approx(1 / 0.5 - 1 / 11 + 1 / 3.5 - 1 / 11)
    dropped = binary_effects([0, 5], [10, 10], [0, 2], [10, 10], "RR", ["double zero", "ok"], drop_double_zero=True)
    assert dropped.study == ("ok",)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([-1], [10], [1], [10]), "treat_events is negative"),
        (([11], [10], [1], [10]), "treat_events (11) exceeds treat_total (10)"),
        (([1], [10], [1], [0]), "ctrl_events (1) exceeds ctrl_total (0)"),
    ],
)
def test_binary_input_errors_name_study_and_field(args: tuple, message: str) -> None:
    with pytest.raises(EffectSizeError, match=r"trial A") as err:
        binary_effects(*args, "RR", ["trial A"])
    assert message in str(err.value)


def test_continuous_sd_must_be_positive() -> None:
    with pytest.raises(EffectSizeError, match="s2: ctrl_sd must be > 0"):
        continuous_effects([1, 2], [1, 1], [10, 10], [1, 1], [1, 0], [10, 10], "SMD", ["s1", "s2"])


def test_generic_effects_and_combine() -> None:
    a = generic_effects([0.1, 0.2], [0.01, 0.02], ["a", "b"])
    b = generic_effects([0.3], [0.03], ["c"])
    both = combine(a, b)
    assert both.study == ("a", "b", "c") and both.k == 3
    with pytest.raises(EffectSizeError, match="vi must be > 0"):
        generic_effects([0.1], [0.0], ["x"])
    with pytest.raises(EffectSizeError, match="different measures"):
        combine(a, binary_effects([1], [10], [2], [10], "RR"))


def test_single_study_and_homogeneous_data() -> None:
    one = meta_analysis(generic_effects([0.5], [0.04]), "REML")
    assert one.estimate == 0.5 and one.se == pytest.approx(0.2) and one.tau2 == 0 and one.egger is None
    same = generic_effects([0.2, 0.2, 0.2, 0.2], [0.1, 0.2, 0.3, 0.4])
    for method in ("DL", "REML", "PM"):
        res = meta_analysis(same, method)
        assert res.tau2 == 0 and res.q == pytest.approx(0, abs=1e-12) and res.i2 == 0
        assert res.tau2_ci is not None and res.tau2_ci.high == 0


def test_knha_and_mh_guards() -> None:
    es = generic_effects([0.1, 0.2, 0.4], [0.01, 0.02, 0.03])
    with pytest.raises(MetaAnalysisError, match="Knapp"):
        meta_analysis(es, "FE", knha=True)
    with pytest.raises(MetaAnalysisError, match="2×2 counts"):
        meta_analysis(es, "MH")


def test_egger_equals_weighted_regression_on_se() -> None:
    """Egger's intercept equals the slope on sei of the WLS fit yi ~ sei with weights 1/vi
    (metafor's regtest(model='lm') formulation)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    vi = rng.uniform(0.01, 0.2, 15)
    yi = rng.normal(0.3 + 0.8 * np.sqrt(vi), np.sqrt(vi))
    egger = egger_test(yi, vi)
    wls = sm.WLS(yi, sm.add_constant(np.sqrt(vi)), weights=1 / vi).fit()
    assert egger.intercept == pytest.approx(wls.params[1], rel=1e-10)
    assert egger.t == pytest.approx(wls.tvalues[1], rel=1e-10)
    assert egger.df == 13


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-2, 2), st.floats(0.005, 1.0)), min_size=3, max_size=25))
def test_estimators_solve_their_defining_equations(rows: list[tuple[float, float]]) -> None:
    yi = np.array([r[0] for r in rows])
    vi = np.array([r[1] for r in rows])
    k = len(rows)
    # PM: generalised Q equals k - 1 when positive
    pm = tau2_pm(yi, vi)
    w = 1 / (vi + pm)
    mu = np.sum(w * yi) / np.sum(w)
    gq = float(np.sum(w * (yi - mu) ** 2))
    assert pm >= 0
    if pm > 0:
        assert gq == pytest.approx(k - 1, rel=1e-6)
    # REML score is zero at the estimate when positive
    reml = tau2_reml(yi, vi)
    assert reml >= 0
    if reml > 1e-10:
        w = 1 / (vi + reml)
        mu = np.sum(w * yi) / np.sum(w)
        score = np.sum(w**2 * (yi - mu) ** 2) - (np.sum(w) - np.sum(w**2) / np.sum(w))
        assert abs(score) <= 1e-7 * np.sum(w)
    # the Q-profile CI brackets the PM estimate (PM solves Q = k - 1, between the χ² quantiles)
    ci = tau2_q_profile(yi, vi)
    assert ci.low <= pm + 1e-9 and pm <= ci.high + 1e-9
    assert tau2_dl(yi, vi) >= 0


def test_egger_undefined_for_equal_precision() -> None:
    res = meta_analysis(generic_effects([0.1, 0.3, 0.2, 0.5], [0.05] * 4), "DL")
    assert res.egger is None
    with pytest.raises(MetaAnalysisError, match="different precision"):
        egger_test(np.array([0.1, 0.3, 0.2]), np.array([0.05] * 3))


def test_pm_and_smd_reml_match_metafor_rma_tests(bcg: pd.DataFrame) -> None:
    """metafor test_misc_rma_uni.r: iterated DL (DLIT) and SJIT converge to the Paule–Mandel τ²,
    0.3181 for dat.bcg log RR; SMD on the first four dat.normand1999 studies, REML τ² 1.0090."""
    assert round(meta_analysis(_bcg(bcg, "RR"), "PM").tau2, 4) == 0.3181
    df = pd.read_csv(DATA / "normand1999.csv").iloc[:4]
    es = continuous_effects(df.treat_mean, df.treat_sd, df.treat_n, df.ctrl_mean, df.ctrl_sd, df.ctrl_n, "SMD")
    assert round(meta_analysis(es, "REML").tau2, 4) == 1.0090


def test_mh_leaves_double_zero_studies_out_of_q(bcg: pd.DataFrame) -> None:
    """rma.mh (drop00 for the yi/vi of Q): a study without events in either arm changes neither the MH
    estimate nor Q, but counts in k."""
    extra = pd.concat(
        [
            bcg,
            pd.DataFrame(
                [{"study": "no events", "treat_events": 0, "treat_total": 50, "ctrl_events": 0, "ctrl_total": 60}]
            ),
        ],
        ignore_index=True,
    )
    base = meta_analysis(_bcg(bcg, "RR"), "MH")
    more = meta_analysis(_bcg(extra, "RR"), "MH")
    assert more.k == 14 and more.q_df == 12
    assert more.estimate == pytest.approx(base.estimate, rel=1e-12)
    assert more.se == pytest.approx(base.se, rel=1e-12)
    assert more.q == pytest.approx(base.q, rel=1e-12)
