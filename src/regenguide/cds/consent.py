"""Informed consent documents for a plan: HTML (Jinja2), PDF (reportlab) and a provable canonical text.

Content comes from data, not code: `kb/data/consent/common.yaml` (imaging, data use, decision block,
investigational wording) and `kb/data/consent/modalities.yaml` (procedure, benefit, risks with sourced
rates, alternatives), both validated at load (schema `regenguide.consent/1`). Two rules keep numbers
honest, and the loader enforces them loudly:

* qualitative text (procedure, benefit, risk text, data-use text) may not contain digits: a number can
  only appear in a risk's `rate` or in a `facts` entry, and
* every `rate`/`facts` entry must cite at least one reference, and all its references must be labelled
  `verified` or `secondary` (an unverified or expert-opinion number is never shown to a patient).

GRADE certainty comes from the knowledge base (`regenguide.kb.knowledge_base().modalities[code]`) when it
is available, else from the consent data's own cited fallback. Investigational status comes from the
regulatory gate (`regenguide.cds.regulatory.assess`): the investigational section appears exactly when the
assessment says the product is investigational.

`text_digest` is the SHA-256 of the canonical UTF-8 text (NFC, LF line ends). The canonical text binds the
document to the plan through the plan's own digest, so any change of the plan changes the consent
digest; a stored `ConsentDecision` carries the digest and version, and `verify_decision` proves which
text was signed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regenguide.cds.regulatory import RegulatoryAssessment, RegulatoryContext, assess, weakest
from regenguide.domain.plan import Consent, ImagingModality, Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, load_references, resolve

CONSENT_SCHEMA = "regenguide.consent/1"
#: Bump when the layout of the canonical text changes (the document version includes it).
CANONICAL_FORMAT = "1"
LANGUAGES = ("en",)

_DIGITS = re.compile(r"\d")
_NUMBER_OK = {EvidenceLabel.verified, EvidenceLabel.secondary}
GradeCode = Literal["high", "moderate", "low", "very_low"]


class ConsentError(ValueError):
    """Consent cannot be rendered as asked (e.g. unsupported language)."""


# --- data schema ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _qualitative(text: str) -> str:
    if _DIGITS.search(text):
        raise ValueError(
            f"qualitative text may not contain numbers (put them in a cited rate/fact): {text!r}"
        )
    return text


class CitedText(_Strict):
    text: str = Field(min_length=1)
    citations: list[str] = Field(default_factory=list)


class Fact(_Strict):
    """A sourced statement that may contain numbers."""

    text: str = Field(min_length=1)
    citations: list[str] = Field(min_length=1)


class RiskSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    text: str = Field(min_length=1)
    rate: str | None = None
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel

    @field_validator("text")
    @classmethod
    def _text_qualitative(cls, value: str) -> str:
        return _qualitative(value)


class GradeSpec(_Strict):
    level: GradeCode
    upper: GradeCode | None = None
    citations: list[str] = Field(min_length=1)


class ModalityConsent(_Strict):
    name: str = Field(min_length=1)
    procedure: str = Field(min_length=1)
    benefit: str = Field(min_length=1)
    facts: list[Fact] = Field(default_factory=list)
    grade: GradeSpec | None = None
    imaging: CitedText | None = Field(
        default=None, description="replaces the common imaging text (e.g. infusions, skin-surface treatments)"
    )
    risks: list[RiskSpec] = Field(min_length=1)
    alternatives: list[CitedText] = Field(min_length=1)

    @field_validator("procedure", "benefit")
    @classmethod
    def _texts_qualitative(cls, value: str) -> str:
        return _qualitative(value)

    @model_validator(mode="after")
    def _alternatives_numbers_cited(self) -> ModalityConsent:
        for alt in self.alternatives:
            if _DIGITS.search(alt.text) and not alt.citations:
                raise ValueError(f"alternative with a number needs a citation: {alt.text!r}")
        return self


class ModalitiesFile(_Strict):
    schema_: Literal["regenguide.consent/1"] = Field(alias="schema")
    language: str
    modalities: dict[Modality, ModalityConsent]

    @model_validator(mode="after")
    def _complete(self) -> ModalitiesFile:
        missing = set(Modality) - set(self.modalities)
        if missing:
            raise ValueError(f"no consent content for modalities: {sorted(m.value for m in missing)}")
        return self


class DataUse(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    text: str = Field(min_length=1)
    citations: list[str] = Field(default_factory=list)
    facts: list[Fact] = Field(default_factory=list)
    applies_to: list[Modality] | None = None

    @field_validator("text")
    @classmethod
    def _text_qualitative(cls, value: str) -> str:
        return _qualitative(value)


class HighRiskRegions(_Strict):
    codes: list[str] = Field(min_length=1)
    text: str = Field(min_length=1)
    citations: list[str] = Field(min_length=1)


class TemplateText(_Strict):
    text: str = Field(min_length=1)
    verify_locally: str | None = None
    in_trial: str | None = None


class DecisionSpec(_Strict):
    statements: list[str] = Field(min_length=1)
    investigational_statement: str = Field(min_length=1)
    choices: list[str] = Field(min_length=2, max_length=2)
    data_choices: list[str] = Field(default_factory=list)


class CommonFile(_Strict):
    schema_: Literal["regenguide.consent/1"] = Field(alias="schema")
    language: str
    version: str = Field(min_length=1)
    title: str = Field(min_length=1)
    intro: str = Field(min_length=1)
    imaging: dict[Literal["ultrasound_doppler", "ultrasound", "ct", "mri", "fluoroscopy", "none"], CitedText]
    high_risk_regions: HighRiskRegions
    investigational: TemplateText
    regulatory: TemplateText
    data_use: list[DataUse] = Field(min_length=1)
    decision: DecisionSpec
    grade_fallback_meanings: dict[GradeCode, str]
    grade_citations: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete(self) -> CommonFile:
        needed = {"ultrasound_doppler", "ultrasound", "ct", "mri", "fluoroscopy", "none"}
        if set(self.imaging) != needed:
            raise ValueError(f"imaging texts needed for exactly {sorted(needed)}")
        if set(self.grade_fallback_meanings) != {"high", "moderate", "low", "very_low"}:
            raise ValueError("grade_fallback_meanings needs high, moderate, low and very_low")
        return self


class ConsentData(BaseModel):
    common: CommonFile
    modalities: ModalitiesFile
    digest: str


def _check_sources(common: CommonFile, mods: ModalitiesFile) -> None:
    """Every citation resolves; every number is backed by verified or secondary references only."""
    refs = load_references()

    def numbers_ok(ids: list[str], where: str) -> None:
        resolve(ids, where=where)
        weak = [i for i in ids if refs[i].evidence not in _NUMBER_OK]
        if weak:
            raise KnowledgeBaseError(
                f"{where}: a number may only cite verified/secondary sources, not {weak}"
            )

    for code, m in mods.modalities.items():
        where = f"consent modalities.yaml [{code.value}]"
        for fact in m.facts:
            numbers_ok(fact.citations, where)
        for risk in m.risks:
            resolve(risk.citations, where=f"{where} risk {risk.id}")
            if risk.rate is not None:
                numbers_ok(risk.citations, f"{where} risk {risk.id}")
                if risk.evidence not in _NUMBER_OK:
                    raise KnowledgeBaseError(
                        f"{where} risk {risk.id}: a rate needs evidence verified or secondary"
                    )
        for alt in m.alternatives:
            (numbers_ok if _DIGITS.search(alt.text) else resolve)(alt.citations, where)  # type: ignore[operator]
        if m.grade:
            resolve(m.grade.citations, where=where)
        if m.imaging:
            resolve(m.imaging.citations, where=where)
    for key, item in common.imaging.items():
        resolve(item.citations, where=f"consent common.yaml imaging.{key}")
    resolve(common.high_risk_regions.citations, where="consent common.yaml high_risk_regions")
    resolve(common.grade_citations, where="consent common.yaml grade_citations")
    for use in common.data_use:
        resolve(use.citations, where=f"consent common.yaml data_use.{use.id}")
        for fact in use.facts:
            numbers_ok(fact.citations, f"consent common.yaml data_use.{use.id}")


def parse_consent_data(common_raw: object, modalities_raw: object, *, digest: str = "") -> ConsentData:
    """Validate parsed YAML documents; raise `KnowledgeBaseError` naming the file and the problem."""
    try:
        common = CommonFile.model_validate(common_raw)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"consent common.yaml: {exc}") from exc
    try:
        mods = ModalitiesFile.model_validate(modalities_raw)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"consent modalities.yaml: {exc}") from exc
    _check_sources(common, mods)
    return ConsentData(common=common, modalities=mods, digest=digest)


@cache
def load_consent_data(language: str = "en") -> ConsentData:
    if language not in LANGUAGES:
        raise ConsentError(
            f"consent language {language!r} is not available (available: {', '.join(LANGUAGES)})"
        )
    folder = resources.files("regenguide.kb") / "data" / "consent"
    texts = {name: (folder / name).read_text(encoding="utf-8") for name in ("common.yaml", "modalities.yaml")}
    template = (resources.files("regenguide.cds") / "templates" / "consent.html").read_text(encoding="utf-8")
    h = hashlib.sha256(CANONICAL_FORMAT.encode())
    for part in (texts["common.yaml"], texts["modalities.yaml"], template):
        h.update(part.encode("utf-8"))
    return parse_consent_data(
        yaml.safe_load(texts["common.yaml"]), yaml.safe_load(texts["modalities.yaml"]), digest=h.hexdigest()
    )


def consent_version(language: str = "en") -> str:
    """The version of the consent content (data + template) that `render_consent` currently produces;
    a signed consent whose version differs was signed on an older text."""
    data = load_consent_data(language)
    return f"{data.common.version}+{data.digest[:12]}"


# --- the document ------------------------------------------------------------------------------------


class Item(BaseModel):
    """One cited line of a section; `rate` holds the sourced number of a risk."""

    text: str
    rate: str | None = None
    citations: list[str] = Field(default_factory=list)
    evidence: EvidenceLabel | None = None
    refs: list[int] = Field(
        default_factory=list, description="reference numbers in the document's source list"
    )


class Section(BaseModel):
    id: str
    heading: str
    paragraphs: list[Item] = Field(default_factory=list)
    items: list[Item] = Field(default_factory=list)


class SourceEntry(BaseModel):
    number: int
    id: str
    label: str
    title: str
    link: str
    evidence: EvidenceLabel


class ConsentDocument(BaseModel):
    """A rendered consent document. `text` is the canonical text whose SHA-256 is `text_digest`."""

    model_config = ConfigDict(extra="forbid")

    version: str
    language: str
    title: str
    jurisdiction: str
    modality: Modality
    regulatory_class: str
    investigational: bool
    plan_digest: str
    patient_name: str | None = None
    clinic: str | None = None
    sections: list[Section]
    sources: list[SourceEntry]
    text: str
    text_digest: str
    html: str


class ConsentDecision(BaseModel):
    """The signed decision on one consent document, for the store (pure record; no I/O)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Literal["accepted", "declined"]
    signer_name: str = Field(min_length=1, max_length=200)
    signer_role: Literal["patient", "guardian"]
    signed_at: datetime
    document_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    version: str = Field(min_length=1)
    registry_opt_in: bool | None = None
    research_opt_in: bool | None = None

    @field_validator("signed_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("signed_at must include a timezone")
        return value


def canonical_digest(text: str) -> str:
    return hashlib.sha256(_canonical(text).encode("utf-8")).hexdigest()


def _canonical(text: str) -> str:
    lines = [line.rstrip() for line in unicodedata.normalize("NFC", text).replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip() + "\n"


def plan_digest(plan: PlanDocument) -> str:
    """SHA-256 of the plan's canonical JSON, without its consent status (which is not consented to)."""
    data = plan.to_json_dict()
    data.pop("consent", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


class _GradeView(BaseModel):
    level: str
    upper: str | None = None
    meaning: str
    upper_meaning: str | None = None
    basis: str | None = None
    citations: list[str]
    evidence: EvidenceLabel
    from_kb: bool


def _grade_from_kb(modality: Modality) -> _GradeView | None:
    """GRADE from the knowledge base when it provides modalities (the KB engineer's module)."""
    try:
        from regenguide.kb import knowledge_base  # type: ignore[attr-defined]
    except ImportError:
        return None
    kb = knowledge_base()  # a broken knowledge base raises KnowledgeBaseError: fail loudly
    info = getattr(kb, "modalities", {}).get(modality.value)
    if info is None or getattr(info, "grade", None) is None:
        return None
    level = str(getattr(info.grade, "value", info.grade))
    upper_raw = getattr(info, "grade_upper", None)
    upper = None if upper_raw is None else str(getattr(upper_raw, "value", upper_raw))
    levels = getattr(kb, "grade_levels", {}) or {}

    def meaning(code: str) -> str:
        entry = levels.get(code)
        return str(getattr(entry, "meaning", "")) if entry is not None else ""

    citations = list(getattr(info, "citations", []) or [])
    grade_cites = [
        c for e in (levels.get(level), levels.get(upper or "")) if e is not None for c in e.citations
    ]
    return _GradeView(
        level=level,
        upper=upper,
        meaning=meaning(level),
        upper_meaning=meaning(upper) if upper else None,
        basis=getattr(info, "grade_basis", None),
        citations=list(dict.fromkeys([*citations, *grade_cites])),
        evidence=EvidenceLabel(getattr(info, "grade_evidence", EvidenceLabel.unverified)),
        from_kb=True,
    )


def _grade(modality: Modality, data: ConsentData) -> _GradeView | None:
    view = _grade_from_kb(modality)
    if view is not None:
        if not view.meaning:
            view.meaning = data.common.grade_fallback_meanings.get(view.level, "")  # type: ignore[call-overload]
        if view.upper and not view.upper_meaning:
            view.upper_meaning = data.common.grade_fallback_meanings.get(view.upper)  # type: ignore[call-overload]
        return view
    spec = data.modalities.modalities[modality].grade
    if spec is None:
        return None
    meanings = data.common.grade_fallback_meanings
    return _GradeView(
        level=spec.level,
        upper=spec.upper,
        meaning=meanings[spec.level],
        upper_meaning=meanings[spec.upper] if spec.upper else None,
        citations=[*spec.citations, *data.common.grade_citations],
        evidence=weakest(r.evidence for r in resolve(spec.citations)),
        from_kb=False,
    )


def _level_words(code: str) -> str:
    return code.replace("_", " ")


def _describe_injection(inj: Any) -> str:
    parts = [inj.region.replace("_", " ")]
    if inj.side and inj.side.value != "midline":
        parts[0] += f" ({inj.side.value})"
    if inj.plane:
        parts.append(f"{inj.plane.replace('_', ' ')} plane")
    if inj.device:
        parts.append(inj.device.value + (f" {inj.gauge}G" if inj.gauge else ""))
    if inj.volume_ml is not None:
        parts.append(f"{inj.volume_ml:g} mL")
    if inj.needle_depth_mm is not None:
        parts.append(f"needle depth {inj.needle_depth_mm:g} mm")
    return ", ".join(parts)


def _imaging_key(plan: PlanDocument) -> str:
    imaging = plan.guidance.imaging
    if imaging is ImagingModality.ultrasound:
        return "ultrasound_doppler" if plan.guidance.doppler else "ultrasound"
    return imaging.value


def _build_sections(
    plan: PlanDocument,
    data: ConsentData,
    reg: RegulatoryAssessment,
    patient_name: str | None,
    clinic: str | None,
    in_trial: bool = False,
) -> list[Section]:
    common, mod = data.common, data.modalities.modalities[plan.modality]
    sections: list[Section] = []

    about = [Item(text=common.intro)]
    if patient_name:
        about.append(Item(text=f"Patient: {patient_name}"))
    if clinic:
        about.append(Item(text=f"Clinic: {clinic}"))
    sections.append(Section(id="about", heading="About this document", paragraphs=about))

    procedure = [Item(text=mod.procedure)]
    injections = [Item(text=_describe_injection(inj)) for inj in plan.injections]
    if plan.course:
        c = plan.course
        course = f"Planned course: {c.sessions} session(s), {c.interval_weeks:g} week(s) apart."
        if c.combined_with:
            course += " Combined with: " + ", ".join(x.replace("_", " ") for x in c.combined_with) + "."
        if c.advice:
            course += " Advice: " + ", ".join(x.replace("_", " ") for x in c.advice) + "."
        procedure.append(Item(text=course))
    procedure.append(Item(text=f"Indication: {plan.indication.replace('_', ' ')}."))
    sections.append(
        Section(id="procedure", heading=f"The procedure: {mod.name}", paragraphs=procedure, items=injections)
    )

    img = mod.imaging or common.imaging[_imaging_key(plan)]  # type: ignore[index]
    sections.append(
        Section(
            id="imaging",
            heading="Imaging guidance",
            paragraphs=[Item(text=img.text, citations=img.citations)],
        )
    )

    benefit = [Item(text=mod.benefit)]
    benefit += [Item(text=f.text, citations=f.citations) for f in mod.facts]
    grade = _grade(plan.modality, data)
    if grade is None:
        benefit.append(
            Item(
                text="The certainty of the evidence for this treatment has not been graded in RegenGuide's "
                "sources; "
                "ask your clinician about the evidence for your condition."
            )
        )
    else:
        level = _level_words(grade.level)
        if grade.upper and grade.upper != grade.level:
            level = f"{level} to {_level_words(grade.upper)}"
        first = _level_words(grade.level).capitalize()
        text = f"Certainty of the evidence of benefit (GRADE): {level}. {first}: "
        text += grade.meaning.rstrip(".") + "."
        if grade.upper and grade.upper_meaning and grade.upper != grade.level:
            text += f" {_level_words(grade.upper).capitalize()}: {grade.upper_meaning.rstrip('.')}."
        benefit.append(Item(text=text, citations=grade.citations, evidence=grade.evidence))
    sections.append(
        Section(id="benefit", heading="Expected benefit and strength of evidence", paragraphs=benefit)
    )

    risk_paragraphs: list[Item] = []
    regions = sorted({i.region for i in plan.injections if i.region in common.high_risk_regions.codes})
    if regions and plan.modality not in (Modality.hsct_autologous, Modality.car_t):
        risk_paragraphs.append(
            Item(
                text=common.high_risk_regions.text.format(
                    regions=", ".join(r.replace("_", " ") for r in regions)
                ),
                citations=common.high_risk_regions.citations,
            )
        )
    risks = [Item(text=r.text, rate=r.rate, citations=r.citations, evidence=r.evidence) for r in mod.risks]
    sections.append(Section(id="risks", heading="Risks", paragraphs=risk_paragraphs, items=risks))

    if reg.investigational:
        text = common.investigational.text.format(
            modality=mod.name, jurisdiction=reg.jurisdiction, class_label=reg.class_label
        )
        # The regulator's requirements are clinician-facing (shown by `regenguide regulatory assess`);
        # the patient reads what investigational means for them.
        paragraphs = [Item(text=text, citations=reg.citations[:2])]
        if in_trial and common.investigational.in_trial:
            paragraphs.append(Item(text=common.investigational.in_trial))
        sections.append(
            Section(id="investigational", heading="Investigational treatment", paragraphs=paragraphs)
        )
    reg_text = common.regulatory.text.format(jurisdiction=reg.jurisdiction, class_label=reg.class_label)
    reg_paras = [Item(text=reg_text, citations=reg.citations[:2], evidence=reg.evidence)]
    if reg.verify_locally and common.regulatory.verify_locally:
        reg_paras.append(Item(text=common.regulatory.verify_locally))
    sections.append(Section(id="regulatory", heading="Regulatory status", paragraphs=reg_paras))

    sections.append(
        Section(
            id="alternatives",
            heading="Alternatives",
            items=[Item(text=a.text, citations=a.citations) for a in mod.alternatives],
        )
    )

    uses: list[Item] = []
    for use in common.data_use:
        if use.applies_to is not None and plan.modality not in use.applies_to:
            continue
        uses.append(Item(text=use.text, citations=use.citations))
        uses += [Item(text=f.text, citations=f.citations) for f in use.facts]
    sections.append(Section(id="data_use", heading="Use of your data", paragraphs=uses))

    dec = common.decision
    statements = list(dec.statements)
    if reg.investigational:
        statements.insert(2, dec.investigational_statement)
    choices = [*dec.choices, *dec.data_choices]
    sections.append(
        Section(
            id="decision",
            heading="Your decision",
            paragraphs=[Item(text=s) for s in statements],
            items=[Item(text=c) for c in choices],
        )
    )
    return sections


def _number_sources(sections: list[Section]) -> list[SourceEntry]:
    refs = load_references()
    order: dict[str, int] = {}
    for section in sections:
        for item in [*section.paragraphs, *section.items]:
            for cid in item.citations:
                order.setdefault(cid, len(order) + 1)
            item.refs = [order[c] for c in item.citations]
    return [
        SourceEntry(
            number=n,
            id=cid,
            label=refs[cid].label(),
            title=refs[cid].title,
            link=refs[cid].link,
            evidence=refs[cid].evidence,
        )
        for cid, n in order.items()
    ]


def _marks(item: Item) -> str:
    return "".join(f"[{n}]" for n in item.refs)


def _item_text(item: Item) -> str:
    text = item.text
    if item.rate:
        text += f" Rate: {item.rate}"
    if item.evidence in (EvidenceLabel.expert_opinion, EvidenceLabel.unverified):
        text += f" ({item.evidence.value.replace('_', ' ')})"
    marks = _marks(item)
    return f"{text} {marks}" if marks else text


def _canonical_text(
    title: str, version: str, plan_hash: str, sections: list[Section], sources: list[SourceEntry]
) -> str:
    out = [title, f"Document version: {version}", f"Plan reference: sha256:{plan_hash}", ""]
    for section in sections:
        out.append(section.heading.upper())
        out += [_item_text(p) for p in section.paragraphs]
        out += [f"- {_item_text(i)}" for i in section.items]
        out.append("")
    out.append("SOURCES")
    out += [f"[{s.number}] {s.label}. {s.title}. {s.link} (evidence: {s.evidence.value})" for s in sources]
    return _canonical("\n".join(out))


@cache
def _jinja() -> Environment:
    env = Environment(
        loader=PackageLoader("regenguide.cds", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render_consent(
    plan: PlanDocument,
    *,
    patient_name: str | None = None,
    clinic: str | None = None,
    language: str = "en",
    context: RegulatoryContext | None = None,
) -> ConsentDocument:
    """Render the consent document for a plan (pure: same inputs, same text and digest)."""
    data = load_consent_data(language)
    reg = assess(plan, context=context)
    patient_name = patient_name.strip() or None if patient_name else None
    clinic = clinic.strip() or None if clinic else None
    in_trial = bool(context and context.approved_trial)
    sections = _build_sections(plan, data, reg, patient_name, clinic, in_trial)
    sources = _number_sources(sections)
    version = consent_version(language)
    p_hash = plan_digest(plan)
    text = _canonical_text(data.common.title, version, p_hash, sections, sources)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    html = (
        _jinja()
        .get_template("consent.html")
        .render(
            title=data.common.title,
            language=language,
            version=version,
            plan_hash=p_hash,
            digest=digest,
            sections=sections,
            sources=sources,
            jurisdiction=reg.jurisdiction,
            investigational=reg.investigational,
        )
    )
    return ConsentDocument(
        version=version,
        language=language,
        title=data.common.title,
        jurisdiction=reg.jurisdiction,
        modality=plan.modality,
        regulatory_class=reg.class_,
        investigational=reg.investigational,
        plan_digest=p_hash,
        patient_name=patient_name,
        clinic=clinic,
        sections=sections,
        sources=sources,
        text=text,
        text_digest=digest,
        html=html,
    )


# --- decisions -----------------------------------------------------------------------------------------


def record_decision(
    document: ConsentDocument,
    *,
    decision: Literal["accepted", "declined"],
    signer_name: str,
    signer_role: Literal["patient", "guardian"] = "patient",
    signed_at: datetime | None = None,
    registry_opt_in: bool | None = None,
    research_opt_in: bool | None = None,
) -> ConsentDecision:
    """The decision record for the store; `signed_at` defaults to now (UTC)."""
    return ConsentDecision(
        decision=decision,
        signer_name=signer_name,
        signer_role=signer_role,
        signed_at=signed_at or datetime.now(UTC),
        document_digest=document.text_digest,
        version=document.version,
        registry_opt_in=registry_opt_in,
        research_opt_in=research_opt_in,
    )


def verify_decision(document: ConsentDocument | str, decision: ConsentDecision) -> bool:
    """True when `decision` was made on exactly this document (or this stored canonical text)."""
    if isinstance(document, ConsentDocument):
        return document.text_digest == decision.document_digest and document.version == decision.version
    return canonical_digest(document) == decision.document_digest


def to_plan_consent(decision: ConsentDecision) -> Consent:
    """The plan document's consent status for a recorded decision."""
    return Consent(
        status="signed" if decision.decision == "accepted" else "declined",
        signed_on=decision.signed_at.date().isoformat(),
        version=decision.version,
    )


# --- PDF -----------------------------------------------------------------------------------------------


@cache
def _pdf_fonts() -> tuple[str, str]:
    """DejaVu Sans (shipped with matplotlib) covers far more scripts than the PDF base-14 fonts, so patient
    and clinic names print correctly; fall back to Helvetica when it is not present."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    try:
        import matplotlib

        folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
        pdfmetrics.registerFont(TTFont("RG-Sans", os.path.join(folder, "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("RG-Sans-Bold", os.path.join(folder, "DejaVuSans-Bold.ttf")))
        return "RG-Sans", "RG-Sans-Bold"
    except Exception:  # noqa: BLE001 - any font problem falls back to the base-14 fonts
        return "Helvetica", "Helvetica-Bold"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_pdf(doc: ConsentDocument) -> bytes:
    """The consent document as PDF (reportlab). Deterministic: the same document gives the same bytes.
    The text digest and version are in the PDF metadata (subject, keywords) and on every page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer

    regular, bold = _pdf_fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=9.5, leading=12.5, spaceAfter=4)
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5)
    h1 = ParagraphStyle("h1", parent=body, fontName=bold, fontSize=15, leading=19, spaceAfter=8)
    h2 = ParagraphStyle(
        "h2", parent=body, fontName=bold, fontSize=11.5, leading=15, spaceBefore=8, spaceAfter=4
    )

    def para(item: Item, style: ParagraphStyle = body) -> Paragraph:
        text = _esc(item.text)
        if item.rate:
            text += f" <b>Rate:</b> {_esc(item.rate)}"
        if item.evidence in (EvidenceLabel.expert_opinion, EvidenceLabel.unverified):
            text += f" <i>({item.evidence.value.replace('_', ' ')})</i>"
        if item.refs:
            text += " " + "".join(f"[{n}]" for n in item.refs)
        return Paragraph(text, style)

    story: list[Any] = [Paragraph(_esc(doc.title), h1)]
    story.append(
        Paragraph(f"Document version {_esc(doc.version)} · plan sha256:{doc.plan_digest[:16]}…", small)
    )
    for section in doc.sections:
        story.append(Paragraph(_esc(section.heading), h2))
        story += [para(p) for p in section.paragraphs]
        if section.items:
            bullet = "☐" if section.id == "decision" else "•"
            story.append(
                ListFlowable(
                    [ListItem(para(i), value=bullet) for i in section.items],
                    bulletType="bullet",
                    start=bullet,
                    bulletFontName=regular,
                    leftIndent=12,
                )
            )
        if section.id == "decision":
            story.append(Spacer(1, 10))
            for line in (
                "Name of patient or guardian: ______________________________   Role: patient / guardian",
                "Signature: ______________________________   Date and time: ____________________",
                "Clinician: ______________________________   Signature: ______________________________",
            ):
                story.append(Paragraph(line, body))
    story.append(Paragraph("Sources", h2))
    for s in doc.sources:
        story.append(
            Paragraph(
                f"[{s.number}] {_esc(s.label)}. {_esc(s.title)}. {_esc(s.link)} ({s.evidence.value})", small
            )
        )

    def footer(canvas: Any, pdf: Any) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.drawString(15 * mm, 10 * mm, f"RegenGuide consent {doc.version} · sha256:{doc.text_digest}")
        canvas.drawRightString(A4[0] - 15 * mm, 10 * mm, f"page {pdf.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    pdf = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=doc.title,
        subject=f"sha256:{doc.text_digest}",
        keywords=f"regenguide-consent version={doc.version}",
        author="RegenGuide",
        invariant=1,
    )
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def sources_of(doc: ConsentDocument) -> Iterable[str]:
    """Citation ids cited anywhere in the document."""
    return [s.id for s in doc.sources]


# --- FHIR ----------------------------------------------------------------------------------------------

#: Identifier system for the SHA-256 of the canonical consent text (FHIR Attachment.hash is SHA-1 only).
DIGEST_SYSTEM = "urn:regenguide:consent-text-sha256"


def to_fhir_consent(
    document: ConsentDocument, decision: ConsentDecision, *, patient_reference: str
) -> dict[str, Any]:
    """A FHIR R4 `Consent` (validated with fhir.resources R4B) for a recorded decision.

    Accepted → `provision.type = permit`, declined → `deny` (both `status = active`: an explicit refusal is
    a recorded consent decision too). The signed canonical text travels as `sourceAttachment` (base64, with
    the SHA-1 that FHIR's `Attachment.hash` requires) and its SHA-256 as an identifier. Registry and research
    opt-ins become nested provisions (permit or deny) when the decision records them.
    """
    import base64

    from fhir.resources.R4B.consent import Consent as FhirConsent

    if not verify_decision(document, decision):
        raise ValueError("the decision was not made on this document (digest or version differ)")
    raw = document.text.encode("utf-8")
    nested = [
        {"type": "permit" if opted else "deny", "code": [{"text": name}]}
        for name, opted in (("registry", decision.registry_opt_in), ("research", decision.research_opt_in))
        if opted is not None
    ]
    provision: dict[str, Any] = {"type": "permit" if decision.decision == "accepted" else "deny"}
    if nested:
        provision["provision"] = nested
    resource = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
        },
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "59284-0"}], "text": "Patient consent"}
        ],
        "identifier": [{"system": DIGEST_SYSTEM, "value": document.text_digest}],
        "patient": {"reference": patient_reference},
        "dateTime": decision.signed_at.isoformat(),
        "performer": [{"display": f"{decision.signer_name} ({decision.signer_role})"}],
        "policyRule": {
            "text": (
                f"RegenGuide consent {document.version}, {document.jurisdiction}: {document.regulatory_class}"
            )
        },
        "sourceAttachment": {
            "contentType": "text/plain; charset=utf-8",
            "language": document.language,
            "data": base64.b64encode(raw).decode("ascii"),
            # FHIR Attachment.hash is SHA-1 by definition; the SHA-256 is in the identifier.
            "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"),
            "title": f"{document.title} ({document.version})",
        },
        "provision": provision,
    }
    return FhirConsent.model_validate(resource).model_dump(mode="json", exclude_none=True)
