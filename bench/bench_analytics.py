"""Registry analytics benchmark: each analysis of `regenguide.services.analytics` on a synthetic registry of
1,000,000 procedures (default; --procedures N).

The registry is generated with numpy (deterministic for --seed, fully vectorised) and bulk-inserted with
SQLAlchemy Core into a fresh, migrated SQLite file (and, with --pg URL, a fresh PostgreSQL database that is
dropped afterwards). Rows per 1,000,000 procedures, roughly: 370,000 patients, 1,500,000 performed
injections, 1,000,000 follow-up visits, ~35,000 adverse events, ~670,000 observations (graft retention
after fat grafting, and a wrinkle-severity score at baseline and follow-up). All schema constraints hold
(foreign keys, check constraints, unique keys). Tables are ANALYZEd after the load.

Each analysis is timed once on a cold-ish connection pool (--repeat R times to take the best), and its
denominator is checked against what was generated (`check_ok`). Writes bench/results/analytics.json.

Run: .venv/bin/python bench/bench_analytics.py [--procedures N] [--seed S] [--repeat R] [--pg URL] [--db FILE]
     .venv/bin/python bench/bench_analytics.py --quick      (50,000 procedures)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from bench_api import loadavg, pg_database, write_json
from sqlalchemy import Engine, Table, func, insert, select, text

from regenguide.services import analytics
from regenguide.store import models as m
from regenguide.store import schema
from regenguide.store.db import make_engine

CHUNK = 50_000
AS_OF = np.datetime64("2026-11-01")

# modality, share of patients, is a series (PRP-like courses of 3 sessions), regions
MODALITIES: list[tuple[str, float, bool, list[str]]] = [
    ("prp", 0.34, True, ["scalp", "midface", "periorbital", "forehead"]),
    ("microfat", 0.20, False, ["midface", "temple", "nasolabial_fold", "chin", "glabella", "lips"]),
    ("nanofat", 0.10, False, ["periorbital", "forehead", "nasolabial_fold", "lips"]),
    ("svf_mechanical", 0.05, False, ["midface", "scalp"]),
    ("svf_enzymatic", 0.02, False, ["midface", "scalp"]),
    ("cal", 0.03, False, ["breast", "midface"]),
    ("microneedling", 0.22, True, ["cheek", "forehead", "thigh", "abdomen"]),
    ("bmac", 0.03, False, ["knee", "hip"]),
    ("hsct_autologous", 0.005, False, ["iliac_crest"]),
    ("car_t", 0.005, False, ["iliac_crest"]),
]
FAT = {"microfat", "nanofat", "svf_mechanical", "svf_enzymatic", "cal"}
PROCESSING = np.array(["centrifugation", "decantation", "filtration", "washing"])
GUIDANCE = np.array(["none", "ultrasound", "ct", "mri", "fluoroscopy"])
GUIDANCE_P = [0.45, 0.48, 0.03, 0.02, 0.02]
AE_TYPES = np.array(["bruising", "oedema", "infection", "nodule", "fat_necrosis", "oil_cyst", "contour_irregularity",
                     "vascular_occlusion"])
AE_TYPES_P = [0.35, 0.25, 0.08, 0.1, 0.08, 0.06, 0.07, 0.01]
RELATEDNESS = np.array(["certain", "probable", "possible", "unlikely"])
OUTCOMES = np.array(["recovered", "recovering", "not_recovered", "recovered_with_sequelae", "unknown"])
VISIT_STATUS = np.array(["completed", "missed", "scheduled", "cancelled"])
VISIT_STATUS_P = [0.7, 0.15, 0.1, 0.05]
SIDES = np.array(["left", "right", "midline", "bilateral"])


def generate(procedures: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Column arrays per table; ids start at 1 and every foreign key points to an existing row."""
    rng = np.random.default_rng(seed)
    n = procedures
    # patients: procedures drawn onto ~n/2.5 patients, sorted so each patient's procedures are adjacent
    n_pat_draw = max(1, int(n / 2.5))
    owner = np.sort(rng.integers(0, n_pat_draw, n))
    uniq, owner = np.unique(owner, return_inverse=True)
    n_pat = len(uniq)
    pat_id = np.arange(1, n_pat + 1)
    shares = np.array([s for _, s, _, _ in MODALITIES])
    pat_mod = rng.choice(len(MODALITIES), n_pat, p=shares / shares.sum())
    birth = np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n_pat).astype("timedelta64[D]")
    sex = np.where(rng.random(n_pat) < 0.8, "female", "male")
    patients = {
        "id": pat_id, "site_id": np.ones(n_pat, dtype=np.int64),
        "mrn": np.char.add("SYN", pat_id.astype(str)), "given_name": np.full(n_pat, "Synthetic"),
        "family_name": np.char.add("Patient", (pat_id % 997).astype(str)), "birth_date": birth, "sex": sex,
        "research_consent": rng.random(n_pat) < 0.6, "version": np.ones(n_pat, dtype=np.int64),
    }
    # procedures: rank within patient, modality of the patient's programme, dates spaced by course
    proc_id = np.arange(1, n + 1)
    first_of = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    rank = np.arange(n) - np.repeat(first_of, np.diff(np.r_[first_of, n]))
    mod_idx = pat_mod[owner]
    modality = np.array([m_ for m_, _, _, _ in MODALITIES])[mod_idx]
    series = np.array([s for _, _, s, _ in MODALITIES])[mod_idx]
    session = np.where(series, rank % 3 + 1, 1)
    gap = np.where(series, 30, 200 + rng.integers(0, 400, n))  # days between procedures
    start = AS_OF - (365 * 4) + rng.integers(0, 365 * 2, n_pat).astype("timedelta64[D]")
    performed = (start[owner] + (np.cumsum(gap) - np.repeat(np.cumsum(gap)[first_of] , np.diff(np.r_[first_of, n])))
                 .astype("timedelta64[D]")).astype("datetime64[s]") + rng.integers(8 * 3600, 18 * 3600, n)
    guidance = rng.choice(GUIDANCE, n, p=GUIDANCE_P)
    is_fat = np.isin(modality, list(FAT))
    processing = np.where(is_fat, rng.choice(PROCESSING, n), None)
    procs = {
        "id": proc_id, "patient_id": owner + 1, "modality": modality, "performed_at": performed,
        "guidance_imaging": guidance, "doppler": (guidance == "ultrasound") & (rng.random(n) < 0.7),
        "session_number": session, "processing_method": processing, "version": np.ones(n, dtype=np.int64),
    }
    # performed injections: 1 or 2 per procedure, regions from the modality's list
    n_inj = 1 + (rng.random(n) < 0.5)
    inj_proc = np.repeat(proc_id, n_inj)
    inj_seq = np.arange(len(inj_proc)) - np.repeat(np.cumsum(n_inj) - n_inj, n_inj)
    inj_mod = np.repeat(mod_idx, n_inj)
    region = np.empty(len(inj_proc), dtype=object)
    for k, (_, _, _, regions) in enumerate(MODALITIES):
        sel = inj_mod == k
        region[sel] = rng.choice(np.array(regions), int(sel.sum()))
    volume = np.round(rng.uniform(0.2, 10.0, len(inj_proc)), 2)
    injections = {
        "id": np.arange(1, len(inj_proc) + 1), "procedure_id": inj_proc, "seq": inj_seq, "region": region,
        "side": rng.choice(SIDES, len(inj_proc)), "device": rng.choice(np.array(["needle", "cannula"]), len(inj_proc)),
        "gauge": rng.integers(18, 31, len(inj_proc)), "volume_ml": volume,
        "bolus_ml": np.round(np.minimum(volume, rng.uniform(0.02, 0.5, len(inj_proc))), 3),
    }
    # adverse events: risk higher by landmark technique and for fat grafting
    risk = np.where(guidance == "none", 0.04, 0.02) * np.where(is_fat, 1.5, 1.0)
    ae_proc = np.flatnonzero(rng.random(n) < risk)
    k_ae = len(ae_proc)
    onset = performed[ae_proc].astype("datetime64[D]") + rng.integers(0, 30, k_ae).astype("timedelta64[D]")
    outcome = rng.choice(OUTCOMES, k_ae, p=[0.7, 0.1, 0.05, 0.05, 0.1])
    resolved = np.where(np.isin(outcome, ["recovered", "recovered_with_sequelae"]),
                        (onset + rng.integers(1, 60, k_ae).astype("timedelta64[D]")).astype(object), None)
    severity = rng.choice(np.arange(1, 6), k_ae, p=[0.6, 0.28, 0.09, 0.025, 0.005])
    events = {
        "id": np.arange(1, k_ae + 1), "patient_id": owner[ae_proc] + 1, "procedure_id": proc_id[ae_proc],
        "event_type": rng.choice(AE_TYPES, k_ae, p=AE_TYPES_P), "severity": severity, "serious": severity >= 3,
        "relatedness": rng.choice(RELATEDNESS, k_ae), "onset_on": onset, "outcome": outcome, "resolved_on": resolved,
        "version": np.ones(k_ae, dtype=np.int64),
    }
    # follow-up visits: one per procedure, 3 months after
    due = performed.astype("datetime64[D]") + np.timedelta64(91, "D")
    status = rng.choice(VISIT_STATUS, n, p=VISIT_STATUS_P)
    status = np.where((due > AS_OF) & (status != "cancelled"), "scheduled", status)
    completed = np.where(status == "completed",
                         (due + rng.integers(-7, 8, n).astype("timedelta64[D]")).astype(object), None)
    visits = {
        "id": proc_id, "patient_id": owner + 1, "procedure_id": proc_id, "label": np.full(n, "3 months"),
        "due_on": due, "window_start": due - np.timedelta64(14, "D"), "window_end": due + np.timedelta64(14, "D"),
        "status": status, "completed_on": completed, "version": np.ones(n, dtype=np.int64),
    }
    # observations: graft retention (%) at the visit of each completed fat procedure; wrinkle severity (1-5)
    # at baseline (first procedure) and at the last completed visit for 60% of patients
    ret = np.flatnonzero(is_fat & (status == "completed"))
    base_value = rng.integers(2, 6, n_pat)
    scored = rng.random(n_pat) < 0.6
    last_of = np.r_[first_of[1:], n] - 1
    obs_parts = [
        {"patient_id": owner[ret] + 1, "procedure_id": proc_id[ret], "visit_id": proc_id[ret],
         "code": np.full(len(ret), "graft_retention"),
         "value": np.round(np.clip(rng.normal(np.where(processing[ret] == "centrifugation", 55, 45), 15), 0, 100), 1),
         "unit": np.full(len(ret), "%"), "observed_at": due[ret].astype("datetime64[s]")},
        {"patient_id": pat_id[scored], "procedure_id": proc_id[first_of[scored]], "visit_id": None,
         "code": np.full(int(scored.sum()), "wsrs"), "value": base_value[scored].astype(float),
         "unit": np.full(int(scored.sum()), "{score}"), "observed_at": performed[first_of[scored]] - 3600},
        {"patient_id": pat_id[scored], "procedure_id": proc_id[last_of[scored]], "visit_id": None,
         "code": np.full(int(scored.sum()), "wsrs"),
         "value": np.clip(base_value[scored] - rng.integers(0, 3, int(scored.sum())), 1, 5).astype(float),
         "unit": np.full(int(scored.sum()), "{score}"),
         "observed_at": (due[last_of[scored]]).astype("datetime64[s]") + 3600},
    ]
    n_obs = sum(len(p["code"]) for p in obs_parts)
    observations: dict[str, np.ndarray] = {"id": np.arange(1, n_obs + 1)}
    for col in ("patient_id", "procedure_id", "visit_id", "code", "value", "unit", "observed_at"):
        parts = [p[col] if p[col] is not None else np.full(len(p["code"]), None, dtype=object) for p in obs_parts]
        observations[col] = np.concatenate([np.asarray(x, dtype=object) if x.dtype == object else x for x in parts])
    return {"patients": patients, "procedures": procs, "performed_injections": injections,
            "followup_visits": visits, "adverse_events": events, "observations": observations}


