"""Biologic products in the database: register, custody events, labels, bedside verification, recall.
(`regenguide product …` works on files without a database; these commands use the store.)"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from regenguide.cli.core import _engine, fail, out

app = typer.Typer(help="Products in the database: register, custody, label, bedside check, recall.",
                  no_args_is_help=True)


def _run(fn: Any) -> Any:
    from regenguide.services.products import ProductError
    from regenguide.store.db import transaction

    try:
        with transaction(_engine()) as db:
            return fn(db)
    except ProductError as exc:
        raise fail(str(exc)) from None


def _audit(db: Any, action: str, resource: str, resource_id: Any, patient_id: Any, payload: Any) -> None:
    from regenguide.store.audit import AuditRecord, append

    append(db, AuditRecord(username="cli", action=action, resource=resource, resource_id=resource_id,
                           patient_id=patient_id, payload=payload))


def parse_when(text: str | None, name: str) -> datetime | None:
    """An ISO date-time with its UTC offset: a time without one would silently be taken as UTC and shift
    the hold-time clock by the local offset."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{name}: {text!r} is not an ISO date-time (e.g. 2026-11-22T08:00+01:00)") from None
    if value.tzinfo is None:
        raise fail(f"{name}: {text!r} has no UTC offset; give one, e.g. {text}+00:00")
    return value


@app.command("register")
def register_cmd(
    patient_id: Annotated[int, typer.Option(help="the patient the product is collected from")],
    product_type: Annotated[str, typer.Option(help="prp | microfat | nanofat | svf_enzymatic | …")],
    location: Annotated[str, typer.Option(help="where it was collected")],
    preparation: Annotated[Path | None, typer.Option(help="preparation record (JSON)")] = None,
    plan_id: Annotated[int | None, typer.Option()] = None,
    volume_ml: Annotated[float | None, typer.Option()] = None,
    identifier: Annotated[str | None, typer.Option(help="DIN or local id; allocated when absent")] = None,
    collected_at: Annotated[str | None, typer.Option(help="ISO time; now when absent")] = None,
) -> None:
    """Register a collected product (with its preparation record and computed metrics)."""
    from regenguide.domain.plan import Modality
    from regenguide.services.products import NewProduct, register_product

    try:
        modality = Modality(product_type)
        when = parse_when(collected_at, "--collected-at") or datetime.now().astimezone()
        prep = json.loads(preparation.read_text(encoding="utf-8")) if preparation else None
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    new = NewProduct(patient_id=patient_id, product_type=modality, collected_at=when, location=location,
                     plan_id=plan_id, volume_ml=volume_ml, preparation=prep, identifier=identifier)

    def work(db: Any) -> Any:
        product = register_product(db, new, None)
        _audit(db, "create", "products", product.id, product.patient_id, {"identifier": product.identifier})
        return product.id, product.identifier, product.metrics

    pid, ident, metrics = _run(work)
    out.print(f"product {pid} registered as {ident}")
    if metrics:
        out.print_json(json.dumps(metrics, default=str))


@app.command("event")
def event_cmd(
    product_id: Annotated[int, typer.Argument()],
    event: Annotated[str, typer.Argument(help="received | processed | qc_passed | qc_failed | released | issued | "
                                              "discarded | returned | thawed")],
    location: Annotated[str, typer.Option()],
    note: Annotated[str | None, typer.Option()] = None,
    at: Annotated[str | None, typer.Option(help="ISO time with offset; now when absent")] = None,
) -> None:
    """Record a custody event; illegal transitions are refused with the reason."""
    from regenguide.products.custody import EventType
    from regenguide.services.products import record_event
    from regenguide.store.models import BiologicProduct

    try:
        kind = EventType(event)
    except ValueError:
        raise fail(f"unknown event {event!r}") from None
    if kind is EventType.administered:
        raise fail("administration is recorded only through the bedside check (regenguide lab bedside --administer)")
    when = parse_when(at, "--at")

    def work(db: Any) -> str:
        product = db.get(BiologicProduct, product_id)
        if product is None:
            raise fail(f"no product with id {product_id}")
        record_event(db, product, kind, at=when, location=location, user_id=None, note=note)
        _audit(db, "update", "products", product.id, product.patient_id, {"event": event})
        return str(product.status)

    out.print(f"product {product_id} is now {_run(work)}")


