"""`regenguide kb ...`: browse and validate the clinical knowledge base (thin: load, render)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Clinical knowledge base: vocabulary, danger zones, modalities, protocols.", no_args_is_help=True
)


def _console(stderr: bool = False) -> Console:
    # Created per call so that the terminal width (COLUMNS) is read when printing, not at import.
    return Console(stderr=stderr)


# Columns shown per topic in the human table (all fields are in --json).
COLUMNS: dict[str, list[str]] = {
    "regions": ["code", "name", "area", "paired", "high_risk_vascular", "aliases", "evidence"],
    "planes": ["code", "rank", "name", "aliases", "evidence"],
    "indications": ["code", "name", "aesthetic", "aliases", "evidence"],
    "grade": ["code", "symbol", "meaning"],
    "danger_zones": ["region", "arteries", "safe_planes", "max_safe_depth_mm", "critical_bolus", "evidence"],
    "modalities": ["code", "name", "grade", "grade_upper", "indications", "grade_evidence"],
    "volumes": ["subunit", "per_side", "mean_ml", "min_ml", "max_ml", "evidence"],
    "protocols": ["id", "sessions", "interval_weeks", "needle_depth_mm", "evidence"],
    "contraindications": ["id", "kind", "severity", "modalities", "evidence"],
    "medications": ["code", "name", "members"],
    "imaging": ["modality", "first_line", "ionizing", "use_when", "evidence"],
    "rules": ["id", "severity", "title", "evidence"],
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        if "volume_ml" in value:  # critical bolus
            return f"{value['volume_ml']} mL ({value.get('artery', '')}, {value.get('evidence', '')})"
        if "min" in value or "max" in value:  # a range
            lo, hi = value.get("min"), value.get("max")
            text = f"{lo if lo is not None else ''}-{hi if hi is not None else ''}"
            return f"{text} ({value.get('evidence', '')})"
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _load() -> Any:
    from regenguide.kb import KnowledgeBaseError, knowledge_base

    try:
        return knowledge_base()
    except KnowledgeBaseError as exc:
        _console(stderr=True).print(f"[bold red]error:[/] the knowledge base is invalid: {escape(str(exc))}")
        raise typer.Exit(code=2) from None


@app.command("topics")
def topics_cmd() -> None:
    """List the knowledge-base topics."""
    kb = _load()
    for topic in kb.topics():
        typer.echo(topic)


@app.command("show")
def show_cmd(
    topic: Annotated[str, typer.Argument(help="topic, e.g. regions, planes, danger_zones, modalities")],
    code: Annotated[str | None, typer.Argument(help="one entry (its code, id or region); omit for the table")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
    citations: Annotated[bool, typer.Option("--citations", help="add a citations column")] = False,
) -> None:
    """Show one topic of the knowledge base (each entry with its citations and evidence label)."""
    kb = _load()
    name = topic.replace("-", "_")
    try:
        entries = kb.show(name)
    except KeyError:
        _console(stderr=True).print(
            f"[bold red]error:[/] unknown topic {escape(topic)!r}; valid topics: {', '.join(kb.topics())}"
        )
        raise typer.Exit(code=2) from None
    if code is not None:
        keys = {str(_key(e)): e for e in entries}
        entry = keys.get(code)
        if entry is None:
            _console(stderr=True).print(
                f"[bold red]error:[/] no entry {escape(code)!r} in {name}; entries: {', '.join(keys)}"
            )
            raise typer.Exit(code=2) from None
        if as_json:
            typer.echo(json.dumps(entry, indent=2, ensure_ascii=False))
        else:
            typer.echo(yaml.safe_dump(entry, sort_keys=False, allow_unicode=True, width=100).rstrip())
        return
    if as_json:
        payload = {"topic": name, "version": kb.versions[name], "entries": entries}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    cols = COLUMNS[name] + (["citations"] if citations else [])
    table = Table(title=f"{name} (version {kb.versions[name]})", show_lines=False)
    for i, col in enumerate(cols):
        table.add_column(col.replace("high_risk_vascular", "high-risk"), overflow="fold", no_wrap=i == 0)
    for entry in entries:
        table.add_row(*(escape(_cell(entry.get(col))) for col in cols))
    _console().print(table)


def _key(entry: dict[str, Any]) -> Any:
    return next((entry[k] for k in ("code", "id", "region", "subunit", "modality") if k in entry), None)


@app.command("cite")
def cite_cmd(
    citation_id: Annotated[str, typer.Argument(metavar="ID", help="citation id, e.g. kb.shue-2018")],
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Print the full reference behind a citation id."""
    from regenguide.kb.references import UnknownCitation, cite

    try:
        ref = cite(citation_id)
    except UnknownCitation:
        _console(stderr=True).print(
            f"[bold red]error:[/] unknown citation id {escape(citation_id)!r} (see `regenguide kb show` output)"
        )
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps({**ref.model_dump(mode="json", exclude_none=True), "link": ref.link}, indent=2))
        return
    _console().print(f"[bold]{escape(ref.id)}[/]  ({ref.evidence.value})")
    _console().print(f"{escape(ref.authors)}. {escape(ref.title)}. {escape(ref.source)}, {ref.year}.")
    if ref.link:
        _console().print(escape(ref.link))
    if ref.note:
        _console().print(f"[dim]{escape(ref.note)}[/]")


@app.command("validate")
def validate_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Load and validate every knowledge-base file and citation; exit 2 with the problem if one is broken."""
    from regenguide.kb import KnowledgeBaseError, load_knowledge_base
    from regenguide.kb.references import load_references

    try:
        load_references.cache_clear()
        kb = load_knowledge_base()
    except KnowledgeBaseError as exc:
        _console(stderr=True).print(f"[bold red]invalid:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    counts = {topic: len(kb.show(topic)) for topic in kb.topics()}
    if as_json:
        typer.echo(json.dumps({"valid": True, "version": kb.version, "counts": counts}, indent=2))
        return
    summary = ", ".join(f"{n} {t}" for t, n in counts.items())
    _console().print(f"[green]valid[/] knowledge base {kb.version}: {summary}; {len(load_references())} references")
