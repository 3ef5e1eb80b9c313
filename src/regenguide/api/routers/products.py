"""Biologic products: registration with preparation records, custody events, aliquots, labels,
bedside verification and recall."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regenguide.api.crud import check_references
from regenguide.api.deps import Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.domain.plan import Modality
from regenguide.products.custody import EventType
from regenguide.security import Permission as P
from regenguide.services import products as svc
from regenguide.store import models as m

router = APIRouter(tags=["products"])


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: int
    product_type: Modality
    collected_at: AwareDatetime = Field(description="with its UTC offset: it starts hold-time clocks")
    location: str = Field(min_length=1, max_length=200)
    plan_id: int | None = None
    volume_ml: float | None = Field(default=None, gt=0, le=5000)
    identifier: str | None = Field(default=None, description="DIN (+ check char) or local id; allocated if absent")
    autologous: bool = True
    preparation: dict[str, Any] | None = Field(
        default=None, description="preparation record; its schema: GET /api/v1/products/preparation-schema"
    )


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    plan_id: int | None
    parent_id: int | None
    identifier: str
    identifier_scheme: str
    product_type: str
    status: str
    autologous: bool
    collected_at: datetime
    expires_at: datetime | None
    expiry_basis: str | None
    volume_ml: float | None
    kit_lot: str | None
    reagent_lot: str | None
    preparation: dict[str, Any]
    metrics: dict[str, Any]
    version: int


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: EventType
    location: str = Field(min_length=1, max_length=200)
    at: AwareDatetime | None = Field(default=None, description="with its UTC offset; now when absent")
    note: str | None = Field(default=None, max_length=2000)


class EventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_type: str
    status_after: str
    at: datetime
    location: str | None
    user_id: int | None
    note: str | None


class DivideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=26)
    location: str = Field(min_length=1, max_length=200)
    volumes_ml: list[float] | None = None


class BedsideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: int = Field(description="the patient being treated (selected in the chart)")
    scanned_patient: str = Field(max_length=64, description="what was scanned from the wristband (record number)")
    scanned_product: str = Field(max_length=64, description="what was scanned or keyed from the product label")
    product_id: int | None = Field(default=None, description="the product selected for this step, if any")
    location: str = Field(default="bedside", min_length=1, max_length=200)
    administer: bool = Field(default=False, description="record the administration when every check passes")


def _problem(exc: svc.ProductError) -> ProblemError:
    title = {404: "Not found", 409: "Conflict", 422: "Invalid request"}.get(exc.status, "Error")
    return ProblemError(exc.status, title, str(exc), type_=exc.code.replace("_", "-"), **exc.extra)


def _load(db: Session, product_id: int) -> m.BiologicProduct:
    product = db.get(m.BiologicProduct, product_id)
    if product is None:
        raise ProblemError(404, "Not found", f"product {product_id} does not exist", type_="not-found")
    return product


Lab = Annotated[Principal, Depends(require(P.product_write))]
Reader = Annotated[Principal, Depends(require(P.product_read))]
Bedside = Annotated[Principal, Depends(require(P.product_administer))]


@router.get("/products/preparation-schema", summary="JSON schema of preparation records (by product type)")
def preparation_schema() -> dict[str, object]:
    from regenguide.products.preparation import preparation_json_schema

    return preparation_json_schema()


@router.post("/products", status_code=201, response_model=ProductRead, summary="Register a collected product")
def create_product(body: ProductCreate, db: SessionDep, user: Lab, response: Response) -> Any:
    check_references(db, m.BiologicProduct, {"patient_id": body.patient_id, "plan_id": body.plan_id})
    try:
        product = svc.register_product(db, svc.NewProduct(**body.model_dump()), user.id)
    except svc.ProductError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("create", "products", product.id, product.patient_id, body.model_dump(mode="json")))
    out = ProductRead.model_validate(product)
    db.commit()
    response.headers["Location"] = f"/api/v1/products/{product.id}"
    return out


@router.get("/products/{product_id}", response_model=ProductRead)
def read_product(product_id: int, db: SessionDep, user: Reader) -> Any:
    product = _load(db, product_id)
    audit(db, user, user.audit("read", "products", product.id, product.patient_id))
    out = ProductRead.model_validate(product)
    db.commit()
    return out


@router.get("/products", summary="List products (filters: patient_id, status, product_type)")
def list_products(
    db: SessionDep,
    user: Reader,
    patient_id: int | None = None,
    status: str | None = None,
    product_type: Modality | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    stmt = select(m.BiologicProduct)
    if patient_id is not None:
        stmt = stmt.where(m.BiologicProduct.patient_id == patient_id)
    if status is not None:
        stmt = stmt.where(m.BiologicProduct.status == status)
    if product_type is not None:
        stmt = stmt.where(m.BiologicProduct.product_type == product_type.value)
    total = db.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.execute(stmt.order_by(m.BiologicProduct.id).limit(limit).offset(offset)).scalars().all()
    audit(db, user, *[user.audit("list", "products", p.id, p.patient_id) for p in rows])
    items = [ProductRead.model_validate(p).model_dump(mode="json") for p in rows]
    db.commit()
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.post("/products/{product_id}/events", status_code=201, response_model=EventRead,
             summary="Record a custody event (the state machine refuses illegal transitions)")
def add_event(product_id: int, body: EventCreate, db: SessionDep, user: Lab) -> Any:
    product = _load(db, product_id)
    if body.type is EventType.administered:
        raise ProblemError(409, "Conflict", "administration is recorded only through bedside verification "
                           "(POST /api/v1/bedside/verify with administer=true)", type_="bedside-required")
    try:
        row = svc.record_event(db, product, body.type, at=body.at, location=body.location, user_id=user.id,
                               note=body.note)
    except svc.ProductError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("update", "products", product.id, product.patient_id, body.model_dump(mode="json")))
    out = EventRead.model_validate(row)
    db.commit()
    return out


@router.get("/products/{product_id}/events", response_model=list[EventRead])
def list_events(product_id: int, db: SessionDep, user: Reader) -> Any:
    product = _load(db, product_id)
    rows = db.execute(select(m.CustodyEvent).where(m.CustodyEvent.product_id == product.id)
                      .order_by(m.CustodyEvent.id)).scalars().all()
    audit(db, user, user.audit("read", "custody_events", product.id, product.patient_id))
    out = [EventRead.model_validate(r) for r in rows]
    db.commit()
    return out


@router.post("/products/{product_id}/divide", status_code=201, response_model=list[ProductRead],
             summary="Divide into aliquots linked to their parent")
def divide_product(product_id: int, body: DivideRequest, db: SessionDep, user: Lab) -> Any:
    product = _load(db, product_id)
    try:
        children = svc.divide_product(db, product, body.count, location=body.location, user_id=user.id,
                                      volumes_ml=body.volumes_ml)
    except svc.ProductError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("create", "products", product.id, product.patient_id, body.model_dump()))
    out = [ProductRead.model_validate(c) for c in children]
    db.commit()
    return out


@router.get("/products/{product_id}/label", summary="Print-ready label (PDF or PNG) with a Code 128 barcode",
            responses={200: {"content": {"application/pdf": {}, "image/png": {}}}})
def product_label(
    product_id: int, db: SessionDep, user: Lab, format: Literal["pdf", "png"] = "pdf"  # noqa: A002
) -> Response:
    product = _load(db, product_id)
    content = svc.label(db, product, format)
    audit(db, user, user.audit("export", "products", product.id, product.patient_id, {"label": format}))
    db.commit()
    return Response(content, media_type="application/pdf" if format == "pdf" else "image/png")


@router.get("/products/{product_id}/fhir", summary="FHIR R4 Bundle: BiologicallyDerivedProduct (identifier = "
            "the DIN or local id) and a Procedure per administration")
def product_fhir(product_id: int, db: SessionDep, user: Reader) -> Response:
    import json

    product = _load(db, product_id)
    bundle = svc.product_fhir_bundle(db, product)
    audit(db, user, user.audit("export", "products", product.id, product.patient_id, {"fhir": True}))
    db.commit()
    return Response(json.dumps(bundle), media_type="application/fhir+json")


@router.post("/bedside/verify", summary="Bedside verification (and administration): patient ↔ product")
def bedside_verify(body: BedsideRequest, db: SessionDep, user: Bedside) -> dict[str, Any]:
    try:
        verification, check = svc.bedside(
            db, patient_id=body.patient_id, scanned_patient=body.scanned_patient,
            scanned_product=body.scanned_product, product_id=body.product_id, user_id=user.id,
            location=body.location, administer=body.administer,
        )
    except svc.ProductError as exc:
        raise _problem(exc) from None
    result = verification.model_dump(mode="json")
    result.update({"check_id": check.id, "administered": verification.ok and body.administer})
    audit(db, user, user.audit("verify", "bedside_checks", check.id, body.patient_id, result))
    db.commit()  # the refusal is recorded before it is reported
    if not verification.ok:
        raise ProblemError(
            409, "Bedside verification refused",
            "; ".join(f"{r.code.value}: {r.message}" for r in verification.refusals),
            type_="bedside-refused", refusals=result["refusals"], check_id=check.id,
        )
    return result


@router.get("/recall", summary="Every administration of a product, kit lot or reagent lot (JSON or CSV)")
def recall(
    db: SessionDep,
    user: Reader,
    product: str | None = None,
    kit_lot: str | None = None,
    reagent_lot: str | None = None,
    format: Literal["json", "csv"] = "json",  # noqa: A002
) -> Any:
    try:
        rows = svc.recall_rows(db, product=product, kit_lot=kit_lot, reagent_lot=reagent_lot)
    except svc.ProductError as exc:
        raise _problem(exc) from None
    audit(db, user, *[user.audit("export", "recall", r["product_id"], r["patient_id"], r) for r in rows])
    db.commit()
    if format == "csv":
        return Response(svc.recall_csv(rows), media_type="text/csv")
    return {"items": rows, "total": len(rows)}