@app.command("divide")
def divide_cmd(
    product_id: Annotated[int, typer.Argument()],
    count: Annotated[int, typer.Option(help="number of aliquots (1-26)")],
    location: Annotated[str, typer.Option()],
    volume_ml: Annotated[list[float] | None, typer.Option(help="volume of each aliquot (repeat per aliquot)")] = None,
) -> None:
    """Divide a product into aliquots linked to their parent (the parent is closed as divided)."""
    from regenguide.services.products import divide_product
    from regenguide.store.models import BiologicProduct

    def work(db: Any) -> list[tuple[int, str]]:
        product = db.get(BiologicProduct, product_id)
        if product is None:
            raise fail(f"no product with id {product_id}")
        children = divide_product(db, product, count, location=location, user_id=None, volumes_ml=volume_ml or None)
        _audit(db, "create", "products", product.id, product.patient_id, {"divide": count})
        return [(c.id, c.identifier) for c in children]

    for child_id, ident in _run(work):
        out.print(f"product {child_id} is aliquot {ident} of product {product_id}")


@app.command("label")
def label_cmd(
    product_id: Annotated[int, typer.Argument()],
    pdf: Annotated[Path | None, typer.Option()] = None,
    png: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Print-ready label of a stored product (PDF and/or PNG)."""
    from regenguide.services.products import label
    from regenguide.store.models import BiologicProduct

    if pdf is None and png is None:
        raise fail("give --pdf FILE and/or --png FILE")

    def work(db: Any) -> None:
        product = db.get(BiologicProduct, product_id)
        if product is None:
            raise fail(f"no product with id {product_id}")
        if pdf is not None:
            pdf.write_bytes(label(db, product, "pdf"))
        if png is not None:
            png.write_bytes(label(db, product, "png"))
        _audit(db, "export", "products", product.id, product.patient_id, {"label": True})

    _run(work)
    out.print("label written")


@app.command("bedside")
def bedside_cmd(
    patient_id: Annotated[int, typer.Option(help="the patient being treated")],
    scanned_patient: Annotated[str, typer.Option(help="wristband scan (record number)")],
    scanned_product: Annotated[str, typer.Option(help="product label scan or keyed identifier")],
    administer: Annotated[bool, typer.Option(help="record the administration when every check passes")] = False,
    location: Annotated[str, typer.Option()] = "bedside",
) -> None:
    """Bedside verification; exit 1 with every refusal reason when refused (the refusal is recorded)."""
    from regenguide.services.products import bedside

    def work(db: Any) -> Any:
        verification, check = bedside(db, patient_id=patient_id, scanned_patient=scanned_patient,
                                      scanned_product=scanned_product, product_id=None, user_id=None,
                                      location=location, administer=administer)
        _audit(db, "verify", "bedside_checks", check.id, patient_id, verification.model_dump(mode="json"))
        return verification

    verification = _run(work)
    if verification.ok:
        out.print("verified" + (" and administered" if administer else ""))
        return
    for r in verification.refusals:
        out.print(f"REFUSED {r.code.value}: {r.message}")
    raise typer.Exit(code=1)


@app.command("recall")
def recall_cmd(
    product: Annotated[str | None, typer.Option(help="DIN or local id (all aliquots)")] = None,
    kit_lot: Annotated[str | None, typer.Option()] = None,
    reagent_lot: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every administration of a product, kit lot or reagent lot (CSV by default)."""
    from regenguide.services.products import recall_rows

    def work(db: Any) -> Any:
        rows = recall_rows(db, product=product, kit_lot=kit_lot, reagent_lot=reagent_lot)
        _audit(db, "export", "recall", None, None, {"product": product, "kit_lot": kit_lot,
                                                    "reagent_lot": reagent_lot, "rows": len(rows)})
        return rows

    rows = _run(work)
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    buf = io.StringIO()
    columns = ["administration_id", "administered_at", "patient_id", "patient_record_number", "product_key",
               "product_type", "performer", "location", "kit_lots", "reagent_lots"]
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "kit_lots": ";".join(r["kit_lots"]), "reagent_lots": ";".join(r["reagent_lots"])})
    sys.stdout.write(buf.getvalue())
