"""Consistent online backup and all-or-nothing restore, the same on SQLite and PostgreSQL.

A backup is gzip-compressed JSON Lines: a header naming the format, the schema revision and the row
count of every table, then the rows table by table in foreign-key order. It is read inside one
snapshot transaction (SQLite: BEGIN IMMEDIATE holds writers off; PostgreSQL: REPEATABLE READ), so it is
consistent while the server keeps running. A logical format (rather than copying the SQLite file or
calling pg_dump) lets a backup taken on one database be restored on the other.

Restore first reads the whole file and checks it (format, revision, row counts, a SHA-256 over the
rows), then, in one transaction, recreates the schema and loads the rows: a bad file is refused before
anything is touched, and a failure half-way leaves the database as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Connection, Engine, Table, func, insert, select, text

from regenguide import __version__
from regenguide.store import schema
from regenguide.store.models import Base

FORMAT = "regenguide-backup"
FORMAT_VERSION = 1
CHUNK = 5000


class BackupError(ValueError):
    """The file is not a usable RegenGuide backup (or the database refuses it)."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _decoder(table: Table) -> list[Callable[[Any], Any]]:
    out: list[Callable[[Any], Any]] = []
    for column in table.columns:
        try:
            py = column.type.python_type
        except NotImplementedError:
            py = object
        if py is datetime:
            out.append(lambda v: None if v is None else datetime.fromisoformat(v).replace(tzinfo=UTC))
        elif py is date:
            out.append(lambda v: None if v is None else date.fromisoformat(v))
        else:
            out.append(lambda v: v)
    return out


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    revision: str
    rows: dict[str, int]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def backup(engine: Engine, path: Path, progress: Callable[[int], None] | None = None) -> BackupSummary:
    tmp = path.with_suffix(path.suffix + ".partial")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            revision = schema.current_revision_on(conn)
            if revision is None:
                raise BackupError("the database has no RegenGuide schema")
            counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in _tables()}
            digest = hashlib.sha256()
            with gzip.open(tmp, "wt", encoding="utf-8") as out:
                header = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "revision": revision,
                    "regenguide": __version__,
                    "created_at": datetime.now(UTC).isoformat(),
                    "dialect": engine.dialect.name,
                    "rows": counts,
                }
                out.write(json.dumps(header) + "\n")
                for table in _tables():
                    pk = list(table.primary_key.columns)
                    result = conn.execution_options(yield_per=CHUNK).execute(select(table).order_by(*pk))
                    for chunk in result.partitions(CHUNK):
                        rows = [[_encode(v) for v in row] for row in chunk]
                        line = json.dumps({"table": table.name, "rows": rows}, separators=(",", ":"))
                        digest.update(line.encode())
                        out.write(line + "\n")
                        if progress:
                            progress(len(rows))
                out.write(json.dumps({"end": True, "sha256": digest.hexdigest()}) + "\n")
    tmp.replace(path)
    return BackupSummary(path, revision, counts)


def _read(path: Path) -> tuple[dict[str, Any], Iterator[tuple[str, list[list[Any]]]]]:
    """Validate the whole file; return its header and a re-readable row iterator factory."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            first = f.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path.name} is not a RegenGuide backup (not gzip-compressed JSON lines: {exc})") from None
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        raise BackupError(f"{path.name} is not a RegenGuide backup (no header line)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BackupError(f"{path.name} is not a RegenGuide backup (format marker missing)")
    if header.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"backup format version {header.get('format_version')} is not supported")
    known = {t.name for t in _tables()}
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    ended = False
    with gzip.open(path, "rt", encoding="utf-8") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise BackupError(f"backup line {number} is not valid JSON (file truncated or altered)") from None
            if item.get("end"):
                ended = True
                if item.get("sha256") != digest.hexdigest():
                    raise BackupError("backup checksum does not match its rows (file altered)")
                break
            if item.get("table") not in known:
                raise BackupError(f"backup line {number} names unknown table {item.get('table')!r}")
            digest.update(line.rstrip("\n").encode())
            counts[item["table"]] = counts.get(item["table"], 0) + len(item["rows"])
    if not ended:
        raise BackupError("backup is truncated (no end marker)")
    expected = {k: v for k, v in header.get("rows", {}).items() if v}
    if counts != expected:
        raise BackupError(f"backup row counts {counts} do not match its header {expected}")

    def rows() -> Iterator[tuple[str, list[list[Any]]]]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            f.readline()
            for line in f:
                item = json.loads(line)
                if item.get("end"):
                    return
                yield item["table"], item["rows"]

    return header, rows()


@dataclass
class CheckedBackup:
    """A backup file read in full and found sound (format, checksum, row counts, schema revision)."""

    path: Path
    header: dict[str, Any]
    rows: Iterator[tuple[str, list[list[Any]]]]

    @property
    def total_rows(self) -> int:
        return sum(int(n) for n in self.header.get("rows", {}).values())


def check_backup(path: Path) -> CheckedBackup:
    """Read the whole file and refuse it (BackupError) unless `restore` can load it; nothing is changed."""
    header, rows = _read(path)
    if header["revision"] != schema.head_revision():
        raise BackupError(
            f"backup schema revision {header['revision']} differs from this version's {schema.head_revision()}; "
            "restore it with the RegenGuide version that wrote it, then upgrade"
        )
    return CheckedBackup(path, header, rows)


def restore(
    engine: Engine, source: Path | CheckedBackup, progress: Callable[[int], None] | None = None
) -> BackupSummary:
    """Replace the database's contents with the backup's, in one transaction (checked first when given a path)."""
    checked = source if isinstance(source, CheckedBackup) else check_backup(source)
    path, header, rows = checked.path, checked.header, checked.rows
    tables = {t.name: t for t in _tables()}
    decoders = {name: _decoder(t) for name, t in tables.items()}
    with engine.begin() as conn:
        _recreate_schema(conn)
        for table in reversed(_tables()):
            conn.execute(table.delete())
        for name, chunk in rows:
            table, decode = tables[name], decoders[name]
            keys = [c.name for c in table.columns]
            values = [{k: d(v) for k, d, v in zip(keys, decode, row, strict=True)} for row in chunk]
            conn.execute(insert(table), values)
            if progress:
                progress(len(values))
        if conn.dialect.name == "postgresql":
            _reset_sequences(conn)
    return BackupSummary(path, header["revision"], dict(header["rows"]))


def _recreate_schema(conn: Connection) -> None:
    cfg = schema.alembic_config()
    cfg.attributes["connection"] = conn
    if schema.current_revision_on(conn) is not None:
        command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")


def _reset_sequences(conn: Connection) -> None:
    for table in _tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not pk[0].autoincrement or pk[0].type.python_type is not int:
            continue
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}).scalar()
        if seq:
            conn.execute(
                text(f"SELECT setval(:s, COALESCE((SELECT MAX({pk[0].name}) FROM {table.name}), 0) + 1, false)"),
                {"s": seq},
            )
