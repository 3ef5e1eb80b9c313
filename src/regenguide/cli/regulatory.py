"""`regenguide regulatory ...`: the regulatory gate from the command line (thin: parse, assess, render)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regenguide.domain.plan import PlanDocument

if TYPE_CHECKING:
    from regenguide.cds.regulatory import RegulatoryContext

app = typer.Typer(
    help="Regulatory gate: product class per jurisdiction and what it needs.", no_args_is_help=True
)
err = Console(stderr=True)
out = Console()


def load_plan_file(path: Path) -> PlanDocument:
    """Read and validate a plan document; print a specific message and exit 2 when it is not one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        err.print(f"[bold red]error:[/] no such file: {path}")
        raise typer.Exit(code=2) from None
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[bold red]error:[/] cannot read {path}: {exc}")
        raise typer.Exit(code=2) from None
    except json.JSONDecodeError as exc:
        err.print(
            f"[bold red]error:[/] {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
        raise typer.Exit(code=2) from None
    try:
        return PlanDocument.model_validate(raw)
    except ValidationError as exc:
        err.print(f"[bold red]error:[/] {path} is not a valid regenguide.plan/1 document:")
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(document)"
            err.print(f"  {where}: {e['msg']}")
        raise typer.Exit(code=2) from None


HospitalOpt = Annotated[
    bool | None,
    typer.Option(
        "--hospital/--not-hospital",
        help="product made and used in a hospital for that hospital's patient (Australia's exclusion)",
    ),
]
AdvertisedOpt = Annotated[
    bool | None, typer.Option("--advertised/--not-advertised", help="the product is advertised to consumers")
]
TrialOpt = Annotated[
    bool | None,
    typer.Option("--approved-trial/--no-approved-trial", help="given within an approved trial / IND / CTA"),
]


def make_context(
    hospital: bool | None, advertised: bool | None, approved_trial: bool | None
) -> RegulatoryContext | None:
    """The optional facts outside the plan document; None when none was given."""
    from regenguide.cds.regulatory import RegulatoryContext

    if hospital is None and advertised is None and approved_trial is None:
        return None
    return RegulatoryContext(hospital_setting=hospital, advertised=advertised, approved_trial=approved_trial)


@app.command("assess")
def assess_cmd(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN.json", help="plan document (regenguide.plan/1)")],
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
    hospital: HospitalOpt = None,
    advertised: AdvertisedOpt = None,
    approved_trial: TrialOpt = None,
) -> None:
    """Classify the plan's product under its jurisdiction's rule pack and list what it needs."""
    from regenguide.cds.regulatory import assess
    from regenguide.kb.references import cite

    plan = load_plan_file(plan_path)
    result = assess(plan, context=make_context(hospital, advertised, approved_trial))
    if as_json:
        typer.echo(json.dumps(result.to_json_dict(), indent=2, ensure_ascii=False))
        return
    allowed = "[green]yes[/]" if result.allowed_outside_trial else "[red]no[/]"
    out.print(
        f"[bold]{result.jurisdiction}[/] · {plan.modality.value} → "
        f"[bold]{result.class_}[/] ({result.class_label})"
    )
    out.print(
        f"allowed outside a trial: {allowed} · investigational: {'yes' if result.investigational else 'no'}"
    )
    out.print(
        f"evidence: {result.evidence.value}"
        + (" · [yellow]verify locally[/]" if result.verify_locally else "")
    )
    for note in result.notes:
        out.print(f"  · {note}")
    table = Table("requirement", "evidence", "sources", show_lines=False)
    for req in result.requirements:
        table.add_row(req.text, req.evidence.value, ", ".join(req.citations))
    out.print(table)
    out.print("[bold]Sources[/]")
    for cid in result.citations:
        ref = cite(cid)
        out.print(escape(f"  [{cid}] {ref.label()}: {ref.title} ({ref.evidence.value}) {ref.link}"))


@app.command("packs")
def packs_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """List the shipped rule packs and their classes."""
    from regenguide.cds.regulatory import packs

    data = [
        {
            "jurisdiction": p.jurisdiction,
            "aliases": p.aliases,
            "name": p.name,
            "version": p.version,
            "classes": {k: c.label for k, c in p.classes.items()},
        }
        for p in packs()
    ]
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table("code", "name", "classes")
    for p in data:
        table.add_row(str(p["jurisdiction"]), str(p["name"]), ", ".join(p["classes"]))  # type: ignore[arg-type]
    out.print(table)
