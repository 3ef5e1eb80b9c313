"""The regulatory gate: which regulatory class a plan's product falls in, per jurisdiction, and what it needs.

The rules are data, not code: one rule pack per jurisdiction in `kb/data/regulatory/<code>.yaml`
(schema `regenguide.regulatory/1`), validated at load; every citation must resolve. This module only
interprets them. A pack is an ordered list of rules; the first rule whose `when` conditions all hold
decides the class. The last rule of every pack must be a catch-all, so every plan gets a class.

Conditions look at plain facts of the plan (modality, same_surgical_procedure, homologous_use,
indication) and at optional facts the plan document does not carry (`RegulatoryContext`: hospital
setting, advertising, approved trial). A fact the plan leaves open is `null`; rules can match it
explicitly (e.g. `homologous_use: null`), which is how the packs fall back to the stricter class and
ask the clinician to document the missing fact instead of guessing it.

Evidence: the assessment carries the weakest evidence label among the deciding rule and its cited
references. Anything weaker than `verified` sets `verify_locally` and adds a requirement to confirm
the classification with the regulator, so secondary or unverified rules are never presented as fact.
A jurisdiction without a pack gets class `verify_locally`, never "allowed".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regenguide.domain.plan import Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, load_references, resolve

PACK_SCHEMA = "regenguide.regulatory/1"
VERIFY_LOCALLY = "verify_locally"

EVIDENCE_RANK: dict[EvidenceLabel, int] = {
    EvidenceLabel.verified: 0,
    EvidenceLabel.secondary: 1,
    EvidenceLabel.expert_opinion: 2,
    EvidenceLabel.unverified: 3,
}


def weakest(labels: Iterable[EvidenceLabel | str]) -> EvidenceLabel:
    """The weakest of the given evidence labels (`verified` when none are given)."""
    worst = EvidenceLabel.verified
    for label in labels:
        value = EvidenceLabel(label)
        if EVIDENCE_RANK[value] > EVIDENCE_RANK[worst]:
            worst = value
    return worst


# --- rule-pack schema ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class RequirementSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    text: str = Field(min_length=1)
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel = EvidenceLabel.verified


class ClassSpec(_Strict):
    label: str = Field(min_length=1)
    description: str = Field(min_length=1)
    allowed_outside_trial: bool
    investigational: bool
    requirements: list[RequirementSpec] = Field(default_factory=list)
    citations: list[str] = Field(min_length=1)


TriState = list[bool | None] | None


class Conditions(_Strict):
    """All given conditions must hold. A tri-state condition lists the accepted values; `null`
    matches a fact the plan leaves open. An absent condition does not constrain."""

    modality: list[Modality] | None = None
    indication: list[str] | None = None
    same_surgical_procedure: TriState = None
    homologous_use: TriState = None
    hospital_setting: TriState = None
    advertised: TriState = None
    approved_trial: TriState = None

    @field_validator(
        "same_surgical_procedure",
        "homologous_use",
        "hospital_setting",
        "advertised",
        "approved_trial",
        mode="before",
    )
    @classmethod
    def _listify(cls, value: object) -> object:
        return value if isinstance(value, list) else [value]

    @field_validator("modality", "indication", mode="before")
    @classmethod
    def _listify_codes(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def is_catch_all(self) -> bool:
        return not self.model_fields_set

    def matches(self, facts: Mapping[str, Any]) -> bool:
        for name in self.model_fields_set:
            accepted = getattr(self, name)
            if accepted is None:
                continue
            if facts.get(name) not in accepted:
                return False
        return True


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    when: Conditions = Field(default_factory=Conditions)
    class_: str = Field(alias="class", min_length=1)
    evidence: EvidenceLabel
    citations: list[str] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)
    requirements: list[RequirementSpec] = Field(default_factory=list)
    # Overrides of the class defaults for this rule (e.g. a licensed CAR-T product is a 351 biologic
    # but is not investigational when used on label).
    allowed_outside_trial: bool | None = None
    investigational: bool | None = None


class RulePack(_Strict):
    schema_: str = Field(alias="schema")
    jurisdiction: str = Field(pattern=r"^[A-Z]{2,8}$")
    aliases: list[str] = Field(default_factory=list)
    name: str = Field(min_length=1)
    authority: str = Field(min_length=1)
    version: str = Field(min_length=1, description="date the pack was last reviewed, ISO 8601")
    summary: str = Field(min_length=1)
    classes: dict[str, ClassSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RulePack:
        bad = [a for a in self.aliases if not re.fullmatch(r"[A-Z]{2,8}", a)]
        if bad:
            raise ValueError(f"aliases must be upper-case codes of 2-8 letters, got {bad}")
        if self.schema_ != PACK_SCHEMA:
            raise ValueError(f"schema must be {PACK_SCHEMA!r}, got {self.schema_!r}")
        rule_ids: set[str] = set()
        for rule in self.rules:
            if rule.class_ not in self.classes:
                raise ValueError(f"rule {rule.id!r} names unknown class {rule.class_!r}")
            if rule.id in rule_ids:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            rule_ids.add(rule.id)
        if not self.rules[-1].when.is_catch_all():
            raise ValueError("the last rule must be a catch-all (no `when` conditions)")
        for rule in self.rules[:-1]:
            if rule.when.is_catch_all():
                raise ValueError(f"rule {rule.id!r} is a catch-all before the end: later rules never apply")
        req_ids: set[str] = set()
        for req in [r for c in self.classes.values() for r in c.requirements] + [
            r for rule in self.rules for r in rule.requirements
        ]:
            if req.id in req_ids:
                raise ValueError(f"duplicate requirement id {req.id!r}")
            req_ids.add(req.id)
        return self

    def all_citations(self) -> list[str]:
        ids: list[str] = []
        for cls in self.classes.values():
            ids += cls.citations + [c for r in cls.requirements for c in r.citations]
        for rule in self.rules:
            ids += rule.citations + [c for r in rule.requirements for c in r.citations]
        return ids


def parse_pack(name: str, data: object) -> RulePack:
    """Validate one parsed YAML document as a rule pack; raise `KnowledgeBaseError` naming the file."""
    try:
        pack = RulePack.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"regulatory pack {name}: {exc}") from exc
    resolve(pack.all_citations(), where=f"regulatory pack {name}")
    return pack


def parse_packs(documents: Iterable[tuple[str, object]]) -> dict[str, RulePack]:
    """Validate `(file name, parsed YAML)` pairs; map every jurisdiction code and alias to its pack."""
    by_code: dict[str, RulePack] = {}
    for name, data in documents:
        pack = parse_pack(name, data)
        for code in [pack.jurisdiction, *pack.aliases]:
            if code in by_code:
                raise KnowledgeBaseError(f"regulatory pack {name}: jurisdiction code {code!r} defined twice")
            by_code[code] = pack
    return by_code


@cache
def load_packs() -> dict[str, RulePack]:
    """All shipped rule packs keyed by jurisdiction code and alias (validated once, then cached)."""
    folder = resources.files("regenguide.kb") / "data" / "regulatory"
    docs = [
        (entry.name, yaml.safe_load(entry.read_text(encoding="utf-8")))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    ]
    return parse_packs(docs)


def packs() -> list[RulePack]:
    """Each shipped rule pack once, in jurisdiction order."""
    unique = {id(p): p for p in load_packs().values()}
    return sorted(unique.values(), key=lambda p: p.jurisdiction)


# --- assessment ------------------------------------------------------------------------------------


class RegulatoryContext(BaseModel):
    """Facts that decide some classes but are not part of the plan document. Unknown (None) facts
    make the packs choose the stricter class and ask for the fact to be documented."""

    model_config = ConfigDict(extra="forbid")

    hospital_setting: bool | None = Field(
        default=None, description="product made and used in a hospital for that hospital's patient (AU)"
    )
    advertised: bool | None = Field(
        default=None, description="the product/service is advertised to consumers"
    )
    approved_trial: bool | None = Field(
        default=None, description="the treatment is given within an approved clinical trial / IND / CTA"
    )


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    citations: list[str]
    evidence: EvidenceLabel


class RegulatoryAssessment(BaseModel):
    """Serialises (by alias) to {"jurisdiction", "class", "allowed_outside_trial", "requirements",
    "citations", ...}."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    jurisdiction: str
    class_: str = Field(alias="class")
    class_label: str
    allowed_outside_trial: bool
    investigational: bool
    requirements: list[Requirement]
    citations: list[str]
    evidence: EvidenceLabel
    verify_locally: bool
    notes: list[str] = Field(default_factory=list)
    rule: str
    pack: str | None = Field(default=None, description="jurisdiction code of the rule pack applied")
    pack_version: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def plan_facts(plan: PlanDocument, context: RegulatoryContext | None = None) -> dict[str, Any]:
    ctx = context or RegulatoryContext()
    return {
        "modality": plan.modality,
        "indication": plan.indication,
        "same_surgical_procedure": plan.same_surgical_procedure,
        "homologous_use": plan.homologous_use,
        "hospital_setting": ctx.hospital_setting,
        "advertised": ctx.advertised,
        "approved_trial": ctx.approved_trial,
    }


