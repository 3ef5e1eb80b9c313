"""Users' credentials, bearer tokens and the role → permission table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
TOKEN_ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 10


class Permission(StrEnum):
    patient_read = "patient:read"  # clinical data of patients
    patient_identify = "patient:identify"  # names, birth dates, record numbers, contact
    patient_write = "patient:write"
    clinical_write = "clinical:write"  # assessments, procedures, visits, observations, adverse events
    plan_write = "plan:write"
    plan_sign = "plan:sign"
    consent_write = "consent:write"
    product_read = "product:read"
    product_write = "product:write"  # preparation, custody events, labels
    product_administer = "product:administer"  # bedside verification and administration
    imaging_write = "imaging:write"
    research_read = "research:read"  # de-identified analytics and exports
    user_admin = "user:admin"
    site_admin = "site:admin"
    audit_read = "audit:read"


P = Permission
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "clinician": frozenset(
        {
            P.patient_read, P.patient_identify, P.patient_write, P.clinical_write, P.plan_write, P.plan_sign,
            P.consent_write, P.product_read, P.product_administer, P.imaging_write, P.research_read,
        }
    ),
    "nurse": frozenset(
        {
            P.patient_read, P.patient_identify, P.clinical_write, P.consent_write, P.product_read,
            P.product_administer, P.imaging_write,
        }
    ),
    # The lab labels products, so it sees identity, but it neither plans nor signs.
    "lab": frozenset({P.patient_identify, P.product_read, P.product_write}),
    # Researchers see de-identified data of patients who consented to research use, nothing else.
    "researcher": frozenset({P.research_read}),
}


def permissions_for(role: str) -> frozenset[Permission]:
    return ROLE_PERMISSIONS.get(role, frozenset())


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_token(*, user_id: int, username: str, role: str, secret: str, minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "name": username, "role": role, "iat": now, "exp": now + timedelta(minutes=minutes)}
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


def decode_token(token: str, secret: str) -> dict[str, Any]:
    """Raises jwt.InvalidTokenError (expired, bad signature, malformed)."""
    return jwt.decode(token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["sub", "exp"]})
