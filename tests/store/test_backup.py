"""Backup and restore: a round trip reproduces every row; anything that is not a RegenGuide backup is
refused before the database is touched."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from regenguide.services.backup import BackupError, backup, restore
from regenguide.store.audit import verify
from regenguide.store.db import transaction
from regenguide.store.models import Base, Patient


def _add_patients(client: Any, auth: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        r = client.post(
            "/api/v1/patients",
            json={"site_id": 1, "mrn": f"M{i}", "given_name": "Zoë", "family_name": f"N{i}",
                  "birth_date": "1970-01-31", "sex": "female"},
            headers=auth["clinician"],
        )
        assert r.status_code == 201


def _snapshot(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def test_round_trip(client: Any, auth: Any, engine: Any, tmp_path: Path) -> None:
    _add_patients(client, auth, 3)
    before = _snapshot(engine)
    path = tmp_path / "db.rgbak"
    summary = backup(engine, path)
    assert summary.rows["patients"] == 3
    with transaction(engine) as db:
        db.add(Patient(site_id=1, mrn="LATE", given_name="x", family_name="y",
                       birth_date=Patient.birth_date.type.python_type(1990, 1, 1), sex="male"))
    restore(engine, path)
    assert _snapshot(engine) == before
    with transaction(engine) as db:
        assert verify(db).ok
        assert db.execute(select(func.count()).select_from(Patient)).scalar_one() == 3
    # After a restore, new rows get fresh ids (sequences reset on PostgreSQL).
    _add_patients(client, auth, 1, start=100)


def _write(path: Path, lines: list[Any]) -> None:
    with gzip.open(path, "wt") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


@pytest.mark.parametrize("kind", ["plain-text", "wrong-format", "truncated", "altered"])
def test_restore_refuses_non_backups_and_keeps_data(
    client: Any, auth: Any, engine: Any, tmp_path: Path, kind: str
) -> None:
    _add_patients(client, auth, 2)
    good = tmp_path / "good.rgbak"
    backup(engine, good)
    bad = tmp_path / "bad.rgbak"
    if kind == "plain-text":
        bad.write_text("not a backup at all")
    elif kind == "wrong-format":
        _write(bad, [{"format": "something-else"}])
    else:
        with gzip.open(good, "rt") as f:
            lines = [json.loads(x) for x in f]
        if kind == "truncated":
            lines = lines[:-1]
        else:
            lines[1]["rows"][0][1] = "tampered"
        _write(bad, lines)
    before = _snapshot(engine)
    with pytest.raises(BackupError):
        restore(engine, bad)
    assert _snapshot(engine) == before
