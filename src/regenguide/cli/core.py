"""Top-level commands: init, serve, demo, backup, restore, user, audit, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from regenguide.config import get_settings

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DEMO_PASSWORD = "regenguide-demo"


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=code)


def progress_bar(description: str, total: int | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=False,
        transient=False,
    )


def _engine():  # type: ignore[no-untyped-def]
    from regenguide.store.db import make_engine

    return make_engine(get_settings().resolved_database_url())


def _init(engine) -> str:  # type: ignore[no-untyped-def]
    from regenguide.store import schema

    before = schema.current_revision(engine)
    schema.upgrade(engine)
    after = schema.current_revision(engine)
    return f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})")


def init() -> None:
    """Create the database, or migrate it to the current schema."""
    out.print(_init(_engine()))


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="worker processes (default: one per CPU "
                                                "core, at most 4; REGENGUIDE_WORKERS)")] = None,
) -> None:
    """Run the API server (migrating the database first)."""
    import uvicorn

    from regenguide.api.app import create_app, freeze_startup_heap

    settings = get_settings()
    engine = _engine()
    _init(engine)
    host, port = host or settings.host, port or settings.port
    n = settings.model_copy(update={"workers": workers}).resolved_workers() if workers else settings.resolved_workers()
    out.print(f"RegenGuide on [bold]http://{host}:{port}/[/]  (API docs: http://{host}:{port}/docs)"
              + (f"  {n} workers" if n > 1 else ""))
    if n == 1:
        app = create_app(engine, settings)
        freeze_startup_heap()
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    # Each worker process builds the app from the same settings (environment). The signing key is made here,
    # once, so that workers never race to create different keys (a token must be valid on every worker).
    settings.resolved_secret_key()
    engine.dispose()
    uvicorn.run("regenguide.api.app:create_server_app", factory=True, workers=n, host=host, port=port,
                log_level="warning")


def demo(
    patients: Annotated[int, typer.Option(min=1, max=10_000_000, help="number of synthetic patients")] = 200,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same cohort")] = 7,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="only seed; do not start the server")] = False,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Seed the synthetic demo cohort, then serve it (unless --no-serve)."""
    from regenguide.services.demo import seed_demo

    engine = _engine()
    _init(engine)
    with progress_bar("demo cohort", patients) as bar:
        task = bar.add_task("seeding patients", total=patients)
        summary = seed_demo(engine, patients=patients, seed=seed, progress=lambda n: bar.update(task, advance=n))
    out.print(f"seeded {summary}")
    out.print(f"demo logins: admin / clinician / nurse / lab / researcher, password [bold]{DEMO_PASSWORD}[/]")
    if not no_serve:
        serve(host=host, port=port)


def backup(path: Annotated[Path, typer.Argument(help="backup file to write (.rgbak)")]) -> None:
    """Write a consistent online backup of the whole database."""
    from regenguide.services.backup import BackupError
    from regenguide.services.backup import backup as run_backup

    engine = _engine()
    try:
        with progress_bar("backup", None) as bar:
            task = bar.add_task("rows", total=None)
            summary = run_backup(engine, path, progress=lambda n: bar.update(task, advance=n))
    except BackupError as exc:
        raise fail(str(exc)) from None
    out.print(f"backup of {summary.total_rows} rows at revision {summary.revision} written to {path}")


