"""`regenguide consent ...`: render the consent document for a plan (thin: parse, render, write)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from regenguide.cli.regulatory import AdvertisedOpt, HospitalOpt, TrialOpt, load_plan_file, make_context

app = typer.Typer(
    help="Informed consent documents (HTML, PDF) generated from the knowledge base.", no_args_is_help=True
)
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Informed consent documents (HTML, PDF) generated from the knowledge base."""


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot write {path}: {exc}")
        raise typer.Exit(code=2) from None


@app.command("render")
def render_cmd(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN.json", help="plan document (regenguide.plan/1)")],
    html: Annotated[
        Path | None, typer.Option("--html", metavar="OUT", help="write the HTML document here")
    ] = None,
    pdf: Annotated[
        Path | None, typer.Option("--pdf", metavar="OUT", help="write the PDF document here")
    ] = None,
    patient_name: Annotated[
        str | None, typer.Option("--patient-name", help="printed on the document")
    ] = None,
    clinic: Annotated[str | None, typer.Option("--clinic", help="printed on the document")] = None,
    language: Annotated[str, typer.Option("--language", help="document language")] = "en",
    as_json: Annotated[bool, typer.Option("--json", help="print version, digest and status as JSON")] = False,
    hospital: HospitalOpt = None,
    advertised: AdvertisedOpt = None,
    approved_trial: TrialOpt = None,
) -> None:
    """Render the consent document. Without --html/--pdf/--json, print the canonical text."""
    from regenguide.cds.consent import ConsentError, render_consent, to_pdf

    plan = load_plan_file(plan_path)
    try:
        doc = render_consent(
            plan,
            patient_name=patient_name,
            clinic=clinic,
            language=language,
            context=make_context(hospital, advertised, approved_trial),
        )
    except ConsentError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None
    if html:
        _write(html, doc.html.encode("utf-8"))
    if pdf:
        _write(pdf, to_pdf(doc))
    if as_json:
        summary = {
            "version": doc.version,
            "text_digest": doc.text_digest,
            "plan_digest": doc.plan_digest,
            "language": doc.language,
            "jurisdiction": doc.jurisdiction,
            "modality": doc.modality.value,
            "regulatory_class": doc.regulatory_class,
            "investigational": doc.investigational,
            "citations": [s.id for s in doc.sources],
            "html": str(html) if html else None,
            "pdf": str(pdf) if pdf else None,
        }
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    elif not (html or pdf):
        typer.echo(doc.text, nl=False)
    else:
        written = ", ".join(str(p) for p in (html, pdf) if p)
        err.print(f"consent {doc.version} sha256:{doc.text_digest} → {written}")
