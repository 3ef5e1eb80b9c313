"""`regenguide instrument ...` (list, show, score) and, through `register`, `regenguide schedule ...`.

Thin: parse options, call `regenguide.outcomes`, render a table or JSON (`--json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Outcome instruments: list, show and score (GAIS, POSAS, CRS, ICANS ...).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def register(root: typer.Typer) -> None:
    """Mount `instrument` and `schedule` (both owned by the outcomes topic)."""
    from regenguide.cli.schedule import app as schedule_app

    root.add_typer(app, name="instrument")
    root.add_typer(schedule_app, name="schedule")


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _load_definition(path: Path | None) -> None:
    if path is None:
        return
    from regenguide.kb.references import KnowledgeBaseError
    from regenguide.outcomes.instruments import load_instrument_definition

    try:
        load_instrument_definition(path)
    except KnowledgeBaseError as exc:
        raise _fail(str(exc)) from None


@app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    definition: Annotated[Path | None, typer.Option("--definition", help="also load a licensee's definition")] = None,
) -> None:
    """List the available instruments."""
    from regenguide.outcomes.instruments import instruments

    _load_definition(definition)
    rows = instruments()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table("code", "name", "kind", "items", "evidence", "bundled")
    for r in rows:
        table.add_row(r.code, r.name, r.kind, str(r.items), r.evidence.value, "yes" if r.bundled else "no")
    out.print(table)


@app.command("show")
def show_cmd(
    code: Annotated[str, typer.Argument(help="instrument code (see `instrument list`)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the definition as JSON")] = False,
    definition: Annotated[Path | None, typer.Option("--definition", help="load a licensee's definition first")] = None,
) -> None:
    """Show an instrument's items, allowed values, citations and licence note."""
    from regenguide.outcomes.instruments import get_instrument

    _load_definition(definition)
    try:
        d = get_instrument(code)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    if as_json:
        print(json.dumps(d.model_dump(mode="json", exclude_none=True), indent=2))
        return
    out.print(f"[bold]{d.name}[/] ({d.code}, version {d.version}; evidence {d.evidence.value})")
    table = Table("item", "label", "allowed", "required")
    for item in d.items:
        table.add_row(item.code, item.label, item.allowed(), "yes" if item.required else "no")
    out.print(table)
    out.print(f"citations: {', '.join(d.citations) or d.source}", highlight=False)
    out.print(f"licence: {d.licence}", highlight=False)
    for note in d.notes:
        out.print(f"note: {note}", highlight=False)


def _parse_items(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--item {pair!r}: expected KEY=VALUE, e.g. --item vascularity=3")
        if key.strip() in values:
            raise _fail(f"--item {key.strip()!r} given twice")
        values[key.strip()] = value.strip()
    return values


@app.command("score")
def score_cmd(
    code: Annotated[str, typer.Argument(help="instrument code (see `instrument list`)")],
    item: Annotated[
        list[str] | None, typer.Option("--item", "-i", metavar="KEY=VALUE", help="an item response")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the score as JSON")] = False,
    definition: Annotated[Path | None, typer.Option("--definition", help="load a licensee's definition first")] = None,
) -> None:
    """Validate the responses and score them, e.g.
    `regenguide instrument score crs_astct --item temperature_c=38.6 --item oxygen=high_flow`."""
    from regenguide.outcomes.grading import InstrumentValidationError
    from regenguide.outcomes.instruments import score

    _load_definition(definition)
    responses = _parse_items(item or [])
    try:
        result = score(code, responses)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    except InstrumentValidationError as exc:
        if as_json:
            err.print(
                json.dumps({"instrument": exc.instrument, "errors": [e.model_dump() for e in exc.errors]}, indent=2),
                highlight=False,
            )
        else:
            err.print(f"[bold red]error:[/] {exc.instrument}: invalid responses", highlight=False)
            for e in exc.errors:
                err.print(f"  - {e}", highlight=False)
        raise typer.Exit(code=2) from None
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    unit = f" {result.unit}" if result.unit and result.unit != "grade" else ""
    out.print(f"[bold]{result.name}[/]: {result.value}{unit}", highlight=False)
    out.print(result.interpretation, highlight=False)
    for key, value in result.subscores.items():
        out.print(f"  {key}: {value}", highlight=False)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"evidence: {result.evidence.value}; citations: {', '.join(result.citations)}", highlight=False)
