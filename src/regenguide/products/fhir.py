"""FHIR R4 (R4B models) export of products and administrations.

- `product_to_fhir`: BiologicallyDerivedProduct with the DIN (system = ISBT 128 DIN URI) or local id as
  identifier, category, collection.source = the patient, processing steps from the preparation record,
  parent for aliquots, and the expiry carried in the R5 cross-version extension (R4 has no field for it).
- `administration_to_fhir`: Procedure whose subject is the same patient as the product's
  collection.source; a mismatch raises (chain of identity, never exported silently). The patient bundle
  (`regenguide.interop.fhir`) passes the performer's Practitioner, the injection sites and the procedure
  the administration belongs to (`partOf`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fhir.resources.R4B.biologicallyderivedproduct import BiologicallyDerivedProduct
from fhir.resources.R4B.procedure import Procedure

from regenguide.domain.plan import FAT_MODALITIES, Modality
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import ProductIdentifier
from regenguide.products.preparation import (
    CalPreparation,
    CellTherapyPreparation,
    FatPreparation,
    PrpPreparation,
    SvfPreparation,
)
from regenguide.products.recall import AdministrationRecord

BASE_URL = "https://regenguide.example.org/fhir"  # fullUrl base, as in the patient bundle
XVER_EXPIRATION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-BiologicallyDerivedProduct.expirationDate"
PRODUCT_TYPE_SYSTEM = "urn:regenguide:product-type"
#: `AdministrationRecord.performer` when nobody was recorded: no performer is exported for it.
UNRECORDED_PERFORMER = "unrecorded"
AVAILABLE = {ProductStatus.released, ProductStatus.issued, ProductStatus.returned}

Preparation = PrpPreparation | FatPreparation | SvfPreparation | CalPreparation | CellTherapyPreparation


class ChainOfIdentityError(ValueError):
    pass


def fhir_id(key: str) -> str:
    """A FHIR resource id ([A-Za-z0-9-.]{1,64}) from a product key, e.g. ``A999926000007/B0`` →
    ``A999926000007-B0``."""
    out = re.sub(r"[^A-Za-z0-9\-.]", "-", key)[:64]
    if not out:
        raise ValueError("empty key")
    return out


def _category(ptype: Modality) -> str:
    if ptype is Modality.prp:
        return "fluid"
    if ptype in FAT_MODALITIES:
        return "tissue"
    return "cells"


def _processing(prep: Preparation) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    t = prep.prepared_at.isoformat()
    if isinstance(prep, PrpPreparation):
        for i, spin in enumerate(prep.spins, 1):
            steps.append({"description": f"spin {i}: {spin.g_force:g} x g for {spin.minutes:g} min", "timeDateTime": t})
        if prep.activation != "none":
            steps.append({"description": f"activation: {prep.activation}", "timeDateTime": t})
    elif isinstance(prep, FatPreparation | SvfPreparation | CalPreparation):
        for step in prep.processing:
            extra = f" {step.g_force:g} x g" if step.g_force else ""
            extra += f" {step.minutes:g} min" if step.minutes else ""
            steps.append({"description": f"{step.kind}{extra} {step.description}".strip(), "timeDateTime": t})
        if isinstance(prep, FatPreparation) and prep.emulsification:
            steps.append({"description": f"emulsification: {prep.emulsification.passes} passes", "timeDateTime": t})
        enzyme = getattr(prep, "enzyme", None)
        if enzyme is not None:
            steps.append({"description": f"enzymatic digestion: {enzyme.name} lot {enzyme.lot}", "timeDateTime": t})
    elif isinstance(prep, CellTherapyPreparation):
        if prep.manufacturing_site:
            steps.append(
                {
                    "description": f"manufactured at {prep.manufacturing_site} lot {prep.manufacturing_lot or '-'}",
                    "timeDateTime": t,
                }
            )
        if prep.cryopreservation:
            steps.append(
                {
                    "description": f"cryopreserved ({prep.cryopreservation.cryoprotectant})",
                    "timeDateTime": prep.cryopreservation.frozen_at.isoformat(),
                }
            )
        if prep.thaw:
            steps.append({"description": "thawed", "timeDateTime": prep.thaw.thawed_at.isoformat()})
    return steps


def _identifier(ident: ProductIdentifier) -> dict[str, str]:
    return {"system": ident.system, "value": ident.value}


def product_to_fhir(snapshot: ProductSnapshot, preparation: Preparation | None = None) -> BiologicallyDerivedProduct:
    if preparation is not None and preparation.product_type != snapshot.product_type.value:
        raise ValueError(f"preparation is {preparation.product_type} but the product is {snapshot.product_type.value}")
    ident = snapshot.identifier
    data: dict[str, object] = {
        "id": fhir_id(snapshot.key),
        "identifier": [_identifier(ident)],
        "productCategory": _category(snapshot.product_type),
        "productCode": {
            "coding": [{"system": PRODUCT_TYPE_SYSTEM, "code": snapshot.product_type.value}],
            "text": snapshot.description or snapshot.product_type.value,
        },
        "status": "available" if snapshot.status in AVAILABLE else "unavailable",
        "quantity": 1,
        "collection": {"source": {"reference": f"Patient/{snapshot.patient_id}"}},
    }
    if ident.division != "00":
        data["identifier"] = [
            _identifier(ident),
            {"system": f"{ident.system}#division", "value": ident.division},
        ]
    if snapshot.collected_at is not None:
        data["collection"] = {**data["collection"], "collectedDateTime": snapshot.collected_at.isoformat()}  # type: ignore[dict-item]
    if ident.parent_key is not None:
        data["parent"] = [{"reference": f"BiologicallyDerivedProduct/{fhir_id(ident.parent_key)}"}]
    if snapshot.expires_at is not None:
        data["extension"] = [{"url": XVER_EXPIRATION, "valueDateTime": snapshot.expires_at.isoformat()}]
    if preparation is not None:
        steps = _processing(preparation)
        if steps:
            data["processing"] = steps
    return BiologicallyDerivedProduct.model_validate(data)


def administration_to_fhir(
    administration: AdministrationRecord,
    product: ProductSnapshot,
    *,
    performer: Mapping[str, str] | None = None,
    body_site: Sequence[Mapping[str, Any]] = (),
    part_of: Sequence[str] = (),
    based_on: Sequence[str] = (),
) -> Procedure:
    """Procedure for one administration; raises ChainOfIdentityError when the administration's patient
    or product does not match the product record.

    `performer` is the actor Reference to use (e.g. the Practitioner of the same bundle); without it the
    actor is `administration.performer` as display text, and no performer is written when that is
    `UNRECORDED_PERFORMER`. `body_site` (CodeableConcepts) replaces the text-only site from
    `administration.region`; `part_of` references the procedure(s) the administration belongs to and
    `based_on` the plan (relative references such as ``Procedure/12`` and ``CarePlan/3``).
    """
    if administration.patient_id != product.patient_id:
        raise ChainOfIdentityError(
            f"administration patient {administration.patient_id!r} is not the product's source patient "
            f"{product.patient_id!r}"
        )
    if administration.product_key != product.key:
        raise ChainOfIdentityError(
            f"administration of {administration.product_key} exported with product {product.key}"
        )
    origin = "autologous " if product.autologous else ""
    data: dict[str, object] = {
        "id": fhir_id(administration.administration_id),
        "status": "completed",
        "code": {"text": f"Administration of {origin}{product.product_type.value}"},
        "subject": {"reference": f"Patient/{administration.patient_id}"},
        "performedDateTime": administration.administered_at.isoformat(),
        "usedReference": [
            {
                "reference": f"BiologicallyDerivedProduct/{fhir_id(product.key)}",
                "identifier": _identifier(product.identifier),
            }
        ],
    }
    if performer is not None:
        data["performer"] = [{"actor": dict(performer)}]
    elif administration.performer != UNRECORDED_PERFORMER:
        data["performer"] = [{"actor": {"display": administration.performer}}]
    if body_site:
        data["bodySite"] = [dict(site) for site in body_site]
    elif administration.region:
        data["bodySite"] = [{"text": administration.region}]
    if part_of:
        data["partOf"] = [{"reference": ref} for ref in part_of]
    if based_on:
        data["basedOn"] = [{"reference": ref} for ref in based_on]
    if administration.volume_ml is not None:
        data["note"] = [{"text": f"volume administered: {administration.volume_ml:g} mL"}]
    return Procedure.model_validate(data)
