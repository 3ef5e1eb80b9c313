from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import DIN_SYSTEM_URI, divide, new_din, new_local_id
from regenguide.products.fhir import XVER_EXPIRATION, ChainOfIdentityError, administration_to_fhir, product_to_fhir
from regenguide.products.preparation import LotRef, parse_preparation
from regenguide.products.recall import AdministrationRecord, recall, recall_csv

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _adm(i: int, key: str, lots: list[LotRef], patient: str = "P1", minutes: int = 0) -> AdministrationRecord:
    return AdministrationRecord(
        administration_id=f"ADM-{i}",
        product_key=key,
        product_type="prp",
        patient_id=patient,
        administered_at=T0 + timedelta(minutes=minutes),
        performer="dr.x",
        region="scalp",
        volume_ml=5,
        lots=lots,
    )


KIT_A = LotRef(kind="kit", name="Kit", lot="KIT-A")
KIT_B = LotRef(kind="kit", name="Kit", lot="KIT-B")
COL_1 = LotRef(kind="enzyme", name="collagenase", lot="COL-1")
ACD_1 = LotRef(kind="anticoagulant", name="ACD-A", lot="ACD-1")


@pytest.fixture
def admins() -> list[AdministrationRecord]:
    din = new_din("A9999", 26, 10)
    a0, b0 = divide(din, 2)
    return [
        _adm(1, a0.key, [KIT_A, ACD_1], minutes=30),
        _adm(2, b0.key, [KIT_A, ACD_1], minutes=20),
        _adm(3, new_din("A9999", 26, 11).key, [KIT_B, COL_1], patient="P2"),
        _adm(4, "SITE-26-000001", [COL_1], patient="P3", minutes=5),
    ]


def test_recall_by_product_kit_and_reagent(admins: list[AdministrationRecord]) -> None:
    assert [a.administration_id for a in recall(admins, product_id="A999926000010")] == ["ADM-2", "ADM-1"]
    assert [a.administration_id for a in recall(admins, product_id="A999926000010/B0")] == ["ADM-2"]
    assert [a.administration_id for a in recall(admins, kit_lot="kit-a")] == ["ADM-2", "ADM-1"]
    assert [a.administration_id for a in recall(admins, reagent_lot="COL-1")] == ["ADM-3", "ADM-4"]
    # a kit lot number is not matched as a reagent lot and vice versa
    assert recall(admins, reagent_lot="KIT-A") == []
    assert recall(admins, kit_lot="COL-1") == []
    assert [a.administration_id for a in recall(admins, kit_lot="KIT-B", product_id="SITE-26-000001")] == [
        "ADM-3",
        "ADM-4",
    ]
    with pytest.raises(ValueError):
        recall(admins)


