"""Zones and predicted volume retention of one deposit, with a Monte Carlo uncertainty interval.

Model (see docs/graft-simulator.md):

* The steady O2 field of a freshly grafted, avascular deposit splits it into three zones (Eto 2012):
  survival (pO2 >= adipocyte threshold), regenerating (adipocytes die, ASCs survive) and necrotic
  (pO2 < necrosis threshold, near-anoxia).
* Retained fraction = multiplier * (take_survival * f_survival + take_regenerating * f_regenerating),
  capped at 1, where f are volume fractions of the zones; the necrotic zone is resorbed (or becomes oil
  cysts).
* The multiplier is the processing factor (Wu 2018 ratios) times the cell-assisted factor for CAL.
  Nanofat has no viable adipocytes (Tonnard 2013): its survival zone only regenerates.
* Zero-order kinetics use the closed form, so thousands of draws cost milliseconds; Michaelis-Menten
  kinetics use the numerical solver (fewer draws, one solve per draw).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from regenguide.simulate import closed_form as cf
from regenguide.simulate import oxygen as ox
from regenguide.simulate.parameters import (
    GraftKnowledge,
    ModelParameters,
    load_graft_knowledge,
    nominal_parameters,
    parameter_report,
    sample_parameters,
    unverified_parameters,
)

GraftModality = Literal["microfat", "nanofat", "cal"]

DISCLAIMER = (
    "Model prediction for planning support, not a measurement. Several parameters are expert opinion or "
    "unverified (listed in 'unverified_parameters'); the interval reflects parameter uncertainty only."
)


def take_multiplier(
    modality: str, processing: str, cal_factor: np.ndarray | float, knowledge: GraftKnowledge | None = None
) -> np.ndarray:
    """Multiplier of the take fractions for a modality and processing method."""
    kb = knowledge or load_graft_knowledge()
    if processing not in kb.processing:
        raise ValueError(f"unknown processing {processing!r}; use one of {sorted(kb.processing)}")
    mult = np.asarray(kb.processing[processing].value, dtype=float)
    if modality == "cal":
        mult = mult * np.asarray(cal_factor, dtype=float)
    return mult


def retained_fraction(
    fractions: dict[str, np.ndarray],
    *,
    take_survival: np.ndarray | float,
    take_regenerating: np.ndarray | float,
    multiplier: np.ndarray | float,
    nanofat: bool = False,
) -> np.ndarray:
    """Retained volume fraction from zone volume fractions (elementwise, broadcasting)."""
    ts = take_regenerating if nanofat else take_survival
    raw = np.asarray(multiplier) * (
        np.asarray(ts) * fractions["survival"] + np.asarray(take_regenerating) * fractions["regenerating"]
    )
    return np.clip(raw, 0.0, 1.0)


def closed_form_zones(geometry: str, radius_cm: object, p: dict[str, np.ndarray] | ModelParameters) -> dict:
    """Zone radii and fractions (zero-order closed form) for parameters `p` (nominal or draws, broadcast
    against `radius_cm`)."""
    get = (lambda k: p[k]) if isinstance(p, dict) else (lambda k: getattr(p, k))  # noqa: E731
    alpha = get("solubility_mol_cm3_mmhg")
    c0 = alpha * get("boundary_po2_mmhg")
    radii = cf.zone_radii(
        geometry,
        radius_cm,
        diffusivity=get("diffusivity_cm2_s"),
        c0=c0,
        consumption=get("consumption_mol_cm3_s"),
        c_adipocyte=alpha * get("adipocyte_threshold_mmhg"),
        c_necrosis=alpha * get("necrosis_threshold_mmhg"),
    )
    return {"radii": radii, "fractions": cf.zone_fractions(geometry, radii)}


def monte_carlo_retention(
    geometry: str,
    radius_cm: np.ndarray,
    draws: dict[str, np.ndarray],
    *,
    modality: str = "microfat",
    processing: str = "unspecified",
    knowledge: GraftKnowledge | None = None,
) -> np.ndarray:
    """Retained fraction for every draw (rows) and deposit radius (columns), zero-order closed form."""
    radius = np.asarray(radius_cm, dtype=float).reshape(1, -1)
    col = {k: np.asarray(v, dtype=float).reshape(-1, 1) for k, v in draws.items()}
    zones = closed_form_zones(geometry, radius, col)
    mult = take_multiplier(modality, processing, col["cal_retention_factor"], knowledge)
    return retained_fraction(
        zones["fractions"],
        take_survival=col["take_survival"],
        take_regenerating=col["take_regenerating"],
        multiplier=mult,
        nanofat=modality == "nanofat",
    )


# ----------------------------------------------------------------------------------------------------
# Request / response models (shared by the CLI and the HTTP API)
# ----------------------------------------------------------------------------------------------------


class SimulationRequest(BaseModel):
    """One deposit: a slab (planar graft; diameter = thickness), a cylinder (a strand left by one cannula
    pass) or a sphere (a bolus). Optional values override the knowledge-base nominal values."""

    model_config = ConfigDict(extra="forbid")

    geometry: Literal["slab", "cylinder", "sphere"]
    diameter_mm: float = Field(gt=0, le=200, description="strand or bolus diameter, slab thickness (mm)")
    kinetics: Literal["zero", "mm"] = "zero"
    diffusivity_cm2_s: float | None = Field(default=None, gt=0, le=1e-3)
    boundary_po2_mmhg: float | None = Field(default=None, gt=0, le=760)
    consumption_mol_cm3_s: float | None = Field(default=None, gt=0, le=1e-5)
    solubility_mol_cm3_mmhg: float | None = Field(default=None, gt=0, le=1e-6)
    obese: bool = Field(default=False, description="overweight/obese recipient (lower subcutaneous pO2)")
    perfusion: Literal["low", "normal", "high"] | None = None
    modality: GraftModality = "microfat"
    processing: str = "unspecified"
    draws: int = Field(default=2000, ge=10, le=200_000)
    interval: float = Field(default=0.90, gt=0, lt=1)
    seed: int | None = 0
    grid_cells: int = Field(default=400, ge=20, le=20_000)


class ZoneReport(BaseModel):
    survival_zone_mm: float = Field(description="width of the survival zone from the edge")
    regenerating_zone_mm: float = Field(description="width of the regenerating zone")
    necrotic_core_diameter_mm: float = Field(description="diameter (slab: thickness) of the necrotic core")
    viable_rim_mm: float = Field(description="edge-to-necrosis distance (the whole deposit when no necrosis)")
    survival_fraction: float
    regenerating_fraction: float
    necrotic_fraction: float


class ParameterUsed(BaseModel):
    name: str
    value: float
    unit: str
    evidence: str
    citations: list[str]
    overridden: bool = False


class SimulationResult(BaseModel):
    geometry: str
    diameter_mm: float
    kinetics: str
    critical_size_mm: float = Field(description="largest diameter (slab: thickness) with no anoxic core")
    anoxic_core_diameter_mm: float
    zones: ZoneReport
    predicted_retention: float = Field(description="retained volume fraction at nominal parameters")
    retention_median: float
    retention_interval: tuple[float, float]
    interval_level: float
    draws: int
    parameters: list[ParameterUsed]
    unverified_parameters: list[str]
    citations: list[str]
    disclaimer: str = DISCLAIMER
    po2_profile: dict[str, list[float]] | None = Field(
        default=None, description="numerical profile: r_mm (centre to edge) and po2_mmhg"
    )


_OVERRIDES = ("diffusivity_cm2_s", "boundary_po2_mmhg", "consumption_mol_cm3_s", "solubility_mol_cm3_mmhg")


def _parameters_used(req: SimulationRequest, p: ModelParameters, kb: GraftKnowledge) -> list[ParameterUsed]:
    po2_name = "boundary_po2_obese_mmhg" if req.obese else "boundary_po2_lean_mmhg"
    names = {
        "diffusivity_cm2_s": "diffusivity_cm2_s",
        "solubility_mol_cm3_mmhg": "solubility_mol_cm3_mmhg",
        "boundary_po2_mmhg": po2_name,
        "consumption_mol_cm3_s": "consumption_mol_cm3_s",
        "km_mol_cm3": "km_mol_cm3",
        "adipocyte_threshold_mmhg": "adipocyte_threshold_mmhg",
        "necrosis_threshold_mmhg": "necrosis_threshold_mmhg",
        "take_survival": "take_survival",
        "take_regenerating": "take_regenerating",
        "cal_retention_factor": "cal_retention_factor",
    }
    out = []
    for field, spec_name in names.items():
        spec = kb.param(spec_name)
        overridden = field in _OVERRIDES and getattr(req, field) is not None
        out.append(
            ParameterUsed(
                name=field,
                value=float(getattr(p, field)),
                unit=spec.unit,
                evidence="user override" if overridden else spec.status(),
                citations=spec.citations,
                overridden=overridden,
            )
        )
    return out


def _zone_report(geometry: str, radius_cm: float, radii: dict, fractions: dict) -> ZoneReport:
    def f(x: object) -> float:
        return float(np.asarray(x).reshape(-1)[0])

    r_ad, r_nec = f(radii["survival_inner"]), f(radii["necrotic"])
    return ZoneReport(
        survival_zone_mm=10 * (radius_cm - r_ad),
        regenerating_zone_mm=10 * (r_ad - r_nec),
        necrotic_core_diameter_mm=20 * r_nec,
        viable_rim_mm=10 * (radius_cm - r_nec),
        survival_fraction=f(fractions["survival"]),
        regenerating_fraction=f(fractions["regenerating"]),
        necrotic_fraction=f(fractions["necrotic"]),
    )


def _numerical_zones(sol: ox.RadialSolution, p: ModelParameters) -> tuple[dict, dict]:
    alpha = p.solubility_mol_cm3_mmhg
    ca, cn = alpha * p.adipocyte_threshold_mmhg, alpha * p.necrosis_threshold_mmhg
    fr = ox.zone_volume_fractions(sol, ca, cn)
    radii = {
        "survival_inner": ox.anoxic_core_from_solution(sol, ca) if sol.concentration[0] < ca else 0.0,
        "necrotic": ox.anoxic_core_from_solution(sol, cn) if sol.concentration[0] < cn else 0.0,
    }
    return radii, fr


def simulate(req: SimulationRequest, knowledge: GraftKnowledge | None = None) -> SimulationResult:
    """Zones, critical size and retention (nominal and Monte Carlo interval) of one deposit."""
    kb = knowledge or load_graft_knowledge()
    overrides = {k: getattr(req, k) for k in _OVERRIDES}
    p = nominal_parameters(kb, obese=req.obese, perfusion=req.perfusion, **overrides)
    if req.processing not in kb.processing:
        raise ValueError(f"unknown processing {req.processing!r}; use one of {sorted(kb.processing)}")
    radius = req.diameter_mm / 20.0
    cf.exponent(req.geometry)  # validates the geometry name early
    alpha = p.solubility_mol_cm3_mmhg
    draws = sample_parameters(
        req.draws if req.kinetics == "zero" else min(req.draws, 200),
        seed=req.seed,
        knowledge=kb,
        obese=req.obese,
        perfusion=req.perfusion,
        fixed=overrides,
    )
    mult_nominal = float(take_multiplier(req.modality, req.processing, p.cal_retention_factor, kb))
    nanofat = req.modality == "nanofat"

    sol = ox.solve_radial(
        req.geometry,
        radius,
        diffusivity=p.diffusivity_cm2_s,
        c0=p.c0,
        consumption=p.consumption_mol_cm3_s,
        kinetics=req.kinetics,
        km=p.km_mol_cm3,
        n=req.grid_cells,
    )
    if req.kinetics == "zero":
        zones = closed_form_zones(req.geometry, radius, p)
        radii, fractions = zones["radii"], zones["fractions"]
        critical = 20.0 * float(
            cf.critical_radius(req.geometry, p.diffusivity_cm2_s, p.c0, p.consumption_mol_cm3_s)
        )
        core = 20.0 * float(np.asarray(radii["anoxic"]).reshape(-1)[0])
        samples = monte_carlo_retention(
            req.geometry,
            np.array([radius]),
            draws,
            modality=req.modality,
            processing=req.processing,
            knowledge=kb,
        )[:, 0]
    else:
        radii, fractions = _numerical_zones(sol, p)
        radii["radius"] = radius
        cn = alpha * p.necrosis_threshold_mmhg
        critical = 20.0 * ox.numerical_critical_radius(
            req.geometry,
            diffusivity=p.diffusivity_cm2_s,
            c0=p.c0,
            consumption=p.consumption_mol_cm3_s,
            kinetics="mm",
            km=p.km_mol_cm3,
            c_threshold=cn,
            n=min(req.grid_cells, 200),
        )
        core = 2.0 * 10 * (ox.anoxic_core_from_solution(sol, cn) if sol.concentration[0] < cn else 0.0)
        samples = _mm_samples(req, draws, kb)
    nominal = float(
        retained_fraction(
            {k: np.asarray(v) for k, v in fractions.items()},
            take_survival=p.take_survival,
            take_regenerating=p.take_regenerating,
            multiplier=mult_nominal,
            nanofat=nanofat,
        ).reshape(-1)[0]
    )
    tail = 100 * (1 - req.interval) / 2
    lo, med, hi = np.percentile(samples, [tail, 50, 100 - tail])
    citations = sorted({c for item in _parameters_used(req, p, kb) for c in item.citations})
    return SimulationResult(
        geometry=req.geometry,
        diameter_mm=req.diameter_mm,
        kinetics=req.kinetics,
        critical_size_mm=critical,
        anoxic_core_diameter_mm=core,
        zones=_zone_report(req.geometry, radius, radii, fractions),
        predicted_retention=nominal,
        retention_median=float(med),
        retention_interval=(float(lo), float(hi)),
        interval_level=req.interval,
        draws=len(samples),
        parameters=_parameters_used(req, p, kb),
        unverified_parameters=unverified_parameters(kb),
        citations=citations,
        po2_profile={
            "r_mm": [float(x) for x in 10 * sol.r_cm[:: max(1, len(sol.r_cm) // 100)]],
            "po2_mmhg": [float(x) for x in sol.po2_mmhg(alpha)[:: max(1, len(sol.r_cm) // 100)]],
        },
    )


def _mm_samples(req: SimulationRequest, draws: dict[str, np.ndarray], kb: GraftKnowledge) -> np.ndarray:
    """Michaelis-Menten retention per draw: one numerical solve per draw (the loop is over draws, not cells;
    there is no closed form)."""
    radius = req.diameter_mm / 20.0
    n = len(draws["take_survival"])
    out = np.empty(n)
    for i in range(n):
        p = ModelParameters(**{k: float(v[i]) for k, v in draws.items()})
        sol = ox.solve_radial(
            req.geometry,
            radius,
            diffusivity=p.diffusivity_cm2_s,
            c0=p.c0,
            consumption=p.consumption_mol_cm3_s,
            kinetics="mm",
            km=p.km_mol_cm3,
            n=100,
        )
        _, fr = _numerical_zones(sol, p)
        mult = float(take_multiplier(req.modality, req.processing, p.cal_retention_factor, kb))
        out[i] = float(
            retained_fraction(
                {k: np.asarray(v) for k, v in fr.items()},
                take_survival=p.take_survival,
                take_regenerating=p.take_regenerating,
                multiplier=mult,
                nanofat=req.modality == "nanofat",
            )
        )
    return out


def parameters_table() -> list[dict[str, object]]:
    """The knowledge-base parameters with evidence labels (for `regenguide graft parameters`)."""
    return parameter_report()
