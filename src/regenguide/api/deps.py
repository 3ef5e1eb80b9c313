"""Typed dependencies shared by the routers: database session, current user, permissions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from regenguide.api.problems import ProblemError
from regenguide.security import Permission, decode_token, permissions_for
from regenguide.store.audit import AuditRecord, GroupCommit, append
from regenguide.store.models import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def read_session(request: Request) -> Session:
    session: Session = request.app.state.read_sessions()
    session.info["read_only"] = True
    session.info["audit_commit"] = request.app.state.audit_commit
    return session


def get_db(request: Request) -> Iterator[Session]:
    """A session per request. Routes commit explicitly when their work is complete; anything not
    committed (an error, a rejected request) is rolled back here, leaving the database as it was.
    GET requests get a read session (`info["read_only"]`), whose audit entries go through `audit`.
    A write session opens its transaction (on SQLite: `BEGIN IMMEDIATE`, the write lock) at its first
    statement, so a route should read and validate what it can before it starts writing."""
    session = read_session(request) if request.method in ("GET", "HEAD") else request.app.state.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def get_read_db(request: Request) -> Iterator[Session]:
    """A read session whatever the method, for POST routes that only read patient data (the CDS Hooks
    services): on SQLite a deferred transaction on a WAL snapshot, in parallel with other readers and
    writers; its audit entries are appended by `audit` in a short write transaction of their own."""
    session = read_session(request)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]
ReadSessionDep = Annotated[Session, Depends(get_read_db)]


@dataclass(frozen=True)
class Principal:
    id: int
    username: str
    role: str
    permissions: frozenset[Permission]

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def audit(
        self,
        action: str,
        resource: str,
        resource_id: str | int | None = None,
        patient_id: int | None = None,
        payload: object = None,
    ) -> AuditRecord:
        return AuditRecord(
            username=self.username,
            user_id=self.id,
            action=action,
            resource=resource,
            resource_id=resource_id,
            patient_id=patient_id,
            payload=payload,
        )


def get_principal(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    """The user of the bearer token, looked up in a short read transaction of its own (never in the
    request's session: on SQLite a write request would otherwise hold the write lock from here on)."""
    with read_session(request) as db:
        return principal_of(request, token, db)


def principal_of(request: Request, token: str | None, db: Session) -> Principal:
    """The user of the bearer token, looked up on `db` (a read session, which the caller may go on using)."""
    if not token:
        raise ProblemError(401, "Not authenticated", "a bearer token is required (POST /api/v1/auth/token)")
    try:
        claims = decode_token(token, request.app.state.secret_key)
    except jwt.ExpiredSignatureError:
        raise ProblemError(401, "Not authenticated", "the token has expired; log in again") from None
    except jwt.InvalidTokenError:
        raise ProblemError(401, "Not authenticated", "the token is not valid") from None
    # Four columns, not the ORM object: this runs on every authenticated request.
    row = db.execute(_ACTIVE_USER, {"user_id": int(claims["sub"])}).first()
    if row is None:
        raise ProblemError(401, "Not authenticated", "the user no longer exists or is disabled")
    return Principal(row.id, row.username, row.role, permissions_for(row.role))


_ACTIVE_USER = (select(User.id, User.username, User.role)
                .where(User.id == bindparam("user_id"), User.active.is_(True)))


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require(*permissions: Permission) -> Callable[[Principal], Principal]:
    """Dependency factory: the current user must hold every listed permission."""

    def _check(principal: CurrentUser) -> Principal:
        missing = [p.value for p in permissions if not principal.can(p)]
        if missing:
            raise ProblemError(
                403,
                "Forbidden",
                f"role {principal.role!r} lacks permission {', '.join(missing)}",
                type_="forbidden",
            )
        return principal

    return _check


def audit(db: Session, principal: Principal, *records: AuditRecord) -> None:
    """Append to the audit trail: in the request's own transaction, or — for a read session, which
    must not write — in a short write transaction shared with the other reads' entries that arrive
    meanwhile (`GroupCommit`), committed before this returns and so before the response is sent."""
    if not db.info.get("read_only"):
        append(db, list(records))
        return
    committer: GroupCommit = db.info["audit_commit"]
    committer.append(records)


def any_of(*permissions: Permission) -> Callable[[Principal], Principal]:
    def _check(principal: CurrentUser) -> Principal:
        if not any(principal.can(p) for p in permissions):
            raise ProblemError(
                403,
                "Forbidden",
                f"role {principal.role!r} needs one of: {', '.join(p.value for p in permissions)}",
                type_="forbidden",
            )
        return principal

    return _check
