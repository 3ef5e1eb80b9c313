"""API benchmark: latency of fetching one patient's whole record under 16 concurrent clients.

Builds (or reuses with --db FILE) a SQLite database holding N demo patients (default 100,000, loaded by
`regenguide.services.demo.seed_demo` as in bench_foundation.py), starts the real server (uvicorn in a
subprocess, 127.0.0.1 on a free port), logs in as the demo clinician, then sends a bounded number of
requests from concurrent clients (threads, one httpx.Client each) to random patient ids:

- `GET /api/v1/patients/{id}/record` — the whole record as a FHIR R4 Bundle (audited as an export);
- `GET /api/v1/patients/{id}` — one row, for comparison.

Reports p50, p95, p99, mean, max and throughput per endpoint; writes bench/results/api.json.
With --pg URL the same runs against a fresh PostgreSQL database on that server (created, then dropped).

Run: .venv/bin/python bench/bench_api.py [--patients N] [--requests R] [--clients C] [--db FILE] [--pg URL]
     .venv/bin/python bench/bench_api.py --quick      (2,000 patients, 400 requests per endpoint)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from regenguide.services.demo import DEMO_PASSWORD, seed_demo
from regenguide.store import models as m
from regenguide.store import schema
from regenguide.store.db import make_engine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECRET = "bench-secret-key-" + "x" * 32


# --- shared helpers (also used by bench_cds_hooks.py and bench_analytics.py) ------------------------------


def reference_workload_ms(repeats: int = 21) -> float:
    """Median time of a fixed pure-Python workload (build, sort and hash 50,000 tuples): how fast this machine
    ran when the figures were taken. A shared machine's speed varies by a third from one hour to the next;
    with this beside each result, figures of different runs can be compared (same code, twice the reference
    time: expect about twice the figures)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = sorted((i * 7919 % 50_021, str(i)) for i in range(50_000))
        hash(tuple(rows))
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "reference_workload_ms": reference_workload_ms(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_json(name: str, data: dict[str, Any], output: Path | None = None) -> Path:
    path = output or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**data, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarise(latencies_ms: list[float], wall_s: float, errors: int) -> dict[str, Any]:
    s = sorted(latencies_ms)
    return {
        "requests": len(s) + errors,
        "ok": len(s),
        "errors": errors,
        "p50_ms": round(percentile(s, 50), 2),
        "p95_ms": round(percentile(s, 95), 2),
        "p99_ms": round(percentile(s, 99), 2),
        "mean_ms": round(statistics.fmean(s), 2) if s else None,
        "max_ms": round(s[-1], 2) if s else None,
        "wall_s": round(wall_s, 2),
        "throughput_rps": round(len(s) / wall_s, 1) if wall_s > 0 else None,
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(database_url: str, data_dir: Path, workers: int = 1) -> Iterator[str]:
    """The real app under uvicorn in a subprocess on 127.0.0.1 (`workers` processes); yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "REGENGUIDE_DATABASE_URL": database_url,
        "REGENGUIDE_SECRET_KEY": SECRET,
        "REGENGUIDE_DATA_DIR": str(data_dir),
    }
    cmd = [sys.executable, "-m", "uvicorn", "regenguide.api.app:create_server_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login(base: str, username: str = "clinician", password: str = DEMO_PASSWORD) -> str:
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": password}, timeout=30)
    r.raise_for_status()
    return str(r.json()["access_token"])


def _client_threads(
    base: str,
    headers: dict[str, str],
    make_request: Callable[[httpx.Client, int], httpx.Response],
    indices: list[int],
    clients: int,
    ready: Callable[[], object],
) -> tuple[list[float], int, dict[str, int]]:
    """Send make_request(client, i) for every i of `indices` from `clients` threads (one httpx.Client each),
    all starting when `ready()` returns; returns the latencies (ms) of the 200s, the errors, status counts."""
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(indices)
    start_barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        codes: dict[str, int] = {}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            start_barrier.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t0 = time.perf_counter()
                try:
                    r = make_request(c, i)
                    r.read()
                    ok = r.status_code == 200
                    codes[str(r.status_code)] = codes.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    ok = False
                    codes[type(exc).__name__] = codes.get(type(exc).__name__, 0) + 1
                dt = (time.perf_counter() - t0) * 1000
                if ok:
                    mine.append(dt)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    ready()
    start_barrier.wait()
    for t in threads:
        t.join()
    return latencies, errors, statuses


def run_load(
    base: str,
    token: str,
    make_request: Callable[[httpx.Client, int], httpx.Response],
    *,
    requests: int,
    clients: int,
    warmup: int = 20,
    processes: int = 1,
) -> dict[str, Any]:
    """`requests` calls of make_request(client, i) spread over `clients` threads; latency per call.

    With `processes` > 1 the threads are spread over that many forked client processes, so the clients'
    own Python work (one GIL per process) delays fewer of their timestamps: with 32 threads in one process,
    a response that has arrived waits for the client's GIL before its latency is taken."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        for i in range(warmup):
            make_request(c, -1 - i).raise_for_status()
    processes = max(1, min(processes, clients))
    load_before = loadavg()
    if processes == 1:
        started: list[float] = []
        parts = [_client_threads(base, headers, make_request, list(range(requests)), clients,
                                 lambda: started.append(time.perf_counter()))]
        wall = time.perf_counter() - started[0]
    else:
        ctx = multiprocessing.get_context("fork")  # children inherit make_request (a closure) and its data
        barrier = ctx.Barrier(processes + 1)
        queue: Any = ctx.Queue()

        def child(k: int) -> None:
            share = clients // processes + (1 if k < clients % processes else 0)
            queue.put(_client_threads(base, headers, make_request, list(range(k, requests, processes)), share,
                                      lambda: barrier.wait()))

        procs = [ctx.Process(target=child, args=(k,)) for k in range(processes)]
        for proc in procs:
            proc.start()
        barrier.wait()
        t0 = time.perf_counter()
        parts = [queue.get() for _ in procs]
        wall = time.perf_counter() - t0
        for proc in procs:
            proc.join()
    statuses: dict[str, int] = {}
    for _, _, codes in parts:
        for key, v in codes.items():
            statuses[key] = statuses.get(key, 0) + v
    latencies = [x for lat, _, _ in parts for x in lat]
    return {"clients": clients, "client_processes": processes,
            **summarise(latencies, wall, sum(e for _, e, _ in parts)), "status_codes": statuses,
            "loadavg_before": load_before, "loadavg_after": loadavg()}


@contextmanager
def pg_database(pg_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server at pg_url, dropped afterwards; yields its URL."""
    base = make_url(pg_url).set(drivername="postgresql+psycopg")
    name = f"rg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --- this benchmark ------------------------------------------------------------------------------------


def prepare(url: str, patients: int, seed: int) -> dict[str, Any]:
    """Migrate and seed unless the database already holds patients; returns what it holds."""
    engine = make_engine(url)
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            have = int(conn.execute(select(func.count()).select_from(m.Patient)).scalar_one())
        seconds = None
        if have == 0:
            print(f"seeding {patients:,} demo patients …", flush=True)
            t0 = time.perf_counter()
            done = 0

            def tick(n: int) -> None:
                nonlocal done
                done += n
                if done % 20_000 < n:
                    print(f"  {done:,} patients", flush=True)

            seed_demo(engine, patients=patients, seed=seed, progress=tick)
            seconds = round(time.perf_counter() - t0, 1)
        with engine.connect() as conn:
            ids = list(conn.execute(select(m.Patient.id).order_by(m.Patient.id)).scalars())
    finally:
        engine.dispose()
    return {"patients": len(ids), "ids": ids, "seed_seconds": seconds, "reused": seconds is None}


def bench_database(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    info = prepare(url, args.patients, args.seed)
    ids: list[int] = info.pop("ids")
    rng = random.Random(args.seed)
    picks = [rng.choice(ids) for _ in range(args.requests)]
    warm = [rng.choice(ids) for _ in range(50)]
    out: dict[str, Any] = {**info}
    with server(url, data_dir, args.workers) as base:
        token = login(base)

        def record(c: httpx.Client, i: int) -> httpx.Response:
            return c.get(f"/api/v1/patients/{picks[i] if i >= 0 else warm[-i - 1]}/record")

        def patient(c: httpx.Client, i: int) -> httpx.Response:
            return c.get(f"/api/v1/patients/{picks[i] if i >= 0 else warm[-i - 1]}")

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            sample = c.get(f"/api/v1/patients/{picks[0]}/record").json()
            out["record_entries_sample"] = len(sample.get("entry", []))
        for name, fn in (("record", record), ("patient", patient)):
            print(f"  GET {name}: {args.requests} requests, {args.clients} clients …", flush=True)
            r = run_load(base, token, fn, requests=args.requests, clients=args.clients)
            out[name] = {"endpoint": "GET /api/v1/patients/{id}/record" if name == "record"
                         else "GET /api/v1/patients/{id}", **r}
            print(f"    p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"{r['throughput_rps']} req/s, errors {r['errors']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000, help="demo patients to load (default 100000)")
    parser.add_argument("--requests", type=int, default=2_000, help="requests per endpoint (default 2000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file to reuse (seeded on first use and kept); default a temporary file")
    parser.add_argument("--pg", metavar="URL", default=None, help="PostgreSQL server URL (a fresh database is made)")
    parser.add_argument("--quick", action="store_true", help="2,000 patients and 400 requests per endpoint")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/api.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.requests = min(args.patients, 2_000), min(args.requests, 400)

    results: dict[str, Any] = {
        "benchmark": "api", "quick": args.quick, "requested_patients": args.patients, "seed": args.seed,
        "requests_per_endpoint": args.requests, "clients": args.clients,
        "server": f"uvicorn, {args.workers} worker(s) (subprocess)", "workers": args.workers,
        "loadavg_start": loadavg(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-api-"))
    try:
        db_file = args.db.resolve() if args.db else workdir / "bench.db"
        print(f"SQLite: {'reusing ' if db_file.exists() else ''}{db_file.name}", flush=True)
        results["sqlite"] = bench_database(f"sqlite:///{db_file}", workdir, args)
        if args.pg:
            print("PostgreSQL: fresh database", flush=True)
            with pg_database(args.pg) as url:
                results["postgresql"] = bench_database(url, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_end"] = loadavg()
    path = write_json("api", results, args.output)
    print(f"results in {path}")


if __name__ == "__main__":
    main()
