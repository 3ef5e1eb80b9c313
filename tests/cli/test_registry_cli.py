"""Analytics and report commands against a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.config import get_settings
from regenguide.store import models as m
from regenguide.store.db import transaction

runner = CliRunner()


@pytest.fixture
def cli_db(db_url: str, engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    with transaction(engine) as db:
        for i in range(4):
            p = m.Patient(site_id=1, mrn=f"C{i}", given_name="G", family_name="F", birth_date=date(1980, 1, 1),
                          sex="female")
            db.add(p)
            db.flush()
            proc = m.Procedure(patient_id=p.id, modality="prp", performed_at=datetime(2025, 1, 1, tzinfo=UTC),
                               guidance_imaging="ultrasound" if i < 2 else "none")
            db.add(proc)
            db.flush()
            if i == 3:
                db.add(m.AdverseEvent(patient_id=p.id, procedure_id=proc.id, event_type="bruising", severity=1,
                                      relatedness="probable", onset_on=date(2025, 1, 2)))
    yield db_url
    get_settings.cache_clear()


def test_complications_json(cli_db: str) -> None:
    r = runner.invoke(app, ["analytics", "complications", "--grouping", "guidance", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["group"]["guidance"]: (row["events"], row["n"]) for row in json.loads(r.output)["rows"]}
    assert rows == {"image_guided": (0, 2), "landmark": (1, 2)}


def test_bad_grouping_and_missing_output(cli_db: str) -> None:
    r = runner.invoke(app, ["analytics", "complications", "--grouping", "colour"])
    assert r.exit_code == 2 and "colour" in r.output
    r = runner.invoke(app, ["report", "outcomes"])
    assert r.exit_code == 2 and "--html" in r.output


def test_report_files(cli_db: str, tmp_path: Path) -> None:
    html, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    r = runner.invoke(app, ["report", "outcomes", "--html", str(html), "--pdf", str(pdf)])
    assert r.exit_code == 0, r.output
    assert "4 patients, 4 procedures" in html.read_text()
    assert pdf.read_bytes().startswith(b"%PDF")