def test_recall_csv(admins: list[AdministrationRecord]) -> None:
    text = recall_csv(recall(admins, kit_lot="KIT-A"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 and rows[0]["administration_id"] == "ADM-2"
    assert rows[0]["kit_lots"] == "Kit:KIT-A" and rows[0]["reagent_lots"] == "anticoagulant:ACD-A:ACD-1"
    assert rows[0]["product_key"] == "A999926000010/B0" and rows[0]["volume_ml"] == "5"
    assert text.splitlines()[0].startswith("administration_id,administered_at")


def _snap(**over: Any) -> ProductSnapshot:
    base: dict[str, Any] = {
        "identifier": new_din("A9999", 21, 123456),
        "product_type": "prp",
        "patient_id": "P1",
        "status": ProductStatus.released,
        "collected_at": T0,
        "expires_at": T0 + timedelta(hours=4),
        "description": "PRP, double spin",
    }
    base.update(over)
    return ProductSnapshot.model_validate(base)


def test_product_to_fhir(f: Any) -> None:
    prep = parse_preparation(f.prp(activation="calcium_chloride"))
    res = product_to_fhir(_snap(), prep)
    data = json.loads(res.model_dump_json())
    assert data["resourceType"] == "BiologicallyDerivedProduct"
    assert data["identifier"][0] == {"system": DIN_SYSTEM_URI, "value": "A999921123456"}
    assert data["productCategory"] == "fluid" and data["status"] == "available"
    assert data["collection"]["source"]["reference"] == "Patient/P1"
    assert data["extension"][0]["url"] == XVER_EXPIRATION
    assert [p["description"] for p in data["processing"]] == [
        "spin 1: 100 x g for 15 min",
        "spin 2: 1600 x g for 20 min",
        "activation: calcium_chloride",
    ]
    # round trip through the R4B model validates
    from fhir.resources.R4B.biologicallyderivedproduct import BiologicallyDerivedProduct

    assert BiologicallyDerivedProduct.model_validate(data).identifier[0].value == "A999921123456"


def test_product_to_fhir_aliquot_and_categories(f: Any) -> None:
    kid = divide(new_din("A9999", 21, 123456), 2)[1]
    data = json.loads(product_to_fhir(_snap(identifier=kid, status=ProductStatus.administered)).model_dump_json())
    assert data["id"] == "A999921123456-B0"
    assert data["parent"][0]["reference"] == "BiologicallyDerivedProduct/A999921123456"
    assert data["status"] == "unavailable"
    svf = parse_preparation(f.svf())
    res = product_to_fhir(_snap(product_type="svf_enzymatic", identifier=new_local_id("SITE", 26, 1)), svf)
    assert res.productCategory == "cells" and res.identifier[0].system == "urn:regenguide:local-product-id"
    assert "collagenase type I lot COL-42" in res.processing[-1].description
    cart = parse_preparation(f.cart())
    res = product_to_fhir(_snap(product_type="car_t"), cart)
    assert [p.description for p in res.processing][-1] == "thawed"
    assert product_to_fhir(_snap(product_type="microfat")).productCategory == "tissue"
    with pytest.raises(ValueError, match="preparation is prp"):
        product_to_fhir(_snap(product_type="car_t"), parse_preparation(f.prp()))


def test_administration_to_fhir() -> None:
    snap = _snap()
    adm = _adm(7, snap.key, [KIT_A])
    proc = administration_to_fhir(adm, snap)
    data = json.loads(proc.model_dump_json())
    assert data["resourceType"] == "Procedure" and data["status"] == "completed"
    assert data["subject"]["reference"] == "Patient/P1"
    assert data["usedReference"][0]["reference"] == "BiologicallyDerivedProduct/A999921123456"
    assert data["bodySite"][0]["text"] == "scalp"
    # chain of identity: the subject must be the product's source patient
    with pytest.raises(ChainOfIdentityError, match="source patient"):
        administration_to_fhir(_adm(8, snap.key, [], patient="P2"), snap)
    with pytest.raises(ChainOfIdentityError):
        administration_to_fhir(_adm(9, "A999921999999", []), snap)


def test_cli_recall_csv_neutralises_formulas() -> None:
    """The recall CSV of the pure module (used by `regenguide product recall`) quotes formula triggers too."""
    import csv
    import io
    from datetime import UTC, datetime

    from regenguide.domain.plan import Modality
    from regenguide.products.preparation import LotRef
    from regenguide.products.recall import AdministrationRecord, recall_csv

    record = AdministrationRecord(
        administration_id="a1", administered_at=datetime(2026, 11, 22, 8, tzinfo=UTC), patient_id="p1",
        product_key="A999926000001", product_type=Modality.prp, performer="=HYPERLINK(\"x\")",
        region="@SUM(A1)", volume_ml=2.0, lots=[LotRef(kind="kit", name="+kit", lot="-L1")],
    )
    rows = list(csv.reader(io.StringIO(recall_csv([record]))))
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells["performer"] == "'=HYPERLINK(\"x\")"
    assert cells["region"] == "'@SUM(A1)"
    assert cells["kit_lots"] == "'+kit:-L1"
    assert cells["volume_ml"] == "2"
