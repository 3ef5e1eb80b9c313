"""Bedside verification: the two-scan patient ↔ product check no autologous product may bypass.

`verify_bedside` evaluates every condition and returns all refusal reasons at once (code + message),
so the refusal can be recorded and shown in full. It never short-circuits on the first problem, except
that a product identifier that cannot be parsed cannot be compared with the product record.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from regenguide.domain.plan import Consent
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import IdentifierError, parse_identifier


class RefusalCode(StrEnum):
    identifier_malformed = "identifier_malformed"
    identifier_check_char_wrong = "identifier_check_char_wrong"
    unknown_product = "unknown_product"  # no registered product has the scanned identifier
    wrong_product = "wrong_product"  # the scanned product is not the product selected for this step
    division_unconfirmed = "division_unconfirmed"  # an aliquot was scanned by its DIN only
    patient_mismatch = "patient_mismatch"  # the scanned patient is not the patient being treated
    wrong_patient = "wrong_patient"  # the product was collected from another patient
    not_released = "not_released"
    quarantined = "quarantined"  # QC failed
    discarded = "discarded"
    already_administered = "already_administered"
    expired = "expired"
    expiry_unknown = "expiry_unknown"
    plan_not_signed = "plan_not_signed"
    consent_missing = "consent_missing"
    consent_expired = "consent_expired"
    consent_declined = "consent_declined"
    consent_withdrawn = "consent_withdrawn"


class Refusal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: RefusalCode
    message: str


class ConsentStatus(BaseModel):
    """Consent for this treatment as the bedside sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["signed", "declined", "withdrawn", "missing"]
    signed_on: date | None = None
    expires_on: date | None = Field(default=None, description="last day the consent is valid")

    @classmethod
    def from_plan(cls, consent: Consent | None) -> ConsentStatus:
        if consent is None:
            return cls(state="missing")
        return cls(
            state=consent.status,
            signed_on=date.fromisoformat(consent.signed_on) if consent.signed_on else None,
            expires_on=date.fromisoformat(consent.expires_on) if consent.expires_on else None,
        )


class BedsideVerification(BaseModel):
    """Outcome of a bedside check; persist it whether ok or refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    refusals: list[Refusal]
    checked_at: AwareDatetime
    scanned_patient_id: str
    scanned_product_id: str
    product_key: str
    patient_id: str
    check_char_verified: bool

    @property
    def codes(self) -> list[RefusalCode]:
        return [r.code for r in self.refusals]


_RELEASED = {ProductStatus.released, ProductStatus.issued}


def _identifier_refusal(exc: IdentifierError) -> RefusalCode:
    return (RefusalCode.identifier_check_char_wrong if exc.code == "check_char_wrong"
            else RefusalCode.identifier_malformed)


def refuse_unidentified(
    scanned_patient_id: str, scanned_product_id: str, patient_id: str, now: datetime
) -> BedsideVerification:
    """The refusal when the scanned product cannot be matched to any product record: the identifier is
    malformed, its check character is wrong, or no product has it. Returned (not raised) so the caller
    records it like every other refusal."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    text = scanned_product_id.strip().partition("/")[0]
    try:
        ident, _ = parse_identifier(text)
    except IdentifierError as exc:
        refusal = Refusal(code=_identifier_refusal(exc), message=str(exc))
    else:
        refusal = Refusal(
            code=RefusalCode.unknown_product,
            message=f"no registered product has the identifier {scanned_product_id.strip()!r} "
            f"({ident.eye_readable()}): DO NOT ADMINISTER",
        )
    return BedsideVerification(
        ok=False,
        refusals=[refusal],
        checked_at=now,
        scanned_patient_id=scanned_patient_id,
        scanned_product_id=scanned_product_id,
        product_key="",
        patient_id=patient_id,
        check_char_verified=False,
    )


