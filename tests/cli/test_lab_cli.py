"""Products in the database through the CLI: register, custody, label, bedside, recall."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.config import get_settings
from regenguide.store import models as m
from regenguide.store.db import transaction

runner = CliRunner()
NOW = datetime.now(UTC)


@pytest.fixture
def setup(db_url: str, engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="LAB-1", given_name="Ada", family_name="Lovel", birth_date=date(1970, 3, 3),
                      sex="female")
        db.add(p)
        db.flush()
        plan = m.TreatmentPlan(patient_id=p.id, modality="prp", indication="androgenetic_alopecia", jurisdiction="US",
                               status="signed", signed_by=2, signed_at=NOW)
        db.add(plan)
        db.flush()
        db.add(m.Consent(patient_id=p.id, plan_id=plan.id, version="1", text="consent text for PRP",
                         text_digest="0" * 64, decision="accepted", signer_name="Ada Lovel",
                         signed_at=NOW - timedelta(days=1)))
        ids = {"patient": p.id, "plan": plan.id}
    prep = {
        "product_type": "prp", "prepared_at": NOW.isoformat(), "operator": "lab", "blood_volume_ml": 30,
        "anticoagulant": "acd_a", "anticoagulant_volume_ml": 3, "kit": {"kind": "kit", "name": "Kit", "lot": "K-1"},
        "spins": [{"g_force": 100, "minutes": 15}],
        "baseline": {"platelets_per_uL": 200000, "leukocytes_per_uL": 6000, "rbc_per_uL": 4800000},
        "product": {"platelets_per_uL": 900000, "leukocytes_per_uL": 3000, "rbc_per_uL": 40000},
        "product_volume_ml": 5,
    }
    path = tmp_path / "prep.json"
    path.write_text(json.dumps(prep))
    ids["prep"] = path  # type: ignore[assignment]
    yield ids
    get_settings.cache_clear()


def test_chain_of_identity_from_the_command_line(setup: dict[str, Any], engine: Any, tmp_path: Path) -> None:
    r = runner.invoke(app, ["lab", "register", "--patient-id", str(setup["patient"]), "--product-type", "prp",
                            "--location", "lab 1", "--plan-id", str(setup["plan"]),
                            "--preparation", str(setup["prep"])])
    assert r.exit_code == 0, r.output
    with transaction(engine) as db:
        product = db.execute(select(m.BiologicProduct)).scalar_one()
        pid, ident = product.id, product.identifier
    refused = runner.invoke(app, ["lab", "bedside", "--patient-id", str(setup["patient"]), "--scanned-patient",
                                  "LAB-1", "--scanned-product", ident, "--administer"])
    assert refused.exit_code == 1 and "not_released" in refused.output
    bad = runner.invoke(app, ["lab", "event", str(pid), "released", "--location", "lab"])
    assert bad.exit_code == 2 and "cannot record 'released'" in bad.output
    for event in ("processed", "qc_passed", "released"):
        r = runner.invoke(app, ["lab", "event", str(pid), event, "--location", "lab"])
        assert r.exit_code == 0, r.output
    png = tmp_path / "label.png"
    assert runner.invoke(app, ["lab", "label", str(pid), "--png", str(png)]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    ok = runner.invoke(app, ["lab", "bedside", "--patient-id", str(setup["patient"]), "--scanned-patient", "LAB-1",
                             "--scanned-product", ident, "--administer"])
    assert ok.exit_code == 0 and "administered" in ok.output, ok.output
    recall = runner.invoke(app, ["lab", "recall", "--kit-lot", "K-1"])
    assert recall.exit_code == 0
    lines = recall.output.strip().splitlines()
    assert len(lines) == 2 and ident in lines[1] and "LAB-1" in lines[1]
    with transaction(engine) as db:
        checks = db.execute(select(m.BedsideCheck.accepted).order_by(m.BedsideCheck.id)).scalars().all()
        assert checks == [False, True]


def test_bad_input(setup: dict[str, Any]) -> None:
    r = runner.invoke(app, ["lab", "register", "--patient-id", "999", "--product-type", "prp", "--location", "x"])
    assert r.exit_code == 2 and "patient_id" in r.output
    r = runner.invoke(app, ["lab", "register", "--patient-id", "1", "--product-type", "botox", "--location", "x"])
    assert r.exit_code == 2 and "botox" in r.output
    assert runner.invoke(app, ["lab", "recall"]).exit_code == 2


def test_divide_and_backdated_events(setup: dict[str, Any], engine: Any) -> None:
    naive = runner.invoke(app, ["lab", "register", "--patient-id", str(setup["patient"]), "--product-type", "prp",
                                "--location", "lab", "--collected-at", "2026-11-22T08:00:00"])
    assert naive.exit_code == 2 and "no UTC offset" in naive.output
    start = NOW - timedelta(hours=1)
    r = runner.invoke(app, ["lab", "register", "--patient-id", str(setup["patient"]), "--product-type", "prp",
                            "--location", "lab 1", "--plan-id", str(setup["plan"]), "--preparation",
                            str(setup["prep"]), "--volume-ml", "5", "--collected-at", start.isoformat()])
    assert r.exit_code == 0, r.output
    with transaction(engine) as db:
        pid = db.execute(select(m.BiologicProduct.id)).scalar_one()
    processed_at = start + timedelta(minutes=20)
    r = runner.invoke(app, ["lab", "event", str(pid), "processed", "--location", "lab",
                            "--at", processed_at.isoformat()])
    assert r.exit_code == 0, r.output
    with transaction(engine) as db:
        product = db.get(m.BiologicProduct, pid)
        # PRP: 4 h after processing (wilson-2018-prp-storage)
        expires = product.expires_at if product.expires_at.tzinfo else product.expires_at.replace(tzinfo=UTC)
        assert expires == processed_at + timedelta(hours=4)
    earlier = runner.invoke(app, ["lab", "event", str(pid), "qc_passed", "--location", "lab",
                                  "--at", start.isoformat()])
    assert earlier.exit_code == 2 and "before the last custody event" in earlier.output
    future = runner.invoke(app, ["lab", "event", str(pid), "qc_passed", "--location", "lab",
                                 "--at", (datetime.now(UTC) + timedelta(days=365)).isoformat()])
    assert future.exit_code == 2 and "in the future" in future.output
    for event in ("qc_passed", "released"):
        assert runner.invoke(app, ["lab", "event", str(pid), event, "--location", "lab"]).exit_code == 0
    r = runner.invoke(app, ["lab", "divide", str(pid), "--count", "2", "--location", "lab",
                            "--volume-ml", "2.5", "--volume-ml", "2.5"])
    assert r.exit_code == 0, r.output
    with transaction(engine) as db:
        parent = db.get(m.BiologicProduct, pid)
        kids = db.execute(select(m.BiologicProduct).where(m.BiologicProduct.parent_id == pid)
                          .order_by(m.BiologicProduct.id)).scalars().all()
        assert [k.identifier for k in kids] == [parent.identifier + "/A0", parent.identifier + "/B0"]
        assert parent.status == "discarded" and all(k.status == "released" for k in kids)
        kid_key = kids[1].identifier
    assert kid_key in r.output
    # the aliquot, scanned with its division, can be administered; the parent's DIN alone cannot
    refused = runner.invoke(app, ["lab", "bedside", "--patient-id", str(setup["patient"]), "--scanned-patient",
                                  "LAB-1", "--scanned-product", kid_key.split("/")[0], "--administer"])
    assert refused.exit_code == 1 and "discarded" in refused.output
    ok = runner.invoke(app, ["lab", "bedside", "--patient-id", str(setup["patient"]), "--scanned-patient", "LAB-1",
                             "--scanned-product", kid_key, "--administer"])
    assert ok.exit_code == 0, ok.output
    too_many = runner.invoke(app, ["lab", "divide", str(pid), "--count", "2", "--location", "lab"])
    assert too_many.exit_code == 2 and "discarded" in too_many.output
    unknown = runner.invoke(app, ["lab", "bedside", "--patient-id", str(setup["patient"]), "--scanned-patient",
                                  "LAB-1", "--scanned-product", "RG1-26-999999"])
    assert unknown.exit_code == 1 and "unknown_product" in unknown.output
    with transaction(engine) as db:
        last = db.execute(select(m.BedsideCheck).order_by(m.BedsideCheck.id.desc()).limit(1)).scalar_one()
        assert last.product_id is None and last.reasons[0]["code"] == "unknown_product"
