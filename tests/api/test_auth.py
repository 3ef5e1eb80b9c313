"""Log in with the OAuth2 password flow: the token works, wrong credentials get one and the same 401, and
every attempt — accepted or refused — is in the audit trail (whose hash chain stays intact)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from regenguide.store import models as m
from regenguide.store.audit import verify
from regenguide.store.db import transaction

PASSWORD = "correct-horse-battery"  # tests/conftest.py seeds a user of every role with it


def _logins(engine: Any) -> list[tuple[str, int | None, str]]:
    with transaction(engine) as db:
        rows = db.execute(select(m.AuditEntry).where(m.AuditEntry.action == "login").order_by(m.AuditEntry.seq))
        return [(e.username, e.user_id, e.resource) for e in rows.scalars()]


def _login(client: Any, username: str, password: str) -> Any:
    return client.post("/api/v1/auth/token", data={"username": username, "password": password})


def test_login_gives_a_working_token_and_is_audited(client: Any, engine: Any) -> None:
    r = _login(client, "nurse", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["role"] == "nurse" and body["token_type"].lower() == "bearer" and body["expires_in"] > 0
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == "nurse"
    assert "patient:read" in me.json()["permissions"]
    assert _logins(engine) == [("nurse", 3, "session")]


def test_wrong_password_unknown_user_and_disabled_user_are_refused_alike_and_audited(
    client: Any, engine: Any
) -> None:
    with transaction(engine) as db:
        db.execute(update(m.User).where(m.User.username == "lab").values(active=False))
    answers = [_login(client, "clinician", "wrong-password"), _login(client, "nobody", PASSWORD),
               _login(client, "lab", PASSWORD)]
    for r in answers:
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"] == "wrong username or password"  # nothing tells which part was wrong
    assert _logins(engine) == [("clinician", 2, "session_refused"), ("nobody", None, "session_refused"),
                               ("lab", 4, "session_refused")]
    with transaction(engine) as db:
        assert verify(db).ok


def test_login_form_errors_name_the_field(client: Any) -> None:
    r = client.post("/api/v1/auth/token", data={"username": "nurse"})
    assert r.status_code == 422 and "password" in r.text


def test_a_token_stops_working_when_its_user_is_disabled(client: Any, engine: Any, auth: Any) -> None:
    assert client.get("/api/v1/auth/me", headers=auth["nurse"]).status_code == 200
    with transaction(engine) as db:
        db.execute(update(m.User).where(m.User.username == "nurse").values(active=False))
    r = client.get("/api/v1/auth/me", headers=auth["nurse"])
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    assert client.get("/api/v1/auth/me", headers=auth["clinician"]).status_code == 200
