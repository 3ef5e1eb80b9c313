"""CDS Hooks 2.0: the card schema, the mapping of `order-sign` draft orders (FHIR R4 ServiceRequests)
to a plan document, and of plan-check findings to cards. Pure: the HTTP face is
`regenguide.api.routers.cds_hooks`.

Draft orders carry the injection in standard fields where FHIR has them and in documented extensions
where it does not (docs/cds-hooks.md):

- `ServiceRequest.code.coding` with system `MODALITY_SYSTEM`: the modality (prp, microfat, …);
- `bodySite.coding` with system `REGION_SYSTEM`: the region code of the knowledge base;
- `reasonCode.coding` with system `INDICATION_SYSTEM`: the indication;
- extensions `EXT + "plane" | "device" | "gauge" | "volume-ml" | "bolus-ml" | "laterality" |
  "needle-depth-mm" | "depth-mm"` on the request (per injection), and `"guidance-imaging" | "doppler" |
  "jurisdiction" | "same-surgical-procedure" | "homologous-use"` (plan-level: read from the first order).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from regenguide.domain.findings import Finding
from regenguide.domain.plan import Injection, PlanDocument

EXT = "https://regenguide.org/fhir/StructureDefinition/"
MODALITY_SYSTEM = "https://regenguide.org/fhir/CodeSystem/modality"
REGION_SYSTEM = "https://regenguide.org/fhir/CodeSystem/region"
INDICATION_SYSTEM = "https://regenguide.org/fhir/CodeSystem/indication"
OVERRIDE_SYSTEM = "https://regenguide.org/fhir/CodeSystem/override-reason"

OVERRIDE_REASONS = [
    ("benefit-outweighs-risk", "Benefit outweighs the risk for this patient; patient informed"),
    ("imaging-done-elsewhere", "Imaging was done and documented elsewhere"),
    ("alternative-safeguard", "An alternative safeguard is in place (documented in the note)"),
    ("finding-not-applicable", "The finding does not apply to this patient"),
]


# --- the CDS Hooks 2.0 response schema -----------------------------------------------------------
class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardSource(_Spec):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: dict[str, Any] | None = None


class Action(_Spec):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = None  # noqa: N815 - the spec's name

    @model_validator(mode="after")
    def _resource(self) -> Action:
        if self.type in ("create", "update") and self.resource is None:
            raise ValueError(f"a {self.type} action needs a resource")
        if self.type == "delete" and not self.resourceId:
            raise ValueError("a delete action needs resourceId")
        return self


class Suggestion(_Spec):
    label: str = Field(min_length=1)
    uuid: str | None = None
    isRecommended: bool | None = None  # noqa: N815
    actions: list[Action] = Field(default_factory=list)


class Coding(_Spec):
    system: str
    code: str
    display: str = Field(min_length=1)


class Link(_Spec):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None  # noqa: N815


class Card(_Spec):
    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: CardSource
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None  # noqa: N815
    overrideReasons: list[Coding] | None = None  # noqa: N815
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _selection(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        return self


class CdsResponse(_Spec):
    cards: list[Card]
    systemActions: list[Action] = Field(default_factory=list)  # noqa: N815


class CdsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    hook: str
    hookInstance: str  # noqa: N815
    fhirServer: str | None = None  # noqa: N815
    fhirAuthorization: dict[str, Any] | None = None  # noqa: N815
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    card: str
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[dict[str, Any]] = Field(default_factory=list)  # noqa: N815
    overrideReason: dict[str, Any] | None = None  # noqa: N815
    outcomeTimestamp: str  # noqa: N815


class Feedback(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1)


# --- draft orders → plan document ----------------------------------------------------------------
class DraftOrderError(ValueError):
    """A draft order cannot be read as an injection; the message names the order and field."""


def _ext(resource: dict[str, Any], name: str) -> Any:
    for ext in resource.get("extension", []) or []:
        if ext.get("url") == EXT + name:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def _code(concepts: Any, system: str) -> str | None:
    if isinstance(concepts, dict):
        concepts = [concepts]
    for concept in concepts or []:
        for coding in concept.get("coding", []) or []:
            if coding.get("system") == system and coding.get("code"):
                return str(coding["code"])
    return None


def draft_orders_to_plan(draft_orders: dict[str, Any], patient: dict[str, Any] | None = None) -> PlanDocument | None:
    """Read the RegenGuide injections among an `order-sign` Bundle; None when there are none.

    The Bundle is validated as FHIR R4 first (fhir.resources R4B), so a malformed order is refused
    with the validator's message rather than half-read."""
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(draft_orders)
    except Exception as exc:  # pydantic.ValidationError, but keep the message whatever the version raises
        raise DraftOrderError(f"draftOrders is not a valid FHIR R4 Bundle: {str(exc).splitlines()[0]}") from None
    requests = [
        e.get("resource", {})
        for e in draft_orders.get("entry", []) or []
        if e.get("resource", {}).get("resourceType") == "ServiceRequest"
    ]
    ours = [r for r in requests if _code(r.get("code"), MODALITY_SYSTEM)]
    if not ours:
        return None
    first = ours[0]
    modalities = {_code(r.get("code"), MODALITY_SYSTEM) for r in ours}
    if len(modalities) > 1:
        raise DraftOrderError(f"draft orders mix modalities {sorted(m or '' for m in modalities)}: sign them apart")
    injections = []
    for index, req in enumerate(ours):
        region = _code(req.get("bodySite"), REGION_SYSTEM)
        if region is None:
            raise DraftOrderError(f"ServiceRequest {req.get('id', index)}: bodySite needs a coding in {REGION_SYSTEM}")
        values = {
            "region": region,
            "side": _ext(req, "laterality") or "midline",
            "plane": _ext(req, "plane"),
            "device": _ext(req, "device"),
            "gauge": _ext(req, "gauge"),
            "volume_ml": _ext(req, "volume-ml"),
            "bolus_ml": _ext(req, "bolus-ml"),
            "needle_depth_mm": _ext(req, "needle-depth-mm"),
            "depth_mm": _ext(req, "depth-mm"),
        }
        try:
            injections.append(Injection.model_validate({k: v for k, v in values.items() if v is not None}))
        except Exception as exc:
            raise DraftOrderError(f"ServiceRequest {req.get('id', index)}: {str(exc).splitlines()[:3]}") from None
    doc: dict[str, Any] = {
        "schema": "regenguide.plan/1",
        "jurisdiction": _ext(first, "jurisdiction") or "US",
        "indication": _code(first.get("reasonCode"), INDICATION_SYSTEM) or "unspecified",
        "modality": modalities.pop(),
        "guidance": {"imaging": _ext(first, "guidance-imaging") or "none", "doppler": bool(_ext(first, "doppler"))},
        "injections": [i.model_dump(exclude_none=True) for i in injections],
        "patient": patient or {},
    }
    for name, key in (("same-surgical-procedure", "same_surgical_procedure"), ("homologous-use", "homologous_use")):
        value = _ext(first, name)
        if value is not None:
            doc[key] = bool(value)
    try:
        return PlanDocument.model_validate(doc)
    except Exception as exc:
        raise DraftOrderError(f"draft orders do not make a valid plan: {str(exc).splitlines()[:3]}") from None


