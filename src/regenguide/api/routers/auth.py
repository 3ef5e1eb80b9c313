"""Log in (OAuth2 password flow), who am I, and user administration."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select

from regenguide.api.deps import CurrentUser, ReadSessionDep, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.api.schemas import Token, UserCreate, UserRead
from regenguide.security import Permission, create_token, permissions_for, verify_password
from regenguide.services.users import UserExists, create_user
from regenguide.store.audit import AuditRecord
from regenguide.store.models import User

router = APIRouter(tags=["auth"])


@router.post("/auth/token", response_model=Token, summary="Log in: OAuth2 password flow")
def login(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], db: ReadSessionDep) -> Token:
    """The password is checked on a read session: Argon2 is slow on purpose (tens of ms), and a write
    transaction (on SQLite, the database-wide write lock) held meanwhile would stall every other writer.
    The attempt, accepted or refused, is then appended to the audit trail in a short write transaction of
    its own (group-committed with the reads' entries) before the answer is sent."""
    user = db.execute(select(User).where(User.username == form.username)).scalar_one_or_none()
    db.rollback()  # end the read snapshot before the slow check
    if user is None or not user.active or not verify_password(user.password_hash, form.password):
        # The name as typed (cut to the column's width); user_id only when it names an account.
        record = AuditRecord(username=form.username[:64], user_id=user.id if user else None, action="login",
                             resource="session_refused")
        request.app.state.audit_commit.append([record])
        raise ProblemError(401, "Not authenticated", "wrong username or password", type_="bad-credentials")
    settings = request.app.state.settings
    token = create_token(
        user_id=user.id,
        username=user.username,
        role=user.role,
        secret=request.app.state.secret_key,
        minutes=settings.token_minutes,
    )
    request.app.state.audit_commit.append(
        [AuditRecord(username=user.username, user_id=user.id, action="login", resource="session")])
    return Token(access_token=token, role=user.role, expires_in=settings.token_minutes * 60)


@router.get("/auth/me", summary="The current user and their permissions")
def me(principal: CurrentUser) -> dict[str, Any]:
    return {
        "id": principal.id,
        "username": principal.username,
        "role": principal.role,
        "permissions": sorted(p.value for p in permissions_for(principal.role)),
    }


@router.post("/users", status_code=201, response_model=UserRead, summary="Create a user (admin)")
def add_user(
    body: UserCreate, db: SessionDep, principal: Annotated[Any, Depends(require(Permission.user_admin))]
) -> UserRead:
    try:
        user = create_user(db, body.username, body.role, body.password, full_name=body.full_name, site_id=body.site_id)
    except UserExists as exc:
        raise ProblemError(409, "Conflict", str(exc), type_="user-exists") from None
    audit(db, principal, principal.audit("create", "users", user.id, None, body.model_dump(exclude={"password"})))
    db.commit()
    return UserRead.model_validate(user)


@router.get("/users", response_model=list[UserRead], summary="List users (admin)")
def list_users(db: SessionDep, principal: Annotated[Any, Depends(require(Permission.user_admin))]) -> list[UserRead]:
    return [UserRead.model_validate(u) for u in db.execute(select(User).order_by(User.id)).scalars()]
