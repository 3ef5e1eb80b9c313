"""Concurrency through a real server: many simultaneous CDS Hooks calls, reads and writes all succeed, each
request that reads or writes patient data leaves exactly one entry in one intact audit chain, and the
order-sign service holds no write lock while it computes.

The application runs under uvicorn in a background thread (the file database of the test, SQLite by
default, PostgreSQL with REGENGUIDE_TEST_DATABASE_URL); clients are threads with one httpx.Client each.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from regenguide.cds.hooks import CdsResponse, plan_to_draft_orders
from regenguide.domain.plan import PlanDocument
from regenguide.services import plans as plan_service
from regenguide.store import audit
from regenguide.store import models as m
from regenguide.store.db import transaction

CLIENTS = 12


def _plan(name: str) -> PlanDocument:
    text = (resources.files("regenguide.kb") / "data" / "examples" / f"{name}.json").read_text()
    return PlanDocument.model_validate(json.loads(text))


@pytest.fixture
def live(app: Any) -> Iterator[str]:
    """The test application served by uvicorn on 127.0.0.1 (a free port) in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _patients(engine: Engine, n: int) -> list[int]:
    with transaction(engine) as db:
        ids = []
        for i in range(n):
            p = m.Patient(site_id=1, mrn=f"C{i}", given_name="C", family_name=f"P{i}", birth_date=date(1975, 3, 1),
                          sex="female")
            db.add(p)
            db.flush()
            if i % 2 == 0:  # half of them with a signed consent
                db.add(m.Consent(patient_id=p.id, version="1", text="consent", text_digest="0" * 64,
                                 decision="accepted", signer_name="C", signed_at=datetime.now(UTC)))
            ids.append(p.id)
    return ids


def _audit_state(engine: Engine) -> tuple[int, Counter[str]]:
    with transaction(engine) as db:
        total = db.execute(select(func.count()).select_from(m.AuditEntry)).scalar_one()
        by_resource = Counter(dict(db.execute(
            select(m.AuditEntry.resource, func.count()).group_by(m.AuditEntry.resource)).all()))
    return int(total), by_resource


def _hook(hook: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": {"userId": "Practitioner/1", **context}}


def test_concurrent_cds_hooks_reads_and_writes_all_succeed_and_audit_once_each(
    live: str, engine: Engine, auth: Any
) -> None:
    ids = _patients(engine, 6)
    prp = plan_to_draft_orders(_plan("scalp_prp_safe"))
    microfat = plan_to_draft_orders(_plan("glabella_microfat_risky"))
    now = datetime.now(UTC).isoformat()
    # (kind, method, path, body): every kind but "anonymous" reads or writes patient data and is audited once.
    calls: list[tuple[str, str, str, dict[str, Any] | None]] = []
    for i in range(96):
        pid = ids[i % len(ids)]
        kind = ("order_sign", "order_sign", "order_sign", "anonymous", "get_patient", "patient_view",
                "feedback", "order_sign_microfat")[i % 8]
        if kind == "order_sign":
            calls.append((kind, "POST", "/cds-services/regenguide-plan-check",
                          _hook("order-sign", {"patientId": str(pid), "draftOrders": prp})))
        elif kind == "order_sign_microfat":
            calls.append((kind, "POST", "/cds-services/regenguide-plan-check",
                          _hook("order-sign", {"patientId": f"Patient/{pid}", "draftOrders": microfat})))
        elif kind == "anonymous":
            calls.append((kind, "POST", "/cds-services/regenguide-plan-check",
                          _hook("order-sign", {"draftOrders": prp})))
        elif kind == "get_patient":
            calls.append((kind, "GET", f"/api/v1/patients/{pid}", None))
        elif kind == "patient_view":
            calls.append((kind, "POST", "/cds-services/regenguide-patient-summary",
                          _hook("patient-view", {"patientId": str(pid)})))
        else:
            calls.append((kind, "POST", "/cds-services/regenguide-plan-check/feedback",
                          {"feedback": [{"card": f"card-{i}", "outcome": "accepted", "outcomeTimestamp": now}]}))
    before_total, before = _audit_state(engine)
    local = threading.local()

    def send(call: tuple[str, str, str, dict[str, Any] | None]) -> tuple[str, int, Any]:
        kind, method, path, body = call
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=live, headers=auth["clinician"], timeout=120)
        r = local.client.request(method, path, json=body)
        return kind, r.status_code, r.json()

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(send, calls))

    assert Counter(status for _, status, _ in results) == Counter({200: len(calls)}), [
        (k, s, b) for k, s, b in results if s != 200][:3]
    for kind, _, body in results:
        if kind.startswith("order_sign") or kind == "anonymous":
            assert CdsResponse.model_validate(body).cards
    kinds = Counter(kind for kind, _, _, _ in calls)
    after_total, after = _audit_state(engine)
    assert after_total - before_total == len(calls) - kinds["anonymous"]
    assert after["cds_order_sign"] - before["cds_order_sign"] == kinds["order_sign"] + kinds["order_sign_microfat"]
    assert after["cds_patient_view"] - before["cds_patient_view"] == kinds["patient_view"]
    assert after["cds_feedback"] - before["cds_feedback"] == kinds["feedback"]
    with transaction(engine) as db:
        result = audit.verify(db)
        assert result.ok, result
        assert result.checked == after_total
        stored = db.execute(select(func.count()).select_from(m.CdsFeedback)).scalar_one()
        assert stored == kinds["feedback"]
        # every order-sign entry names the patient of its request
        signed = db.execute(select(m.AuditEntry.patient_id).where(m.AuditEntry.resource == "cds_order_sign")).all()
        assert {p for (p,) in signed} <= set(ids)


