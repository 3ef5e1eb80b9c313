"""Benchmark of the products module: identifier checks, bedside verification, metrics, labels, recall, FHIR.

Run: .venv/bin/python bench/bench_products.py  → writes bench/results/products.json
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from regenguide.products.bedside import ConsentStatus, verify_bedside
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import mod37_2_char, new_din, parse_identifier
from regenguide.products.fhir import product_to_fhir
from regenguide.products.labels import LabelData, render_label_pdf, render_label_png
from regenguide.products.metrics import prp_metrics
from regenguide.products.preparation import LotRef, PrpPreparation, parse_preparation
from regenguide.products.recall import AdministrationRecord, recall, recall_csv

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def per_call(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    fn()  # warm-up (loads YAML, fonts)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - start) / repeat)
    times.sort()
    return {"median_us": times[2] * 1e6, "best_us": times[0] * 1e6, "calls_per_round": repeat}


def main() -> None:
    din = new_din("A9999", 21, 123456)
    snap = ProductSnapshot(
        identifier=din,
        product_type="prp",
        patient_id="MRN-1",
        status=ProductStatus.released,
        collected_at=T0,
        expires_at=T0 + timedelta(hours=4),
    )
    consent = ConsentStatus(state="signed")
    prep = parse_preparation(
        {
            "product_type": "prp",
            "prepared_at": T0.isoformat(),
            "operator": "n",
            "blood_volume_ml": 30,
            "anticoagulant": "acd_a",
            "spins": [{"g_force": 100, "minutes": 15}, {"g_force": 1600, "minutes": 20}],
            "baseline": {"platelets_per_uL": 2e5, "leukocytes_per_uL": 6000, "rbc_per_uL": 4.8e6},
            "product": {"platelets_per_uL": 1e6, "leukocytes_per_uL": 4000, "rbc_per_uL": 5e4},
            "product_volume_ml": 5,
        }
    )
    assert isinstance(prep, PrpPreparation)
    label = LabelData(
        identifier=din,
        product_type="prp",
        patient_name="Jane Example",
        patient_dob=date(1980, 5, 17),
        patient_record_number="MRN-1",
        collected_at=T0,
        expires_at=T0 + timedelta(hours=4),
        volume_ml=5,
    )
    n_admin = 100_000
    admins = [
        AdministrationRecord(
            administration_id=f"A{i}",
            product_key=f"A99992600{i % 10000:04d}",
            product_type="prp",
            patient_id=f"P{i % 5000}",
            administered_at=T0 + timedelta(minutes=i),
            performer="dr",
            lots=[
                LotRef(kind="kit", name="Kit", lot=f"K{i % 200}"),
                LotRef(kind="enzyme", name="col", lot=f"C{i % 50}"),
            ],
        )
        for i in range(n_admin)
    ]
    results: dict[str, object] = {
        "mod37_2_check_char": per_call(lambda: mod37_2_char("A999921123456"), 20_000),
        "parse_identifier_keyed": per_call(lambda: parse_identifier("A9999 21 123456 3"), 5_000),
        "verify_bedside": per_call(
            lambda: verify_bedside("MRN-1", "=A99992112345600", snap, "MRN-1", True, consent, T0), 2_000
        ),
        "prp_metrics": per_call(lambda: prp_metrics(prep), 2_000),
        "product_to_fhir": per_call(lambda: product_to_fhir(snap, prep), 500),
        "label_pdf": per_call(lambda: render_label_pdf(label), 20),
        "label_png_300dpi": per_call(lambda: render_label_png(label), 10),
        f"recall_kit_lot_{n_admin}_records": per_call(lambda: recall(admins, kit_lot="K7"), 3),
    }
    hits = recall(admins, kit_lot="K7")
    results["recall_csv_rows"] = per_call(lambda: recall_csv(hits), 20) | {"rows": len(hits)}
    out = {
        "topic": "products",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    path = Path(__file__).parent / "results" / "products.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    for name, value in results.items():
        print(f"{name:40s} {value['median_us']:12.1f} µs")  # type: ignore[index]


if __name__ == "__main__":
    main()
