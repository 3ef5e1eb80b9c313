"""Graft survival simulator: O2 reaction-diffusion in fat-graft deposits, survival/regenerating/necrotic
zones, predicted volume retention with uncertainty, plan integration and calibration to observed retention.

Public entry points (pure functions on pydantic/plain data; no database, API or CLI imports):

* `simulate(SimulationRequest) -> SimulationResult` (one deposit)
* `predict_plan(PlanDocument, ...) -> PlanPrediction`, `predict_plan_request(PlanPredictionRequest)` and
  `graft_findings(PlanDocument) -> list[Finding]`
* `simulate_cross_section(CrossSectionRequest)`, `simulate_first_days(DaysRequest)`
* `calibrate(observations) -> CalibrationResult`, `calibrate_request(CalibrationRequest)`
"""

from __future__ import annotations

from regenguide.simulate.bed import (
    CrossSectionRequest,
    CrossSectionResult,
    DaysRequest,
    DaysResult,
    simulate_cross_section,
    simulate_first_days,
)
from regenguide.simulate.calibration import (
    CalibrationRequest,
    CalibrationResult,
    Observation,
    calibrate,
    calibrate_request,
)
from regenguide.simulate.plan import (
    InjectionPrediction,
    PlanPrediction,
    PlanPredictionRequest,
    Recommendation,
    graft_findings,
    predict_plan,
    predict_plan_request,
)
from regenguide.simulate.retention import SimulationRequest, SimulationResult, ZoneReport, simulate

__all__ = [
    "CalibrationRequest",
    "CalibrationResult",
    "CrossSectionRequest",
    "CrossSectionResult",
    "DaysRequest",
    "DaysResult",
    "InjectionPrediction",
    "Observation",
    "PlanPrediction",
    "PlanPredictionRequest",
    "Recommendation",
    "SimulationRequest",
    "SimulationResult",
    "ZoneReport",
    "calibrate",
    "calibrate_request",
    "graft_findings",
    "predict_plan",
    "predict_plan_request",
    "simulate",
    "simulate_cross_section",
    "simulate_first_days",
]