def test_order_sign_reads_with_the_same_cards_for_a_stored_patient_under_load(
    live: str, engine: Engine, auth: Any
) -> None:
    """Concurrent calls for one patient all see the patient's recorded consent (signed): no call may fall
    back to 'missing' because its read raced another request's transaction."""
    (pid,) = _patients(engine, 1)
    body = _hook("order-sign", {"patientId": str(pid), "draftOrders": plan_to_draft_orders(_plan("scalp_prp_safe"))})
    with httpx.Client(base_url=live, headers=auth["clinician"], timeout=120) as c:
        reference = c.post("/cds-services/regenguide-plan-check", json=body).json()
    rules = sorted(card["source"]["topic"]["code"] for card in reference["cards"])
    assert not any(r.startswith("consent") for r in rules), rules

    def send(_: int) -> list[str]:
        with httpx.Client(base_url=live, headers=auth["clinician"], timeout=120) as c:
            r = c.post("/cds-services/regenguide-plan-check", json=body)
            assert r.status_code == 200, r.text
            return sorted(card["source"]["topic"]["code"] for card in r.json()["cards"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        assert all(got == rules for got in pool.map(send, range(2 * CLIENTS)))


def test_order_sign_holds_no_write_lock_while_it_checks(
    client: Any, engine: Engine, auth: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the plan check of an order-sign call runs, another connection can take SQLite's write lock
    at once (busy timeout 0): the request holds no write transaction then. Its audit entry is written."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    (pid,) = _patients(engine, 1)
    path = make_url(db_url).database
    assert path
    seen: list[str] = []
    real_check = plan_service.check

    def check_while_probing(*args: Any, **kwargs: Any) -> Any:
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the request holds the lock
            probe.execute("ROLLBACK")
            seen.append("write lock free")
        finally:
            probe.close()
        return real_check(*args, **kwargs)

    monkeypatch.setattr(plan_service, "check", check_while_probing)
    before, _ = _audit_state(engine)
    body = _hook("order-sign", {"patientId": str(pid), "draftOrders": plan_to_draft_orders(_plan("scalp_prp_safe"))})
    r = client.post("/cds-services/regenguide-plan-check", json=body, headers=auth["clinician"])
    assert r.status_code == 200, r.text
    assert seen == ["write lock free"]
    after, _ = _audit_state(engine)
    assert after == before + 1


def test_worker_count_setting(tmp_path: Any) -> None:
    from regenguide.config import Settings

    file_db = f"sqlite:///{tmp_path / 'x.db'}"
    assert Settings(database_url=file_db, workers=3).resolved_workers() == 3
    assert 1 <= Settings(database_url=file_db).resolved_workers() <= 4
    # an in-memory database exists once per process: never shared by several workers
    assert Settings(database_url="sqlite:///:memory:", workers=3).resolved_workers() == 1
    assert Settings(database_url="sqlite://", workers=3).resolved_workers() == 1
