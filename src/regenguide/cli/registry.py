"""Registry analytics and complete-cohort reports from the command line (the same functions as the API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from regenguide.cli.core import _engine, err, fail, out

analytics_app = typer.Typer(help="Registry analytics (SQL aggregation; every result names its denominator).",
                            no_args_is_help=True)
report_app = typer.Typer(help="Complete-cohort outcome reports (HTML, PDF).", no_args_is_help=True)


def _print_rates(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result, default=str))
        return
    out.print(f"denominator: {result['denominator']} ({result['total']} in scope)")
    for row in result["rows"]:
        group = " / ".join(str(v) for v in row["group"].values())
        out.print(f"{group:<32} {row['events']:>6}/{row['n']:<7} {100 * row['rate']:6.1f}%  "
                  f"[{100 * row['ci_low']:.1f}–{100 * row['ci_high']:.1f}]")


def _scope(modality: str | None, site_id: int | None) -> list[Any]:
    from regenguide.services.analytics import scope

    return scope(modality, site_id)


@analytics_app.command("complications")
def complications(
    grouping: Annotated[str, typer.Option(help="modality | region | guidance | modality_region | modality_guidance")]
    = "modality",
    modality: Annotated[str | None, typer.Option()] = None,
    site_id: Annotated[int | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Complication rates with Wilson 95% intervals (denominator: procedures)."""
    from regenguide.services.analytics import complication_rates

    if grouping not in ("modality", "region", "guidance", "modality_region", "modality_guidance"):
        raise fail(f"--grouping {grouping!r} is not one of modality, region, guidance, modality_region, "
                   "modality_guidance")
    _print_rates(complication_rates(_engine(), grouping, where=_scope(modality, site_id)), as_json)  # type: ignore[arg-type]


@analytics_app.command("guided")
def guided(modality: Annotated[str | None, typer.Option()] = None,
           site_id: Annotated[int | None, typer.Option()] = None) -> None:
    """Image-guided vs landmark: crude RR, Mantel–Haenszel RR, adjusted odds ratios (JSON)."""
    from regenguide.services.analytics import guided_vs_landmark

    out.print_json(json.dumps(guided_vs_landmark(_engine(), where=_scope(modality, site_id)), default=str))


@analytics_app.command("retention")
def retention(modality: Annotated[str | None, typer.Option()] = None,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Graft volume retention by processing method."""
    from regenguide.services.analytics import retention_by_processing

    result = retention_by_processing(_engine(), where=_scope(modality, None))
    if as_json:
        out.print_json(json.dumps(result, default=str))
        return
    for row in result["rows"]:
        out.print(f"{row['processing_method']:<20} n={row['n']:<6} mean {row['mean']:.1f}  "
                  f"[{row['ci_low']:.1f}–{row['ci_high']:.1f}]")


@analytics_app.command("durability")
def durability(modality: Annotated[str | None, typer.Option()] = None) -> None:
    """Time to retreatment: Kaplan–Meier per modality with the log-rank test (JSON)."""
    from regenguide.services.analytics import durability as run

    out.print_json(json.dumps(run(_engine(), where=_scope(modality, None)), default=str))


@analytics_app.command("change")
def change(code: Annotated[str, typer.Argument(help="instrument code, e.g. wsrs, gais_investigator")]) -> None:
    """Change from baseline of an instrument (paired, t interval; JSON)."""
    from regenguide.services.analytics import change_from_baseline

    out.print_json(json.dumps(change_from_baseline(_engine(), code), default=str))


@report_app.command("outcomes")
def outcomes(
    modality: Annotated[str | None, typer.Option(help="one modality, e.g. microfat")] = None,
    site_id: Annotated[int | None, typer.Option(help="one clinic")] = None,
    html: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    pdf: Annotated[Path | None, typer.Option(help="write the PDF report here")] = None,
) -> None:
    """Complete-cohort outcome report: every treated patient, losses to follow-up shown."""
    from regenguide.services.reports import build_report, report_pdf
    from regenguide.store.audit import AuditRecord, append
    from regenguide.store.db import transaction

    if html is None and pdf is None:
        raise fail("give --html FILE and/or --pdf FILE")
    engine = _engine()
    report = build_report(engine, modality=modality, site_id=site_id)
    try:
        if html is not None:
            html.write_text(report.html, encoding="utf-8")
        if pdf is not None:
            pdf.write_bytes(report_pdf(report))
    except OSError as exc:
        raise fail(f"cannot write the report: {exc}") from None
    with transaction(engine) as db:
        append(db, AuditRecord(username="cli", action="export", resource="analytics_report",
                               payload={"modality": modality, "site_id": site_id}))
    err.print(f"report: {report.numbers['treated_patients']} patients, {report.numbers['procedures']} procedures")


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
    app.add_typer(report_app, name="report")
