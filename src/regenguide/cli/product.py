"""`regenguide product …`: preparation metrics, labels, custody transitions, bedside check, recall, FHIR.

Thin layer: parse, call `regenguide.products`, render. Bad input exits 2 with a message on stderr;
a bedside refusal exits 1 (the check ran and said no).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from regenguide.cli.lab import parse_when
from regenguide.domain.plan import Modality
from regenguide.kb.references import KnowledgeBaseError
from regenguide.products.bedside import ConsentStatus, verify_bedside
from regenguide.products.custody import EventType, IllegalTransition, ProductSnapshot, ProductStatus, apply_event
from regenguide.products.din import IdentifierError, parse_identifier
from regenguide.products.fhir import product_to_fhir
from regenguide.products.labels import LabelData, render_label_pdf, render_label_png
from regenguide.products.metrics import PrpMetrics, metrics_for
from regenguide.products.preparation import parse_preparation, preparation_json_schema
from regenguide.products.recall import AdministrationRecord, recall, recall_csv

app = typer.Typer(
    help="Biologic products: preparation metrics, labels, custody, bedside verification, recall, FHIR.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise _fail(f"{path} is not valid JSON: {exc}") from None


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}" for err in exc.errors())


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of a preparation record (all product types)."""
    typer.echo(json.dumps(preparation_json_schema(), indent=2))