def verify_bedside(
    scanned_patient_id: str,
    scanned_product_id: str,
    product: ProductSnapshot,
    patient_id: str,
    plan_signed: bool,
    consent: ConsentStatus,
    now: datetime,
    patient_key: str | None = None,
) -> BedsideVerification:
    """Check that the scanned product is this product, belongs to the scanned patient who is the patient
    being treated, is released, not expired, not administered or quarantined, that the plan is signed
    and consent valid on `now`'s date. `now` must be timezone-aware.

    `patient_id` is what the wristband carries (the record number) and is compared with the scan.
    `patient_key` is the globally unique key of the patient being treated that `product.patient_id`
    holds (defaults to `patient_id`); pass it when record numbers are unique only within a site, so two
    patients of different sites with the same record number are never taken for one."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    refusals: list[Refusal] = []

    def refuse(code: RefusalCode, message: str) -> None:
        refusals.append(Refusal(code=code, message=message))

    # 1. identity of the product
    verified = False
    text, _, division = scanned_product_id.strip().partition("/")
    try:
        scanned, verified = parse_identifier(text)
    except IdentifierError as exc:
        refuse(_identifier_refusal(exc), str(exc))
    else:
        same = scanned.scheme is product.identifier.scheme and scanned.value == product.identifier.value
        if division and division != product.identifier.division:
            same = False
        if not same:
            refuse(
                RefusalCode.wrong_product,
                f"scanned product {scanned.eye_readable()}{'/' + division if division else ''} is not the "
                f"selected product {product.identifier.eye_readable()} ({product.key})",
            )
        elif product.identifier.division != "00" and not division:
            # Sibling aliquots share the DIN: without the division the scan cannot tell them apart.
            refuse(
                RefusalCode.division_unconfirmed,
                f"{product.key} is an aliquot: scan its aliquot barcode or enter the DIN with /"
                f"{product.identifier.division}",
            )

    # 2. identity of the patient
    scanned_patient = scanned_patient_id.strip()
    if not scanned_patient or scanned_patient != patient_id.strip():
        refuse(
            RefusalCode.patient_mismatch,
            f"scanned patient {scanned_patient!r} is not the patient being treated ({patient_id!r})",
        )
    if product.patient_id != (patient_key if patient_key is not None else patient_id.strip()):
        refuse(
            RefusalCode.wrong_patient,
            f"product {product.key} was collected from another patient than {patient_id!r}: DO NOT ADMINISTER",
        )

    # 3. status
    status = product.status
    if status is ProductStatus.administered:
        refuse(RefusalCode.already_administered, f"product {product.key} has already been administered")
    elif status is ProductStatus.qc_failed:
        refuse(RefusalCode.quarantined, f"product {product.key} failed QC and is quarantined")
    elif status is ProductStatus.discarded:
        refuse(RefusalCode.discarded, f"product {product.key} was discarded")
    elif status not in _RELEASED:
        refuse(RefusalCode.not_released, f"product {product.key} is '{status.value}', not released")

    # 4. expiry
    if product.expires_at is None:
        refuse(
            RefusalCode.expiry_unknown,
            f"no expiry is recorded for {product.key}: set the facility hold time for {product.product_type.value}",
        )
    elif now >= product.expires_at:
        refuse(RefusalCode.expired, f"product {product.key} expired at {product.expires_at.isoformat()}")

    # 5. plan and consent
    if not plan_signed:
        refuse(RefusalCode.plan_not_signed, "the treatment plan is not signed")
    if consent.state == "missing":
        refuse(RefusalCode.consent_missing, "no signed consent for this treatment")
    elif consent.state == "declined":
        refuse(RefusalCode.consent_declined, "the patient declined consent")
    elif consent.state == "withdrawn":
        refuse(RefusalCode.consent_withdrawn, "the patient withdrew consent")
    elif consent.expires_on is not None and now.date() > consent.expires_on:
        refuse(RefusalCode.consent_expired, f"consent expired on {consent.expires_on.isoformat()}")

    return BedsideVerification(
        ok=not refusals,
        refusals=refusals,
        checked_at=now,
        scanned_patient_id=scanned_patient_id,
        scanned_product_id=scanned_product_id,
        product_key=product.key,
        patient_id=patient_id,
        check_char_verified=verified,
    )
