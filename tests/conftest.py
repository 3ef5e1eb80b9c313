"""Shared fixtures: a fresh, migrated database per test on SQLite (default) or PostgreSQL
(when REGENGUIDE_TEST_DATABASE_URL points to a server), with one site and a user of every role.

The migrated database is built once per test process as a template and copied per test (a file
copy on SQLite, CREATE DATABASE … TEMPLATE on PostgreSQL), so every test starts from the same state.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from regenguide.config import Settings
from regenguide.store import schema
from regenguide.store.db import make_engine, transaction

PG_URL = os.environ.get("REGENGUIDE_TEST_DATABASE_URL")
PASSWORD = "correct-horse-battery"
ROLES = ("admin", "clinician", "nurse", "lab", "researcher")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "db_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def _seed(engine: Engine) -> None:
    from regenguide.services.users import create_user
    from regenguide.store.models import Site

    with transaction(engine) as db:
        site = Site(name="Test Clinic", jurisdiction="US")
        db.add(site)
        db.flush()
        for role in ROLES:
            create_user(db, role, role, PASSWORD, full_name=f"Test {role}", site_id=site.id)


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PG_URL:
        base = make_url(PG_URL)
        name = f"rg_tmpl_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        schema.upgrade(engine)
        _seed(engine)
        engine.dispose()
        yield name
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        schema.upgrade(engine)
        _seed(engine)
        engine.dispose()
        yield str(path)


@pytest.fixture
def db_url(_template: str, tmp_path: Path) -> Iterator[str]:
    if PG_URL:
        base = make_url(PG_URL)
        name = f"rg_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path / "test.db"
        shutil.copyfile(_template, path)
        yield f"sqlite:///{path}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    key = "test-secret-key-0123456789-abcdefghijklmnop"
    return Settings(data_dir=tmp_path / "data", database_url=db_url, secret_key=key)


@pytest.fixture
def app(engine: Engine, settings: Settings):  # type: ignore[no-untyped-def]
    from regenguide.api.app import create_app

    return create_app(engine, settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


class Tokens(dict[str, dict[str, str]]):
    """role → Authorization header."""


@pytest.fixture
def auth(client, settings: Settings) -> Tokens:  # type: ignore[no-untyped-def]
    """Bearer headers for the seeded users (ids 1..5 in ROLES order); the login flow itself is
    tested in tests/api/test_auth.py, so fixtures skip the deliberately slow Argon2 check."""
    from regenguide.security import create_token

    tokens = Tokens()
    for user_id, role in enumerate(ROLES, start=1):
        token = create_token(
            user_id=user_id, username=role, role=role, secret=settings.resolved_secret_key(), minutes=30
        )
        tokens[role] = {"Authorization": f"Bearer {token}"}
    return tokens