@app.command("metrics")
def metrics(
    record: Path = typer.Argument(..., help="preparation record (JSON)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compute quality metrics and classifications of a preparation record."""
    try:
        prep = parse_preparation(_read_json(record))
    except ValidationError as exc:
        raise _fail(f"invalid preparation record: {_errors(exc)}") from None
    try:
        out = metrics_for(prep)
    except (ValueError, KnowledgeBaseError) as exc:
        raise _fail(str(exc)) from None
    payload: dict[str, Any] = {"product_type": prep.product_type, **out.model_dump(mode="json")}
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    if isinstance(out, PrpMetrics):
        m = out
        typer.echo(f"concentration factor  {m.concentration_factor:.2f} x")
        typer.echo(f"platelet dose         {m.platelet_dose_billion:.2f} billion")
        typer.echo(f"recovery efficiency   {m.recovery_efficiency_percent:.1f} %")
        typer.echo(f"purity                {'n/a' if m.purity_percent is None else f'{m.purity_percent:.1f} %'}")
        typer.echo(f"PAW                   {m.paw.code}  ({m.paw.evidence.value})")
        typer.echo(f"DEPA                  {m.depa.code}  ({m.depa.evidence.value})")
        typer.echo(f"Dohan Ehrenfest       {m.dohan_ehrenfest.family or 'n/a'}  ({m.dohan_ehrenfest.evidence.value})")
        for note in m.evidence_notes:
            typer.echo(f"note: {note}")
        return
    for key, value in payload.items():
        if value is not None:
            typer.echo(f"{key:22s}{value:.4g}" if isinstance(value, float) else f"{key:22s}{value}")


@app.command("label")
def label(
    identifier: str = typer.Option(..., "--id", help="DIN (A999926000123), '=' barcode data, or SITE-yy-nnnnnn"),
    product_type: Modality = typer.Option(..., "--product-type"),
    patient_name: str = typer.Option(..., "--patient-name"),
    dob: str = typer.Option(..., "--dob", help="date of birth, YYYY-MM-DD"),
    mrn: str = typer.Option(..., "--mrn", help="patient record number"),
    collected: str = typer.Option(None, "--collected", help="ISO date-time with offset"),
    expires: str = typer.Option(None, "--expires", help="ISO date-time with offset"),
    volume_ml: float = typer.Option(None, "--volume-ml"),
    product_text: str = typer.Option("", "--product-text", help="override the product line"),
    not_autologous: bool = typer.Option(False, "--not-autologous", help="omit FOR AUTOLOGOUS USE ONLY"),
    facility: str = typer.Option("", "--facility"),
    pdf: Path = typer.Option(None, "--pdf", help="write the label as PDF"),
    png: Path = typer.Option(None, "--png", help="write the label as PNG (300 dpi)"),
) -> None:
    """Render a print-ready product label (Code 128 barcode + boxed check character)."""
    if pdf is None and png is None:
        raise _fail("give --pdf and/or --png")
    if product_type is Modality.microneedling:
        raise _fail("microneedling is not a biologic product")
    try:
        ident, _ = parse_identifier(identifier)
        birth = date.fromisoformat(dob)
    except IdentifierError as exc:
        raise _fail(str(exc)) from None
    except ValueError:
        raise _fail(f"--dob {dob!r} is not a date (YYYY-MM-DD)") from None
    try:
        data = LabelData(
            identifier=ident,
            product_type=product_type,
            product_text=product_text,
            patient_name=patient_name,
            patient_dob=birth,
            patient_record_number=mrn,
            collected_at=parse_when(collected, "--collected"),
            expires_at=parse_when(expires, "--expires"),
            autologous=not not_autologous,
            volume_ml=volume_ml,
            facility=facility,
        )
    except ValidationError as exc:
        raise _fail(_errors(exc)) from None
    try:
        if pdf is not None:
            pdf.write_bytes(render_label_pdf(data))
            typer.echo(f"wrote {pdf}")
        if png is not None:
            png.write_bytes(render_label_png(data))
            typer.echo(f"wrote {png}")
    except OSError as exc:
        raise _fail(f"cannot write label: {exc.strerror or exc}") from None


@app.command("transition")
def transition(
    status: ProductStatus = typer.Option(..., "--status"),
    event: EventType = typer.Option(..., "--event"),
) -> None:
    """Show the status after an event, or why the event is not allowed."""
    try:
        typer.echo(apply_event(status, event).value)
    except IllegalTransition as exc:
        raise _fail(str(exc)) from None


def _snapshot(path: Path) -> ProductSnapshot:
    try:
        return ProductSnapshot.model_validate(_read_json(path))
    except ValidationError as exc:
        raise _fail(f"invalid product snapshot: {_errors(exc)}") from None


@app.command("verify")
def verify(
    snapshot: Path = typer.Option(..., "--snapshot", help="product snapshot (JSON)"),
    scan_patient: str = typer.Option(..., "--scan-patient", help="patient identifier as scanned/entered"),
    scan_product: str = typer.Option(..., "--scan-product", help="product identifier as scanned/entered"),
    patient: str = typer.Option(..., "--patient", help="the patient being treated"),
    plan_signed: bool = typer.Option(False, "--plan-signed/--plan-not-signed"),
    consent: str = typer.Option("missing", "--consent", help="signed | declined | withdrawn | missing"),
    consent_expires: str = typer.Option(None, "--consent-expires", help="YYYY-MM-DD"),
    now: str = typer.Option(None, "--now", help="ISO date-time with offset (default: current time)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Bedside verification of one product for one patient; exit 1 when refused."""
    snap = _snapshot(snapshot)
    try:
        status = ConsentStatus(
            state=consent,  # type: ignore[arg-type]
            expires_on=date.fromisoformat(consent_expires) if consent_expires else None,
        )
    except (ValidationError, ValueError):
        raise _fail("--consent must be signed|declined|withdrawn|missing and --consent-expires YYYY-MM-DD") from None
    when = parse_when(now, "--now") or datetime.now(UTC)
    result = verify_bedside(scan_patient, scan_product, snap, patient, plan_signed, status, when)
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json")))
    elif result.ok:
        typer.echo(f"OK: {snap.key} may be administered to {patient}")
    else:
        typer.echo(f"REFUSED: {snap.key}")
        for r in result.refusals:
            typer.echo(f"  {r.code.value}: {r.message}")
    if not result.ok:
        raise typer.Exit(code=1)


@app.command("recall")
def recall_cmd(
    administrations: Path = typer.Argument(..., help="JSON list of administration records"),
    product_id: str = typer.Option(None, "--product-id"),
    kit_lot: str = typer.Option(None, "--kit-lot"),
    reagent_lot: str = typer.Option(None, "--reagent-lot"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of CSV"),
    out: Path = typer.Option(None, "--out", help="write to a file instead of stdout"),
) -> None:
    """Every administration of a product, kit lot or reagent lot (CSV by default)."""
    raw = _read_json(administrations)
    if not isinstance(raw, list):
        raise _fail("the administrations file must hold a JSON list")
    try:
        records = [AdministrationRecord.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise _fail(f"invalid administration record: {_errors(exc)}") from None
    try:
        hits = recall(records, product_id=product_id, kit_lot=kit_lot, reagent_lot=reagent_lot)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    text = json.dumps([h.model_dump(mode="json") for h in hits]) if as_json else recall_csv(hits)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(hits)} administration(s) written to {out}", err=True)
    else:
        typer.echo(text, nl=False)


@app.command("fhir")
def fhir(
    snapshot: Path = typer.Argument(..., help="product snapshot (JSON)"),
    preparation: Path = typer.Option(None, "--preparation", help="preparation record (JSON)"),
) -> None:
    """Print the product as a FHIR R4 BiologicallyDerivedProduct."""
    snap = _snapshot(snapshot)
    prep = None
    if preparation is not None:
        try:
            prep = parse_preparation(_read_json(preparation))
        except ValidationError as exc:
            raise _fail(f"invalid preparation record: {_errors(exc)}") from None
    try:
        resource = product_to_fhir(snap, prep)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(resource.model_dump_json(indent=2))
