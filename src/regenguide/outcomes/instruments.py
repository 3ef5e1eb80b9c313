"""Outcome instruments: definitions as data (YAML, validated at load), item-level validation with
clear messages, and scoring.

Public API:

* ``instruments() -> list[InstrumentInfo]`` - every instrument available (bundled and loaded);
* ``get_instrument(code) -> InstrumentDefinition``;
* ``score(instrument_code, responses) -> InstrumentScore`` - validate every item (unknown items,
  missing required items, types, ranges, allowed choices: all errors at once, each naming the item and
  what is allowed) then score;
* ``load_instrument_definition(path_or_dict) -> InstrumentDefinition`` - a licensee loads a licensed
  instrument (e.g. FACE-Q) from their own file; it is registered for this process and never bundled.

Scoring methods: ``single`` (one item's choice), ``sum`` and ``mean`` (of scored items, with optional
bands), ``lookup`` (raw sum converted through a table, e.g. a licensee's Rasch conversion table) and
``algorithm`` (a named rule in `regenguide.outcomes.grading`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve
from regenguide.outcomes.grading import ALGORITHMS, InstrumentValidationError, ItemError

Scalar = int | float | str | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Choice(_Strict):
    value: int | str
    label: str = Field(min_length=1)
    score: float | None = Field(default=None, description="points for sums; defaults to an integer value")

    def points(self) -> float | None:
        if self.score is not None:
            return self.score
        return float(self.value) if isinstance(self.value, int) else None


class Item(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str = Field(min_length=1)
    type: Literal["integer", "number", "choice", "boolean", "text"]
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    choices: list[Choice] | None = None
    required: bool = True
    scored: bool = True
    default: Scalar | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        if self.type == "choice":
            if not self.choices:
                raise ValueError(f"item {self.code!r}: a choice item needs choices")
            keys = [str(c.value) for c in self.choices]
            if len(set(keys)) != len(keys):
                raise ValueError(f"item {self.code!r}: duplicate choice values")
        elif self.choices:
            raise ValueError(f"item {self.code!r}: only choice items take choices")
        if self.type in ("integer", "number") and self.max is None:
            raise ValueError(f"item {self.code!r}: numeric items need a max")
        if self.type in ("integer", "number") and self.min is None and self.gt is None:
            raise ValueError(f"item {self.code!r}: numeric items need min or gt")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"item {self.code!r}: min > max")
        return self

    def allowed(self) -> str:
        if self.type == "choice":
            assert self.choices is not None
            return ", ".join(
                f"{c.value} ({c.label})" if str(c.value) != c.label else str(c.value) for c in self.choices
            )
        if self.type == "boolean":
            return "true or false"
        if self.type == "text":
            return "non-empty text"
        low = f"> {self.gt:g}" if self.gt is not None else f"{self.min:g}"
        kind = "integer " if self.type == "integer" else ""
        if self.gt is not None:
            return f"{kind}{low} and <= {self.max:g}" + (f" {self.unit}" if self.unit else "")
        return f"{kind}{low}-{self.max:g}" + (f" {self.unit}" if self.unit else "")


class Band(_Strict):
    min: float
    max: float
    label: str

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max


class Scoring(_Strict):
    method: Literal["single", "sum", "mean", "lookup", "algorithm"]
    item: str | None = None
    items: list[str] | None = None
    algorithm: str | None = None
    unit: str | None = None
    bands: list[Band] = Field(default_factory=list)
    bands_evidence: EvidenceLabel | None = None
    table: dict[int, float] | None = None


class InstrumentDefinition(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1)
    version: str = "1"
    kind: Literal["clinician_reported", "patient_reported", "measurement", "grading"]
    direction: Literal["higher_is_better", "higher_is_worse", "lower_is_better", "none"] = "none"
    items: list[Item] = Field(min_length=1)
    scoring: Scoring
    citations: list[str] = Field(default_factory=list)
    source: str | None = Field(default=None, description="free-text reference for licensee definitions")
    evidence: EvidenceLabel = EvidenceLabel.unverified
    licence: str = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _scoring_matches(self) -> InstrumentDefinition:
        codes = [i.code for i in self.items]
        if len(set(codes)) != len(codes):
            raise ValueError(f"instrument {self.code!r}: duplicate item codes")
        sc = self.scoring
        if not self.citations and not self.source:
            raise ValueError(f"instrument {self.code!r}: give citations or a source")
        if sc.method == "single":
            if sc.item not in codes:
                raise ValueError(f"instrument {self.code!r}: scoring.item {sc.item!r} is not an item")
        elif sc.method == "algorithm":
            if sc.algorithm not in ALGORITHMS:
                raise ValueError(
                    f"instrument {self.code!r}: unknown algorithm {sc.algorithm!r}; "
                    f"known: {', '.join(sorted(ALGORITHMS))}"
                )
        else:
            for code in sc.items or []:
                if code not in codes:
                    raise ValueError(f"instrument {self.code!r}: scoring item {code!r} is not an item")
            for item in self._scored_items():
                if item.type == "choice" and any(c.points() is None for c in item.choices or []):
                    raise ValueError(f"instrument {self.code!r}: choice item {item.code!r} needs numeric scores")
                if item.type in ("text", "boolean"):
                    raise ValueError(
                        f"instrument {self.code!r}: item {item.code!r} of type {item.type} cannot be summed"
                    )
            if sc.method == "lookup" and not sc.table:
                raise ValueError(f"instrument {self.code!r}: lookup scoring needs a table")
        return self

    def _scored_items(self) -> list[Item]:
        wanted = self.scoring.items
        return [i for i in self.items if (i.code in wanted if wanted else i.scored)]

    def item(self, code: str) -> Item:
        for it in self.items:
            if it.code == code:
                return it
        raise KeyError(code)


class InstrumentScore(BaseModel):
    instrument: str
    name: str
    version: str
    value: float | int | str
    unit: str | None
    grade: str | None = None
    interpretation: str
    subscores: dict[str, float | int | str] = Field(default_factory=dict)
    items: dict[str, Any]
    citations: list[str]
    evidence: EvidenceLabel
    warnings: list[str] = Field(default_factory=list)


class InstrumentInfo(BaseModel):
    code: str
    name: str
    kind: str
    version: str
    items: int
    evidence: EvidenceLabel
    licence: str
    bundled: bool


# --- loading -------------------------------------------------------------------------------------


def parse_instrument_file(data: object, where: str = "instruments.yaml") -> dict[str, InstrumentDefinition]:
    if not isinstance(data, dict) or not isinstance(data.get("instruments"), list):
        raise KnowledgeBaseError(f"{where}: expected a mapping with an 'instruments' list")
    out: dict[str, InstrumentDefinition] = {}
    for index, raw in enumerate(data["instruments"]):
        try:
            definition = InstrumentDefinition.model_validate(raw)
        except ValidationError as exc:
            raise KnowledgeBaseError(f"{where}[{index}]: {exc}") from exc
        if definition.code in out:
            raise KnowledgeBaseError(f"{where}: duplicate instrument code {definition.code!r}")
        resolve(definition.citations, f"{where}:{definition.code}")
        out[definition.code] = definition
    return out


@cache
def _bundled() -> dict[str, InstrumentDefinition]:
    text = (resources.files("regenguide.kb") / "data" / "outcomes" / "instruments.yaml").read_text(encoding="utf-8")
    return parse_instrument_file(yaml.safe_load(text))


_custom: dict[str, InstrumentDefinition] = {}


def load_instrument_definition(
    path_or_dict: str | Path | Mapping[str, Any], *, register: bool = True
) -> InstrumentDefinition:
    """Load a licensee's own instrument definition (YAML or JSON file, or a dict) with the same schema
    as the bundled ones. Citations may be registry ids or, for licensed instruments, a free-text
    `source`. Registered for this process (not persisted, never bundled); a bundled code cannot be
    replaced. Raises `KnowledgeBaseError` naming what is wrong."""
    where = "instrument definition"
    if isinstance(path_or_dict, Mapping):
        raw: Any = dict(path_or_dict)
    else:
        path = Path(path_or_dict)
        where = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KnowledgeBaseError(f"cannot read instrument definition {path.name}: {exc.strerror}") from exc
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    try:
        definition = InstrumentDefinition.model_validate(raw)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    resolve(definition.citations, where)
    if definition.code in _bundled():
        raise KnowledgeBaseError(f"{where}: code {definition.code!r} is a bundled instrument; choose another code")
    if register:
        _custom[definition.code] = definition
    return definition


def unregister_instrument(code: str) -> None:
    """Remove a loaded (non-bundled) instrument from this process."""
    _custom.pop(code, None)


def get_instrument(code: str) -> InstrumentDefinition:
    found = _bundled().get(code) or _custom.get(code)
    if found is None:
        valid = ", ".join(sorted([*_bundled(), *_custom]))
        raise KeyError(f"unknown instrument {code!r}; available: {valid}")
    return found


def instruments() -> list[InstrumentInfo]:
    out = []
    for bundled, table in ((True, _bundled()), (False, _custom)):
        for d in table.values():
            out.append(
                InstrumentInfo(
                    code=d.code,
                    name=d.name,
                    kind=d.kind,
                    version=d.version,
                    items=len(d.items),
                    evidence=d.evidence,
                    licence=d.licence,
                    bundled=bundled,
                )
            )
    return out


# --- validation ----------------------------------------------------------------------------------

_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _coerce(item: Item, raw: object) -> tuple[Scalar | None, ItemError | None]:
    def bad(msg: str) -> tuple[None, ItemError]:
        return None, ItemError(item=item.code, message=msg, allowed=item.allowed())

    if item.type == "boolean":
        if isinstance(raw, bool):
            return raw, None
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
        return bad(f"{raw!r} is not a boolean")
    if item.type == "text":
        text = str(raw).strip()
        return (text, None) if text else bad("is empty")
    if item.type == "choice":
        assert item.choices is not None
        key = str(raw).strip()
        if isinstance(raw, float) and raw.is_integer():
            key = str(int(raw))
        for choice in item.choices:
            if str(choice.value) == key or str(choice.value).lower() == key.lower():
                return choice.value, None
        return bad(f"{raw!r} is not an allowed choice")
    # numeric
    if isinstance(raw, bool):
        return bad(f"{raw!r} is not a number")
    try:
        number = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        return bad(f"{raw!r} is not a number")
    if math.isnan(number) or math.isinf(number):
        return bad(f"{raw!r} is not a finite number")
    value: int | float = number
    if item.type == "integer":
        if not number.is_integer():
            return bad(f"{raw!r} is not a whole number")
        value = int(number)
    if item.gt is not None and not number > item.gt:
        return bad(f"{raw!r} is out of range")
    if item.min is not None and number < item.min:
        return bad(f"{raw!r} is out of range")
    if item.max is not None and number > item.max:
        return bad(f"{raw!r} is out of range")
    return value, None


def validate_responses(definition: InstrumentDefinition, responses: Mapping[str, object]) -> dict[str, Any]:
    """Validated, typed responses (defaults applied). Raises `InstrumentValidationError` listing
    every problem: unknown items, missing required items, wrong types, out-of-range values."""
    errors: list[ItemError] = []
    known = {i.code for i in definition.items}
    for code in responses:
        if code not in known:
            errors.append(
                ItemError(
                    item=str(code),
                    message="is not an item of this instrument",
                    allowed=", ".join(i.code for i in definition.items),
                )
            )
    values: dict[str, Any] = {}
    for item in definition.items:
        raw = responses.get(item.code)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if item.required:
                errors.append(ItemError(item=item.code, message="is required", allowed=item.allowed()))
            elif item.default is not None:
                values[item.code] = item.default
            continue
        value, error = _coerce(item, raw)
        if error:
            errors.append(error)
        else:
            values[item.code] = value
    if errors:
        raise InstrumentValidationError(definition.code, errors)
    return values


# --- scoring -------------------------------------------------------------------------------------


def _points(item: Item, value: Any) -> float:
    if item.type == "choice":
        assert item.choices is not None
        for c in item.choices:
            if c.value == value:
                pts = c.points()
                assert pts is not None
                return pts
    return float(value)


def _band(bands: list[Band], value: float) -> str | None:
    for band in bands:
        if band.contains(value):
            return band.label
    return None


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 4)


def score(instrument_code: str | InstrumentDefinition, responses: Mapping[str, object]) -> InstrumentScore:
    """Validate and score one administration of an instrument."""
    definition = (
        instrument_code if isinstance(instrument_code, InstrumentDefinition) else get_instrument(instrument_code)
    )
    values = validate_responses(definition, responses)
    sc = definition.scoring
    grade: str | None = None
    subscores: dict[str, float | int | str] = {}
    warnings: list[str] = []
    unit = sc.unit

    if sc.method == "single":
        assert sc.item is not None
        item = definition.item(sc.item)
        value: float | int | str = values[sc.item]
        label = next((c.label for c in item.choices or [] if c.value == value), str(value))
        grade = str(value)
        interpretation = f"{item.label}: {value} - {label}" if label != str(value) else f"{item.label}: {value}"
    elif sc.method == "algorithm":
        assert sc.algorithm is not None
        result = ALGORITHMS[sc.algorithm](values)
        value, unit, grade = result.value, result.unit or unit, result.grade
        interpretation, subscores, warnings = result.interpretation, dict(result.subscores), list(result.warnings)
    else:
        scored = definition._scored_items()
        present = [i for i in scored if i.code in values]
        if len(present) != len(scored):
            missing = [i.code for i in scored if i.code not in values]
            raise InstrumentValidationError(
                definition.code, [ItemError(item=m, message="is needed for the score") for m in missing]
            )
        total = sum(_points(i, values[i.code]) for i in present)
        raw = total / len(present) if sc.method == "mean" else total
        value = _num(raw)
        if sc.method == "lookup":
            assert sc.table is not None
            key = int(round(total))
            if key not in sc.table:
                raise InstrumentValidationError(
                    definition.code,
                    [
                        ItemError(
                            item="(total)",
                            message=f"raw total {key} is not in the conversion table",
                            allowed=f"{min(sc.table)}-{max(sc.table)}",
                        )
                    ],
                )
            subscores["raw_total"] = _num(total)
            value = _num(sc.table[key])
        grade = _band(sc.bands, float(value)) if sc.bands else None
        lo = sum(_min_points(i) for i in present)
        hi = sum(_max_points(i) for i in present)
        span = f" (range {_num(lo)}-{_num(hi)})" if sc.method == "sum" else ""
        interpretation = f"{'Total' if sc.method != 'mean' else 'Mean'} {value}{span}"
        if grade is not None:
            interpretation += f": {grade}"
        elif sc.bands:
            interpretation += ": outside the published bands"
        if sc.bands and sc.bands_evidence in (EvidenceLabel.unverified, EvidenceLabel.expert_opinion):
            warnings.append(f"band cut-offs are {sc.bands_evidence.value.replace('_', ' ')}")
        for item in definition.items:
            if not item.scored and item.code in values:
                subscores[item.code] = values[item.code]
    return InstrumentScore(
        instrument=definition.code,
        name=definition.name,
        version=definition.version,
        value=value,
        unit=unit,
        grade=grade,
        interpretation=interpretation,
        subscores=subscores,
        items=values,
        citations=list(definition.citations),
        evidence=definition.evidence,
        warnings=warnings,
    )


class ScoreChange(BaseModel):
    instrument: str
    baseline: float | int | str
    follow_up: float | int | str
    change: float = Field(description="follow-up minus baseline (ranks for ordered classes)")
    percent_change: float | None = None
    improved: bool | None = Field(description="None when the instrument has no direction or nothing changed")
    direction: str
    compared_as: Literal["value", "rank"]


def _rank(definition: InstrumentDefinition, result: InstrumentScore) -> tuple[float, Literal["value", "rank"]]:
    if isinstance(result.value, int | float) and not isinstance(result.value, bool):
        return float(result.value), "value"
    sc = definition.scoring
    if sc.method == "single" and sc.item:
        choices = [c.value for c in definition.item(sc.item).choices or []]
        return float(choices.index(result.items[sc.item])), "rank"
    if "rank" in result.subscores:
        return float(result.subscores["rank"]), "rank"
    raise ValueError(f"{definition.code}: value {result.value!r} cannot be compared")


def change_from_baseline(baseline: InstrumentScore, follow_up: InstrumentScore) -> ScoreChange:
    """Change of one instrument from baseline to follow-up. Numeric values are subtracted; ordered
    classes (Glogau, Norwood-Hamilton, Clavien-Dindo ...) are compared by their rank in the scale.
    `improved` follows the instrument's `direction` in the definition file."""
    if baseline.instrument != follow_up.instrument:
        raise ValueError(f"cannot compare {baseline.instrument!r} with {follow_up.instrument!r}")
    definition = get_instrument(baseline.instrument)
    before, how = _rank(definition, baseline)
    after, _ = _rank(definition, follow_up)
    change = after - before
    improved: bool | None = None
    if definition.direction != "none" and change != 0:
        improved = change > 0 if definition.direction == "higher_is_better" else change < 0
    pct = 100.0 * change / before if how == "value" and before != 0 else None
    return ScoreChange(
        instrument=definition.code,
        baseline=baseline.value,
        follow_up=follow_up.value,
        change=_num(change),
        percent_change=round(pct, 2) if pct is not None else None,
        improved=improved,
        direction=definition.direction,
        compared_as=how,
    )


def _min_points(item: Item) -> float:
    if item.type == "choice":
        return min(c.points() or 0.0 for c in item.choices or [])
    return item.min if item.min is not None else (item.gt or 0.0)


def _max_points(item: Item) -> float:
    if item.type == "choice":
        return max(c.points() or 0.0 for c in item.choices or [])
    return item.max or 0.0


__all__ = [
    "Band",
    "Choice",
    "InstrumentDefinition",
    "InstrumentInfo",
    "InstrumentScore",
    "InstrumentValidationError",
    "Item",
    "ItemError",
    "ScoreChange",
    "Scoring",
    "change_from_baseline",
    "get_instrument",
    "instruments",
    "load_instrument_definition",
    "parse_instrument_file",
    "score",
    "unregister_instrument",
    "validate_responses",
]
