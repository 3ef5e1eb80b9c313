"""Use cases for biologic products: register a preparation, record custody events, divide into
aliquots, verify at the bedside (and administer), recall by product or lot, label.

The rules live in `regenguide.products` (pure); this module loads and stores rows around them.
Every function works inside the caller's transaction and raises `ProductError` (with an HTTP-like
status and a machine code) for anything the caller must refuse.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from regenguide.domain.plan import Modality
from regenguide.products.bedside import BedsideVerification, ConsentStatus, refuse_unidentified, verify_bedside
from regenguide.products.custody import (
    CustodyEvent as CustodyEventModel,
)
from regenguide.products.custody import (
    EventType,
    IllegalTransition,
    ProductSnapshot,
    ProductStatus,
    apply_event,
    compute_expiry,
    release_blockers,
    thaw_time,
)
from regenguide.products.din import IdentifierError, IdScheme, ProductIdentifier, divide, new_local_id, parse_identifier
from regenguide.products.labels import label_from_snapshot, render_label_pdf, render_label_png
from regenguide.products.metrics import cell_therapy_metrics, prp_metrics, svf_metrics
from regenguide.products.preparation import (
    CalPreparation,
    CellTherapyPreparation,
    PrpPreparation,
    SvfPreparation,
    parse_preparation,
)
from regenguide.products.recall import CSV_COLUMNS, spreadsheet_safe
from regenguide.products.rules import HoldTime, load_facility_hold_times, load_hold_times
from regenguide.store import models as m


class ProductError(ValueError):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


#: How far ahead of the server's clock a recorded time may be: the clocks of the lab's and the ward's devices
#: drift a little (an engineering tolerance, not a clinical rule). Beyond it, a custody time is a typing error,
#: and accepting it would also bar every later real event, which may not precede it.
CLOCK_SKEW = timedelta(minutes=5)


def _not_future(at: datetime, field: str) -> None:
    now = datetime.now(UTC)
    if at > now + CLOCK_SKEW:
        raise ProductError(422, field, f"{field}: {at.isoformat()} is in the future (the server's time is "
                                       f"{now.isoformat(timespec='seconds')})")


def identifier_of(product: m.BiologicProduct) -> ProductIdentifier:
    if product.identifier_data:
        return ProductIdentifier.model_validate(product.identifier_data)
    ident, _ = parse_identifier(product.identifier.partition("/")[0])
    return ident


def _next_local_id(db: Session, site_code: str, year: int) -> ProductIdentifier:
    prefix = f"{site_code}-{year:02d}-"
    last = db.execute(
        select(m.BiologicProduct.identifier)
        .where(m.BiologicProduct.identifier.like(prefix + "%"))
        .order_by(m.BiologicProduct.identifier.desc())
        .limit(1)
    ).scalar_one_or_none()
    sequence = int(last[len(prefix) : len(prefix) + 6]) + 1 if last else 1
    return new_local_id(site_code, year, sequence)


def _metrics(prep: Any) -> dict[str, Any]:
    if isinstance(prep, PrpPreparation):
        return prp_metrics(prep).model_dump(mode="json")
    if isinstance(prep, SvfPreparation | CalPreparation):
        return svf_metrics(prep).model_dump(mode="json")
    if isinstance(prep, CellTherapyPreparation):
        return cell_therapy_metrics(prep).model_dump(mode="json")
    return {}


def _events(db: Session, product: m.BiologicProduct) -> list[m.CustodyEvent]:
    return list(
        db.execute(
            select(m.CustodyEvent).where(m.CustodyEvent.product_id == product.id).order_by(m.CustodyEvent.id)
        ).scalars()
    )


def _event_models(product: m.BiologicProduct, rows: list[m.CustodyEvent]) -> list[CustodyEventModel]:
    key = identifier_of(product).key
    return [
        CustodyEventModel(
            product_key=key, type=EventType(e.event_type), at=_aware(e.at), user=str(e.user_id or "system"),
            place=e.location or "unknown", note=e.note or "",
        )
        for e in rows
    ]


HOLD_TIMES_ENV = "REGENGUIDE_HOLD_TIMES_FILE"


def hold_times() -> dict[Modality, HoldTime]:
    """The hold-time table in force: the bundled one (kb/data/products/hold_times.yaml), overridden by
    the facility's own file (same schema; citations may be ``facility-sop:<document>``) when there is
    one: the file named by ``REGENGUIDE_HOLD_TIMES_FILE``, else ``hold_times.yaml`` in the data folder.
    A malformed facility file fails loudly (KnowledgeBaseError) rather than silently using no limit."""
    env = os.environ.get(HOLD_TIMES_ENV)
    if env:
        return load_facility_hold_times(Path(env))
    from regenguide.config import get_settings

    path = get_settings().data_dir / "hold_times.yaml"
    return load_facility_hold_times(path) if path.is_file() else load_hold_times()


def _refresh_expiry(db: Session, product: m.BiologicProduct) -> None:
    events = _event_models(product, _events(db, product))
    thawed = None
    thaw = (product.preparation or {}).get("thaw")
    if thaw and thaw.get("thawed_at"):
        thawed = datetime.fromisoformat(thaw["thawed_at"])
    expiry = compute_expiry(product.product_type, events, thawed_at=thawed, hold_times=hold_times())
    expires_at, basis = expiry.expires_at, expiry.reason
    labelled = (product.preparation or {}).get("labelled_expiry")
    if labelled:
        # The product's own expiry (label, manufacturer, SOP) wins when it is earlier, or when the hold time
        # gives none (no sourced hold time for most cell therapies).
        label_at = _aware(datetime.fromisoformat(labelled["expires_at"]))
        if expires_at is None or label_at < _aware(expires_at):
            expires_at, basis = label_at, f"labelled expiry ({labelled['source']})"
    product.expires_at = expires_at
    product.expiry_basis = basis[:200]


def _prep_field(loc: tuple[Any, ...]) -> str:
    """Field path inside a preparation record, without the union's product-type tag."""
    parts = [str(x) for x in loc]
    if parts and parts[0] in {mod.value for mod in Modality} | {"microfat,nanofat"}:
        parts = parts[1:]
    return ".".join(["preparation", *parts])


