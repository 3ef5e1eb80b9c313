"""User accounts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from regenguide.security import ROLE_PERMISSIONS, hash_password
from regenguide.store.models import User


class UserExists(ValueError):
    pass


def create_user(
    db: Session, username: str, role: str, password: str, *, full_name: str = "", site_id: int | None = None
) -> User:
    if role not in ROLE_PERMISSIONS:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLE_PERMISSIONS)}")
    if db.execute(select(User.id).where(User.username == username)).first():
        raise UserExists(f"user {username!r} already exists")
    user = User(
        username=username, role=role, password_hash=hash_password(password), full_name=full_name, site_id=site_id
    )
    db.add(user)
    db.flush()
    return user