def _rows(columns: dict[str, np.ndarray], lo: int, hi: int) -> list[dict[str, Any]]:
    names = list(columns)
    lists = [columns[c][lo:hi].tolist() for c in names]  # numpy datetime64 → datetime / date objects
    return [dict(zip(names, values, strict=True)) for values in zip(*lists, strict=True)]


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, total, CHUNK):
        yield lo, min(total, lo + CHUNK)


def load(engine: Engine, data: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Bulk insert (SQLAlchemy Core executemany, 50,000 rows a statement) in foreign-key order."""
    schema.upgrade(engine)
    timings: dict[str, float] = {}
    tables: dict[str, Table] = {t: m.Base.metadata.tables[t] for t in data}
    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(m.Site)).scalar_one() == 0:
            conn.execute(insert(m.Site.__table__), [{"id": 1, "name": "Synthetic registry", "jurisdiction": "US"}])
        site_id = conn.execute(select(func.min(m.Site.id))).scalar_one()
    data["patients"]["site_id"][:] = site_id
    for name in ("patients", "procedures", "performed_injections", "followup_visits", "adverse_events",
                 "observations"):
        cols = data[name]
        total = len(cols["id"])
        t0 = time.perf_counter()
        with engine.begin() as conn:
            for lo, hi in _chunks(total):
                conn.execute(insert(tables[name]), _rows(cols, lo, hi))
        timings[name] = round(time.perf_counter() - t0, 2)
        print(f"  {name}: {total:,} rows in {timings[name]} s", flush=True)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    timings["analyze"] = round(time.perf_counter() - t0, 2)
    return timings


def expected(data: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
    procs, visits, obs = data["procedures"], data["followup_visits"], data["observations"]
    fat_ret = obs["code"] == "graft_retention"
    wsrs = obs["patient_id"][obs["code"] == "wsrs"]
    inj = data["performed_injections"]
    region_code = np.unique(inj["region"].astype(str), return_inverse=True)[1]
    mod_code = np.unique(procs["modality"].astype(str), return_inverse=True)[1]
    first = procs["session_number"] == 1
    return {
        "procedures": len(procs["id"]),
        "procedures_with_event": len(np.unique(data["adverse_events"]["procedure_id"])),
        "procedure_regions": len(np.unique(inj["procedure_id"].astype(np.int64) * 64 + region_code)),
        "retention_measurements": int(fat_ret.sum()),
        "wsrs_pairs": int((np.unique(wsrs.astype(np.int64), return_counts=True)[1] >= 2).sum()),
        "visits": len(visits["id"]),
        "treated_patients": len(np.unique(procs["patient_id"])),
        "first_courses": len(np.unique(procs["patient_id"][first].astype(np.int64) * 64 + mod_code[first])),
    }


def analyses(exp: dict[str, int]) -> list[tuple[str, Callable[[Engine], dict[str, Any]],
                                                Callable[[dict[str, Any]], dict[str, Any]]]]:
    """(name, call, denominator check) per analysis."""

    def rates(grouping: analytics.Grouping, key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def check(r: dict[str, Any]) -> dict[str, Any]:
            n = sum(row["n"] for row in r["rows"])
            events = sum(row["events"] for row in r["rows"])
            ok = r["total"] == exp["procedures"] and n == exp[key]
            if key == "procedures":
                ok = ok and events == exp["procedures_with_event"]
            return {"denominator": r["denominator"], "total": r["total"], "groups": len(r["rows"]),
                    "sum_n": n, "sum_events": events, "expected_sum_n": exp[key], "check_ok": ok}
        return check

    def gvl(r: dict[str, Any]) -> dict[str, Any]:
        events = r["image_guided"]["events"] + r["landmark"]["events"]
        return {"denominator": r["denominator"], "n": r["n"], "events": events,
                "crude_rr": r.get("crude_rr", {}).get("rr"),
                "mh_rr": r.get("mantel_haenszel_rr", {}).get("rr"),
                "check_ok": r["n"] == exp["procedures"] and events == exp["procedures_with_event"]}

    def retention(r: dict[str, Any]) -> dict[str, Any]:
        n = sum(row["n"] for row in r["rows"])
        return {"denominator": r["denominator"], "n": n, "groups": len(r["rows"]),
                "check_ok": n == exp["retention_measurements"]}

    def durability(r: dict[str, Any]) -> dict[str, Any]:
        # the analysis drops rows with zero follow-up days, so n may be slightly below the first courses
        return {"denominator": r.get("denominator"), "n": r["n"], "first_courses": exp["first_courses"],
                "check_ok": 0 < r["n"] <= exp["first_courses"]}

    def change(r: dict[str, Any]) -> dict[str, Any]:
        return {"denominator": r["denominator"], "n": r["n"], "mean_change": r.get("mean_change"),
                "check_ok": r["n"] == exp["wsrs_pairs"]}

    def completeness(r: dict[str, Any]) -> dict[str, Any]:
        visits = sum(r["visits"].values())
        return {"denominator": "visits", "visits": visits, "treated_patients": r["treated_patients"],
                "check_ok": visits == exp["visits"] and r["treated_patients"] == exp["treated_patients"]}

    return [
        ("complication_rates[modality]", lambda e: analytics.complication_rates(e, "modality"),
         rates("modality", "procedures")),
        ("complication_rates[guidance]", lambda e: analytics.complication_rates(e, "guidance"),
         rates("guidance", "procedures")),
        ("complication_rates[region]", lambda e: analytics.complication_rates(e, "region"),
         rates("region", "procedure_regions")),
        ("complication_rates[modality_region]", lambda e: analytics.complication_rates(e, "modality_region"),
         rates("modality_region", "procedure_regions")),
        ("guided_vs_landmark", analytics.guided_vs_landmark, gvl),
        ("retention_by_processing", analytics.retention_by_processing, retention),
        ("durability", analytics.durability, durability),
        ("change_from_baseline[wsrs]", lambda e: analytics.change_from_baseline(e, "wsrs"), change),
        ("follow_up_completeness", analytics.follow_up_completeness, completeness),
    ]


def bench_database(url: str, data: dict[str, dict[str, np.ndarray]], exp: dict[str, int], repeat: int,
                   reuse: bool) -> dict[str, Any]:
    engine = make_engine(url)
    out: dict[str, Any] = {}
    try:
        if reuse:
            with engine.connect() as conn:
                have = conn.execute(select(func.count()).select_from(m.Procedure)).scalar_one()
            if have != exp["procedures"]:
                raise SystemExit(f"--db holds {have} procedures, not {exp['procedures']}: use a new file")
            out["load_seconds"] = None
        else:
            t0 = time.perf_counter()
            out["load_seconds_by_table"] = load(engine, data)
            out["load_seconds"] = round(time.perf_counter() - t0, 2)
            out["rows"] = {name: len(cols["id"]) for name, cols in data.items()}
        results: dict[str, Any] = {}
        for name, call, check in analyses(exp):
            times = []
            result: dict[str, Any] = {}
            for _ in range(repeat):
                t0 = time.perf_counter()
                result = call(engine)
                times.append(time.perf_counter() - t0)
            results[name] = {"seconds": round(min(times), 3), "runs": [round(t, 3) for t in times],
                             "loadavg": loadavg(), **check(result)}
            flag = "" if results[name]["check_ok"] else "  (denominator check FAILED)"
            print(f"  {name:<38} {min(times):8.3f} s{flag}", flush=True)
        out["analyses"] = results
        out["total_analysis_seconds"] = round(sum(r["seconds"] for r in results.values()), 2)
    finally:
        engine.dispose()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procedures", type=int, default=1_000_000, help="procedures (default 1000000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=1, help="runs per analysis; the best is reported (default 1)")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file: loaded on first use and kept, reused afterwards (same N and seed)")
    parser.add_argument("--pg", metavar="URL", default=None, help="PostgreSQL server URL (a fresh database is made)")
    parser.add_argument("--quick", action="store_true", help="50,000 procedures")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.procedures = min(args.procedures, 50_000)
    print(f"generating {args.procedures:,} procedures …", flush=True)
    t0 = time.perf_counter()
    data = generate(args.procedures, args.seed)
    gen_seconds = round(time.perf_counter() - t0, 2)
    exp = expected(data)
    print(f"  {gen_seconds} s; {sum(len(c['id']) for c in data.values()):,} rows", flush=True)
    results: dict[str, Any] = {
        "benchmark": "analytics", "quick": args.quick, "procedures": args.procedures, "seed": args.seed,
        "repeat": args.repeat, "generate_seconds": gen_seconds, "expected": exp, "loadavg_start": loadavg(),
        "as_of": str(date.fromisoformat(str(AS_OF))),
    }
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-analytics-"))
    try:
        db_file = args.db.resolve() if args.db else workdir / "registry.db"
        reuse = db_file.exists()
        print(f"SQLite{' (reused)' if reuse else ''}", flush=True)
        results["sqlite"] = bench_database(f"sqlite:///{db_file}", data, exp, args.repeat, reuse)
        if not args.db:
            results["sqlite"]["file_mb"] = round(db_file.stat().st_size / 2**20, 1)
        if args.pg:
            print("PostgreSQL", flush=True)
            with pg_database(args.pg) as url:
                results["postgresql"] = bench_database(url, data, exp, args.repeat, False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_end"] = loadavg()
    path = write_json("analytics", results, args.output)
    print(f"results in {path}")
    if not all(r["check_ok"] for db in ("sqlite", "postgresql") if db in results
               for r in results[db]["analyses"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
