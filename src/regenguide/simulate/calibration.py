"""Data-driven calibration: fit the uncertain model parameters to observed retention (follow-up volumes).

Each observation is one deposit geometry (or the representative deposit of an injection) with the retained
fraction measured at follow-up. The fit is nonlinear least squares (SciPy `least_squares`, trust-region
reflective, bounded), on the zero-order closed form so that every evaluation is vectorised over the cohort.
Consumption is fitted on a log scale. Standard errors come from the Jacobian at the optimum
(cov = s^2 (J^T J)^-1); they are approximate and meaningless when a parameter sits on its bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import least_squares

from regenguide.simulate.parameters import GraftKnowledge, load_graft_knowledge, nominal_parameters
from regenguide.simulate.retention import closed_form_zones, retained_fraction, take_multiplier

#: Parameters that may be fitted, with bounds wide enough for a clinic's data (the YAML ranges are priors,
#: not limits; consumption may move tenfold either way).
FITTABLE = ("consumption_mol_cm3_s", "take_survival", "take_regenerating", "adipocyte_threshold_mmhg")
DEFAULT_FIT = ("consumption_mol_cm3_s", "take_survival", "take_regenerating")


class Observation(BaseModel):
    """One deposit with its observed retained volume fraction."""

    model_config = ConfigDict(extra="forbid")

    geometry: Literal["slab", "cylinder", "sphere"]
    diameter_mm: float = Field(gt=0, le=200)
    observed_retention: float = Field(ge=0, le=1.5, description="retained / injected volume at follow-up")
    modality: Literal["microfat", "nanofat", "cal"] = "microfat"
    processing: str = "unspecified"
    obese: bool = False
    perfusion: Literal["low", "normal", "high"] | None = None
    weight: float = Field(default=1.0, gt=0)


class CalibrationRequest(BaseModel):
    """Request body for a calibration (the HTTP API shares it)."""

    model_config = ConfigDict(extra="forbid")

    observations: list[Observation] = Field(min_length=2, max_length=100_000)
    fit: list[str] = Field(default_factory=lambda: list(DEFAULT_FIT), min_length=1)


class CalibrationResult(BaseModel):
    fitted: dict[str, float]
    standard_errors: dict[str, float | None]
    initial: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    at_bound: list[str]
    n: int
    rmse: float
    r_squared: float | None
    residuals: list[float] = Field(description="observed - predicted, in observation order")
    predicted: list[float]
    converged: bool
    message: str


def _bounds(name: str, kb: GraftKnowledge) -> tuple[float, float]:
    nominal = kb.value(name)
    if name == "consumption_mol_cm3_s":
        return nominal / 10.0, nominal * 10.0
    if name == "adipocyte_threshold_mmhg":
        return 1.0, 0.98 * kb.value("boundary_po2_obese_mmhg")
    return 0.0, 1.0


def predict_observations(
    observations: Sequence[Observation], values: dict[str, float], knowledge: GraftKnowledge | None = None
) -> np.ndarray:
    """Model retention of every observation with the given parameter values (others nominal)."""
    kb = knowledge or load_graft_knowledge()
    out = np.empty(len(observations))
    groups: dict[tuple[str, bool, str | None], list[int]] = {}
    for i, obs in enumerate(observations):
        groups.setdefault((obs.geometry, obs.obese, obs.perfusion), []).append(i)
    for (geometry, obese, perfusion), idx in groups.items():
        p = nominal_parameters(kb, obese=obese, perfusion=perfusion, **values)
        radius = np.array([observations[i].diameter_mm / 20.0 for i in idx])
        zones = closed_form_zones(geometry, radius, p)
        mult = np.array(
            [
                float(
                    take_multiplier(
                        observations[i].modality, observations[i].processing, p.cal_retention_factor, kb
                    )
                )
                for i in idx
            ]
        )
        nano = np.array([observations[i].modality == "nanofat" for i in idx])
        fr = zones["fractions"]
        plain = retained_fraction(
            fr, take_survival=p.take_survival, take_regenerating=p.take_regenerating, multiplier=mult
        )
        nanofat = retained_fraction(
            fr,
            take_survival=p.take_survival,
            take_regenerating=p.take_regenerating,
            multiplier=mult,
            nanofat=True,
        )
        out[idx] = np.where(nano, nanofat, plain)
    return out


def calibrate(
    observations: Sequence[Observation | dict[str, object]],
    *,
    fit: Sequence[str] = DEFAULT_FIT,
    knowledge: GraftKnowledge | None = None,
) -> CalibrationResult:
    """Fit `fit` parameters to observed retention; report fitted values, standard errors and residuals."""
    kb = knowledge or load_graft_knowledge()
    obs = [o if isinstance(o, Observation) else Observation.model_validate(o) for o in observations]
    unknown = [name for name in fit if name not in FITTABLE]
    if unknown:
        raise ValueError(f"cannot fit {unknown}; fittable parameters: {list(FITTABLE)}")
    if not fit:
        raise ValueError("nothing to fit")
    if len(obs) < len(fit) + 1:
        raise ValueError(f"need at least {len(fit) + 1} observations to fit {len(fit)} parameters")
    for o in obs:
        if o.processing not in kb.processing:
            raise ValueError(f"unknown processing {o.processing!r}; use one of {sorted(kb.processing)}")
    y = np.array([o.observed_retention for o in obs])
    w = np.sqrt(np.array([o.weight for o in obs]))
    log_scale = [name == "consumption_mol_cm3_s" for name in fit]
    bounds = {name: _bounds(name, kb) for name in fit}
    initial = {name: kb.value(name) for name in fit}

    def to_x(values: dict[str, float]) -> np.ndarray:
        return np.array(
            [math.log(values[n]) if lg else values[n] for n, lg in zip(fit, log_scale, strict=True)]
        )

    def from_x(x: np.ndarray) -> dict[str, float]:
        return {n: float(math.exp(v) if lg else v) for n, v, lg in zip(fit, x, log_scale, strict=True)}

    lo = to_x({n: b[0] for n, b in bounds.items()})
    hi = to_x({n: b[1] for n, b in bounds.items()})

    def residual(x: np.ndarray) -> np.ndarray:
        return w * (predict_observations(obs, from_x(x), kb) - y)

    x0 = np.clip(to_x(initial), lo + 1e-9, hi - 1e-9)
    sol = least_squares(residual, x0, bounds=(lo, hi), x_scale="jac", method="trf")
    fitted = from_x(sol.x)
    predicted = predict_observations(obs, fitted, kb)
    resid = y - predicted
    dof = max(len(obs) - len(fit), 1)
    s2 = float(np.sum((w * resid) ** 2) / dof)
    errors: dict[str, float | None] = dict.fromkeys(fit)
    try:
        cov = s2 * np.linalg.inv(sol.jac.T @ sol.jac)
        for k, (name, lg) in enumerate(zip(fit, log_scale, strict=True)):
            se = math.sqrt(max(float(cov[k, k]), 0.0))
            errors[name] = se * fitted[name] if lg else se  # delta method for the log scale
    except np.linalg.LinAlgError:
        pass
    at_bound = [
        n for n, v, a, b in zip(fit, sol.x, lo, hi, strict=True) if abs(v - a) < 1e-6 or abs(v - b) < 1e-6
    ]
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return CalibrationResult(
        fitted=fitted,
        standard_errors=errors,
        initial=initial,
        bounds=bounds,
        at_bound=at_bound,
        n=len(obs),
        rmse=float(np.sqrt(np.mean(resid**2))),
        r_squared=1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else None,
        residuals=[float(r) for r in resid],
        predicted=[float(p) for p in predicted],
        converged=bool(sol.success),
        message=str(sol.message),
    )


def calibrate_request(req: CalibrationRequest) -> CalibrationResult:
    return calibrate(req.observations, fit=req.fit)
