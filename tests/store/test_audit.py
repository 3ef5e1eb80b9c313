"""The audit chain detects tampering done directly in the database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from regenguide.store.audit import AuditRecord, append, verify
from regenguide.store.db import transaction


def _fill(engine: Any, n: int = 5) -> None:
    with transaction(engine) as db:
        append(db, [AuditRecord(username="u", action="read", resource="patients", resource_id=i, patient_id=i)
                    for i in range(1, n + 1)])


def _drop_guards(engine: Any) -> None:
    """What an attacker with database access would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))


def test_intact_chain_verifies(engine: Any) -> None:
    _fill(engine)
    with transaction(engine) as db:
        result = verify(db)
    assert result.ok and result.checked == 5


def test_database_refuses_update_and_delete(engine: Any) -> None:
    _fill(engine)
    for sql in ("UPDATE audit_log SET username = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        ("UPDATE audit_log SET username = 'mallory' WHERE seq = 3", 3),
        ("UPDATE audit_log SET action = 'list' WHERE seq = 1", 1),
        ("DELETE FROM audit_log WHERE seq = 2", 2),
        ("DELETE FROM audit_log WHERE seq = 5", 5),
    ],
)
def test_tampering_is_detected_at_the_first_broken_entry(engine: Any, tamper: str, broken: int) -> None:
    _fill(engine)
    _drop_guards(engine)
    with engine.begin() as conn:
        conn.execute(text(tamper))
    with transaction(engine) as db:
        result = verify(db)
    assert not result.ok
    assert result.first_broken_seq == broken


def test_cli_verify_exit_codes(engine: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from regenguide.cli import app
    from regenguide.config import get_settings

    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    _fill(engine)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    _drop_guards(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET resource = 'users' WHERE seq = 4"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "entry 4" in bad.output
    get_settings.cache_clear()
