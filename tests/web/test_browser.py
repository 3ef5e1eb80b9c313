"""The clinician web pages in a real browser: Debian's Chromium driven by Playwright against the real
server (uvicorn) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from regenguide.store import models as m
from regenguide.store.db import transaction

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct-horse-battery"  # tests/conftest.py seeds every role with it

pytestmark = pytest.mark.browser
if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (scripts/setup --system installs it)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(app: Any, engine: Any) -> Iterator[str]:
    import uvicorn

    with transaction(engine) as db:
        db.add(m.Patient(site_id=1, mrn="WEB-1", given_name="Marta", family_name="Keller",
                         birth_date=date(1969, 9, 9), sex="female"))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(server + "/")
    yield page
    context.close()


def _login(page: Any, username: str = "clinician", password: str = PASSWORD) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")


def test_wrong_password_is_refused(page: Any) -> None:
    _login(page, password="not-the-password")
    page.wait_for_selector("#login-error:has-text('wrong username or password')")
    assert page.is_visible("#login-view") and not page.is_visible("#patients-view")


def test_clinician_finds_patient_and_checks_a_plan(page: Any, tmp_path: Path) -> None:
    _login(page)
    page.wait_for_selector("#patients-table tbody tr")
    assert "Keller, Marta" in page.inner_text("#patients-table")
    page.click("#patients-table tbody tr >> text=Keller, Marta")
    page.wait_for_selector("#patient-title:has-text('Keller, Marta')")
    assert "WEB-1" in page.inner_text("#patient-summary")

    page.click("nav a[data-view=plan-check]")
    page.wait_for_function("document.querySelector('#plan-json').value.includes('glabella')")
    page.click("#run-check")
    page.wait_for_selector(".card.critical")
    assert "not signable" in page.inner_text("#verdict")
    assert page.locator(".card.critical").count() >= 3
    assert page.locator("#face-map circle.marker.critical").count() >= 1
    assert "exempt" in page.inner_text("#regulatory").lower()
    page.screenshot(path=str(tmp_path / "plan-check.png"), full_page=True)
    if os.environ.get("REGENGUIDE_SCREENSHOTS"):
        page.screenshot(path=os.environ["REGENGUIDE_SCREENSHOTS"], full_page=True)

    page.select_option("#example", "scalp_prp_safe")
    page.click("#load-example")
    page.wait_for_function("document.querySelector('#plan-json').value.includes('scalp')")
    page.click("#run-check")
    page.wait_for_selector("#verdict:has-text('0 critical')")
    assert "not signable" not in page.inner_text("#verdict")
    assert page.locator(".card.critical").count() == 0


def test_invalid_plan_shows_the_offending_field(page: Any) -> None:
    _login(page)
    page.wait_for_selector("#patients-table tbody tr")
    page.goto(page.url.split("#")[0] + "#/plan-check")
    page.wait_for_function("document.querySelector('#plan-json').value.includes('glabella')")
    page.fill("#plan-json", '{"schema": "regenguide.plan/1", "indication": "x", "modality": "botox"}')
    page.click("#run-check")
    page.wait_for_selector("#findings .error")
    assert "modality" in page.inner_text("#findings")


def test_researcher_sees_no_identifiers(page: Any) -> None:
    _login(page, "researcher")
    page.wait_for_selector("#patients-count")
    assert "Keller" not in page.inner_text("#patients-view")


def test_nurse_bedside_check_refuses_then_accepts(page: Any, engine: Any) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    with transaction(engine) as db:
        patient = db.execute(select(m.Patient).where(m.Patient.mrn == "WEB-1")).scalar_one()
        plan = m.TreatmentPlan(patient_id=patient.id, modality="prp", indication="androgenetic_alopecia",
                               jurisdiction="US", status="signed", signed_by=2, signed_at=now)
        db.add(plan)
        db.flush()
        db.add(m.Consent(patient_id=patient.id, plan_id=plan.id, version="1", text="consent to PRP of the scalp",
                         text_digest="0" * 64, decision="accepted", signer_name="Marta Keller",
                         signed_at=now - timedelta(days=1)))
        product = m.BiologicProduct(patient_id=patient.id, plan_id=plan.id, identifier="RG1-26-000042",
                                    identifier_scheme="local", product_type="prp", status="qc_passed",
                                    collected_at=now - timedelta(hours=1), expires_at=now + timedelta(hours=3))
        db.add(product)
        db.flush()
        pid, prod_id = patient.id, product.id
    _login(page, "nurse")
    page.wait_for_selector("#patients-table tbody tr")
    page.click("nav a[data-view=bedside]")
    page.fill("#bs-patient", str(pid))
    page.fill("#bs-wristband", "WEB-1")
    page.fill("#bs-product", "RG1-26-000042")
    page.check("#bs-administer")
    page.click("#bedside-form button[type=submit]")
    page.wait_for_selector(".verdict-box.refused")
    assert page.locator("#bedside-result li[data-code=not_released]").count() == 1
    with transaction(engine) as db:
        db.get(m.BiologicProduct, prod_id).status = "released"
    page.fill("#bs-wristband", "SOMEONE-ELSE")
    page.click("#bedside-form button[type=submit]")
    page.wait_for_selector("#bedside-result li[data-code=patient_mismatch]")
    page.fill("#bs-wristband", "WEB-1")
    page.click("#bedside-form button[type=submit]")
    page.wait_for_selector(".verdict-box.ok")
    assert "administration recorded" in page.inner_text("#bedside-result")
    with transaction(engine) as db:
        assert db.get(m.BiologicProduct, prod_id).status == "administered"