_EXT_OF_FIELD = {
    "plane": ("plane", "valueCode"),
    "device": ("device", "valueCode"),
    "gauge": ("gauge", "valueInteger"),
    "volume_ml": ("volume-ml", "valueDecimal"),
    "bolus_ml": ("bolus-ml", "valueDecimal"),
}


def _updated_request(request: dict[str, Any], changes: dict[str, object]) -> dict[str, Any] | None:
    """The draft order with a suggestion's changes applied, or None when a change has no FHIR home."""
    resource = {**request, "extension": [dict(e) for e in request.get("extension", []) or []]}
    for field_name, value in changes.items():
        if field_name not in _EXT_OF_FIELD:
            return None
        name, value_key = _EXT_OF_FIELD[field_name]
        resource["extension"] = [e for e in resource["extension"] if e.get("url") != EXT + name]
        resource["extension"].append({"url": EXT + name, value_key: value})
    return resource


def finding_to_card(finding: Finding, orders: list[dict[str, Any]] | None = None) -> Card:
    suggestions: list[Suggestion] = []
    request = orders[finding.injection_index] if orders and finding.injection_index is not None else None
    for s in finding.suggestions:
        actions: list[Action] = []
        if request is not None and s.changes:
            updated = _updated_request(request, s.changes)
            if updated is not None:
                actions.append(Action(type="update", description=s.label, resource=updated))
        suggestions.append(Suggestion(label=s.label, uuid=str(uuid.uuid4()), actions=actions))
    refs = ", ".join(finding.citations)
    detail = finding.detail + (f"\n\nCitations: {refs}" if refs else "")
    if finding.evidence:
        detail += f" (evidence: {finding.evidence})"
    return Card(
        uuid=str(uuid.uuid4()),
        summary=finding.summary,
        detail=detail,
        indicator=finding.indicator.value,
        source=CardSource(label=finding.source.label, url=finding.source.url, topic={
            "system": "https://regenguide.org/fhir/CodeSystem/rule", "code": finding.rule,
            "display": finding.rule}),
        suggestions=suggestions or None,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=[Coding(system=OVERRIDE_SYSTEM, code=c, display=d) for c, d in OVERRIDE_REASONS]
        if finding.indicator.value == "critical" else None,
    )


