from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def prp_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "product_type": "prp",
        "prepared_at": T0.isoformat(),
        "operator": "nurse.a",
        "blood_volume_ml": 30,
        "anticoagulant": "acd_a",
        "anticoagulant_volume_ml": 3,
        "anticoagulant_lot": {"kind": "anticoagulant", "name": "ACD-A", "lot": "AC-77"},
        "kit": {"kind": "kit", "name": "DemoKit PRP", "lot": "KIT-2026-01"},
        "spins": [{"g_force": 100, "minutes": 15}, {"g_force": 1600, "minutes": 20}],
        "baseline": {
            "platelets_per_uL": 200_000,
            "leukocytes_per_uL": 6_000,
            "neutrophils_per_uL": 3_600,
            "rbc_per_uL": 4_800_000,
        },
        "product": {
            "platelets_per_uL": 1_000_000,
            "leukocytes_per_uL": 4_000,
            "neutrophils_per_uL": 1_000,
            "rbc_per_uL": 50_000,
        },
        "product_volume_ml": 5,
        "activation": "none",
    }
    data.update(over)
    return data


def fat_harvest() -> dict[str, Any]:
    return {
        "donor_site": "abdomen",
        "cannula_diameter_mm": 2.5,
        "suction_pressure_mmHg": 500,
        "lipoaspirate_volume_ml": 120,
    }


def svf_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "product_type": "svf_enzymatic",
        "prepared_at": T0.isoformat(),
        "operator": "lab.b",
        "harvest": fat_harvest(),
        "fat_processed_ml": 100,
        "enzyme": {"name": "collagenase type I", "lot": "COL-42", "minutes": 30, "temperature_c": 37},
        "isolation": {"total_cells": 2e7, "viability_percent": 85, "suspension_volume_ml": 5},
    }
    data.update(over)
    return data


def cart_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "product_type": "car_t",
        "prepared_at": "2026-10-20T09:00:00+00:00",
        "operator": "cell.lab",
        "collection": {"method": "leukapheresis", "collected_at": "2026-10-01T08:00:00+00:00"},
        "manufacturing_site": "Site M",
        "manufacturing_lot": "MFG-123",
        "total_cells": 1e8,
        "dose_basis": "CAR+ viable T cells",
        "viability_percent": 90,
        "volume_ml": 50,
        "patient_weight_kg": 50,
        "release_tests": [
            {"test": "sterility", "result": "pass"},
            {"test": "mycoplasma", "result": "pass"},
            {"test": "endotoxin", "result": "pass", "value": 0.5, "unit": "EU/mL"},
        ],
        "cryopreservation": {
            "cryoprotectant": "DMSO",
            "frozen_at": "2026-10-20T12:00:00+00:00",
            "storage_temperature_c": -150,
        },
        "thaw": {"thawed_at": "2026-11-22T07:30:00+00:00"},
    }
    data.update(over)
    return data


@pytest.fixture
def t0() -> datetime:
    return T0


class Factories:
    """Builders of valid raw records; tests override fields to make them invalid."""

    t0 = T0
    prp = staticmethod(prp_dict)
    svf = staticmethod(svf_dict)
    cart = staticmethod(cart_dict)
    fat_harvest = staticmethod(fat_harvest)


@pytest.fixture
def f() -> type[Factories]:
    return Factories