def restore(
    path: Annotated[Path, typer.Argument(help="backup file written by `regenguide backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="replace the current database without asking")] = False,
) -> None:
    """Replace the database with a backup (checked in full before anything is changed)."""
    from regenguide.services.backup import BackupError, check_backup
    from regenguide.services.backup import restore as run_restore

    if not path.is_file():
        raise fail(f"{path} does not exist")
    try:
        checked = check_backup(path)  # refused before anything is asked, drawn or changed
    except BackupError as exc:
        raise fail(str(exc)) from None
    if not yes and sys.stdin.isatty() and not typer.confirm("Replace the whole database with this backup?"):
        raise fail("restore cancelled", code=1)
    engine = _engine()
    try:
        with progress_bar("restore", checked.total_rows) as bar:
            task = bar.add_task("rows", total=checked.total_rows)
            summary = run_restore(engine, checked, progress=lambda n: bar.update(task, advance=n))
    except BackupError as exc:
        raise fail(str(exc)) from None
    out.print(f"restored {summary.total_rows} rows at revision {summary.revision}")


user_app = typer.Typer(help="User accounts.", no_args_is_help=True)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="admin | clinician | nurse | lab | researcher")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    full_name: Annotated[str, typer.Option(help="display name")] = "",
) -> None:
    """Create a user; the password is read from standard input (never from the command line)."""
    from regenguide.security import WeakPassword
    from regenguide.services.users import UserExists, create_user
    from regenguide.store.audit import AuditRecord, append
    from regenguide.store.db import transaction

    if not password_stdin:
        raise fail("pass --password-stdin and pipe the password in (it must not appear on the command line)")
    password = sys.stdin.readline().rstrip("\r\n")
    engine = _engine()
    _init(engine)
    try:
        with transaction(engine) as db:
            user = create_user(db, username, role, password, full_name=full_name)
            append(db, AuditRecord(username="cli", action="create", resource="users", resource_id=user.id,
                                   payload={"username": username, "role": role}))
    except (UserExists, WeakPassword, ValueError) as exc:
        raise fail(str(exc)) from None
    out.print(f"user {username!r} ({role}) created")


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the hash chain; exit 1 naming the first broken entry."""
    from regenguide.store.audit import verify
    from regenguide.store.db import transaction

    with transaction(_engine()) as db:
        result = verify(db)
    if as_json:
        out.print_json(json.dumps(result.__dict__))
    elif result.ok:
        out.print(f"audit chain intact: {result.checked} entries")
    else:
        err.print(f"[bold red]audit chain broken at entry {result.first_broken_seq}:[/] {result.reason}")
    if not result.ok:
        raise typer.Exit(code=1)


export_app = typer.Typer(help="Exports: FHIR, research data sets.", no_args_is_help=True)


@export_app.command("fhir")
def export_fhir(
    patient_id: Annotated[int, typer.Argument(help="patient id")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
) -> None:
    """The patient's whole record as a FHIR R4 Bundle (validated with fhir.resources R4B)."""
    from regenguide.interop.fhir import patient_bundle_json
    from regenguide.store.audit import AuditRecord, append
    from regenguide.store.db import transaction

    try:
        with transaction(_engine()) as db:
            bundle = patient_bundle_json(db, patient_id)
            append(db, AuditRecord(username="cli", action="export", resource="patients", resource_id=patient_id,
                                   patient_id=patient_id, payload={"format": "fhir-r4-bundle"}))
    except LookupError as exc:
        raise fail(str(exc).strip("'\"")) from None
    text = json.dumps(bundle, indent=2)
    if output:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {len(bundle.get('entry', []))} resources to {output}")
    else:
        sys.stdout.write(text + "\n")


@export_app.command("research")
def export_research(
    folder: Annotated[Path, typer.Argument(help="folder to write the de-identified data set into")],
) -> None:
    """De-identified research data set of consenting patients: CSV, Parquet, REDCap dictionary + records,
    FHIR NDJSON."""
    from regenguide.interop.research import build_export, write_export
    from regenguide.store.audit import AuditRecord, append
    from regenguide.store.db import transaction

    engine = _engine()
    export = build_export(engine)
    files = write_export(export, folder)
    with transaction(engine) as db:
        append(db, AuditRecord(username="cli", action="export", resource="research_export",
                               payload={"patients": export.patients, "files": [f.name for f in files]}))
    out.print(f"de-identified export of {export.patients} consenting patients: {len(files)} files in {folder}")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(serve)
    app.command()(demo)
    app.command()(backup)
    app.command()(restore)
    app.add_typer(user_app, name="user")
    app.add_typer(audit_app, name="audit")
    app.add_typer(export_app, name="export")
