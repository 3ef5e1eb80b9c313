"""Graft simulator and evidence synthesis through the API, checked against closed forms and metafor."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from regenguide.store import models as m
from regenguide.store.db import transaction

BCG = Path(__file__).parents[1] / "evidence" / "data" / "bcg.csv"


def test_graft_simulate_critical_size_matches_closed_form(client: Any, auth: Any) -> None:
    d, po2, q, alpha = 2e-5, 50.0, 2.1e-10, 1.34e-9
    body = {"geometry": "cylinder", "diameter_mm": 2.0, "diffusivity_cm2_s": d, "boundary_po2_mmhg": po2,
            "consumption_mol_cm3_s": q, "solubility_mol_cm3_mmhg": alpha}
    r = client.post("/api/v1/graft/simulate", json=body, headers=auth["clinician"])
    assert r.status_code == 200, r.text
    expected_radius_cm = math.sqrt(4 * d * alpha * po2 / q)
    assert r.json()["critical_size_mm"] == pytest.approx(2 * expected_radius_cm * 10, rel=0.01)
    bad = client.post("/api/v1/graft/simulate", json={**body, "geometry": "cube"}, headers=auth["clinician"])
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "geometry"


def test_graft_plan_prediction(client: Any, auth: Any) -> None:
    plan = json.loads((resources.files("regenguide.kb") / "data" / "examples" / "glabella_microfat_risky.json")
                      .read_text())
    r = client.post("/api/v1/graft/plan", json={"plan": plan, "draws": 200}, headers=auth["clinician"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["injections"]) == 3 and body["injected_ml"] == pytest.approx(11.5)
    low, high = body["retention_interval"]
    assert 0 < low <= body["predicted_retention"] <= high < 1
    assert 0 < body["predicted_retained_ml"] < body["injected_ml"]
    assert body["unverified_parameters"], "unverified inputs must be listed"


def test_meta_analysis_matches_metafor_bcg(client: Any, auth: Any) -> None:
    rows = pd.read_csv(BCG)[["study", "treat_events", "treat_total", "ctrl_events", "ctrl_total"]]
    r = client.post("/api/v1/evidence/meta-analysis",
                    json={"measure": "RR", "method": "REML", "studies": rows.to_dict("records")},
                    headers=auth["researcher"])
    assert r.status_code == 200, r.text
    res = r.json()
    # metafor: rma(ai=tpos, bi=tneg, ci=cpos, di=cneg, data=dat.bcg, measure="RR")
    assert res["k"] == 13
    assert res["estimate"] == pytest.approx(-0.7145, abs=5e-4)
    assert res["se"] == pytest.approx(0.1798, abs=5e-4)
    assert res["tau2"] == pytest.approx(0.3132, abs=5e-4)
    bad = rows.to_dict("records")
    bad[0]["treat_events"] = 999
    r = client.post("/api/v1/evidence/meta-analysis", json={"measure": "RR", "studies": bad},
                    headers=auth["researcher"])
    assert r.status_code == 422 and "Aronson" in r.json()["detail"]


def test_survival_endpoint(client: Any, auth: Any) -> None:
    # Freireich leukaemia remission data (6-MP vs placebo): log-rank chi2 = 16.79
    mp = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
    mp_e = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    pl = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]
    body = {"time": mp + pl, "event": mp_e + [1] * 21, "group": ["6-MP"] * 21 + ["placebo"] * 21}
    r = client.post("/api/v1/evidence/survival", json=body, headers=auth["researcher"])
    assert r.status_code == 200, r.text
    assert r.json()["logrank"]["chi2"] == pytest.approx(16.79, abs=0.01)


def test_registry_calibration(client: Any, auth: Any, engine: Any) -> None:
    with transaction(engine) as db:
        for i, (bolus, retained) in enumerate(((0.05, 0.55), (0.1, 0.5), (0.3, 0.4), (0.5, 0.3), (1.0, 0.2))):
            p = m.Patient(site_id=1, mrn=f"G{i}", given_name="G", family_name="F", birth_date=date(1980, 1, 1),
                          sex="female")
            db.add(p)
            db.flush()
            proc = m.Procedure(patient_id=p.id, modality="microfat", performed_at=datetime(2025, 1, 1, tzinfo=UTC))
            proc.injections = [m.PerformedInjection(seq=1, region="malar", volume_ml=2.0, bolus_ml=bolus)]
            db.add(proc)
            db.flush()
            db.add(m.Observation(patient_id=p.id, procedure_id=proc.id, code="graft_retention",
                                 value=100 * retained, unit="%", observed_at=datetime(2025, 7, 1, tzinfo=UTC)))
    r = client.post("/api/v1/graft/calibrate/registry", headers=auth["researcher"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n"] == 5 and len(body["residuals"]) == 5
    assert all(math.isfinite(v) for v in body["fitted"].values())


def test_registry_calibration_needs_data(client: Any, auth: Any) -> None:
    r = client.post("/api/v1/graft/calibrate/registry", headers=auth["researcher"])
    assert r.status_code == 422 and "at least 2" in r.json()["detail"]


def test_registry_cannula_aliquots_are_strands(engine: Any) -> None:
    """Aliquots delivered by cannula become strands along the (assumed) tunnel, as in the plan simulation;
    needle aliquots stay spheres."""
    from regenguide.services.graft_registry import registry_observations
    from regenguide.simulate.parameters import load_graft_knowledge

    with transaction(engine) as db:
        for i, device in enumerate(("cannula", "needle")):
            p = m.Patient(site_id=1, mrn=f"S{i}", given_name="S", family_name="F", birth_date=date(1980, 1, 1),
                          sex="female")
            db.add(p)
            db.flush()
            proc = m.Procedure(patient_id=p.id, modality="microfat", performed_at=datetime(2025, 1, 1, tzinfo=UTC))
            proc.injections = [m.PerformedInjection(seq=k, region="malar", device=device, volume_ml=1.0,
                                                    bolus_ml=0.05) for k in (1, 2)]
            db.add(proc)
            db.flush()
            db.add(m.Observation(patient_id=p.id, procedure_id=proc.id, code="graft_retention",
                                 value=45.0, unit="%", observed_at=datetime(2025, 7, 1, tzinfo=UTC)))
    obs = sorted(registry_observations(engine), key=lambda o: o.geometry)
    assert [o.geometry for o in obs] == ["cylinder", "sphere"]
    length_cm = load_graft_knowledge().value("default_tunnel_length_mm") / 10
    assert obs[0].diameter_mm == pytest.approx(20 * math.sqrt(0.05 / (math.pi * length_cm)))
    assert obs[1].diameter_mm == pytest.approx((6 * 50 / math.pi) ** (1 / 3))
    assert all(o.observed_retention == pytest.approx(0.45) for o in obs)
