"""Parameters of the graft survival simulator, loaded from `kb/data/graft/parameters.yaml`.

The YAML is validated at load (pydantic) and fails loudly when malformed or when a citation id does not
resolve. Code never hard-codes a clinical number: it asks `load_graft_knowledge()` for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve

SCHEMA = "regenguide.graft-parameters/1"

EVIDENCE_RANK = {
    EvidenceLabel.verified: 0,
    EvidenceLabel.secondary: 1,
    EvidenceLabel.expert_opinion: 2,
    EvidenceLabel.unverified: 3,
}

#: Parameters the code relies on; the loader refuses a file that lacks one.
REQUIRED = (
    "diffusivity_cm2_s",
    "solubility_mol_cm3_mmhg",
    "boundary_po2_lean_mmhg",
    "boundary_po2_obese_mmhg",
    "overweight_bmi",
    "consumption_mol_cm3_s",
    "km_mol_cm3",
    "adipocyte_threshold_mmhg",
    "necrosis_threshold_mmhg",
    "take_survival",
    "take_regenerating",
    "cal_retention_factor",
    "adipocyte_hypoxia_tolerance_h",
    "asc_hypoxia_tolerance_h",
    "revascularization_um_per_day",
    "critical_ifp_mmhg",
    "capacity_fraction",
    "fan_width_over_tunnel_length",
    "default_tunnel_length_mm",
    "session_interval_days",
    "max_thread_diameter_mm",
    "max_lobule_radius_mm",
)

#: Parameters the Monte Carlo of the retention model samples (others are held at nominal).
SAMPLED = (
    "boundary_po2_mmhg",
    "consumption_mol_cm3_s",
    "adipocyte_threshold_mmhg",
    "necrosis_threshold_mmhg",
    "take_survival",
    "take_regenerating",
    "cal_retention_factor",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    nominal: float
    low: float
    high: float
    sd: float | None = Field(default=None, gt=0)
    unit: str
    distribution: Literal["fixed", "uniform", "loguniform", "normal"]
    evidence: EvidenceLabel
    derived: bool = False
    citations: list[str] = Field(min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        if not self.low <= self.nominal <= self.high:
            raise ValueError(f"{self.name}: nominal {self.nominal} outside [{self.low}, {self.high}]")
        if self.distribution == "normal" and self.sd is None:
            raise ValueError(f"{self.name}: a normal distribution needs sd")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"{self.name}: a log-uniform distribution needs low > 0")
        return self

    def status(self) -> str:
        """Evidence label as shown to users, e.g. 'unverified (derived)'."""
        return f"{self.evidence.value} (derived)" if self.derived else self.evidence.value


class FactorSpec(_Strict):
    value: float = Field(gt=0)
    evidence: EvidenceLabel
    derived: bool = False
    citations: list[str] = Field(min_length=1)
    note: str = ""


class AnchorSpec(_Strict):
    value: float
    low: float | None = None
    high: float | None = None
    evidence: EvidenceLabel
    citations: list[str] = Field(min_length=1)
    note: str = ""


class GraftKnowledge(_Strict):
    schema_: Literal["regenguide.graft-parameters/1"] = Field(alias="schema")
    parameters: list[ParameterSpec]
    processing: dict[str, FactorSpec]
    perfusion_po2_factor: dict[Literal["low", "normal", "high"], FactorSpec]
    perfusion_length_mm: dict[Literal["low", "normal", "high"], FactorSpec]
    anchors: dict[str, AnchorSpec]

    # Parameters by name, built once: the plan check reads a hundred-odd values per call. Derived from
    # `parameters`, so two equal knowledge bases still compare equal; built by validation (`model_post_init`)
    # and rebuilt by `model_copy` when the copy gets other parameters.
    _by_name: dict[str, ParameterSpec] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._by_name = {p.name: p for p in self.parameters}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> GraftKnowledge:
        copy = super().model_copy(update=update, deep=deep)
        if update and "parameters" in update:
            copy.model_post_init(None)
        return copy

    @model_validator(mode="after")
    def _complete(self) -> GraftKnowledge:
        names = [p.name for p in self.parameters]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate parameters: {sorted(dupes)}")
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise ValueError(f"missing parameters: {missing}")
        if "unspecified" not in self.processing:
            raise ValueError("processing needs an 'unspecified' entry")
        for table in (self.perfusion_po2_factor, self.perfusion_length_mm):
            if set(table) != {"low", "normal", "high"}:
                raise ValueError("perfusion tables need low, normal and high")
        return self

    def param(self, name: str) -> ParameterSpec:
        # Through `__pydantic_private__` itself: pydantic's attribute hook for `self._by_name` costs more
        # than the lookup it serves.
        private = self.__pydantic_private__
        assert private is not None  # filled by model_post_init
        return private["_by_name"][name]  # type: ignore[no-any-return]

    def value(self, name: str) -> float:
        return self.param(name).nominal

    def all_citations(self) -> list[str]:
        ids: list[str] = []
        for spec in self.parameters:
            ids += spec.citations
        for table in (self.processing, self.perfusion_po2_factor, self.perfusion_length_mm):
            for factor in table.values():
                ids += factor.citations
        for anchor in self.anchors.values():
            ids += anchor.citations
        return list(dict.fromkeys(ids))


def parse_graft_knowledge(data: object, where: str = "graft parameters") -> GraftKnowledge:
    """Validate parsed YAML into `GraftKnowledge`; raise `KnowledgeBaseError` with the reason if malformed."""
    try:
        knowledge = GraftKnowledge.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    resolve(knowledge.all_citations(), where)
    return knowledge


@cache
def load_graft_knowledge() -> GraftKnowledge:
    path = resources.files("regenguide.kb") / "data" / "graft" / "parameters.yaml"
    return parse_graft_knowledge(yaml.safe_load(path.read_text(encoding="utf-8")), "graft/parameters.yaml")


@dataclass(frozen=True)
class ModelParameters:
    """One point in parameter space (nominal or one Monte Carlo draw), in model units."""

    diffusivity_cm2_s: float
    solubility_mol_cm3_mmhg: float
    boundary_po2_mmhg: float
    consumption_mol_cm3_s: float
    km_mol_cm3: float
    adipocyte_threshold_mmhg: float
    necrosis_threshold_mmhg: float
    take_survival: float
    take_regenerating: float
    cal_retention_factor: float

    @property
    def c0(self) -> float:
        """Boundary O2 concentration, mol/cm^3."""
        return self.solubility_mol_cm3_mmhg * self.boundary_po2_mmhg


def nominal_parameters(
    knowledge: GraftKnowledge | None = None,
    *,
    obese: bool = False,
    perfusion: str | None = None,
    **overrides: float,
) -> ModelParameters:
    """Nominal parameters, with the boundary pO2 of lean or overweight/obese tissue and an optional recipient
    perfusion multiplier; keyword overrides replace single values (e.g. `diffusivity_cm2_s=1.7e-5`)."""
    kb = knowledge or load_graft_knowledge()
    po2 = kb.value("boundary_po2_obese_mmhg" if obese else "boundary_po2_lean_mmhg")
    if perfusion is not None:
        po2 *= kb.perfusion_po2_factor[perfusion].value  # type: ignore[index]
    values = {
        "diffusivity_cm2_s": kb.value("diffusivity_cm2_s"),
        "solubility_mol_cm3_mmhg": kb.value("solubility_mol_cm3_mmhg"),
        "boundary_po2_mmhg": po2,
        "consumption_mol_cm3_s": kb.value("consumption_mol_cm3_s"),
        "km_mol_cm3": kb.value("km_mol_cm3"),
        "adipocyte_threshold_mmhg": kb.value("adipocyte_threshold_mmhg"),
        "necrosis_threshold_mmhg": kb.value("necrosis_threshold_mmhg"),
        "take_survival": kb.value("take_survival"),
        "take_regenerating": kb.value("take_regenerating"),
        "cal_retention_factor": kb.value("cal_retention_factor"),
    }
    for key, val in overrides.items():
        if key not in values:
            raise KeyError(f"unknown model parameter {key!r}")
        if val is not None:
            values[key] = float(val)
    return ModelParameters(**values)


def _draw(spec: ParameterSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    if spec.distribution == "fixed":
        return np.full(n, spec.nominal)
    if spec.distribution == "uniform":
        return rng.uniform(spec.low, spec.high, n)
    if spec.distribution == "loguniform":
        return np.exp(rng.uniform(np.log(spec.low), np.log(spec.high), n))
    # Truncated normal by inverse-CDF sampling within [low, high] (no rejection loop).
    from scipy.special import ndtr, ndtri

    assert spec.sd is not None
    a = ndtr((spec.low - spec.nominal) / spec.sd)
    b = ndtr((spec.high - spec.nominal) / spec.sd)
    return spec.nominal + spec.sd * ndtri(rng.uniform(a, b, n))


def sample_parameters(
    n: int,
    *,
    seed: int | None = 0,
    knowledge: GraftKnowledge | None = None,
    obese: bool = False,
    perfusion: str | None = None,
    fixed: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """`n` Monte Carlo draws of the sampled parameters (arrays of shape (n,)), keyed like `ModelParameters`.

    Parameters given in `fixed` (e.g. a clinician's override on the command line) are held at that value.
    """
    kb = knowledge or load_graft_knowledge()
    rng = np.random.default_rng(seed)
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    out: dict[str, np.ndarray] = {}
    nominal = nominal_parameters(kb, obese=obese, perfusion=perfusion)
    for field in ModelParameters.__dataclass_fields__:
        if field in fixed:
            out[field] = np.full(n, float(fixed[field]))
        elif field == "boundary_po2_mmhg":
            spec = kb.param("boundary_po2_obese_mmhg" if obese else "boundary_po2_lean_mmhg")
            factor = kb.perfusion_po2_factor[perfusion].value if perfusion else 1.0  # type: ignore[index]
            out[field] = _draw(spec, n, rng) * factor
        elif field in SAMPLED:
            out[field] = _draw(kb.param(field), n, rng)
        else:
            out[field] = np.full(n, getattr(nominal, field))
    return out


def parameter_report(knowledge: GraftKnowledge | None = None) -> list[dict[str, object]]:
    """Every parameter with value, range, evidence and citations (outputs must say what is unverified)."""
    kb = knowledge or load_graft_knowledge()
    return [
        {
            "name": p.name,
            "nominal": p.nominal,
            "low": p.low,
            "high": p.high,
            "unit": p.unit,
            "distribution": p.distribution,
            "evidence": p.status(),
            "citations": p.citations,
        }
        for p in kb.parameters
    ]


def unverified_parameters(knowledge: GraftKnowledge | None = None) -> list[str]:
    """Names of parameters whose evidence is expert opinion or unverified (reported in every output)."""
    kb = knowledge or load_graft_knowledge()
    weak = {EvidenceLabel.expert_opinion, EvidenceLabel.unverified}
    return [f"{p.name}: {p.status()}" for p in kb.parameters if p.evidence in weak]
