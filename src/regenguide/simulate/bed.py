"""High-level 2-D cross-section (strands in a perfused recipient bed) and first-days simulations, with
request/response models shared by the CLI and the HTTP API."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from regenguide.simulate import oxygen as ox
from regenguide.simulate.parameters import (
    GraftKnowledge,
    load_graft_knowledge,
    nominal_parameters,
    unverified_parameters,
)
from regenguide.simulate.retention import DISCLAIMER, closed_form_zones, retained_fraction, take_multiplier


class CrossSectionRequest(BaseModel):
    """`strands` parallel strands in one row at mid-depth of a recipient bed, `spacing_mm` apart."""

    model_config = ConfigDict(extra="forbid")

    strands: int = Field(default=3, ge=1, le=50)
    diameter_mm: float = Field(gt=0, le=20)
    spacing_mm: float | None = Field(default=None, gt=0, le=100, description="default: twice the diameter")
    bed_thickness_mm: float = Field(gt=0, le=100)
    perfusion: Literal["low", "normal", "high"] = "normal"
    obese: bool = False
    kinetics: Literal["zero", "mm"] = "zero"
    modality: Literal["microfat", "nanofat", "cal"] = "microfat"
    grid_mm: float | None = Field(default=None, gt=0.001, le=1.0, description="cell size; default diameter/8")

    @model_validator(mode="after")
    def _fits(self) -> CrossSectionRequest:
        if self.diameter_mm >= self.bed_thickness_mm:
            raise ValueError("strand diameter must be smaller than the bed thickness")
        spacing = self.spacing_mm or 2 * self.diameter_mm
        if spacing < self.diameter_mm:
            raise ValueError("spacing must be at least the strand diameter (strands would overlap)")
        return self


class StrandZones(BaseModel):
    survival_fraction: float
    regenerating_fraction: float
    necrotic_fraction: float
    retention: float


class CrossSectionResult(BaseModel):
    strands: list[StrandZones]
    predicted_retention: float = Field(description="mean retention of the strands (nominal parameters)")
    isolated_strand_retention: float = Field(description="same strand alone with its edge at bed pO2 (1-D)")
    min_po2_mmhg: float
    bed_po2_mmhg: float
    perfusion_length_mm: float
    grid_cells: int
    solver_iterations: int
    unverified_parameters: list[str]
    disclaimer: str = DISCLAIMER


def simulate_cross_section(
    req: CrossSectionRequest, knowledge: GraftKnowledge | None = None
) -> tuple[CrossSectionResult, ox.CrossSection]:
    kb = knowledge or load_graft_knowledge()
    p = nominal_parameters(kb, obese=req.obese)
    spacing_cm = (req.spacing_mm or 2 * req.diameter_mm) / 10.0
    radius_cm = req.diameter_mm / 20.0
    thickness_cm = req.bed_thickness_mm / 10.0
    length_cm = kb.perfusion_length_mm[req.perfusion].value / 10.0
    centers = ox.row_layout(req.strands, 2 * radius_cm, spacing_cm, thickness_cm)
    section = ox.solve_cross_section(
        centers,
        np.full(req.strands, radius_cm),
        width_cm=req.strands * spacing_cm,
        thickness_cm=thickness_cm,
        diffusivity=p.diffusivity_cm2_s,
        c_bed=p.c0,
        consumption=p.consumption_mol_cm3_s,
        perfusion_length_cm=length_cm,
        kinetics=req.kinetics,
        km=p.km_mol_cm3,
        h_cm=None if req.grid_mm is None else req.grid_mm / 10.0,
    )
    alpha = p.solubility_mol_cm3_mmhg
    fractions = section.strand_zone_fractions(
        alpha * p.adipocyte_threshold_mmhg, alpha * p.necrosis_threshold_mmhg
    )
    mult = float(take_multiplier(req.modality, "unspecified", p.cal_retention_factor, kb))
    nano = req.modality == "nanofat"

    def ret(fr: dict) -> float:
        return float(
            retained_fraction(
                {k: np.asarray(v) for k, v in fr.items()},
                take_survival=p.take_survival,
                take_regenerating=p.take_regenerating,
                multiplier=mult,
                nanofat=nano,
            ).reshape(-1)[0]
        )

    strands = [
        StrandZones(
            survival_fraction=f["survival"],
            regenerating_fraction=f["regenerating"],
            necrotic_fraction=f["necrotic"],
            retention=ret(f),
        )
        for f in fractions
    ]
    isolated = closed_form_zones("cylinder", radius_cm, p)["fractions"]
    result = CrossSectionResult(
        strands=strands,
        predicted_retention=float(np.mean([s.retention for s in strands])),
        isolated_strand_retention=ret(isolated),
        min_po2_mmhg=float(section.concentration.min() / alpha),
        bed_po2_mmhg=p.boundary_po2_mmhg,
        perfusion_length_mm=10 * length_cm,
        grid_cells=int(section.concentration.size),
        solver_iterations=section.iterations,
        unverified_parameters=unverified_parameters(kb),
    )
    return result, section


class DaysRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    geometry: Literal["slab", "cylinder", "sphere"]
    diameter_mm: float = Field(gt=0, le=100)
    hours: float = Field(default=96.0, gt=0, le=24 * 28)
    dt_hours: float = Field(default=1.0, gt=0, le=24)
    kinetics: Literal["zero", "mm"] = "zero"
    revascularization_um_per_day: float | None = Field(default=None, ge=0, le=5000)
    obese: bool = False
    grid_cells: int = Field(default=100, ge=10, le=2000)


class DaysResult(BaseModel):
    hours: list[float]
    min_po2_mmhg: list[float]
    survival_fraction: float
    regenerating_fraction: float
    necrotic_fraction: float
    revascularization_um_per_day: float
    unverified_parameters: list[str]
    disclaimer: str = DISCLAIMER


def simulate_first_days(req: DaysRequest, knowledge: GraftKnowledge | None = None) -> DaysResult:
    """Cell fate over the first days: adipocytes die after a day below their threshold, ASCs after 3 days of
    near-anoxia (Eto 2012); optional revascularisation front (speed unverified, 0 by default)."""
    kb = knowledge or load_graft_knowledge()
    p = nominal_parameters(kb, obese=req.obese)
    alpha = p.solubility_mol_cm3_mmhg
    speed = (
        kb.value("revascularization_um_per_day")
        if req.revascularization_um_per_day is None
        else req.revascularization_um_per_day
    )
    res = ox.simulate_days(
        req.geometry,
        req.diameter_mm / 20.0,
        diffusivity=p.diffusivity_cm2_s,
        c0=p.c0,
        consumption=p.consumption_mol_cm3_s,
        c_adipocyte=alpha * p.adipocyte_threshold_mmhg,
        c_necrosis=alpha * p.necrosis_threshold_mmhg,
        adipocyte_tolerance_h=kb.value("adipocyte_hypoxia_tolerance_h"),
        asc_tolerance_h=kb.value("asc_hypoxia_tolerance_h"),
        kinetics=req.kinetics,
        km=p.km_mol_cm3,
        revascularization_cm_per_h=speed * 1e-4 / 24.0,
        hours=req.hours,
        dt_h=req.dt_hours,
        n=req.grid_cells,
    )
    return DaysResult(
        hours=[float(t) for t in res.times_h],
        min_po2_mmhg=[float(c.min() / alpha) for c in res.concentration],
        survival_fraction=res.zone_fractions["survival"],
        regenerating_fraction=res.zone_fractions["regenerating"],
        necrotic_fraction=res.zone_fractions["necrotic"],
        revascularization_um_per_day=speed,
        unverified_parameters=unverified_parameters(kb),
    )
