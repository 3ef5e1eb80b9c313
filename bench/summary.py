"""Summarise bench/results/*.json as the Markdown table the README shows.

    .venv/bin/python bench/summary.py            # print the table
    .venv/bin/python bench/summary.py --readme   # rewrite the table between the README's bench markers

The README's figures are therefore always the committed JSON results, never hand-copied numbers
(tests/kb/test_docs_in_sync.py checks that the README holds exactly this output).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START = "<!-- bench:start (bench/summary.py --readme writes this table) -->"
END = "<!-- bench:end -->"

Row = tuple[str, str, str, str]


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _num(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    text = f"{float(value):,.{digits}f}"
    return f"{text} {unit}".rstrip()


def _yes(value: Any) -> str:
    return "–" if value is None else ("met" if value else "**not met**")


def _foundation(d: dict[str, Any]) -> list[Row]:
    rows = []
    for db in ("sqlite", "postgresql"):
        load = d.get("load", {}).get(db)
        if load:
            rows.append((f"Demo cohort load, {load['patients']:,} patients ({db})",
                         f"{_num(load['seconds'], 0, 's')} ({_num(load['patients_per_second'])} patients/s, "
                         f"{_num(load['rows'])} rows)", "–", "foundation.json"))
    return rows


def _api(d: dict[str, Any]) -> list[Row]:
    rows = []
    for db in ("sqlite", "postgresql"):
        rec = _get(d, db, "record")
        if rec:
            rows.append((f"Whole patient record (FHIR Bundle), {d.get('clients')} clients, "
                         f"{_get(d, db, 'patients'):,} patients ({db})",
                         f"p50 {_num(rec['p50_ms'], 0, 'ms')}, p99 {_num(rec['p99_ms'], 0, 'ms')}, "
                         f"{_num(rec['throughput_rps'], 1)} req/s, {rec['errors']} errors", "–", "api.json"))
    return rows


def _plan_check(d: dict[str, Any]) -> list[Row]:
    rows = []
    for case in ("careful_plan", "risky_plan"):
        c = d.get(case)
        if c:
            rows.append((f"Plan check in process, 40 injections ({case.replace('_', ' ')}, {c['findings']} findings)",
                         f"median {_num(c['median_ms'], 2, 'ms')}, p99 {_num(c['p99_ms'], 2, 'ms')}",
                         f"median ≤ 1 ms: {_yes(c['median_ms'] <= 1.0)}", "plan_check.json"))
    return rows


def _cds_hooks(d: dict[str, Any]) -> list[Row]:
    rows = []
    for db in ("sqlite", "postgresql"):
        cases = d.get(db) or {}
        for name, c in cases.items():
            if not isinstance(c, dict) or "p99_ms" not in c:
                continue
            rows.append((f"CDS Hooks order-sign `{name}`, {c['clients']} clients ({db})",
                         f"p50 {_num(c['p50_ms'], 0, 'ms')}, p99 {_num(c['p99_ms'], 0, 'ms')}, "
                         f"{c['errors']} errors",
                         f"p99 < 500 ms: {_yes(c.get('p99_under_500ms'))}", "cds_hooks.json"))
    return rows


def _analytics(d: dict[str, Any]) -> list[Row]:
    rows = []
    for db in ("sqlite", "postgresql"):
        analyses = _get(d, db, "analyses")
        if analyses:
            total = sum(a["seconds"] for a in analyses.values())
            slowest = max(analyses.items(), key=lambda kv: kv[1]["seconds"])
            ok = all(a.get("check_ok") for a in analyses.values())
            rows.append((f"Registry analytics, {d['procedures']:,} procedures, all {len(analyses)} analyses ({db})",
                         f"{_num(total, 1, 's')} (slowest `{slowest[0]}` {_num(slowest[1]['seconds'], 1, 's')})",
                         f"denominators checked: {'yes' if ok else '**no**'}", "analytics.json"))
    return rows


def _graft(d: dict[str, Any]) -> list[Row]:
    cases = d.get("cases", {})
    rows = []
    for name, c in cases.items():
        rows.append((f"Graft simulator `{name}`", f"median {_num(c.get('ms_median'), 1, 'ms')}",
                     "plan < 1 s: " + _yes(c.get("ms_median", 0) < 1000) if name.startswith("plan") else "–",
                     "graft.json"))
    return rows


def _doppler(d: dict[str, Any]) -> list[Row]:
    target = d.get("target_fps", 60)
    return [(f"Doppler extraction 640×480 `{name}`", f"{_num(c.get('fps_median'))} frames/s",
             f"≥ {target:g} fps: {_yes(c.get('fps_median', 0) >= target)}", "doppler.json")
            for name, c in d.get("cases", {}).items()]


def _evidence(d: dict[str, Any]) -> list[Row]:
    rows = []
    meta = d.get("meta_analysis_k1000_s", {})
    if "REML" in meta:
        rows.append(("Meta-analysis, 1,000 studies, REML", _num(meta["REML"] * 1000, 1, "ms"), "–", "evidence.json"))
    surv = d.get("survival_1e6_rows_s", {})
    for name, seconds in surv.items():
        if name.startswith("kaplan_meier+logrank (3"):
            rows.append(("Kaplan–Meier + log-rank, 1,000,000 rows, 3 groups", _num(seconds, 2, "s"), "–",
                         "evidence.json"))
    return rows


def _products(d: dict[str, Any]) -> list[Row]:
    r = d.get("results", {})
    names = {"mod37_2_check_char": "ISBT 128 check character (ISO 7064 MOD 37-2)",
             "verify_bedside": "Bedside verification", "label_pdf": "Product label, PDF",
             "recall_kit_lot_100000_records": "Recall by kit lot, 100,000 records"}
    rows = []
    for key, label in names.items():
        if key in r:
            us = r[key]["median_us"]
            rows.append((label, _num(us, 1, "µs") if us < 1000 else _num(us / 1000, 1, "ms"), "–", "products.json"))
    return rows


def _outcomes(d: dict[str, Any]) -> list[Row]:
    c = _get(d, "cases", "build_schedule_5000_patients")
    if not c:
        return []
    return [("Follow-up schedules, 5,000 patients", f"{_num(c['seconds_median'], 2, 's')} "
             f"({_num(c['us_per_item'])} µs a patient)", "–", "outcomes.json")]


SECTIONS: list[tuple[str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("foundation", _foundation), ("api", _api), ("plan_check", _plan_check), ("cds_hooks", _cds_hooks),
    ("analytics", _analytics), ("graft", _graft), ("doppler", _doppler), ("evidence", _evidence),
    ("products", _products), ("outcomes", _outcomes),
]


def table() -> str:
    lines = ["| benchmark | result | target | file |", "|---|---|---|---|"]
    for name, render in SECTIONS:
        data = _load(name)
        if data is None:
            continue
        lines += [f"| {a} | {b} | {c} | `bench/results/{f}` |" for a, b, c, f in render(data)]
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    start, end = text.index(START), text.index(END)
    return text[: start + len(START)] + "\n" + table() + "\n" + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite the README's benchmark table")
    args = parser.parse_args()
    if args.readme:
        README.write_text(readme_with_table(README.read_text()))
    else:
        print(table())


if __name__ == "__main__":
    main()