def service_requests(draft_orders: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in draft_orders.get("entry", []) or []
        if e.get("resource", {}).get("resourceType") == "ServiceRequest"
        and _code(e["resource"].get("code"), MODALITY_SYSTEM)
    ]


def plan_to_draft_orders(plan: PlanDocument, patient_ref: str = "Patient/example") -> dict[str, Any]:
    """The inverse mapping, used by tests, the benchmark and EHR integrators as a worked example."""
    entries = []
    for i, inj in enumerate(plan.injections):
        ext: list[dict[str, Any]] = []

        def add(name: str, key: str, value: object, ext: list[dict[str, Any]] = ext) -> None:
            if value is not None:
                ext.append({"url": EXT + name, key: value})

        add("laterality", "valueCode", inj.side.value)
        add("plane", "valueCode", inj.plane)
        add("device", "valueCode", inj.device.value if inj.device else None)
        add("gauge", "valueInteger", inj.gauge)
        add("volume-ml", "valueDecimal", inj.volume_ml)
        add("bolus-ml", "valueDecimal", inj.bolus_ml)
        add("needle-depth-mm", "valueDecimal", inj.needle_depth_mm)
        if i == 0:
            add("guidance-imaging", "valueCode", plan.guidance.imaging.value)
            add("doppler", "valueBoolean", plan.guidance.doppler)
            add("jurisdiction", "valueCode", plan.jurisdiction)
            add("same-surgical-procedure", "valueBoolean", plan.same_surgical_procedure)
            add("homologous-use", "valueBoolean", plan.homologous_use)
        entries.append({"resource": {
            "resourceType": "ServiceRequest", "id": f"inj-{i}", "status": "draft", "intent": "order",
            "subject": {"reference": patient_ref},
            "code": {"coding": [{"system": MODALITY_SYSTEM, "code": plan.modality.value}]},
            "reasonCode": [{"coding": [{"system": INDICATION_SYSTEM, "code": plan.indication}]}],
            "bodySite": [{"coding": [{"system": REGION_SYSTEM, "code": inj.region}], "text": inj.region}],
            "extension": ext,
        }})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
