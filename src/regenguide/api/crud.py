"""One router factory for the pathway's plain resources: create, read, update, list — paginated,
filtered, permission-checked, audited, transactional and guarded by optimistic concurrency.

(No `from __future__ import annotations` here: the route functions are built in closures and FastAPI
must see the real schema classes in their annotations.)
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regenguide.api.deps import CurrentUser, Principal, SessionDep, audit
from regenguide.api.problems import ProblemError
from regenguide.security import Permission
from regenguide.store.models import Base, Patient

Hook = Callable[[Session, Principal, Any, BaseModel], None]


@dataclass
class Resource:
    name: str  # URL segment, e.g. "adverse-events"
    model: type[Base]
    create: type[BaseModel]
    read: type[BaseModel]
    update: type[BaseModel] | None
    read_permission: Permission
    write_permission: Permission
    filters: tuple[str, ...] = ()
    research_visible: bool = False
    research_read: type[BaseModel] | None = None
    children: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    before_create: Hook | None = None
    after_write: Hook | None = None
    tag: str = ""

    @property
    def audit_name(self) -> str:
        return self.name.replace("-", "_")


def etag(version: int) -> str:
    return f'"v{version}"'


def parse_if_match(value: str | None) -> int:
    if value is None:
        raise ProblemError(
            428,
            "Precondition required",
            "send If-Match with the ETag you read, so that no one else's change is overwritten",
            type_="if-match-required",
        )
    match = re.fullmatch(r'\s*(?:W/)?"v(\d+)"\s*', value)
    if not match:
        raise ProblemError(400, "Bad request", f"If-Match {value!r} is not an ETag of this API", type_="bad-if-match")
    return int(match.group(1))


def check_references(db: Session, model: type[Base], values: dict[str, Any]) -> None:
    """Name the offending field when a referenced row does not exist (rather than a bare 409)."""
    for fk in model.__table__.foreign_keys:  # type: ignore[attr-defined]
        name = fk.parent.name
        value = values.get(name)
        if value is None:
            continue
        target = fk.column.table
        exists = db.execute(select(func.count()).select_from(target).where(fk.column == value)).scalar_one()
        if not exists:
            raise ProblemError(
                422,
                "Invalid request",
                f"{name}: no {target.name.rstrip('s').replace('_', ' ')} with id {value}",
                type_="validation",
                errors=[{"field": name, "message": f"{target.name} {value} does not exist", "type": "reference"}],
            )


def _patient_of(obj: Any) -> int | None:
    if isinstance(obj, Patient):
        return obj.id
    return getattr(obj, "patient_id", None)


class Access:
    """How the current user may read a resource: full, research view (de-identified, consenting
    patients only), or not at all."""

    def __init__(self, res: Resource, principal: Principal) -> None:
        self.full = principal.can(res.read_permission) or (
            res.model is Patient and principal.can(Permission.patient_identify)
        )
        self.research = not self.full and res.research_visible and principal.can(Permission.research_read)
        if not (self.full or self.research):
            raise ProblemError(
                403, "Forbidden", f"role {principal.role!r} may not read {res.name}", type_="forbidden"
            )
        self.schema = res.research_read if (self.research and res.research_read) else res.read

    def restrict(self, stmt: Any, model: type[Base]) -> Any:
        if not self.research:
            return stmt
        consenting = select(Patient.id).where(Patient.research_consent.is_(True))
        if model is Patient:
            return stmt.where(Patient.research_consent.is_(True))
        return stmt.where(model.patient_id.in_(consenting))  # type: ignore[attr-defined]


def load(db: Session, res: Resource, item_id: int, access: Access | None = None) -> Any:
    stmt = select(res.model).where(res.model.id == item_id)  # type: ignore[attr-defined]
    if access is not None:
        stmt = access.restrict(stmt, res.model)
    obj = db.execute(stmt).scalar_one_or_none()
    if obj is None:
        raise ProblemError(404, "Not found", f"{res.name} {item_id} does not exist", type_="not-found")
    return obj


def build_router(res: Resource) -> APIRouter:
    router = APIRouter(prefix=f"/{res.name}", tags=[res.tag or res.name])
    create_schema, read_schema, update_schema = res.create, res.read, res.update

    def _require_write(principal: Principal) -> None:
        if not principal.can(res.write_permission):
            raise ProblemError(
                403,
                "Forbidden",
                f"role {principal.role!r} lacks permission {res.write_permission.value}",
                type_="forbidden",
            )

    def _render(obj: Any, access: Access) -> dict[str, Any]:
        return access.schema.model_validate(obj).model_dump(mode="json")

    @router.post("", status_code=201, response_model=read_schema, summary=f"Create one of {res.name}")
    def create_item(
        body: Annotated[create_schema, Body()],  # type: ignore[valid-type]
        db: SessionDep,
        principal: CurrentUser,
        response: Response,
    ) -> Any:
        _require_write(principal)
        payload: BaseModel = body
        values = payload.model_dump(exclude=set(res.children))
        check_references(db, res.model, values)
        obj: Any = res.model(**values)
        for child_field, make_child in res.children.items():
            setattr(obj, child_field, [make_child(c) for c in getattr(body, child_field)])
        if res.before_create:
            res.before_create(db, principal, obj, body)
        db.add(obj)
        db.flush()
        if res.after_write:
            res.after_write(db, principal, obj, body)
        audit(
            db,
            principal,
            principal.audit("create", res.audit_name, obj.id, _patient_of(obj), payload.model_dump(mode="json")),
        )
        out = read_schema.model_validate(obj).model_dump(mode="json")
        db.commit()
        if hasattr(obj, "version"):
            response.headers["ETag"] = etag(obj.version)
        response.headers["Location"] = f"/api/v1/{res.name}/{obj.id}"
        return out

    read_model: Any = read_schema if res.research_read is None else (read_schema | res.research_read)

    @router.get("/{item_id}", response_model=read_model, summary=f"Read one of {res.name}")
    def read_item(item_id: int, db: SessionDep, principal: CurrentUser, response: Response) -> Any:
        access = Access(res, principal)
        obj = load(db, res, item_id, access)
        out = _render(obj, access)
        audit(db, principal, principal.audit("read", res.audit_name, obj.id, _patient_of(obj), out))
        db.commit()
        if hasattr(obj, "version"):
            response.headers["ETag"] = etag(obj.version)
        return out

    filter_doc = ", ".join(res.filters) or "none"

    @router.get(
        "",
        summary=f"List {res.name}",
        description=f"Paginated. Equality filters as query parameters: {filter_doc}.",
    )
    def list_items(
        request: Request,
        db: SessionDep,
        principal: CurrentUser,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        access = Access(res, principal)
        stmt = access.restrict(select(res.model), res.model)
        for key, raw in request.query_params.items():
            if key in ("limit", "offset"):
                continue
            if key not in res.filters:
                raise ProblemError(
                    400,
                    "Bad request",
                    f"unknown filter {key!r}; allowed: {filter_doc}",
                    type_="unknown-filter",
                    errors=[{"field": key, "message": "not a filter of this resource", "type": "filter"}],
                )
            column = res.model.__table__.c[key]  # type: ignore[attr-defined]
            try:
                python_type = column.type.python_type
                value: Any = (raw.lower() in ("1", "true", "yes")) if python_type is bool else python_type(raw)
            except (ValueError, NotImplementedError):
                raise ProblemError(
                    400, "Bad request", f"{key}: {raw!r} is not a valid value", type_="bad-filter"
                ) from None
            stmt = stmt.where(column == value)
        total = db.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
        rows = db.execute(stmt.order_by(res.model.id).limit(limit).offset(offset)).scalars().all()  # type: ignore[attr-defined]
        items = [_render(o, access) for o in rows]
        audit(
            db,
            principal,
            *[
                principal.audit("list", res.audit_name, o.id, _patient_of(o), item)
                for o, item in zip(rows, items, strict=True)
            ],
        )
        db.commit()
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    if update_schema is not None:

        @router.patch("/{item_id}", response_model=read_schema, summary=f"Update one of {res.name}")
        def update_item(
            item_id: int,
            body: Annotated[update_schema, Body()],  # type: ignore[valid-type]
            db: SessionDep,
            principal: CurrentUser,
            response: Response,
            if_match: Annotated[str | None, Header(description='ETag from a read, e.g. "v3"')] = None,
        ) -> Any:
            _require_write(principal)
            payload: BaseModel = body
            expected = parse_if_match(if_match)
            obj = load(db, res, item_id)
            if obj.version != expected:
                raise ProblemError(
                    412,
                    "Precondition failed",
                    f"{res.name} {item_id} is at version {obj.version}, not {expected}: someone changed it; "
                    "reload and apply your change again",
                    type_="stale-version",
                    current_version=obj.version,
                )
            changes = payload.model_dump(exclude_unset=True)
            if not changes:
                raise ProblemError(422, "Invalid request", "the update changes nothing", type_="validation")
            check_references(db, res.model, changes)
            for key, value in changes.items():
                setattr(obj, key, value)
            if res.after_write:
                res.after_write(db, principal, obj, body)
            db.flush()
            audit(
                db,
                principal,
                principal.audit(
                    "update",
                    res.audit_name,
                    obj.id,
                    _patient_of(obj),
                    {"changes": payload.model_dump(mode="json", exclude_unset=True)},
                ),
            )
            out = read_schema.model_validate(obj).model_dump(mode="json")
            db.commit()
            response.headers["ETag"] = etag(obj.version)
            return out

    return router


def build_routers(resources: Sequence[Resource]) -> list[APIRouter]:
    return [build_router(r) for r in resources]

