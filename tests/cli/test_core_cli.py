"""Top-level CLI commands against a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.config import get_settings
from regenguide.security import verify_password
from regenguide.store.db import transaction
from regenguide.store.models import User

runner = CliRunner()


@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def test_init_is_idempotent(cli_db: str) -> None:
    from regenguide.store.schema import head_revision

    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0 and f"revision {head_revision()}" in r.output and "was" not in r.output


def test_user_add_reads_password_from_stdin(cli_db: str, engine: Any) -> None:
    r = runner.invoke(app, ["user", "add", "dr.who", "--role", "clinician", "--password-stdin"],
                      input="a-very-long-secret\n")
    assert r.exit_code == 0, r.output
    with transaction(engine) as db:
        user = db.execute(select(User).where(User.username == "dr.who")).scalar_one()
        assert user.role == "clinician"
        assert verify_password(user.password_hash, "a-very-long-secret")
        assert "a-very-long-secret" not in user.password_hash


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["user", "add", "x1", "--role", "wizard", "--password-stdin"], "a-very-long-secret\n", "unknown role"),
        (["user", "add", "x2", "--role", "nurse", "--password-stdin"], "short\n", "at least 10"),
        (["user", "add", "admin", "--role", "nurse", "--password-stdin"], "a-very-long-secret\n", "already exists"),
        (["user", "add", "x3", "--role", "nurse"], "", "--password-stdin"),
    ],
)
def test_user_add_errors(cli_db: str, args: list[str], stdin: str, message: str) -> None:
    r = runner.invoke(app, args, input=stdin)
    assert r.exit_code == 2
    assert message in r.output


def test_restore_refuses_a_file_that_is_not_a_backup(cli_db: str, tmp_path: Path) -> None:
    fake = tmp_path / "fake.rgbak"
    fake.write_text("hello")
    r = runner.invoke(app, ["restore", str(fake), "--yes"])
    assert r.exit_code == 2 and "not a RegenGuide backup" in r.output
    assert "rows" not in r.output  # refused before any progress bar is drawn
    r = runner.invoke(app, ["restore", str(tmp_path / "missing.rgbak"), "--yes"])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_backup_then_restore_via_cli(cli_db: str, tmp_path: Path) -> None:
    path = tmp_path / "b.rgbak"
    r = runner.invoke(app, ["backup", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["restore", str(path), "--yes"])
    assert r.exit_code == 0, r.output
    assert "restored" in r.output
    restored = int(r.output.split("restored ")[1].split()[0])
    assert f"{restored}/{restored}" in r.output  # the bar knew its total from the backup's header
