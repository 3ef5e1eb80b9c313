"""Clinician-editable product data (PRP classification cut-offs, hold times), validated at load.

The YAML files live in ``regenguide/kb/data/products/``. Each number carries citation ids (resolved
against the reference registry at load, so an unknown id fails loudly) and an evidence label that
outputs repeat. A facility may pass its own hold-time file with the same schema.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regenguide.domain.plan import Modality
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve

PRODUCT_TYPES: tuple[Modality, ...] = tuple(m for m in Modality if m is not Modality.microneedling)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GradeBand(_Strict):
    grade: str = Field(pattern=r"^[A-D]$")
    above: float | None
    evidence: EvidenceLabel
    citations: list[str] = Field(min_length=1)


def _check_bands(bands: list[GradeBand], name: str) -> list[GradeBand]:
    if len(bands) < 2:
        raise ValueError(f"{name}: at least two grades")
    if bands[-1].above is not None or any(b.above is None for b in bands[:-1]):
        raise ValueError(f"{name}: only the last grade may (and must) have above: null")
    thresholds = [b.above for b in bands[:-1]]
    if thresholds != sorted(thresholds, reverse=True) or len(set(thresholds)) != len(thresholds):  # type: ignore[type-var]
        raise ValueError(f"{name}: thresholds must strictly decrease from the best grade")
    return bands


class PawRules(_Strict):
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    p2_max_per_uL: float = Field(gt=0)
    p3_max_per_uL: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> PawRules:
        if self.p3_max_per_uL <= self.p2_max_per_uL:
            raise ValueError("paw: p3_max_per_uL must exceed p2_max_per_uL")
        return self


class DepaRules(_Strict):
    dose_billion: list[GradeBand]
    efficiency_percent: list[GradeBand]
    purity_percent: list[GradeBand]

    @field_validator("dose_billion", "efficiency_percent", "purity_percent")
    @classmethod
    def _bands(cls, value: list[GradeBand]) -> list[GradeBand]:
        return _check_bands(value, "depa")


class DohanEhrenfestRules(_Strict):
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    leukocyte_rule: Literal["above_baseline"]
    leukocyte_rule_evidence: EvidenceLabel


class PrpClassificationRules(_Strict):
    paw: PawRules
    depa: DepaRules
    dohan_ehrenfest: DohanEhrenfestRules

    def citation_ids(self) -> list[str]:
        ids = [*self.paw.citations, *self.dohan_ehrenfest.citations]
        for bands in (self.depa.dose_billion, self.depa.efficiency_percent, self.depa.purity_percent):
            for band in bands:
                ids.extend(band.citations)
        return list(dict.fromkeys(ids))


class HoldTime(_Strict):
    product_type: Modality
    hours: float | None = Field(default=None, gt=0, le=24 * 365 * 30)
    clock_starts: Literal["collected", "processed", "thawed"]
    storage: str | None = None
    evidence: EvidenceLabel
    citations: list[str] = Field(min_length=1)
    note: str | None = None

    @field_validator("product_type")
    @classmethod
    def _biologic(cls, value: Modality) -> Modality:
        if value is Modality.microneedling:
            raise ValueError("microneedling is not a biologic product")
        return value


def _read_yaml(name: str) -> object:
    entry = resources.files("regenguide.kb") / "data" / "products" / name
    return yaml.safe_load(entry.read_text(encoding="utf-8"))


def parse_prp_rules(data: object, where: str = "prp_classification.yaml") -> PrpClassificationRules:
    try:
        rules = PrpClassificationRules.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    resolve(rules.citation_ids(), where)
    return rules


FACILITY_SOP_PREFIX = "facility-sop:"


def parse_hold_times(data: object, where: str = "hold_times.yaml", facility: bool = False) -> dict[Modality, HoldTime]:
    """Validate a hold-time list. In a facility file, a citation may name the facility's own SOP as
    ``facility-sop:<document id>`` (not in the reference registry); other ids must resolve."""
    if not isinstance(data, list):
        raise KnowledgeBaseError(f"{where}: expected a list of hold times")
    table: dict[Modality, HoldTime] = {}
    for index, raw in enumerate(data):
        try:
            item = HoldTime.model_validate(raw)
        except ValidationError as exc:
            raise KnowledgeBaseError(f"{where}[{index}]: {exc}") from exc
        if item.product_type in table:
            raise KnowledgeBaseError(f"{where}: duplicate hold time for {item.product_type.value}")
        ids = [c for c in item.citations if not (facility and c.startswith(FACILITY_SOP_PREFIX))]
        resolve(ids, f"{where}[{index}]")
        table[item.product_type] = item
    return table


@cache
def load_prp_rules() -> PrpClassificationRules:
    return parse_prp_rules(_read_yaml("prp_classification.yaml"))


@cache
def load_hold_times() -> dict[Modality, HoldTime]:
    table = parse_hold_times(_read_yaml("hold_times.yaml"))
    missing = [m.value for m in PRODUCT_TYPES if m not in table]
    if missing:
        raise KnowledgeBaseError(f"hold_times.yaml: no entry for {', '.join(missing)}")
    return table


def load_facility_hold_times(path: Path) -> dict[Modality, HoldTime]:
    """Bundled hold times overridden by a facility file (same schema, any subset of product types)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeBaseError(f"{path.name}: cannot read hold times: {exc}") from exc
    return {**load_hold_times(), **parse_hold_times(data, path.name, facility=True)}