@dataclass(frozen=True)
class NewProduct:
    patient_id: int
    product_type: Modality
    collected_at: datetime
    location: str
    plan_id: int | None = None
    volume_ml: float | None = None
    preparation: dict[str, Any] | None = None
    identifier: str | None = None
    autologous: bool = True


def register_product(db: Session, new: NewProduct, user_id: int | None) -> m.BiologicProduct:
    patient = db.get(m.Patient, new.patient_id)
    if patient is None:
        raise ProductError(422, "patient_id", f"patient_id: no patient with id {new.patient_id}")
    if new.plan_id is not None:
        plan = db.get(m.TreatmentPlan, new.plan_id)
        if plan is None or plan.patient_id != patient.id:
            raise ProductError(422, "plan_id", f"plan_id: plan {new.plan_id} is not a plan of patient {patient.id}")
    prep = None
    if new.preparation is not None:
        try:
            prep = parse_preparation(new.preparation)
        except ValidationError as exc:
            errors = [{"field": _prep_field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
            raise ProductError(
                422, "preparation", f"{errors[0]['field']}: {errors[0]['message']}", errors=errors
            ) from None
        if prep.product_type != new.product_type.value:
            raise ProductError(
                422,
                "preparation",
                f"preparation.product_type {prep.product_type!r} differs from {new.product_type.value!r}",
            )
    if new.identifier:
        try:
            ident, _ = parse_identifier(new.identifier)
        except IdentifierError as exc:
            raise ProductError(422, "identifier", f"identifier: {exc}") from None
    else:
        ident = _next_local_id(db, f"RG{patient.site_id}", new.collected_at.year % 100)
    if db.execute(select(m.BiologicProduct.id).where(m.BiologicProduct.identifier == ident.key)).first():
        raise ProductError(409, "identifier", f"identifier {ident.key} is already in use")
    collected_at = _aware(new.collected_at)
    _not_future(collected_at, "collected_at")
    product = m.BiologicProduct(
        patient_id=patient.id, plan_id=new.plan_id, identifier=ident.key, identifier_scheme=ident.scheme.value,
        identifier_data=ident.model_dump(mode="json"), product_type=new.product_type.value, status="collected",
        autologous=new.autologous, collected_at=collected_at, volume_ml=new.volume_ml,
        preparation=prep.model_dump(mode="json") if prep else {}, metrics=_metrics(prep) if prep else {},
    )
    if prep is not None:
        lots = prep.lots()
        product.lots = [m.ProductLot(kind=lot.kind, lot=lot.lot, name=lot.name) for lot in lots]
        product.kit_lot = next((lot.lot for lot in lots if lot.kind == "kit"), None)
        product.reagent_lot = next((lot.lot for lot in lots if lot.kind != "kit"), None)
    db.add(product)
    db.flush()
    db.add(m.CustodyEvent(product_id=product.id, event_type="collected", status_after="collected", at=collected_at,
                          location=new.location, user_id=user_id))
    db.flush()
    _refresh_expiry(db, product)
    return product


def record_event(
    db: Session, product: m.BiologicProduct, event: EventType, *, at: datetime | None, location: str,
    user_id: int | None, note: str | None = None,
) -> m.CustodyEvent:
    at = _aware(at or datetime.now(UTC))
    _not_future(at, "at")
    try:
        status = apply_event(ProductStatus(product.status), event)
    except IllegalTransition as exc:
        raise ProductError(
            409, "illegal_transition", str(exc), current_status=product.status, event=event.value
        ) from None
    if event in (EventType.qc_passed, EventType.released) and product.preparation:
        blockers = release_blockers(parse_preparation(product.preparation))
        if blockers:
            raise ProductError(
                409, "release_blocked",
                f"cannot record '{event.value}': " + "; ".join(blockers) + " (record 'qc_failed' or wait for the "
                "result)", blockers=blockers, current_status=product.status, event=event.value,
            )
    last = _events(db, product)
    if last and at < _aware(last[-1].at):
        raise ProductError(422, "at", f"at: {at.isoformat()} is before the last custody event ({last[-1].at})")
    if event is EventType.thawed:
        thawed = thaw_time(_event_models(product, last))
        if thawed is not None:
            raise ProductError(409, "already_thawed", f"{product.identifier} was already thawed at {thawed}: a "
                               "product is thawed once", current_status=product.status, event=event.value)
        if ((product.preparation or {}).get("thaw") or {}).get("thawed_at"):
            raise ProductError(409, "thaw_recorded", f"the preparation record of {product.identifier} already "
                               "gives its thaw time", current_status=product.status, event=event.value)
    row = m.CustodyEvent(product_id=product.id, event_type=event.value, status_after=status.value, at=at,
                         location=location, user_id=user_id, note=note)
    db.add(row)
    product.status = status.value
    db.flush()
    if event in (EventType.processed, EventType.collected, EventType.thawed):
        _refresh_expiry(db, product)
    return row


def snapshot(db: Session, product: m.BiologicProduct) -> ProductSnapshot:
    donor = db.get(m.Patient, product.patient_id)
    assert donor is not None
    lots = list(product.lots)
    return ProductSnapshot(
        # The database id: record numbers are unique only within a site (bedside passes patient_key).
        identifier=identifier_of(product), product_type=Modality(product.product_type), patient_id=str(donor.id),
        status=ProductStatus(product.status), autologous=product.autologous,
        collected_at=_aware(product.collected_at),
        expires_at=_aware(product.expires_at) if product.expires_at else None, volume_ml=product.volume_ml or None,
        kit_lots=[lot.lot for lot in lots if lot.kind == "kit"],
        reagent_lots=[lot.lot for lot in lots if lot.kind != "kit"],
    )


def divide_product(
    db: Session, product: m.BiologicProduct, count: int, *, location: str, user_id: int | None,
    volumes_ml: list[float] | None = None,
) -> list[m.BiologicProduct]:
    if product.status not in ("processed", "qc_passed", "released"):
        raise ProductError(409, "status", f"only a processed, QC-passed or released product may be divided "
                                          f"(this one is {product.status})")
    try:
        idents = divide(identifier_of(product), count)
    except IdentifierError as exc:
        raise ProductError(422, "count", f"count: {exc}") from None
    if volumes_ml is not None:
        if len(volumes_ml) != count:
            raise ProductError(422, "volumes_ml", f"volumes_ml: {len(volumes_ml)} volumes for {count} aliquots")
        if product.volume_ml is not None and sum(volumes_ml) > product.volume_ml + 1e-9:
            raise ProductError(422, "volumes_ml", f"volumes_ml: aliquots total {sum(volumes_ml)} mL, more than the "
                                                  f"parent's {product.volume_ml} mL")
    children = []
    now = datetime.now(UTC)
    for i, ident in enumerate(idents):
        child = m.BiologicProduct(
            patient_id=product.patient_id, plan_id=product.plan_id, parent_id=product.id, identifier=ident.key,
            identifier_scheme=ident.scheme.value, identifier_data=ident.model_dump(mode="json"),
            product_type=product.product_type, status=product.status, autologous=product.autologous,
            collected_at=product.collected_at, expires_at=product.expires_at, expiry_basis=product.expiry_basis,
            volume_ml=volumes_ml[i] if volumes_ml else None, preparation=product.preparation,
            metrics=product.metrics, kit_lot=product.kit_lot, reagent_lot=product.reagent_lot,
        )
        child.lots = [m.ProductLot(kind=lot.kind, lot=lot.lot, name=lot.name) for lot in product.lots]
        db.add(child)
        db.flush()
        db.add(m.CustodyEvent(product_id=child.id, event_type="processed", status_after=product.status, at=now,
                              location=location, user_id=user_id, note=f"aliquot of {product.identifier}"))
        children.append(child)
    discard_note = f"divided into {count} aliquots"
    record_event(db, product, EventType.discarded, at=now, location=location, user_id=user_id, note=discard_note)
    return children


def consent_status(db: Session, patient_id: int, plan_id: int | None) -> ConsentStatus:
    stmt = select(m.Consent).where(m.Consent.patient_id == patient_id)
    if plan_id is not None:
        stmt = stmt.where(or_(m.Consent.plan_id == plan_id, m.Consent.plan_id.is_(None)))
    latest = db.execute(stmt.order_by(m.Consent.signed_at.desc(), m.Consent.id.desc()).limit(1)).scalar_one_or_none()
    if latest is None:
        return ConsentStatus(state="missing")
    state = {"accepted": "signed", "declined": "declined", "withdrawn": "withdrawn"}[latest.decision]
    return ConsentStatus(state=state, signed_on=latest.signed_at.date(), expires_on=latest.expires_on)  # type: ignore[arg-type]


def bedside(
    db: Session, *, patient_id: int, scanned_patient: str, scanned_product: str, product_id: int | None,
    user_id: int | None, location: str, administer: bool, now: datetime | None = None,
) -> tuple[BedsideVerification, m.BedsideCheck]:
    """Verify (and, when asked and everything passes, administer). The check is recorded either way."""
    now = _aware(now or datetime.now(UTC))
    patient = db.get(m.Patient, patient_id)
    if patient is None:
        raise ProductError(422, "patient_id", f"patient_id: no patient with id {patient_id}")
    product = db.get(m.BiologicProduct, product_id) if product_id is not None else None
    if product is None and product_id is not None:
        raise ProductError(404, "product_id", f"product_id: no product with id {product_id}")
    if product is None:
        try:
            text, _, division = scanned_product.strip().partition("/")
            ident, _ = parse_identifier(text)
            key = ident.key + (f"/{division.strip()}" if division.strip() else "")
            stmt = select(m.BiologicProduct).where(m.BiologicProduct.identifier == key)
            product = db.execute(stmt).scalar_one_or_none()
        except IdentifierError:
            product = None
    if product is None:
        # Nothing to compare with: still a refusal, recorded like every other one.
        verification = refuse_unidentified(scanned_patient, scanned_product, patient.mrn, now)
    else:
        plan = db.get(m.TreatmentPlan, product.plan_id) if product.plan_id else None
        verification = verify_bedside(
            scanned_patient, scanned_product, snapshot(db, product), patient.mrn,
            plan_signed=plan is not None and plan.status == "signed",
            consent=consent_status(db, patient.id, product.plan_id), now=now, patient_key=str(patient.id),
        )
    check = m.BedsideCheck(
        patient_id=patient.id, product_id=product.id if product else None, scanned_patient=scanned_patient[:64],
        scanned_product=scanned_product[:64], accepted=verification.ok,
        reasons=[r.model_dump(mode="json") for r in verification.refusals], user_id=user_id, at=now,
    )
    db.add(check)
    db.flush()
    if verification.ok and administer and product is not None:
        record_event(db, product, EventType.administered, at=now, location=location, user_id=user_id,
                     note=f"bedside check {check.id}")
    return verification, check


def _recall_key(text: str) -> str:
    """The product key to recall from what was typed or scanned: a DIN (with or without spaces or its
    check character), the ISBT 128 barcode data, a local id, optionally ``/division``. A keyed check
    character that does not match is refused rather than silently recalling nothing."""
    head, _, division = text.strip().partition("/")
    try:
        ident, _ = parse_identifier(head)
    except IdentifierError as exc:
        if exc.code == "check_char_wrong":
            raise ProductError(422, "product", f"product: {exc}") from None
        return text.strip().upper()
    return ident.key + (f"/{division.strip()}" if division.strip() else "")


def recall_rows(
    db: Session, *, product: str | None = None, kit_lot: str | None = None, reagent_lot: str | None = None
) -> list[dict[str, Any]]:
    """Every administration of a product (a collection matches all its aliquots), kit lot or reagent lot,
    oldest first: one indexed query."""
    if not any((product, kit_lot, reagent_lot)):
        raise ProductError(422, "criteria", "give product, kit_lot or reagent_lot")
    conditions = []
    if product:
        key = _recall_key(product)
        conditions += [m.BiologicProduct.identifier == key, m.BiologicProduct.identifier.like(key + "/%")]
    # Lot numbers match exactly after trimming, ignoring case (as `regenguide.products.recall.recall`).
    if kit_lot:
        conditions.append(m.BiologicProduct.id.in_(
            select(m.ProductLot.product_id).where(m.ProductLot.kind == "kit",
                                                  func.upper(m.ProductLot.lot) == kit_lot.strip().upper())))
    if reagent_lot:
        conditions.append(m.BiologicProduct.id.in_(
            select(m.ProductLot.product_id).where(m.ProductLot.kind != "kit",
                                                  func.upper(m.ProductLot.lot) == reagent_lot.strip().upper())))
    stmt = (
        select(m.CustodyEvent.id, m.CustodyEvent.at, m.BiologicProduct.identifier, m.BiologicProduct.product_type,
               m.BiologicProduct.kit_lot, m.BiologicProduct.id.label("product_id"), m.Patient.id.label("patient_id"),
               m.Patient.mrn, m.User.username, m.CustodyEvent.location)
        .join(m.BiologicProduct, m.BiologicProduct.id == m.CustodyEvent.product_id)
        .join(m.Patient, m.Patient.id == m.BiologicProduct.patient_id)
        .outerjoin(m.User, m.User.id == m.CustodyEvent.user_id)
        .where(m.CustodyEvent.event_type == "administered", or_(*conditions))
        .order_by(m.CustodyEvent.at, m.CustodyEvent.id)
    )
    rows = db.execute(stmt).all()
    lots: dict[int, list[m.ProductLot]] = {}
    if rows:
        wanted = {r.product_id for r in rows}
        for lot in db.execute(select(m.ProductLot).where(m.ProductLot.product_id.in_(wanted))).scalars():
            lots.setdefault(lot.product_id, []).append(lot)
    return [
        {
            "administration_id": f"custody-{r.id}", "administered_at": _aware(r.at).isoformat(),
            "patient_id": r.patient_id, "patient_record_number": r.mrn, "product_id": r.product_id,
            "product_key": r.identifier, "product_type": r.product_type, "performer": r.username or "",
            "location": r.location or "",
            "kit_lots": [x.lot for x in lots.get(r.product_id, []) if x.kind == "kit"],
            "reagent_lots": [x.lot for x in lots.get(r.product_id, []) if x.kind != "kit"],
        }
        for r in rows
    ]


#: Columns of the recall CSV: the recall module's columns without the per-injection ones the custody log
#: does not hold, plus the record number and the place of administration.
RECALL_CSV_COLUMNS = [c for c in CSV_COLUMNS if c not in ("region", "volume_ml")] + [
    "patient_record_number", "location",
]
def recall_csv(rows: list[dict[str, Any]]) -> str:
    """The recall rows (`recall_rows`) as CSV (RFC 4180, header row, lots joined by ``;``), every cell
    guarded against spreadsheet formula injection: locations, user names and lot numbers are free text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(RECALL_CSV_COLUMNS)
    for r in rows:
        row = {**r, "kit_lots": ";".join(r["kit_lots"]), "reagent_lots": ";".join(r["reagent_lots"])}
        writer.writerow([spreadsheet_safe(row.get(c)) for c in RECALL_CSV_COLUMNS])
    return buf.getvalue()


def product_fhir_bundle(db: Session, product: m.BiologicProduct) -> dict[str, Any]:
    """FHIR R4 (R4B models) collection Bundle: the product as BiologicallyDerivedProduct (with its
    preparation as processing steps) and each of its administrations as a Procedure whose subject is the
    product's source patient (`administration_to_fhir` refuses a mismatch)."""
    from fhir.resources.R4B.bundle import Bundle

    from regenguide.products.fhir import BASE_URL, administration_to_fhir, product_to_fhir
    from regenguide.products.recall import AdministrationRecord

    snap = snapshot(db, product)
    prep = parse_preparation(product.preparation) if product.preparation else None
    resources: list[Any] = [product_to_fhir(snap, prep)]
    for row in _events(db, product):
        if row.event_type != EventType.administered.value:
            continue
        user = db.get(m.User, row.user_id) if row.user_id is not None else None
        record = AdministrationRecord(
            administration_id=f"custody-{row.id}", product_key=snap.key, product_type=snap.product_type,
            patient_id=snap.patient_id, administered_at=_aware(row.at),
            performer=(user.username if user else None) or "unrecorded",
            # The custody location is a room, not a body site: the sites are on the procedure's injections
            # (the patient's record bundle, interop.fhir, carries them).
            region=None, volume_ml=product.volume_ml or None,
        )
        resources.append(administration_to_fhir(record, snap))
    bundle = Bundle.model_validate({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": f"{BASE_URL}/{r.get_resource_type()}/{r.id}", "resource": r.model_dump(mode="json")}
            for r in resources
        ],
    })
    return bundle.model_dump(mode="json", exclude_none=True)


def label(db: Session, product: m.BiologicProduct, fmt: str) -> bytes:
    patient = db.get(m.Patient, product.patient_id)
    assert patient is not None
    site = db.get(m.Site, patient.site_id)
    data = label_from_snapshot(
        snapshot(db, product), f"{patient.family_name.upper()}, {patient.given_name}", patient.birth_date,
        patient.mrn, facility=site.name if site else "",
    )
    return render_label_pdf(data) if fmt == "pdf" else render_label_png(data)


__all__ = [
    "IdScheme", "NewProduct", "ProductError", "bedside", "divide_product", "label", "product_fhir_bundle",
    "recall_csv", "recall_rows", "record_event", "register_product", "snapshot",
]
