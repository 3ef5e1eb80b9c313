"""Graft survival simulation and evidence synthesis over HTTP (stateless, plus registry calibration)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from regenguide.api.deps import CurrentUser, Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.security import Permission as P
from regenguide.simulate import (
    CalibrationRequest,
    CalibrationResult,
    PlanPrediction,
    PlanPredictionRequest,
    SimulationRequest,
    SimulationResult,
    calibrate_request,
    predict_plan_request,
    simulate,
)

router = APIRouter()
Research = Annotated[Principal, Depends(require(P.research_read))]


@router.post("/graft/simulate", response_model=SimulationResult, tags=["graft simulator"],
             summary="Oxygen diffusion, zones and predicted retention of one deposit")
def graft_simulate(body: Annotated[SimulationRequest, Body()], user: CurrentUser) -> SimulationResult:
    try:
        return simulate(body)
    except ValueError as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None


@router.post("/graft/plan", response_model=PlanPrediction, tags=["graft simulator"],
             summary="Predicted retention per injection and for a fat-grafting plan, with recommendations")
def graft_plan(body: Annotated[PlanPredictionRequest, Body()], user: CurrentUser) -> PlanPrediction:
    try:
        return predict_plan_request(body)
    except ValueError as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None


@router.post("/graft/calibrate", response_model=CalibrationResult, tags=["graft simulator"],
             summary="Fit the model's uncertain parameters to observed retention")
def graft_calibrate(body: Annotated[CalibrationRequest, Body()], user: CurrentUser) -> CalibrationResult:
    try:
        return calibrate_request(body)
    except ValueError as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None


@router.post("/graft/calibrate/registry", response_model=CalibrationResult, tags=["graft simulator"],
             summary="Calibrate against this registry's graft volume follow-up measurements")
def graft_calibrate_registry(db: SessionDep, user: Research) -> CalibrationResult:
    from regenguide.services.graft_registry import calibrate_from_registry

    try:
        result = calibrate_from_registry(db.connection())
    except ValueError as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="not-enough-data") from None
    audit(db, user, user.audit("read", "analytics_graft_calibration", None, None, {"n": result.n}))
    db.commit()
    return result


class MetaRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measure: Literal["RR", "OR", "RD", "MD", "SMD", "GEN"]
    method: Literal["FE", "DL", "REML", "PM", "MH"] = "REML"
    knha: bool = False
    studies: list[dict[str, Any]] = Field(
        min_length=1, max_length=100_000,
        description="rows with the CLI's CSV columns: study + 2×2 counts, means/SDs/n, or yi/vi (measure GEN)",
    )


@router.post("/evidence/meta-analysis", tags=["evidence"], summary="Meta-analysis of study-level data")
def meta_analysis(body: MetaRequest, user: CurrentUser) -> dict[str, Any]:
    from regenguide.evidence.io import EvidenceInputError, effects_from_frame
    from regenguide.evidence.meta import MetaAnalysisError
    from regenguide.evidence.meta import meta_analysis as run

    frame = pd.DataFrame(body.studies)
    try:
        es = effects_from_frame(frame, body.measure if body.measure != "GEN" else "GEN")
        return run(es, body.method, knha=body.knha).to_json_dict()
    except (EvidenceInputError, MetaAnalysisError, ValueError) as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None


class SurvivalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: list[float] = Field(min_length=1)
    event: list[int] = Field(min_length=1)
    group: list[str] | None = None


@router.post("/evidence/survival", tags=["evidence"], summary="Kaplan–Meier per group with the log-rank test")
def survival(body: SurvivalRequest, user: CurrentUser) -> dict[str, Any]:
    from regenguide.evidence.survival import SurvivalInputError, kaplan_meier

    try:
        return kaplan_meier(body.time, body.event, body.group).to_json_dict()
    except (SurvivalInputError, ValueError) as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None