def _dedupe(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _requirement(spec: RequirementSpec) -> Requirement:
    refs = resolve(spec.citations)
    evidence = weakest([spec.evidence, *(r.evidence for r in refs)])
    return Requirement(id=spec.id, text=spec.text, citations=list(spec.citations), evidence=evidence)


def _no_pack(jurisdiction: str) -> RegulatoryAssessment:
    known = ", ".join(p.jurisdiction for p in packs())
    return RegulatoryAssessment(
        jurisdiction=jurisdiction,
        class_=VERIFY_LOCALLY,
        class_label="No rule pack: verify locally",
        allowed_outside_trial=False,
        investigational=False,
        requirements=[
            Requirement(
                id="reg.no_pack.confirm",
                text=(
                    f"RegenGuide has no regulatory rule pack for {jurisdiction}. Confirm the product's legal "
                    "status with the national regulator (or local regulatory counsel) before treating; "
                    "nothing here means the treatment is allowed."
                ),
                citations=["reg.kim-2024-frontpharmacol"],
                evidence=EvidenceLabel.unverified,
            )
        ],
        citations=["reg.kim-2024-frontpharmacol"],
        evidence=EvidenceLabel.unverified,
        verify_locally=True,
        notes=[f"Rule packs exist for: {known}."],
        rule="reg.no_pack",
    )


def assess(plan: PlanDocument, *, context: RegulatoryContext | None = None) -> RegulatoryAssessment:
    """Classify the plan's product under the rule pack of `plan.jurisdiction` (pure function)."""
    code = plan.jurisdiction.upper()
    pack = load_packs().get(code)
    if pack is None:
        return _no_pack(code)
    facts = plan_facts(plan, context)
    rule = next(r for r in pack.rules if r.when.matches(facts))  # the last rule always matches
    cls = pack.classes[rule.class_]
    refs = load_references()
    evidence = weakest([rule.evidence, *(refs[c].evidence for c in rule.citations)])
    requirements = [_requirement(s) for s in [*cls.requirements, *rule.requirements]]
    verify_locally = evidence is not EvidenceLabel.verified or rule.class_ == VERIFY_LOCALLY
    if verify_locally:
        requirements.append(
            Requirement(
                id=f"{rule.id}.confirm_locally",
                text=(
                    f"This classification rests on {evidence.value.replace('_', ' ')} sources only: "
                    "confirm it "
                    f"with {pack.authority} (or local regulatory counsel) before treating."
                ),
                citations=list(rule.citations),
                evidence=evidence,
            )
        )
    citations = _dedupe([*rule.citations, *cls.citations, *(c for r in requirements for c in r.citations)])
    allowed = cls.allowed_outside_trial if rule.allowed_outside_trial is None else rule.allowed_outside_trial
    notes = [*rule.notes, cls.description]
    if code != pack.jurisdiction:
        notes.append(
            f"{code} is covered by the {pack.name} rule pack ({pack.jurisdiction}); "
            "national rules may add to it."
        )
    if facts["approved_trial"] and not allowed:
        notes.append(
            "The plan is declared to be part of an approved clinical trial: keep the approvals on file."
        )
    return RegulatoryAssessment(
        jurisdiction=code,
        class_=rule.class_,
        class_label=cls.label,
        allowed_outside_trial=allowed,
        investigational=cls.investigational if rule.investigational is None else rule.investigational,
        requirements=requirements,
        citations=citations,
        evidence=evidence,
        verify_locally=verify_locally,
        notes=notes,
        rule=rule.id,
        pack=pack.jurisdiction,
        pack_version=pack.version,
    )
