"""Recall: every administration of a given product, kit lot or reagent lot, as records and CSV.

A pure function over administration records; the store runs the same filter as a database query.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from regenguide.domain.plan import Modality
from regenguide.products.preparation import LotRef


class AdministrationRecord(BaseModel):
    """One recorded administration (after a passed bedside verification)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    administration_id: str = Field(min_length=1)
    product_key: str = Field(min_length=1, description="ProductIdentifier.key (DIN or local id [/division])")
    product_type: Modality
    patient_id: str = Field(min_length=1)
    administered_at: AwareDatetime
    performer: str = Field(min_length=1)
    region: str | None = None
    volume_ml: float | None = Field(default=None, ge=0)
    lots: list[LotRef] = Field(default_factory=list)

    @property
    def product_id(self) -> str:
        return self.product_key.partition("/")[0]


CSV_COLUMNS = [
    "administration_id",
    "administered_at",
    "patient_id",
    "product_key",
    "product_type",
    "performer",
    "region",
    "volume_ml",
    "kit_lots",
    "reagent_lots",
]


def recall(
    administrations: Iterable[AdministrationRecord],
    *,
    product_id: str | None = None,
    kit_lot: str | None = None,
    reagent_lot: str | None = None,
) -> list[AdministrationRecord]:
    """Administrations matching ANY of the given criteria, oldest first.

    `product_id` matches a whole collection (a DIN matches all its aliquots) or one aliquot key
    (``DIN/B0``); `kit_lot` matches lots of kind ``kit``; `reagent_lot` matches every other lot kind
    (anticoagulant, enzyme, activator, reagent, manufacturing, filter). Lot matching is exact after
    trimming and ignores case; at least one criterion is required.
    """
    if not any((product_id, kit_lot, reagent_lot)):
        raise ValueError("give a product id, a kit lot or a reagent lot to recall")
    pid = product_id.strip().upper() if product_id else None
    kit = kit_lot.strip().casefold() if kit_lot else None
    reagent = reagent_lot.strip().casefold() if reagent_lot else None

    def hit(rec: AdministrationRecord) -> bool:
        if pid and (rec.product_key.upper() == pid or rec.product_id.upper() == pid):
            return True
        for lot in rec.lots:
            value = lot.lot.casefold()
            if kit and lot.kind == "kit" and value == kit:
                return True
            if reagent and lot.kind != "kit" and value == reagent:
                return True
        return False

    return sorted((r for r in administrations if hit(r)), key=lambda r: (r.administered_at, r.administration_id))


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection"; OWASP ASVS 5.0
#: requirement 1.2.10 adds NUL). Such a cell is written with a leading single quote, so it shows as text.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")


def spreadsheet_safe(value: object) -> str:
    """The cell text, prefixed with ``'`` when it starts with a formula trigger (CSV injection guard)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def recall_csv(records: Iterable[AdministrationRecord]) -> str:
    """CSV (RFC 4180, header row) of administrations, one row each, every cell guarded against formula
    injection (`spreadsheet_safe`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow(
            [
                spreadsheet_safe(cell)
                for cell in (
                    r.administration_id,
                    r.administered_at.isoformat(),
                    r.patient_id,
                    r.product_key,
                    r.product_type.value,
                    r.performer,
                    r.region or "",
                    "" if r.volume_ml is None else f"{r.volume_ml:g}",
                    ";".join(f"{x.name}:{x.lot}" for x in r.lots if x.kind == "kit"),
                    ";".join(f"{x.kind}:{x.name}:{x.lot}" for x in r.lots if x.kind != "kit"),
                )
            ]
        )
    return buf.getvalue()
