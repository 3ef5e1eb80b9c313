"""`regenguide plan ...`: check a plan document against the knowledge base (thin: parse, check, render)."""

from __future__ import annotations

import json
import sys
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regenguide.domain.plan import PlanDocument

app = typer.Typer(help="Treatment plans: check against the knowledge base, print examples.", no_args_is_help=True)


def _console(stderr: bool = False) -> Console:
    # Created per call so that the terminal width (COLUMNS) is read when printing, not at import.
    return Console(stderr=stderr)


STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _fail(message: str) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _read_plan(path: Path) -> PlanDocument:
    """Read and validate a plan; a clear message naming the bad field and exit 2 otherwise."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except FileNotFoundError:
        raise _fail(f"no such file: {escape(str(path))}") from None
    except IsADirectoryError:
        raise _fail(f"{escape(str(path))} is a directory, not a plan document") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {escape(str(path))}: {escape(str(exc))}") from None
    except json.JSONDecodeError as exc:
        raise _fail(
            f"{escape(str(path))} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(raw, dict):
        raise _fail(f"{escape(str(path))}: a plan document is a JSON object, got {type(raw).__name__}")
    try:
        return PlanDocument.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{escape(str(path))} is not a valid regenguide.plan/1 document:"]
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(document)"
            lines.append(f"  {escape(where)}: {escape(e['msg'])}")
        raise _fail("\n".join(lines)) from None


def _parse_override(text: str) -> Any:
    """`RULE[@INDEX]=REASON` -> Override."""
    from regenguide.cds.engine import Override

    target, sep, reason = text.partition("=")
    if not sep or not reason.strip():
        raise _fail(f"--override {escape(text)!r}: expected {escape('RULE[@INDEX]=REASON')} with a non-empty reason")
    rule, at, index = target.strip().partition("@")
    try:
        idx = int(index) if at else None
    except ValueError:
        raise _fail(f"--override {escape(text)!r}: injection index {escape(index)!r} is not an integer") from None
    return Override(rule=rule, injection_index=idx, reason=reason.strip())


@app.command("check")
def check_cmd(
    plan_path: Annotated[
        Path, typer.Argument(metavar="PLAN.json", help="plan document (regenguide.plan/1); - reads stdin")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
    today: Annotated[
        str | None, typer.Option(help="reference date (YYYY-MM-DD) for consent expiry; default today")
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--override", help="override a critical finding: RULE[@INDEX]=REASON (repeatable)"),
    ] = None,
    details: Annotated[bool, typer.Option("--details", help="print each finding's detail and references")] = False,
) -> None:
    """Check a plan; exit 0 whenever the check ran, whatever it found (see `signable`)."""
    from regenguide.cds.engine import OverrideError, apply_overrides, check_plan

    plan = _read_plan(plan_path)
    try:
        ref_date = date.fromisoformat(today) if today else None
    except ValueError:
        raise _fail(f"--today {escape(str(today))!r} is not an ISO date (YYYY-MM-DD)") from None
    overrides = [_parse_override(o) for o in override or []]
    result = check_plan(plan, today=ref_date)
    if overrides:
        try:
            result = apply_overrides(result, overrides)
        except OverrideError as exc:
            raise _fail(escape(str(exc))) from None
    if as_json:
        typer.echo(json.dumps(result.to_json_dict(), indent=2, ensure_ascii=False))
        return
    _render(plan, result)
    if details:
        _render_details(result)


def _render(plan: PlanDocument, result: Any) -> None:
    overridden = {(o.rule, o.injection_index) for o in result.overrides}
    table = Table(title=f"Plan check: {plan.modality.value} for {escape(plan.indication)}", show_lines=True)
    table.add_column("level", no_wrap=True)
    table.add_column("inj", justify="right")
    table.add_column("finding", overflow="fold", ratio=1)
    table.add_column("evidence", no_wrap=True)
    for f in result.findings:
        level = f.indicator.value
        tag = f"[{STYLE[level]}]{level}[/]" + ("\n(overridden)" if (f.rule, f.injection_index) in overridden else "")
        text = escape(f.summary) + f"\n[dim]{escape(f.rule)} · {escape(', '.join(f.citations[:2]))}[/]"
        if f.suggestions:
            text += f"\n[green]→ {escape(f.suggestions[0].label)}[/]"
        table.add_row(tag, "" if f.injection_index is None else str(f.injection_index), text, escape(f.evidence or ""))
    if result.findings:
        _console().print(table)
    else:
        _console().print("[green]No findings.[/]")
    reg = result.regulatory
    allowed = "yes" if reg.get("allowed_outside_trial") else "no"
    _console().print(
        f"Regulatory ({escape(str(reg.get('jurisdiction')))}): class [bold]{escape(str(reg.get('class')))}[/], "
        f"allowed outside a trial: {allowed}"
    )
    for req in reg.get("requirements", []):
        _console().print(f"  - {escape(req.get('text', ''))}")
    counts = {k: sum(1 for f in result.findings if f.indicator.value == k) for k in ("critical", "warning", "info")}
    verdict = "[green]signable[/]" if result.signable else "[bold red]NOT signable[/] (critical findings to resolve)"
    _console().print(
        f"{counts['critical']} critical, {counts['warning']} warning, {counts['info']} info: {verdict}"
        f"  [dim](knowledge base {result.kb_version})[/]"
    )


def _render_details(result: Any) -> None:
    from rich.markdown import Markdown

    from regenguide.kb.references import load_references

    refs = load_references()
    console = _console()
    for n, f in enumerate(result.findings, start=1):
        where = "" if f.injection_index is None else f" (injection {f.injection_index})"
        console.rule(f"[{STYLE[f.indicator.value]}]{n}. {f.indicator.value}[/] {escape(f.rule)}{where}")
        console.print(escape(f.summary))
        if f.detail:
            console.print(Markdown(f.detail))
        for cid in f.citations:
            ref = refs.get(cid)
            if ref is not None:
                console.print(
                    f"  [dim]{escape(cid)}: {escape(ref.label())}. {escape(ref.title)}. {escape(ref.link)}[/]"
                )


def _examples() -> dict[str, Any]:
    folder = resources.files("regenguide.kb") / "data" / "examples"
    return {e.name[: -len(".json")]: e for e in folder.iterdir() if e.name.endswith(".json")}


@app.command("example")
def example_cmd(
    name: Annotated[str | None, typer.Argument(help="example name; omit to list them")] = None,
) -> None:
    """Print an example plan document (JSON), or list the examples."""
    examples = _examples()
    if name is None:
        for key in sorted(examples):
            typer.echo(key)
        return
    if name not in examples:
        raise _fail(f"unknown example {escape(name)!r}; available: {', '.join(sorted(examples))}")
    typer.echo(examples[name].read_text(encoding="utf-8").rstrip())
