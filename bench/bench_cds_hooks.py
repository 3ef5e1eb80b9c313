"""CDS Hooks benchmark: the `order-sign` service under 32 concurrent clients (target: p99 well under 500 ms).

40-injection plans (plan document contract `regenguide.plan/1`, like the examples in
`regenguide/kb/data/examples/`) are mapped to draft orders (FHIR R4 ServiceRequests) with
`regenguide.cds.hooks.plan_to_draft_orders` and posted to `POST /cds-services/regenguide-plan-check` of the
real server (uvicorn in a subprocess on 127.0.0.1, small SQLite demo database). Cases:

- `microfat_careful_with_patient`: ten facial regions, ultrasound with Doppler, blunt cannula, small
  aliquots; context.patientId names a stored patient, so the service reads the patient and the consent and
  appends to the audit chain (one write per call), as an EHR call does;
- `microfat_careless_with_patient`: the same regions without imaging, sharp needles, large boluses;
- `microfat_careful_anonymous`: no patientId — the check only, no database access;
- `prp_scalp_with_patient`: a 40-injection scalp PRP session (no graft simulation for PRP).

`in_process` splits one call's time without HTTP: orders → plan, the full check (knowledge-base rules
plus finding producers such as the graft simulation), the rules alone, findings → cards.
Writes bench/results/cds_hooks.json.

Run: .venv/bin/python bench/bench_cds_hooks.py [--requests R] [--clients C] [--patients N] [--pg URL] [--workers W]
     .venv/bin/python bench/bench_cds_hooks.py --quick      (160 requests per case)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench_api import loadavg, login, pg_database, prepare, run_load, server, write_json

from regenguide.cds.engine import check_plan
from regenguide.cds.hooks import draft_orders_to_plan, grouped_cards, plan_to_draft_orders, service_requests
from regenguide.domain.plan import PlanDocument
from regenguide.services import plans as plan_service

SERVICE = "/cds-services/regenguide-plan-check"
JSON = {"Content-Type": "application/json"}
# (region, side, careful plane) — facial regions of the knowledge base vocabulary, high-risk zones included
REGIONS = [
    ("glabella", "midline", "subdermal"),
    ("forehead", "midline", "intradermal"),
    ("temple", "left", "interfascial"),
    ("temple", "right", "supraperiosteal"),
    ("midface", "left", "subcutaneous"),
    ("midface", "right", "subcutaneous"),
    ("nasolabial_fold", "left", "intradermal"),
    ("nasolabial_fold", "right", "supraperiosteal"),
    ("chin", "midline", "supraperiosteal"),
    ("mandible", "left", "subcutaneous"),
]


def forty_injection_plan(careful: bool, modality: str = "microfat") -> PlanDocument:
    """40 injections over ten facial regions (microfat), or 40 intradermal scalp injections (PRP series)."""
    injections = []
    for i in range(40):
        if modality == "prp":
            injections.append({"region": "scalp", "side": "midline", "plane": "intradermal", "device": "needle",
                               "gauge": 30, "volume_ml": 0.1, "needle_depth_mm": 3})
            continue
        region, side, plane = REGIONS[i % len(REGIONS)]
        injections.append({
            "region": region, "side": side, "plane": plane if careful else "subcutaneous",
            "device": "cannula" if careful else "needle", "gauge": 22 if careful else 27,
            "volume_ml": 0.25 if careful else 1.5, "bolus_ml": 0.05 if careful else 0.3,
        })
    doc: dict[str, Any] = {
        "schema": "regenguide.plan/1",
        "jurisdiction": "US",
        "patient": {"age": 50, "sex": "female", "pregnant": False},
        "indication": "facial_volume_loss",
        "modality": modality,
        "same_surgical_procedure": True,
        "homologous_use": True,
        "guidance": {"imaging": "ultrasound", "doppler": True} if careful else {"imaging": "none", "doppler": False},
        "injections": injections,
    }
    if modality == "prp":
        doc.update(indication="androgenetic_alopecia", same_surgical_procedure=False,
                   course={"sessions": 4, "interval_weeks": 4})
    return PlanDocument.model_validate(doc)


# (case name, modality, careful, with patient)
CASES = [
    ("microfat_careful_with_patient", "microfat", True, True),
    ("microfat_careless_with_patient", "microfat", False, True),
    ("microfat_careful_anonymous", "microfat", True, False),
    ("prp_scalp_with_patient", "prp", True, True),
]


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 3)


def in_process(runs: int) -> dict[str, Any]:
    """Where a call's time goes, without HTTP: orders → plan, the full check (knowledge-base rules and the
    finding producers, e.g. the graft simulation), the knowledge-base rules alone, findings → cards."""
    out: dict[str, Any] = {"runs": runs}
    for name, modality, careful, _ in CASES:
        if not name.endswith("with_patient"):
            continue
        plan = forty_injection_plan(careful, modality)
        draft = plan_to_draft_orders(plan, "Patient/1")
        parsed = draft_orders_to_plan(draft, {})
        assert parsed is not None
        result = plan_service.check(parsed)
        orders = service_requests(draft)
        out[name.removesuffix("_with_patient")] = {
            "findings": len(result.findings),
            "draft_orders_to_plan_ms": _median_ms(lambda d=draft: draft_orders_to_plan(d, {}), runs),
            "check_with_producers_ms": _median_ms(lambda p=parsed: plan_service.check(p), runs),
            "check_kb_rules_only_ms": _median_ms(lambda p=parsed: check_plan(p), runs),
            "cards_ms": _median_ms(lambda r=result, o=orders: grouped_cards(r.findings, o), runs),
        }
    return out


def hook_request(draft: dict[str, Any], patient_id: int | None) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/bench", "draftOrders": draft}
    if patient_id is not None:
        context["patientId"] = str(patient_id)
    return {"hook": "order-sign", "hookInstance": str(uuid.uuid4()), "context": context}


WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_bodies.lua"


def wrk_load(base: str, token: str, bodies: list[bytes], *, seconds: int, clients: int,
             threads: int = 2) -> dict[str, Any]:
    """POST the bodies (in turn, per connection) for `seconds` from `clients` keep-alive connections of wrk, a
    load generator in C; the same figures as `run_load` (wrk reports latency percentiles in microseconds)."""
    with tempfile.TemporaryDirectory(prefix="rg-wrk-") as tmp:
        paths = []
        for i, body in enumerate(bodies):
            path = Path(tmp) / f"body{i}.json"
            path.write_bytes(body)
            paths.append(str(path))
        out = Path(tmp) / "summary.json"
        cmd = ["wrk", f"-t{min(threads, clients)}", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s",
               "-s", str(WRK_SCRIPT), "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
               f"{base}{SERVICE}", "--", *paths]
        load_before = loadavg()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RG_WRK_OUT": str(out)})
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        w = json.loads(out.read_text())
    errors = w["errors_status"] + w["errors_connect"] + w["errors_read"] + w["errors_write"] + w["errors_timeout"]
    wall = w["duration_us"] / 1e6
    return {"clients": clients, "load_generator": "wrk", "requests": w["requests"], "ok": w["requests"] - errors,
            "errors": errors, "p50_ms": round(w["p50_us"] / 1000, 2), "p95_ms": round(w["p95_us"] / 1000, 2),
            "p99_ms": round(w["p99_us"] / 1000, 2), "mean_ms": round(w["mean_us"] / 1000, 2),
            "max_ms": round(w["max_us"] / 1000, 2), "wall_s": round(wall, 2),
            "throughput_rps": round(w["requests"] / wall, 1) if wall > 0 else None,
            "status_codes": {"200": w["requests"] - w["errors_status"], "other": w["errors_status"]},
            "loadavg_before": load_before, "loadavg_after": loadavg()}


def bench_database(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    ids: list[int] = prepare(url, args.patients, args.seed)["ids"]
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"patients": len(ids)}
    with server(url, data_dir, args.workers) as base:
        token = login(base)
        for name, modality, careful, with_patient in CASES:
            if args.cases and name not in args.cases:
                continue
            plan = forty_injection_plan(careful, modality)
            picks = [rng.choice(ids) for _ in range(64)]
            # Bodies are encoded once, beforehand: the figures are the service's, not the time the load
            # generator (on the same two cores) spends serialising 40 KB of JSON before each call.
            bodies = [json.dumps(hook_request(plan_to_draft_orders(plan, f"Patient/{p}"),
                                              p if with_patient else None)).encode() for p in picks]

            def call(c: httpx.Client, i: int, bodies: list[bytes] = bodies) -> httpx.Response:
                return c.post(SERVICE, content=bodies[i % len(bodies)], headers=JSON)

            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                sample = c.post(SERVICE, content=bodies[0], headers=JSON)
                sample.raise_for_status()
                cards = sample.json()["cards"]
            amount = f"{args.seconds} s" if args.load == "wrk" else f"{args.requests} requests"
            print(f"  {name}: {len(cards)} cards, {amount}, {args.clients} clients ({args.load}) …", flush=True)
            # Warm-up, not measured: every worker process serves some requests of this case first, so the
            # figures are the steady state rather than each process's first calls.
            if args.load == "wrk":
                wrk_load(base, token, bodies, seconds=2, clients=args.clients)
                r = wrk_load(base, token, bodies, seconds=args.seconds, clients=args.clients)
            else:
                run_load(base, token, call, requests=2 * args.clients, clients=args.clients,
                         processes=args.client_processes)
                r = {"load_generator": "httpx", **run_load(base, token, call, requests=args.requests,
                                                          clients=args.clients, processes=args.client_processes)}
            out[name] = {"modality": modality, "injections": len(plan.injections), "cards": len(cards),
                         "critical_cards": sum(1 for x in cards if x.get("indicator") == "critical"),
                         "request_bytes": len(bodies[0]),
                         "response_bytes": len(sample.content), **r,
                         "p99_under_500ms": bool(r["p99_ms"] < 500)}
            print(f"    p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['throughput_rps']} req/s, "
                  f"errors {r['errors']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=640, help="requests per case (default 640)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--patients", type=int, default=200, help="demo patients in the database (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg", metavar="URL", default=None, help="PostgreSQL server URL (a fresh database is made)")
    parser.add_argument("--quick", action="store_true", help="160 requests per case")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="uvicorn worker processes (default: one per core, at most 4, as `regenguide serve`)")
    parser.add_argument("--cases", type=lambda v: v.split(","), default=None,
                        help=f"comma-separated subset of the cases ({', '.join(c[0] for c in CASES)})")
    parser.add_argument("--load", choices=["auto", "wrk", "httpx"], default="auto",
                        help="load generator: wrk (C; Debian package wrk) or httpx threads; auto: wrk when installed")
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per case with wrk (default 20)")
    parser.add_argument("--client-processes", type=int, default=4,
                        help="httpx load: processes the clients' threads are spread over (default 4)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default bench/results/cds_hooks.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 160)
        args.seconds = min(args.seconds, 5)
    unknown = sorted(set(args.cases or ()) - {c[0] for c in CASES})
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    if args.load == "auto":
        args.load = "wrk" if shutil.which("wrk") else "httpx"
    results: dict[str, Any] = {
        "benchmark": "cds_hooks", "quick": args.quick, "service": f"POST {SERVICE}", "hook": "order-sign",
        "requests_per_case": args.requests, "clients": args.clients, "target_p99_ms": 500,
        "server": f"uvicorn, {args.workers} worker(s) (subprocess)", "workers": args.workers,
        "load_generator": args.load, "client_processes": args.client_processes if args.load == "httpx" else None,
        "seconds_per_case": args.seconds if args.load == "wrk" else None,
        "loadavg_start": loadavg(),
    }
    print("in process …", flush=True)
    results["in_process"] = in_process(5 if args.quick else 20)
    print(json.dumps(results["in_process"], indent=1), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-cds-"))
    try:
        print("SQLite", flush=True)
        results["sqlite"] = bench_database(f"sqlite:///{workdir / 'bench.db'}", workdir, args)
        if args.pg:
            print("PostgreSQL", flush=True)
            with pg_database(args.pg) as url:
                results["postgresql"] = bench_database(url, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_end"] = loadavg()
    path = write_json("cds_hooks", results, args.output)
    print(f"results in {path}")


if __name__ == "__main__":
    main()
