"""Load and validate the imaging data files (`kb/data/imaging/*.yaml`).

Every block carries citation ids and an evidence label; a malformed file or an unknown citation
fails at load with `KnowledgeBaseError`, never later at use.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve


class _Cited(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str | None = None


class Segmentation(_Cited):
    min_saturation: float = Field(gt=0, lt=1)
    min_value: float = Field(ge=0, lt=1)


HueRange = tuple[float, float]


class Direction(_Cited):
    towards_hue_deg: list[HueRange] = Field(min_length=1)
    away_hue_deg: list[HueRange] = Field(min_length=1)
    mixed_min_fraction: float = Field(gt=0, le=0.5)
    read_colour_bar: bool = True

    @field_validator("towards_hue_deg", "away_hue_deg")
    @classmethod
    def _ranges(cls, value: list[HueRange]) -> list[HueRange]:
        for lo, hi in value:
            if not 0 <= lo < hi <= 360:
                raise ValueError(f"hue range [{lo}, {hi}) must satisfy 0 <= lo < hi <= 360")
        return value


class Components(_Cited):
    min_area_px: int = Field(ge=1)
    connectivity: int

    @field_validator("connectivity")
    @classmethod
    def _conn(cls, value: int) -> int:
        if value not in (4, 8):
            raise ValueError("connectivity must be 4 or 8")
        return value


class ColourBar(_Cited):
    min_height_px: int = Field(ge=2)
    min_aspect: float = Field(gt=1)
    min_fill: float = Field(gt=0, le=1)


class DopplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    segmentation: Segmentation
    direction: Direction
    components: Components
    colour_bar: ColourBar

    @model_validator(mode="after")
    def _no_overlap(self) -> DopplerConfig:
        for lo, hi in self.direction.towards_hue_deg:
            for alo, ahi in self.direction.away_hue_deg:
                if lo < ahi and alo < hi:
                    raise ValueError("towards and away hue ranges overlap")
        return self


class SafetyMargin(_Cited):
    value: float = Field(ge=0, le=50)


class RegionRule(_Cited):
    region: str = Field(min_length=1)


LAYER_NAMES = ("skin", "dermis_bottom", "fascia", "bone")


class VascularRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    safety_margin_mm: SafetyMargin
    doppler_required_regions: list[RegionRule] = Field(default_factory=list)
    critical_regions: list[RegionRule] = Field(default_factory=list)
    plane_layers: dict[str, tuple[str, str]] = Field(default_factory=dict)

    @field_validator("plane_layers")
    @classmethod
    def _layers(cls, value: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        for plane, (top, bottom) in value.items():
            for name in (top, bottom):
                if name not in LAYER_NAMES:
                    raise ValueError(
                        f"plane {plane!r}: unknown layer {name!r}; valid: {', '.join(LAYER_NAMES)}"
                    )
            if LAYER_NAMES.index(top) > LAYER_NAMES.index(bottom):
                raise ValueError(f"plane {plane!r}: top layer {top!r} lies below {bottom!r}")
        return value


M = TypeVar("M", bound=BaseModel)


def _check_citations(model: BaseModel, where: str) -> None:
    def walk(obj: Any) -> None:
        if isinstance(obj, _Cited):
            resolve(obj.citations, where)
        if isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name))
        elif isinstance(obj, list | tuple):
            for item in obj:
                walk(item)
        elif isinstance(obj, dict):
            for item in obj.values():
                walk(item)

    walk(model)


def parse_config(model: type[M], raw: object, where: str) -> M:
    """Validate parsed YAML into `model`, checking that every citation resolves."""
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    _check_citations(parsed, where)
    return parsed


def _read(name: str) -> object:
    text = (resources.files("regenguide.kb") / "data" / "imaging" / name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@cache
def doppler_config() -> DopplerConfig:
    return parse_config(DopplerConfig, _read("doppler.yaml"), "imaging/doppler.yaml")


def check_vocabulary(rules: VascularRules, where: str = "imaging/vascular_rules.yaml") -> VascularRules:
    """Region and plane codes must exist in the knowledge base; returns the rules with canonical codes."""
    from regenguide.kb import knowledge_base

    kb = knowledge_base()

    def region(code: str) -> str:
        found = kb.region(code)
        if found is None:
            raise KnowledgeBaseError(
                f"{where}: unknown region {code!r}; valid: {', '.join(sorted(kb.regions))}"
            )
        return found.code

    planes: dict[str, tuple[str, str]] = {}
    for code, layers in rules.plane_layers.items():
        found = kb.plane(code)
        if found is None:
            raise KnowledgeBaseError(
                f"{where}: unknown plane {code!r}; valid: {', '.join(sorted(kb.planes))}"
            )
        planes[found.code] = layers
    return rules.model_copy(
        update={
            "doppler_required_regions": [
                r.model_copy(update={"region": region(r.region)}) for r in rules.doppler_required_regions
            ],
            "critical_regions": [
                r.model_copy(update={"region": region(r.region)}) for r in rules.critical_regions
            ],
            "plane_layers": planes,
        }
    )


@cache
def vascular_rules() -> VascularRules:
    where = "imaging/vascular_rules.yaml"
    return check_vocabulary(parse_config(VascularRules, _read("vascular_rules.yaml"), where), where)
