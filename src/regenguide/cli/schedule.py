"""`regenguide schedule show MODALITY --from YYYY-MM-DD`: the follow-up schedule of a treatment, with
windows and their evidence; with `--today` (and `--done CODE=DATE`) the state of every visit and the
lost-to-follow-up rule. Mounted by `regenguide.cli.instrument.register`."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Follow-up schedules per modality (visits, windows, states).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _fail(f"{option} {text!r}: expected a date YYYY-MM-DD") from None


@app.command("show")
def show_cmd(
    modality: Annotated[str, typer.Argument(help="modality, e.g. microfat, prp, car_t")],
    start: Annotated[
        str, typer.Option("--from", metavar="YYYY-MM-DD", help="procedure, infusion or first-session date")
    ],
    sessions: Annotated[int | None, typer.Option("--sessions", help="number of sessions (PRP, microneedling)")] = None,
    session_date: Annotated[
        list[str] | None, typer.Option("--session-date", metavar="YYYY-MM-DD", help="actual session dates (repeat)")
    ] = None,
    today: Annotated[
        str | None, typer.Option("--today", metavar="YYYY-MM-DD", help="show visit states on this day")
    ] = None,
    done: Annotated[
        list[str] | None,
        typer.Option("--done", metavar="CODE=YYYY-MM-DD", help="a completed visit (repeat); needs --today"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the planned visits (and their states with --today)."""
    from regenguide.outcomes.schedule import (
        CompletedVisit,
        build_schedule,
        follow_up_status,
        template_for,
        visit_states,
    )

    anchor = _date(start, "--from")
    if sessions is not None and session_date:
        raise _fail("give --sessions or --session-date, not both")
    series: int | list[date] | None = sessions
    if session_date:
        series = [_date(d, "--session-date") for d in session_date]
    try:
        template = template_for(modality)
        plan = build_schedule(modality, anchor, series)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    statuses = None
    summary = None
    if done and today is None:
        raise _fail("--done needs --today")
    if today is not None:
        day = _date(today, "--today")
        completed = []
        for pair in done or []:
            code, sep, when = pair.partition("=")
            if not sep:
                raise _fail(f"--done {pair!r}: expected CODE=YYYY-MM-DD")
            completed.append(CompletedVisit(visit_code=code.strip(), on=_date(when, "--done")))
        try:
            statuses = visit_states(plan, completed, day)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        summary = follow_up_status(statuses, completed, day)

    if as_json:
        visits: list[dict[str, Any]] = []
        for i, visit in enumerate(plan):
            row = visit.model_dump(mode="json", exclude={"patient_ref", "anchor_date", "template", "modality"})
            if statuses is not None:
                s = statuses[i]
                row |= {
                    "state": s.state.value,
                    "completed_on": s.completed_on and s.completed_on.isoformat(),
                    "timing": s.timing and s.timing.value,
                }
            visits.append(row)
        doc: dict[str, Any] = {
            "modality": plan[0].modality.value,
            "template": template.id,
            "label": template.label,
            "anchor_date": anchor.isoformat(),
            "evidence": template.evidence.value,
            "citations": template.citations,
            "note": template.note,
            "visits": visits,
        }
        if summary is not None:
            doc["follow_up"] = summary.model_dump(mode="json", exclude={"next_visit"})
        print(json.dumps(doc, indent=2))
        return

    out.print(f"[bold]{template.label}[/] from {anchor.isoformat()} ({template.evidence.value})", highlight=False)
    columns = ["visit", "label", "target", "window", "overdue until", "timing evidence", "window evidence"]
    if statuses is not None:
        columns.append("state")
    table = Table(*columns)
    for i, v in enumerate(plan):
        cells = [
            v.code,
            v.label,
            v.target_date.isoformat(),
            f"{v.window_start} .. {v.window_end}",
            v.missed_after.isoformat(),
            v.evidence.value,
            v.window_evidence.value,
        ]
        if statuses is not None:
            s = statuses[i]
            cells.append(s.state.value + (f" ({s.timing.value}, {s.completed_on})" if s.timing else ""))
        table.add_row(*cells)
    out.print(table)
    if template.note:
        out.print(f"note: {template.note}", highlight=False)
    if summary is not None:
        verdict = "LOST TO FOLLOW-UP: " + "; ".join(summary.reasons) if summary.lost_to_follow_up else "in follow-up"
        out.print(f"patient: {verdict} (last contact {summary.last_contact})", highlight=False)
