"""Invariants of the closed-form zone model over the whole parameter space (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from regenguide.domain.plan import PlanDocument
from regenguide.simulate import closed_form as cf
from regenguide.simulate.plan import predict_plan
from regenguide.simulate.retention import retained_fraction

ALPHA = 1.34e-9


@settings(max_examples=60, deadline=None)
@given(
    geometry=st.sampled_from(["slab", "cylinder", "sphere"]),
    radius=st.floats(0.002, 3.0),
    po2=st.floats(20.0, 80.0),
    q=st.floats(5e-11, 5e-10),
    p_adipo=st.floats(15.0, 45.0),
    p_nec=st.floats(0.0, 2.0),
)
def test_zone_invariants(
    geometry: str, radius: float, po2: float, q: float, p_adipo: float, p_nec: float
) -> None:
    c0 = ALPHA * po2
    radii = cf.zone_radii(
        geometry,
        radius,
        diffusivity=2e-5,
        c0=c0,
        consumption=q,
        c_adipocyte=ALPHA * p_adipo,
        c_necrosis=ALPHA * p_nec,
    )
    assert 0 <= float(radii["anoxic"]) <= float(radii["necrotic"]) <= float(radii["survival_inner"]) <= radius
    fr = cf.zone_fractions(geometry, radii)
    values = np.array([float(fr[k]) for k in ("survival", "regenerating", "necrotic")])
    assert np.all(values >= -1e-12) and abs(values.sum() - 1.0) < 1e-12
    ret = float(retained_fraction(fr, take_survival=0.5, take_regenerating=0.3, multiplier=1.0))
    assert 0.0 <= ret <= 0.5 + 1e-12
    # The profile is continuous at the boundary and never negative.
    r = np.linspace(0, radius, 50)
    prof = cf.profile(geometry, r, radius, diffusivity=2e-5, c0=c0, consumption=q)
    assert prof.min() >= -1e-12 * c0
    assert abs(prof[-1] - c0) < 1e-9 * c0


@settings(max_examples=30, deadline=None)
@given(
    geometry=st.sampled_from(["slab", "cylinder", "sphere"]),
    small=st.floats(0.005, 1.0),
    factor=st.floats(1.01, 5.0),
)
def test_larger_deposits_never_keep_more(geometry: str, small: float, factor: float) -> None:
    def ret(radius: float) -> float:
        radii = cf.zone_radii(
            geometry,
            radius,
            diffusivity=2e-5,
            c0=ALPHA * 55,
            consumption=2.3e-10,
            c_adipocyte=ALPHA * 29.7,
            c_necrosis=ALPHA * 0.1,
        )
        return float(
            retained_fraction(
                cf.zone_fractions(geometry, radii), take_survival=0.47, take_regenerating=0.37, multiplier=1.0
            )
        )

    assert ret(small * factor) <= ret(small) + 1e-12


def test_plan_without_geometry_predicts_nothing_but_says_why() -> None:
    plan = PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "injections": [{"region": "cheek", "volume_ml": 2.0}]}
    )
    pred = predict_plan(plan, draws=50)
    assert pred.predicted_retention is None and pred.retention_interval is None
    assert pred.predicted_retained_ml == 0.0
    assert [f.rule for f in pred.findings] == ["graft.geometry_missing"]
