"""A patient's whole record as a FHIR R4 Bundle (the same document as `regenguide export fhir`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from regenguide.api.deps import Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.interop.fhir import patient_bundle_json
from regenguide.security import Permission as P

router = APIRouter(tags=["patients"])
Identified = Annotated[Principal, Depends(require(P.patient_read, P.patient_identify))]


@router.get("/patients/{patient_id}/record", summary="The patient's whole record as a FHIR R4 Bundle",
            responses={200: {"content": {"application/fhir+json": {}}}})
def record(patient_id: int, db: SessionDep, user: Identified) -> Any:
    try:
        bundle = patient_bundle_json(db, patient_id)
    except LookupError:
        raise ProblemError(404, "Not found", f"patients {patient_id} does not exist", type_="not-found") from None
    audit(db, user, user.audit("export", "patients", patient_id, patient_id, {"format": "fhir-r4-bundle",
                                                                              "entries": len(bundle.get("entry", []))}))
    db.commit()
    return bundle
