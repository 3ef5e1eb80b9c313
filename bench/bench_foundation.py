"""Foundation benchmark, load part: time to generate and load N synthetic demo patients (default 100,000)
into a fresh SQLite file and, with --pg URL, into a fresh PostgreSQL database on that server.
Writes (merges into) bench/results/foundation.json under the key "load".

Run: .venv/bin/python bench/bench_foundation.py [--patients N] [--seed S] [--pg postgresql://user@host:port/db]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from regenguide.services.demo import CHUNK, seed_demo
from regenguide.store import schema
from regenguide.store.db import make_engine

RESULTS = Path(__file__).resolve().parent / "results" / "foundation.json"


def _load(url: str, patients: int, seed: int) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        schema.upgrade(engine)
        chunks: list[float] = []
        last = time.perf_counter()

        def tick(_n: int) -> None:
            nonlocal last
            now = time.perf_counter()
            chunks.append(now - last)
            last = now

        start = time.perf_counter()
        summary = seed_demo(engine, patients=patients, seed=seed, progress=tick)
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    return {
        "patients": patients,
        "seed": seed,
        "seconds": round(seconds, 2),
        "patients_per_second": round(patients / seconds, 1) if seconds > 0 else None,
        "rows": summary.total_rows,
        "rows_per_second": round(summary.total_rows / seconds, 1) if seconds > 0 else None,
        "rows_by_table": summary.rows,
        "chunk_patients": CHUNK,
        "slowest_chunk_seconds": round(max(chunks), 3) if chunks else None,
    }


def bench_load(patients: int = 100_000, *, seed: int = 7, pg_url: str | None = None) -> dict[str, Any]:
    """Generate and load `patients` demo patients into a fresh SQLite file (and a fresh PostgreSQL database
    on the server at `pg_url`); returns the timings per database. Databases are removed afterwards."""
    out: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    try:
        db_file = workdir / "bench.db"
        out["sqlite"] = _load(f"sqlite:///{db_file}", patients, seed)
        out["sqlite"]["file_mb"] = round(
            sum(f.stat().st_size for f in workdir.iterdir() if f.name.startswith("bench.db")) / 2**20, 1
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if pg_url:
        base = make_url(pg_url).set(drivername="postgresql+psycopg")
        name = f"rg_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                out["postgresql"] = _load(base.set(database=name).render_as_string(hide_password=False), patients, seed)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
    return out


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}


def write_results(section: str, data: dict[str, Any], path: Path = RESULTS) -> None:
    """Merge `data` under `section` into the results file (other sections, e.g. the API latency, are kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            current = {}
    current[section] = {**data, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    path.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000, help="synthetic patients to load (default 100000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg", metavar="URL", default=None, help="PostgreSQL server URL (a fresh database is made)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load = bench_load(args.patients, seed=args.seed, pg_url=args.pg)
    write_results("load", load, args.output)
    for db, r in load.items():
        print(f"{db:>10}: {r['patients']:,} patients, {r['rows']:,} rows in {r['seconds']:.1f} s "
              f"= {r['patients_per_second']:,.0f} patients/s ({r['rows_per_second']:,.0f} rows/s)")
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
