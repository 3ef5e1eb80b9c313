"""Plan-check rules: pure functions from (knowledge base, plan) to findings.

Thresholds, severities, citations and suggestions come from `kb/data/rules.yaml` and the other topic
files; this module only interprets them. Each rule function yields `Finding`s; the engine merges,
sorts and gates them. Rule ids are stable (they key overrides and CDS Hooks feedback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from regenguide.domain.findings import SUMMARY_MAX, Finding, Indicator, Source, Suggestion, checked_by_caller
from regenguide.domain.plan import Device, ImagingModality, Injection, PlanDocument, Side
from regenguide.kb.base import KnowledgeBase
from regenguide.kb.references import EvidenceLabel, Reference, load_references
from regenguide.kb.schema import Contraindication, ModalityInfo, NumRange, Protocol

EVIDENCE_RANK = {
    EvidenceLabel.verified: 0,
    EvidenceLabel.secondary: 1,
    EvidenceLabel.expert_opinion: 2,
    EvidenceLabel.unverified: 3,
}


def weakest(labels: Iterable[EvidenceLabel]) -> EvidenceLabel:
    """The least-checked evidence label among `labels` (verified when empty)."""
    return max(labels, key=EVIDENCE_RANK.__getitem__, default=EvidenceLabel.verified)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _short(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


@dataclass(frozen=True)
class CheckContext:
    kb: KnowledgeBase
    plan: PlanDocument
    modality: str
    info: ModalityInfo
    today: date
    refs: dict[str, Reference]

    def finding(
        self,
        rule_id: str,
        summary: str,
        detail: str = "",
        *,
        index: int | None = None,
        citations: Sequence[str] = (),
        evidence: Sequence[EvidenceLabel] = (),
        suggestions: Sequence[Suggestion] | None = None,
        severity: Indicator | None = None,
        spec_id: str | None = None,
        own_sources: bool = False,
    ) -> Finding | None:
        """Build a finding for `rule_id` (spec looked up in rules.yaml by `spec_id` or `rule_id`).

        `own_sources`: cite only `citations`/`evidence` (not the spec's), for rule families whose entries carry
        their own sources (contraindications). Returns None when the rule is off for the plan's modality."""
        key = ("finding", spec_id or rule_id, self.modality, tuple(citations), tuple(evidence), severity, own_sources)
        meta = self.kb.memo.get(key)
        if meta is None:
            meta = self.kb.memo[key] = self._meta(spec_id or rule_id, citations, evidence, severity, own_sources)
        indicator, cites, source, label, default_suggestions, description = meta
        if indicator is None:
            return None
        if suggestions is None:
            suggestions = default_suggestions
        if description and description not in detail:
            detail = f"{detail}\n\n{description}" if detail else description
        # Every value is already validated (knowledge base, plan) or built here: no second validation.
        return checked_by_caller(
            rule=rule_id,
            indicator=indicator,
            summary=_short(summary),
            detail=detail,
            source=source,
            citations=list(cites),
            injection_index=index,
            suggestions=list(suggestions),
            evidence=label,
        )

    def _meta(
        self,
        spec_id: str,
        citations: Sequence[str],
        evidence: Sequence[EvidenceLabel],
        severity: Indicator | None,
        own_sources: bool,
    ) -> tuple[Any, ...]:
        """Everything about a finding that depends only on the rule, modality and cited sources (memoised
        per knowledge base, so a check builds each distinct card header once)."""
        spec = self.kb.rules[spec_id]
        indicator = severity if severity is not None else spec.severity_for(self.modality)
        cites = tuple(dict.fromkeys([*citations, *([] if own_sources else spec.citations)]))
        first = self.refs[cites[0]]
        source = Source(label=f"RegenGuide knowledge base: {first.label()}", url=first.link or None)
        own = [] if own_sources else [spec.evidence]
        label = weakest([*own, *evidence, *(self.refs[c].evidence for c in cites)]).value
        defaults = tuple(self.suggestion(s.label, **s.changes) for s in spec.suggestions)
        return indicator, cites, source, label, defaults, spec.description

    def suggestion(self, label: str, **changes: object) -> Suggestion:
        """A suggestion, built once per knowledge base and shared by every finding that makes it (they are
        immutable): a risky 40-injection plan suggests the same few changes a hundred times."""
        key = ("suggestion", label, tuple((k, type(v), v) for k, v in changes.items()))  # 25 is not 25.0
        found = self.kb.memo.get(key)
        if found is None:
            found = self.kb.memo[key] = Suggestion(label=label, changes=changes)
        return found  # type: ignore[no-any-return]


Rule = Callable[[CheckContext], Iterator[Finding | None]]


def _int_param(kb: KnowledgeBase, rule_id: str, key: str) -> int:
    value = kb.rules[rule_id].params[key]
    if not isinstance(value, int | float):
        raise TypeError(f"rules.yaml {rule_id}.params.{key} must be a number, got {value!r}")
    return int(value)


# --- vocabulary ----------------------------------------------------------------------------------------
def vocabulary(ctx: CheckContext) -> Iterator[Finding | None]:
    kb = ctx.kb
    if kb.indication(ctx.plan.indication) is None:
        valid = ", ".join(sorted(kb.indications))
        yield ctx.finding(
            "vocabulary.unknown_indication",
            f"Unknown indication '{ctx.plan.indication}'",
            f"`indication` must be one of: {valid}.",
        )
    if not ctx.plan.injections and (ctx.info.injectable or ctx.modality == "microneedling"):
        yield ctx.finding("vocabulary.no_injections", f"No injections or treated areas listed for {ctx.info.name}")
    for i, inj in enumerate(ctx.plan.injections):
        region = kb.region(inj.region)
        if region is None:
            valid = ", ".join(sorted(kb.regions))
            yield ctx.finding(
                "vocabulary.unknown_region",
                f"Injection {i}: unknown region '{inj.region}'; safety checks could not run",
                f"`injections[{i}].region` must be one of: {valid}.",
                index=i,
            )
        elif region.paired and inj.side == Side.midline:
            yield ctx.finding(
                "vocabulary.laterality",
                f"Injection {i}: {region.name} is paired; state left, right or bilateral",
                index=i,
            )
        elif not region.paired and inj.side in (Side.left, Side.right, Side.bilateral):
            yield ctx.finding(
                "vocabulary.laterality",
                f"Injection {i}: {region.name} is a midline region; side '{inj.side.value}' is unusual",
                index=i,
            )
        if inj.plane is not None and kb.plane(inj.plane) is None:
            valid = ", ".join(sorted(kb.planes))
            yield ctx.finding(
                "vocabulary.unknown_plane",
                f"Injection {i}: unknown plane '{inj.plane}'",
                f"`injections[{i}].plane` must be one of: {valid}.",
                index=i,
            )


# --- danger zones --------------------------------------------------------------------------------------
def danger_zones(ctx: CheckContext) -> Iterator[Finding | None]:
    if not ctx.info.injectable:
        return
    kb, plan = ctx.kb, ctx.plan
    zones: list[tuple[int, Injection, str]] = []
    for i, inj in enumerate(plan.injections):
        region = kb.region(inj.region)
        if region is not None and region.code in kb.danger_zones:
            zones.append((i, inj, region.code))
    if not zones:
        return
    names = sorted({kb.regions[code].name for _, _, code in zones})
    where = ", ".join(names)
    zone_cites = [c for _, _, code in zones for c in kb.danger_zones[code].citations]
    if plan.guidance.imaging != ImagingModality.ultrasound:
        yield ctx.finding(
            "danger_zone.no_ultrasound",
            f"{where}: high-risk vascular zone planned without ultrasound guidance",
            f"Guidance is `{plan.guidance.imaging.value}`. Regions at risk: {where}.",
            citations=zone_cites,
        )
    elif not plan.guidance.doppler:
        yield ctx.finding(
            "danger_zone.no_doppler",
            f"{where}: high-risk vascular zone planned without Doppler",
            f"Ultrasound is planned without Doppler. Regions at risk: {where}.",
            citations=zone_cites,
        )
    blind_sites = _list_param(kb, "danger_zone.fat_blindness_site", "regions")
    at_sites = sorted({kb.regions[code].name for _, _, code in zones if code in blind_sites})
    if at_sites:
        yield ctx.finding(
            "danger_zone.fat_blindness_site",
            f"{', '.join(at_sites)}: "
            + ("leading sites" if len(at_sites) > 1 else "a leading site")
            + " of filler-related blindness; fat is the most frequent cause",
        )
    for i, inj, code in zones:
        yield from _zone_injection(ctx, i, inj, code)


class _ZoneFacts(NamedTuple):
    """What the per-injection danger-zone rules say of a zone, worked out once per knowledge base."""

    name: str  # lower case, as the findings word it
    arteries: str
    cannula: list[Suggestion]  # use a blunt cannula
    aliquots: list[Suggestion]  # smaller aliquots (empty for a zone without a critical bolus)
    safe_names: str
    lowest_rank: int  # rank span of the safer planes
    highest_rank: int
    safer_plane: list[Suggestion]


def _zone_facts(ctx: CheckContext, code: str) -> _ZoneFacts:
    key = ("zone_facts", code)
    found = ctx.kb.memo.get(key)
    if found is None:
        kb = ctx.kb
        zone = kb.danger_zones[code]
        min_gauge = _int_param(kb, "danger_zone.sharp_needle", "min_cannula_gauge_number")
        limit = zone.critical_bolus.volume_ml if zone.critical_bolus else None
        safe = [kb.planes[p] for p in zone.safe_planes]
        safe_names = ", ".join(p.code for p in safe)
        found = kb.memo[key] = _ZoneFacts(
            kb.regions[code].name.lower(), ", ".join(zone.arteries),
            [ctx.suggestion(f"Use a blunt cannula of {min_gauge}G or larger", device="cannula", gauge=min_gauge)],
            [] if limit is None else [ctx.suggestion(
                f"Use aliquots below {_fmt(limit)} mL, injected slowly at low pressure", bolus_ml=round(limit / 2, 3))],
            safe_names, min(p.rank for p in safe), max(p.rank for p in safe),
            [ctx.suggestion(f"Inject in a safer plane: {safe_names}", plane=safe[0].code)],
        )
    return found  # type: ignore[no-any-return]


def _zone_injection(ctx: CheckContext, i: int, inj: Injection, code: str) -> Iterator[Finding | None]:
    kb = ctx.kb
    zone = kb.danger_zones[code]
    facts = _zone_facts(ctx, code)
    name, arteries = facts.name, facts.arteries
    if inj.device == Device.needle:
        yield ctx.finding(
            "danger_zone.sharp_needle",
            f"Injection {i}: sharp needle in the {name} (arteries: {arteries})",
            f"{zone.technique}",
            index=i,
            citations=zone.citations,
            suggestions=facts.cannula,
        )
    elif inj.device is None:
        yield ctx.finding(
            "danger_zone.device_missing",
            f"Injection {i}: device (needle or cannula) not stated in the {name}",
            index=i,
            citations=zone.citations,
        )
    elif inj.device == Device.cannula and inj.gauge is not None:
        max_gauge = _int_param(kb, "danger_zone.cannula_too_fine", "max_gauge_number")
        if inj.gauge > max_gauge:
            yield ctx.finding(
                "danger_zone.cannula_too_fine",
                f"Injection {i}: {inj.gauge}G cannula in the {name} is finer than {max_gauge}G",
                index=i,
            )
    bolus = zone.critical_bolus
    if bolus is not None:
        limit = bolus.volume_ml
        if inj.bolus_ml is not None and inj.bolus_ml >= limit:
            yield ctx.finding(
                "danger_zone.bolus_over_critical",
                f"Injection {i}: {_fmt(inj.bolus_ml)} mL bolus in the {name} reaches the "
                f"{bolus.artery} artery volume ({_fmt(limit)} mL)",
                f"Critical volume: {_fmt(limit)} mL ({bolus.artery}; {bolus.note or ''}). "
                f"Evidence for applying it here: {bolus.evidence.value}.",
                index=i,
                citations=bolus.citations,
                evidence=[bolus.evidence],
                suggestions=facts.aliquots,
            )
        elif inj.bolus_ml is None and (inj.volume_ml is None or inj.volume_ml >= limit):
            yield ctx.finding(
                "danger_zone.bolus_missing",
                f"Injection {i}: bolus size not stated in the {name} (critical volume {_fmt(limit)} mL)",
                index=i,
                citations=bolus.citations,
                evidence=[bolus.evidence],
            )
    yield from _zone_plane(ctx, i, inj, code)


def _zone_text(kb: KnowledgeBase, code: str) -> tuple[str, list[str]]:
    """Markdown detail and depth citations of a danger zone (memoised per knowledge base)."""
    key = ("zone_text", code)
    if key not in kb.memo:
        zone = kb.danger_zones[code]
        depth_detail = "; ".join(
            f"{d.artery}: {_fmt(d.depth_mm) + ' mm, ' if d.depth_mm else ''}{d.note or ''}" for d in zone.depth_data
        )
        detail = f"Arteries: {', '.join(zone.arteries)}. Depth data: {depth_detail}. Technique: {zone.technique}"
        if zone.safe_planes_note:
            detail += f" Safer planes: {zone.safe_planes_note}"
        kb.memo[key] = (detail, [c for d in zone.depth_data for c in d.citations])
    return kb.memo[key]  # type: ignore[no-any-return]


def _zone_plane(ctx: CheckContext, i: int, inj: Injection, code: str) -> Iterator[Finding | None]:
    kb = ctx.kb
    zone = kb.danger_zones[code]
    facts = _zone_facts(ctx, code)
    name, safe_names = facts.name, facts.safe_names
    detail, depth_cites = _zone_text(kb, code)
    if inj.plane is None:
        yield ctx.finding(
            "danger_zone.plane_missing",
            f"Injection {i}: plane not stated in the {name} (safer: {safe_names})",
            detail,
            index=i,
            citations=zone.citations,
            suggestions=facts.safer_plane,
        )
    else:
        plane = kb.plane(inj.plane)
        if plane is not None and plane.code not in zone.safe_planes:
            if plane.rank > facts.highest_rank:
                rule, word = "danger_zone.plane_too_deep", "too deep"
            elif plane.rank < facts.lowest_rank:
                rule, word = "danger_zone.plane_too_shallow", "too shallow"
            else:
                rule, word = "danger_zone.plane_in_artery_layer", "in the arteries' layer"
            yield ctx.finding(
                rule,
                f"Injection {i}: {plane.code} plane is {word} for the {name} (safer: {safe_names})",
                detail,
                index=i,
                citations=[*zone.citations, *depth_cites],
                evidence=[zone.evidence],
                suggestions=facts.safer_plane,
            )
    if zone.max_safe_depth_mm is not None and inj.depth_mm is not None and inj.depth_mm > zone.max_safe_depth_mm:
        yield ctx.finding(
            "danger_zone.depth_beyond_safe",
            f"Injection {i}: deposit {_fmt(inj.depth_mm)} mm deep in the {name}; safe depth is at most "
            f"{_fmt(zone.max_safe_depth_mm)} mm",
            zone.max_safe_depth_note or "",
            index=i,
            citations=zone.max_safe_depth_citations,
            suggestions=[
                ctx.suggestion(f"Keep the deposit at most {_fmt(zone.max_safe_depth_mm)} mm deep",
                               depth_mm=zone.max_safe_depth_mm)
            ],
        )


# --- body regions --------------------------------------------------------------------------------------
def _list_param(kb: KnowledgeBase, rule_id: str, key: str) -> list[str]:
    value = kb.rules[rule_id].params[key]
    if not isinstance(value, list):
        raise TypeError(f"rules.yaml {rule_id}.params.{key} must be a list, got {value!r}")
    return value


def gluteal_fat(ctx: CheckContext) -> Iterator[Finding | None]:
    kb = ctx.kb
    if kb.rules["body.gluteal_fat_deep_plane"].severity_for(ctx.modality) is None:
        return
    regions = set(_list_param(kb, "body.gluteal_fat_deep_plane", "regions"))
    deep = set(_list_param(kb, "body.gluteal_fat_deep_plane", "planes"))
    hits = [(i, inj) for i, inj in enumerate(ctx.plan.injections) if (r := kb.region(inj.region)) and r.code in regions]
    if not hits:
        return
    if ctx.plan.guidance.imaging != ImagingModality.ultrasound:
        yield ctx.finding(
            "body.gluteal_fat_no_ultrasound",
            f"Gluteal fat grafting planned with guidance '{ctx.plan.guidance.imaging.value}', not ultrasound",
        )
    for i, inj in hits:
        plane = kb.plane(inj.plane) if inj.plane else None
        if plane is not None and plane.code in deep:
            yield ctx.finding(
                "body.gluteal_fat_deep_plane",
                f"Injection {i}: {plane.code} gluteal fat; deep planes risk fat embolism",
                index=i,
            )


# --- volumes and devices -------------------------------------------------------------------------------
def volumes(ctx: CheckContext) -> Iterator[Finding | None]:
    kb = ctx.kb
    per_key: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for i, inj in enumerate(ctx.plan.injections):
        if ctx.info.injectable and inj.volume_ml is None:
            yield ctx.finding("volume.missing", f"Injection {i}: volume not stated", index=i)
        if inj.volume_ml is not None and inj.bolus_ml is not None and inj.bolus_ml > inj.volume_ml:
            yield ctx.finding(
                "volume.bolus_exceeds_volume",
                f"Injection {i}: bolus {_fmt(inj.bolus_ml)} mL exceeds volume {_fmt(inj.volume_ml)} mL",
                index=i,
            )
        region = kb.region(inj.region)
        if region is None or inj.volume_ml is None:
            continue
        vol = kb.volume_by_region.get(region.code)
        if vol is None:
            continue
        if vol.per_side:
            sides = ["left", "right"] if inj.side == Side.bilateral else [inj.side.value]
            share = inj.volume_ml / len(sides)
            for side in sides:
                per_key.setdefault((vol.subunit, side), []).append((i, share))
        else:
            per_key.setdefault((vol.subunit, "total"), []).append((i, inj.volume_ml))
    spec = kb.rules["volume.subunit_over_range"]
    if spec.severity_for(ctx.modality) is None:
        return
    for (subunit, side), items in per_key.items():
        vol = kb.volumes[subunit]
        total = sum(v for _, v in items)
        if vol.max_ml is None or total <= vol.max_ml:
            continue
        basis = "per side" if vol.per_side else "in total"
        side_txt = f" ({side})" if vol.per_side else ""
        idx = [i for i, _ in items]
        yield ctx.finding(
            "volume.subunit_over_range",
            f"{vol.name}{side_txt}: {_fmt(round(total, 3))} mL exceeds the published range "
            f"{_fmt(vol.min_ml or 0)}-{_fmt(vol.max_ml)} mL {basis}",
            f"Published mean {_fmt(vol.mean_ml)} mL {basis}, range {_fmt(vol.min_ml or 0)}-{_fmt(vol.max_ml)} mL "
            f"(Shue 2018). Injections counted: {idx}. A bilateral injection's volume is split evenly between "
            "the sides.",
            index=idx[0],
            citations=vol.citations,
        )


def fat_device(ctx: CheckContext) -> Iterator[Finding | None]:
    spec = ctx.kb.rules["fat.gauge_too_fine"]
    key = f"{ctx.modality}_max_gauge_number"
    if key not in spec.params:
        return
    max_gauge = _int_param(ctx.kb, "fat.gauge_too_fine", key)
    larger = [ctx.suggestion(f"Use {max_gauge}G or larger", gauge=max_gauge)]
    for i, inj in enumerate(ctx.plan.injections):
        if inj.gauge is not None and inj.gauge > max_gauge:
            yield ctx.finding(
                "fat.gauge_too_fine",
                f"Injection {i}: {inj.gauge}G is finer than {max_gauge}G, the finest reported for "
                f"{ctx.info.name.lower()}",
                index=i,
                suggestions=larger,
            )


# --- patient -------------------------------------------------------------------------------------------
def _triggered(ctx: CheckContext, contra: Contraindication) -> str | None:
    """Why the contraindication applies (None when it does not)."""
    patient = ctx.plan.patient
    trig = contra.trigger
    if trig.conditions_any:
        wanted = set(trig.conditions_any)
        hits = [c for c in patient.conditions if c.strip().lower().replace(" ", "_") in wanted]
        return f"condition(s): {', '.join(hits)}" if hits else None
    if trig.medication_classes_any:
        wanted = set(trig.medication_classes_any)
        hits = [m for m in patient.medications if ctx.kb.medication_classes(m) & wanted]
        return f"medication(s): {', '.join(hits)}" if hits else None
    if trig.lab_below is not None:
        value = getattr(patient, trig.lab_below.field)
        if value is not None and value < trig.lab_below.value:
            name, unit = _LAB_LABEL[trig.lab_below.field]
            return f"{name} {value:,.6g} {unit} (below {trig.lab_below.value:,.6g} {unit})"
        return None
    if trig.nsaid_within_hours is not None:
        limit = trig.nsaid_within_hours
        if patient.last_nsaid_hours_ago is not None:
            if patient.last_nsaid_hours_ago < limit:
                return f"last NSAID {_fmt(patient.last_nsaid_hours_ago)} h ago (within {_fmt(limit)} h)"
            return None
        nsaids = [m for m in patient.medications if "nsaid" in ctx.kb.medication_classes(m)]
        if nsaids:
            return f"NSAID listed ({', '.join(nsaids)}) with no time of last dose; stop {_fmt(limit)} h before"
        return None
    if trig.pregnant:
        return "patient is pregnant" if patient.pregnant else None
    if trig.smoker:
        return "patient smokes" if patient.smoker else None
    return None  # pragma: no cover - the schema requires one trigger


def patient_facts(ctx: CheckContext) -> Iterator[Finding | None]:
    """Facts the contraindication checks need but the plan leaves out (no numbers of our own)."""
    patient = ctx.plan.patient
    if ctx.info.elective and patient.pregnant is None and patient.sex != "male":
        yield ctx.finding("patient.pregnancy_unknown", "Pregnancy status not recorded for an elective biologic")
    if ctx.modality == "prp" and (patient.platelets_per_uL is None or patient.hemoglobin_g_dL is None):
        missing = [
            name
            for name, value in (("platelet count", patient.platelets_per_uL), ("haemoglobin", patient.hemoglobin_g_dL))
            if value is None
        ]
        yield ctx.finding("patient.prp_labs_missing", f"PRP planned without {' or '.join(missing)} on record")


_LAB_LABEL = {"platelets_per_uL": ("platelet count", "/µL"), "hemoglobin_g_dL": ("haemoglobin", "g/dL")}
_KIND = {
    "absolute": "Absolute contraindication",
    "relative": "Relative contraindication",
    "exclusion": "Usual exclusion",
}


def contraindications(ctx: CheckContext) -> Iterator[Finding | None]:
    for contra in ctx.kb.contraindications_by_modality.get(ctx.modality, ()):
        reason = _triggered(ctx, contra)
        if reason is None:
            continue
        kind = _KIND[contra.kind]
        yield ctx.finding(
            f"contraindication.{contra.id}",
            f"{kind}: {contra.name}",
            f"Found: {reason}. {kind} for {ctx.info.name} ({contra.evidence.value}). {contra.note or ''}".strip(),
            citations=contra.citations,
            evidence=[contra.evidence],
            severity=contra.severity,
            spec_id="contraindication",
            own_sources=True,
        )


def consent(ctx: CheckContext) -> Iterator[Finding | None]:
    c = ctx.plan.consent
    if c is None or c.status == "missing":
        yield ctx.finding("consent.missing", "No signed consent recorded for this plan")
        return
    if c.status in ("declined", "withdrawn"):
        yield ctx.finding("consent.declined", f"Consent {c.status}: the plan cannot proceed", suggestions=[])
        return
    try:
        on = date.fromisoformat(ctx.plan.planned_date) if ctx.plan.planned_date else ctx.today
    except ValueError:
        yield ctx.finding("consent.invalid_date", f"planned_date '{ctx.plan.planned_date}' is not an ISO date")
        return
    if c.expires_on is None:
        return
    try:
        expires = date.fromisoformat(c.expires_on)
    except ValueError:
        yield ctx.finding("consent.invalid_date", f"consent.expires_on '{c.expires_on}' is not an ISO date")
        return
    if expires < on:
        yield ctx.finding(
            "consent.expired",
            f"Consent expired on {expires.isoformat()}, before the planned date {on.isoformat()}",
        )


# --- indication, course, imaging -----------------------------------------------------------------------
def indication(ctx: CheckContext) -> Iterator[Finding | None]:
    ind = ctx.kb.indication(ctx.plan.indication)
    if ind is None or ind.code in ctx.info.indications:
        return
    alternatives = sorted(code for code, m in ctx.kb.modalities.items() if ind.code in m.indications)
    yield ctx.finding(
        "indication.not_indicated",
        f"{ctx.info.name} is not listed for {ind.name.lower()}",
        f"Listed indications for {ctx.info.name}: {', '.join(ctx.info.indications)}. "
        f"Modalities listed for {ind.name.lower()}: {', '.join(alternatives) or 'none'}.",
        citations=ctx.info.citations,
        suggestions=[ctx.suggestion(f"Consider {m}", modality=m) for m in alternatives[:3]],
    )


def _range_text(r: NumRange, unit: str) -> str:
    if r.min is not None and r.max is not None:
        return f"{_fmt(r.min)}-{_fmt(r.max)} {unit}"
    return f">= {_fmt(r.min)} {unit}" if r.min is not None else f"<= {_fmt(r.max or 0)} {unit}"


def course(ctx: CheckContext) -> Iterator[Finding | None]:
    ind = ctx.kb.indication(ctx.plan.indication)
    if ind is None:
        return
    proto = ctx.kb.protocol_by_key.get((ctx.modality, ind.code))
    if proto is None:
        return
    c = ctx.plan.course
    if c is None:
        if proto.course_expected:
            yield ctx.finding(
                "course.missing",
                f"No course given; protocol: {proto.summary}",
                proto.summary,
                citations=proto.citations,
            )
    else:
        yield from _course_numbers(ctx, proto, c.sessions, c.interval_weeks)
        want = [a for a in proto.expected_advice if a not in c.advice]
        if want:
            yield ctx.finding(
                "course.advice_missing",
                f"Course lacks advice on {', '.join(want)}",
                proto.summary,
                citations=proto.citations,
            )
        if proto.suggested_combinations and not set(proto.suggested_combinations) & set(c.combined_with):
            combos = " or ".join(proto.suggested_combinations)
            yield ctx.finding(
                "course.combination_suggested",
                f"Consider combining with {combos}",
                proto.summary,
                citations=proto.citations,
            )
    yield from _session_volume(ctx, proto)
    yield from _needle_depths(ctx, proto)


def _course_numbers(ctx: CheckContext, proto: Protocol, sessions: int, interval: float) -> Iterator[Finding | None]:
    r = proto.sessions
    if r is not None:
        if r.min is not None and sessions < r.min:
            yield ctx.finding(
                "course.too_few_sessions",
                f"{sessions} session(s) planned; protocol {_range_text(r, 'sessions')}",
                r.note or proto.summary,
                citations=r.citations,
                evidence=[r.evidence],
            )
        elif r.max is not None and sessions > r.max:
            yield ctx.finding(
                "course.too_many_sessions",
                f"{sessions} sessions planned; protocol {_range_text(r, 'sessions')}",
                r.note or proto.summary,
                citations=r.citations,
                evidence=[r.evidence],
            )
    r = proto.interval_weeks
    if r is not None and sessions > 1:  # a single session has no interval
        if r.min is not None and interval < r.min:
            yield ctx.finding(
                "course.interval_too_short",
                f"Interval {_fmt(interval)} weeks; protocol {_range_text(r, 'weeks')}",
                r.note or proto.summary,
                citations=r.citations,
                evidence=[r.evidence],
            )
        elif r.max is not None and interval > r.max:
            yield ctx.finding(
                "course.interval_too_long",
                f"Interval {_fmt(interval)} weeks; protocol {_range_text(r, 'weeks')}",
                r.note or proto.summary,
                citations=r.citations,
                evidence=[r.evidence],
            )


def _session_volume(ctx: CheckContext, proto: Protocol) -> Iterator[Finding | None]:
    r = proto.session_volume_ml
    injs = ctx.plan.injections
    if r is None or not injs or any(inj.volume_ml is None for inj in injs):
        return
    # A bilateral injection's volume_ml is the total for both sides, so the session total is a plain sum.
    total = sum(inj.volume_ml or 0.0 for inj in injs)
    if (r.min is not None and total < r.min) or (r.max is not None and total > r.max):
        yield ctx.finding(
            "course.session_volume",
            f"Session volume {_fmt(round(total, 3))} mL; protocol {_range_text(r, 'mL')}",
            r.note or proto.summary,
            citations=r.citations,
            evidence=[r.evidence],
        )


def _needle_depths(ctx: CheckContext, proto: Protocol) -> Iterator[Finding | None]:
    is_mn = ctx.modality == "microneedling"
    for i, inj in enumerate(ctx.plan.injections):
        region = ctx.kb.region(inj.region)
        if region is None:
            continue
        depth = inj.needle_depth_mm if inj.needle_depth_mm is not None else inj.depth_mm
        r = proto.needle_depth_mm.get(region.code)
        if depth is None:
            if is_mn:
                yield ctx.finding(
                    "course.needle_depth_missing",
                    f"Injection {i}: needle depth not stated for the {region.name.lower()}",
                    index=i,
                )
            continue
        if r is None:
            continue
        if r.max is not None and depth > r.max:
            rule, word = "course.needle_depth_too_deep", "deeper than"
        elif r.min is not None and depth < r.min:
            rule, word = "course.needle_depth_too_shallow", "shallower than"
        else:
            continue
        yield ctx.finding(
            rule,
            f"Injection {i}: needle depth {_fmt(depth)} mm is {word} {_range_text(r, 'mm')} for the "
            f"{region.name.lower()}",
            f"{r.note or proto.summary} (evidence: {r.evidence.value})",
            index=i,
            citations=r.citations,
            evidence=[r.evidence],
            suggestions=[
                ctx.suggestion(f"Set needle depth within {_range_text(r, 'mm')}",
                               needle_depth_mm=r.max if word == "deeper than" else r.min)
            ],
        )


def imaging(ctx: CheckContext) -> Iterator[Finding | None]:
    plan = ctx.plan
    if not ctx.info.injectable or not plan.injections:
        return
    mode = plan.guidance.imaging
    guide = ctx.kb.imaging_guidance[mode.value]
    in_zone = any(
        (r := ctx.kb.region(inj.region)) is not None and r.code in ctx.kb.danger_zones for inj in plan.injections
    )
    if mode == ImagingModality.none and not in_zone:
        yield ctx.finding(
            "imaging.none",
            "No imaging guidance planned; ultrasound is recommended",
            f"{guide.role} {guide.limitations}",
            citations=guide.citations,
        )
    ind = ctx.kb.indication(plan.indication)
    if guide.ionizing and (ind is None or ind.aesthetic):
        yield ctx.finding(
            "imaging.ionizing",
            f"{mode.value.upper()} guidance for an aesthetic procedure",
            f"{guide.use_when} {guide.limitations}",
            citations=guide.citations,
        )


ALL_RULES: tuple[Rule, ...] = (
    vocabulary,
    danger_zones,
    gluteal_fat,
    volumes,
    fat_device,
    patient_facts,
    contraindications,
    consent,
    indication,
    course,
    imaging,
)


def run_rules(ctx: CheckContext, rules: Iterable[Rule] = ALL_RULES) -> list[Finding]:
    out: list[Finding] = []
    for rule in rules:
        out.extend(f for f in rule(ctx) if f is not None)
    return out


def make_context(kb: KnowledgeBase, plan: PlanDocument, today: date) -> CheckContext:
    modality = str(plan.modality)  # StrEnum (or a plain str from an unvalidated model_copy)
    return CheckContext(
        kb=kb, plan=plan, modality=modality, info=kb.modalities[modality], today=today, refs=load_references()
    )
