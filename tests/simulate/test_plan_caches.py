"""The plan evaluation's caches (deposit geometry, recommendations, per-deposit and plan intervals) change
no output: cached and uncached evaluations agree exactly, at any interval level, and cached objects are
never shared with callers."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from regenguide.domain.plan import PlanDocument
from regenguide.simulate.parameters import parse_graft_knowledge
from regenguide.simulate.plan import graft_findings, predict_plan


def _plan() -> PlanDocument:
    injections: list[dict[str, object]] = []
    for i in range(12):
        injections.append(
            {"region": "cheek", "side": "left", "device": "cannula", "volume_ml": 0.25, "bolus_ml": 0.05}
            if i % 3
            else {
                "region": "chin",
                "device": "needle",
                "volume_ml": 1.5,
                "bolus_ml": 0.3,
                "tunnel_length_mm": 30,
                "recipient_thickness_mm": 3,
                "recipient_perfusion": "low",
            }
        )
    injections.append({"region": "temple", "volume_ml": 1.0})  # no geometry: not simulated
    return PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "patient": {"bmi": 31}, "injections": injections}
    )


def _fresh_knowledge():  # type: ignore[no-untyped-def]
    path = resources.files("regenguide.kb") / "data" / "graft" / "parameters.yaml"
    return parse_graft_knowledge(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("interval", [0.9, 0.5, 0.8, 0.9])
def test_cached_evaluation_equals_uncached_at_any_interval(interval: float) -> None:
    plan = _plan()
    kwargs: dict[str, object] = {"draws": 150, "interval": interval, "target_retained_ml": 3.0}
    first = predict_plan(plan, **kwargs)  # type: ignore[arg-type]
    again = predict_plan(plan, **kwargs)  # type: ignore[arg-type]
    uncached = predict_plan(plan, knowledge=_fresh_knowledge(), **kwargs)  # type: ignore[arg-type]
    assert again.model_dump() == first.model_dump()
    assert [i.retention_interval for i in uncached.injections] == [i.retention_interval for i in first.injections]
    assert uncached.retention_interval == pytest.approx(first.retention_interval, rel=1e-12)
    assert uncached.model_dump(exclude={"retention_interval", "retained_interval_ml", "findings"}) == (
        first.model_dump(exclude={"retention_interval", "retained_interval_ml", "findings"})
    )


def test_cached_recommendations_are_not_shared() -> None:
    plan = _plan()
    first = predict_plan(plan, draws=100)
    recs = [i.recommendation for i in first.injections if i.recommendation is not None]
    assert len({id(r) for r in recs}) == len(recs)  # identical injections get separate objects
    expected = [r.model_dump() for r in recs]
    for r in recs:
        r.passes = 999
        r.max_bolus_ml = -1.0
    again = predict_plan(plan, draws=100)
    assert [i.recommendation.model_dump() for i in again.injections if i.recommendation] == expected


def test_check_findings_are_stable_across_calls() -> None:
    plan = _plan()
    first = [f.model_dump() for f in graft_findings(plan)]
    findings = graft_findings(plan)
    for f in findings:
        for s in f.suggestions:
            s.changes["bolus_ml"] = -1
    assert [f.model_dump() for f in graft_findings(plan)] == first
