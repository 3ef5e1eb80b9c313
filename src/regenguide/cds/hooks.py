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

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before Python 3.12

from regenguide.domain.findings import INDICATOR_RANK, Finding, injection_ranges
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


class DraftOrderError(ValueError):
    """A draft order cannot be read as an injection; the message names the order and field."""


# --- draft orders: validation -------------------------------------------------------------------
# Full FHIR validation of the Bundle with fhir.resources costs 10-16 ms for 40 orders (its validators run
# in Python on every element), most of the order-sign call outside the plan check. The service reads only
# the Bundle envelope and, in its own ServiceRequests, the elements listed in the module docstring, so it
# validates exactly those against the FHIR R4 definitions (cardinality, datatypes, required value sets of
# `Bundle.type`, `ServiceRequest.status` and `intent`, one `value[x]` per extension); the other elements of
# a ServiceRequest must be R4 element names (taken from fhir.resources) and other resources of the Bundle
# are the EHR's, not read and not checked beyond having a `resourceType`.
#
# The check is written twice, on purpose:
# - the models below (`_Bundle`, `_ServiceRequest` …) are the reference: they define the error messages
#   (which entry, which element), and run only when a Bundle is refused;
# - the "quick" check (`_quick_orders`) accepts exactly the same Bundles and runs on every call. It is ~3x
#   cheaper because it calls no Python during validation (plain TypedDicts, no model instances, no
#   per-extension `model_validator`): the two Python rules (R4 element names, one value[x] per extension)
#   are checked afterwards in one pass over each order, the pass that also indexes its extensions by URL.
# tests/cds/test_draft_orders_quick_check.py checks that the two agree.
_FHIR_CODE = r"^[^\s]+( [^\s]+)*$"
_FHIR_ID = r"^[A-Za-z0-9\-\.]{1,64}$"
FhirCode = Annotated[StrictStr, Field(pattern=_FHIR_CODE)]
FhirId = Annotated[StrictStr, Field(pattern=_FHIR_ID)]
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
BundleType = Literal["document", "message", "transaction", "transaction-response", "batch", "batch-response",
                     "history", "searchset", "collection"]
RequestStatus = Literal["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]
RequestIntent = Literal["proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
                        "instance-order", "option"]


class _Element(BaseModel):
    """A FHIR element of which only some children are read; the others are left to the sender."""

    model_config = ConfigDict(extra="allow")


class _Coding(_Element):
    system: StrictStr | None = None
    code: FhirCode | None = None
    display: StrictStr | None = None


class _CodeableConcept(_Element):
    coding: list[_Coding] = Field(default_factory=list)
    text: StrictStr | None = None


class _Reference(_Element):
    reference: StrictStr | None = None
    display: StrictStr | None = None


class _Extension(_Element):
    url: NonEmptyStr
    valueCode: FhirCode | None = None  # noqa: N815 - FHIR names
    valueInteger: StrictInt | None = None  # noqa: N815
    valueDecimal: StrictInt | StrictFloat | None = None  # noqa: N815
    valueBoolean: StrictBool | None = None  # noqa: N815

    @model_validator(mode="before")
    @classmethod
    def _one_value(cls, data: Any) -> Any:
        if isinstance(data, dict):
            values = [k for k in data if k.startswith("value")]
            if len(values) > 1:
                raise ValueError(f"an extension has at most one value[x], not {values}")
            if values and "extension" in data:
                raise ValueError("an extension has either a value[x] or nested extensions, not both")
        return data


class _ServiceRequest(_Element):
    resourceType: Literal["ServiceRequest"]  # noqa: N815
    id: FhirId | None = None
    status: RequestStatus
    intent: RequestIntent
    subject: _Reference
    code: _CodeableConcept | None = None
    bodySite: list[_CodeableConcept] = Field(default_factory=list)  # noqa: N815
    reasonCode: list[_CodeableConcept] = Field(default_factory=list)  # noqa: N815
    extension: list[_Extension] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _known_elements(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - _service_request_elements())
            if unknown:
                raise ValueError(f"not elements of a FHIR R4 ServiceRequest: {unknown}")
        return data


class _Resource(_Element):
    resourceType: NonEmptyStr  # noqa: N815


class _Entry(_Element):
    fullUrl: StrictStr | None = None  # noqa: N815
    resource: _Resource | None = None


class _Bundle(_Element):
    resourceType: Literal["Bundle"]  # noqa: N815
    type: BundleType
    entry: list[_Entry] = Field(default_factory=list)


# The quick check: the models above as TypedDicts, field for field (a field with a default is NotRequired).
# `extra="allow"` keeps the reference's acceptance of unknown children exactly, non-string keys refused.
_OPEN = ConfigDict(extra="allow")


@with_config(_OPEN)
class _QuickCoding(TypedDict):
    system: NotRequired[StrictStr | None]
    code: NotRequired[FhirCode | None]
    display: NotRequired[StrictStr | None]


@with_config(_OPEN)
class _QuickCodeableConcept(TypedDict):
    coding: NotRequired[list[_QuickCoding]]
    text: NotRequired[StrictStr | None]


@with_config(_OPEN)
class _QuickReference(TypedDict):
    reference: NotRequired[StrictStr | None]
    display: NotRequired[StrictStr | None]


@with_config(_OPEN)
class _QuickExtension(TypedDict):
    url: NonEmptyStr
    valueCode: NotRequired[FhirCode | None]  # noqa: N815
    valueInteger: NotRequired[StrictInt | None]  # noqa: N815
    valueDecimal: NotRequired[StrictInt | StrictFloat | None]  # noqa: N815
    valueBoolean: NotRequired[StrictBool | None]  # noqa: N815


@with_config(_OPEN)
class _QuickServiceRequest(TypedDict):
    resourceType: Literal["ServiceRequest"]  # noqa: N815
    id: NotRequired[FhirId | None]
    status: RequestStatus
    intent: RequestIntent
    subject: _QuickReference
    code: NotRequired[_QuickCodeableConcept | None]
    bodySite: NotRequired[list[_QuickCodeableConcept]]  # noqa: N815
    reasonCode: NotRequired[list[_QuickCodeableConcept]]  # noqa: N815
    extension: NotRequired[list[_QuickExtension]]


@with_config(_OPEN)
class _QuickResource(TypedDict):
    resourceType: NonEmptyStr  # noqa: N815


@with_config(_OPEN)
class _QuickEntry(TypedDict):
    fullUrl: NotRequired[StrictStr | None]  # noqa: N815
    resource: NotRequired[_QuickResource | None]


@with_config(_OPEN)
class _QuickBundle(TypedDict):
    resourceType: Literal["Bundle"]  # noqa: N815
    type: BundleType
    entry: NotRequired[list[_QuickEntry]]


_QUICK_BUNDLE = TypeAdapter(_QuickBundle)
# All of a Bundle's RegenGuide orders in one call: one crossing into pydantic-core, not one per order.
_QUICK_REQUESTS = TypeAdapter(list[_QuickServiceRequest])


@cache
def _service_request_elements() -> frozenset[str]:
    from fhir.resources.R4B.servicerequest import ServiceRequest

    return frozenset({"resourceType"} | {f.alias or n for n, f in ServiceRequest.model_fields.items()})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


@dataclass(frozen=True, slots=True)
class DraftOrder:
    """A RegenGuide ServiceRequest of a validated `draftOrders` Bundle."""

    entry: int  # its index in `Bundle.entry`
    resource: dict[str, Any]  # as sent
    modality: str  # the code in MODALITY_SYSTEM
    extensions: dict[str, Any]  # extension URL → value[x] of the first extension of that URL that has one

    def ext(self, name: str) -> Any:
        """The value of the RegenGuide extension `EXT + name`, None when absent."""
        return self.extensions.get(EXT + name)


def _our_requests(draft_orders: dict[str, Any]) -> list[tuple[int, dict[str, Any], str]]:
    """(entry index, resource, modality) of the ServiceRequests coded in MODALITY_SYSTEM, in Bundle order."""
    ours = []
    for index, entry in enumerate(draft_orders.get("entry", []) or []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "ServiceRequest":
            modality = _code(resource.get("code"), MODALITY_SYSTEM)
            if modality:
                ours.append((index, resource, modality))
    return ours


def _extension_values(resource: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The extensions of an order by URL (see `DraftOrder.extensions`), and whether they all keep the value[x]
    rule of `_Extension._one_value` (always so once the reference models accepted the order). One pass,
    instead of a scan of the list for each field read."""
    values: dict[str, Any] = {}
    for ext in resource.get("extension", []) or []:
        value_key = None
        for key in ext:
            if key.startswith("value"):
                if value_key is not None:
                    return values, False
                value_key = key
        if value_key is not None:
            if "extension" in ext:
                return values, False
            values.setdefault(ext["url"], ext[value_key])
    return values, True


def _quick_orders(draft_orders: Any) -> list[DraftOrder] | None:
    """The RegenGuide orders of a Bundle the reference models accept; None for any other Bundle."""
    try:
        _QUICK_BUNDLE.validate_python(draft_orders)
        ours = _our_requests(draft_orders)
        _QUICK_REQUESTS.validate_python([resource for _, resource, _ in ours])
    except (ValidationError, AttributeError, TypeError):
        # AttributeError, TypeError: `_code` on a `code` that is no CodeableConcept; `_refuse` meets it too,
        # and fails exactly as before.
        return None
    orders: list[DraftOrder] = []
    if not ours:
        return orders
    elements = _service_request_elements()
    for index, resource, modality in ours:
        extensions, valid = _extension_values(resource)
        if not valid or not resource.keys() <= elements:
            return None
        orders.append(DraftOrder(index, resource, modality, extensions))
    return orders


def _refuse(draft_orders: Any) -> None:
    """Raise the DraftOrderError naming the first element the reference models refuse (the Bundle envelope
    first, then the RegenGuide ServiceRequests in order); return when they accept the Bundle."""
    try:
        _Bundle.model_validate(draft_orders)
    except ValidationError as exc:
        raise DraftOrderError(f"draftOrders is not a valid FHIR R4 Bundle: {_first_error(exc)}") from None
    for index, entry in enumerate(draft_orders.get("entry", []) or []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "ServiceRequest" or not _code(resource.get("code"), MODALITY_SYSTEM):
            continue
        try:
            _ServiceRequest.model_validate(resource)
        except ValidationError as exc:
            raise DraftOrderError(
                f"draftOrders.entry.{index}: ServiceRequest {resource.get('id', index)} is not valid FHIR R4: "
                f"{_first_error(exc)}"
            ) from None


def validate_draft_orders(draft_orders: Any) -> list[DraftOrder]:
    """Refuse a `draftOrders` value that is not a FHIR R4 Bundle, or whose RegenGuide ServiceRequests
    (those coded with `MODALITY_SYSTEM`) are not valid R4 in the elements RegenGuide reads; return those
    ServiceRequests."""
    orders = _quick_orders(draft_orders)
    if orders is None:
        _refuse(draft_orders)
        # Reached only if the quick check were stricter than the reference: the reference decides.
        orders = [DraftOrder(index, resource, modality, _extension_values(resource)[0])
                  for index, resource, modality in _our_requests(draft_orders)]
    return orders


# --- draft orders → plan document ----------------------------------------------------------------
def _code(concepts: Any, system: str) -> str | None:
    if isinstance(concepts, dict):
        concepts = [concepts]
    for concept in concepts or []:
        for coding in concept.get("coding", []) or []:
            if coding.get("system") == system and coding.get("code"):
                return str(coding["code"])
    return None


# Injection field → extension URL (after `region`, from bodySite, and `side`, from laterality).
_INJECTION_EXTENSIONS = tuple((field_name, EXT + name) for field_name, name in (
    ("plane", "plane"), ("device", "device"), ("gauge", "gauge"), ("volume_ml", "volume-ml"), ("bolus_ml", "bolus-ml"),
    ("needle_depth_mm", "needle-depth-mm"), ("depth_mm", "depth-mm")))


def _injection_data(order: DraftOrder) -> dict[str, Any]:
    """The injection an order asks for, as plain data: None values left out, no region when bodySite has none."""
    data: dict[str, Any] = {}
    region = _code(order.resource.get("bodySite"), REGION_SYSTEM)
    if region is not None:
        data["region"] = region
    extensions = order.extensions
    data["side"] = extensions.get(EXT + "laterality") or "midline"
    for field_name, url in _INJECTION_EXTENSIONS:
        value = extensions.get(url)
        if value is not None:
            data[field_name] = value
    return data


def draft_orders_to_plan(draft_orders: dict[str, Any], patient: dict[str, Any] | None = None) -> PlanDocument | None:
    """Read the RegenGuide injections among an `order-sign` Bundle; None when there are none.

    The Bundle and the orders RegenGuide reads are validated first (`validate_draft_orders`), so a
    malformed order is refused with a message naming the element rather than half-read."""
    return orders_to_plan(validate_draft_orders(draft_orders), patient)


def orders_to_plan(orders: Sequence[DraftOrder], patient: dict[str, Any] | None = None) -> PlanDocument | None:
    """The plan of validated draft orders (`validate_draft_orders`); None when there are none."""
    if not orders:
        return None
    modalities = {o.modality for o in orders}
    if len(modalities) > 1:
        raise DraftOrderError(f"draft orders mix modalities {sorted(modalities)}: sign them apart")
    first = orders[0]
    injections = [_injection_data(o) for o in orders]
    doc: dict[str, Any] = {
        "schema": "regenguide.plan/1",
        "jurisdiction": first.ext("jurisdiction") or "US",
        "indication": _code(first.resource.get("reasonCode"), INDICATION_SYSTEM) or "unspecified",
        "modality": first.modality,
        "guidance": {"imaging": first.ext("guidance-imaging") or "none", "doppler": bool(first.ext("doppler"))},
        "injections": injections,
        "patient": patient or {},
    }
    for name, key in (("same-surgical-procedure", "same_surgical_procedure"), ("homologous-use", "homologous_use")):
        value = first.ext(name)
        if value is not None:
            doc[key] = bool(value)
    # One validation of the whole plan (the injections included) when it is valid, which is the rule; when it
    # is not, the injections are validated one by one so that the message names the order at fault.
    try:
        return PlanDocument.model_validate(doc)
    except ValidationError:
        pass
    validated = []
    for index, (order, data) in enumerate(zip(orders, injections, strict=True)):
        name = order.resource.get("id", index)
        if "region" not in data:
            raise DraftOrderError(f"ServiceRequest {name}: bodySite needs a coding in {REGION_SYSTEM}")
        try:
            validated.append(Injection.model_validate(data))
        except Exception as exc:
            raise DraftOrderError(f"ServiceRequest {name}: {str(exc).splitlines()[:3]}") from None
    doc["injections"] = [i.model_dump(exclude_none=True) for i in validated]
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
    """The draft order with a suggestion's changes applied, or None when a change has no FHIR home.
    The order itself is not modified; the changed extensions replace their namesakes, at the end."""
    added: list[dict[str, Any]] = []
    for field_name, value in changes.items():
        if field_name not in _EXT_OF_FIELD:
            return None
        name, value_key = _EXT_OF_FIELD[field_name]
        added.append({"url": EXT + name, value_key: value})
    replaced = {e["url"] for e in added}
    kept = [e for e in request.get("extension", []) or [] if e.get("url") not in replaced]
    return {**request, "extension": kept + added}


_OVERRIDE_CODINGS = tuple({"system": OVERRIDE_SYSTEM, "code": c, "display": d} for c, d in OVERRIDE_REASONS)
_CARDS = TypeAdapter(list[Card])


def _card_data(finding: Finding, orders: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The card of a finding as plain data (validated by the caller, all cards at once)."""
    suggestions: list[dict[str, Any]] = []
    request = orders[finding.injection_index] if orders and finding.injection_index is not None else None
    for s in finding.suggestions:
        actions: list[dict[str, Any]] = []
        if request is not None and s.changes:
            updated = _updated_request(request, s.changes)
            if updated is not None:
                actions.append({"type": "update", "description": s.label, "resource": updated})
        suggestions.append({"label": s.label, "uuid": str(uuid.uuid4()), "actions": actions})
    refs = ", ".join(finding.citations)
    detail = finding.detail + (f"\n\nCitations: {refs}" if refs else "")
    if finding.evidence:
        detail += f" (evidence: {finding.evidence})"
    indicator = finding.indicator.value
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": finding.summary,
        "detail": detail,
        "indicator": indicator,
        "source": {"label": finding.source.label, "topic": {
            "system": "https://regenguide.org/fhir/CodeSystem/rule", "code": finding.rule, "display": finding.rule}},
    }
    if finding.source.url is not None:
        card["source"]["url"] = finding.source.url
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    if indicator == "critical":
        card["overrideReasons"] = [dict(c) for c in _OVERRIDE_CODINGS]
    return card


def findings_to_cards(findings: Sequence[Finding], orders: list[dict[str, Any]] | None = None) -> list[Card]:
    """One card per finding, validated against the card schema in a single pass; `orders` (the draft
    ServiceRequests, indexed like the plan's injections) turns suggestions into `update` actions."""
    return _CARDS.validate_python([_card_data(f, orders) for f in findings])


# "Injection 3: text" or "Injection 3 (region): text" — the index, the qualifier with its colon, the text.
_INJECTION_PREFIX = re.compile(r"^Injection (\d+)((?: \([^)]*\))?: )")


def _detail_lines(group: Sequence[Finding]) -> list[str]:
    """The findings of a card, one line per distinct text: "Injections 0-3, 10-13: sharp needle in the
    glabella …" rather than the same sentence once per injection."""
    lines: dict[str, list[int]] = {}
    for f in group:
        match = _INJECTION_PREFIX.match(f.summary)
        indices = lines.setdefault(f.summary[match.start(2):] if match else f.summary, [])
        if match:
            indices.append(int(match.group(1)))
    return [f"Injection{'s' if len(set(idx)) > 1 else ''} {injection_ranges(idx)}{key}" if idx else key
            for key, idx in lines.items()]


def _group_card_data(group: Sequence[Finding], orders: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One card for one rule's findings at several injections: the most severe indicator, every
    injection's own finding in the detail, and one suggestion per distinct label whose `update` actions
    amend every injection concerned (accepting it fixes them all)."""
    first = max(group, key=lambda f: INDICATOR_RANK[f.indicator])
    indices = sorted(f.injection_index for f in group if f.injection_index is not None)
    texts = {_INJECTION_PREFIX.sub("", f.summary) for f in group}
    text = _INJECTION_PREFIX.sub("", first.summary)
    head = f"{len(indices)} injections ({injection_ranges(indices)}){': ' if len(texts) == 1 else ', e.g. '}"
    summary = head + text if len(head + text) < 140 else (head + text)[:138] + "…"
    card = _card_data(first.model_copy(update={"suggestions": []}), None)
    citations = list(dict.fromkeys(c for f in group for c in f.citations))
    items = "\n".join(f"- {line}" for line in _detail_lines(group))
    card["summary"] = summary
    # Every distinct explanation (the glabella's technique is not the temple's), each once.
    details = "\n\n".join(dict.fromkeys(f.detail for f in group if f.detail))
    card["detail"] = (f"{items}\n\n{details}" + (f"\n\nCitations: {', '.join(citations)}" if citations else "")
                      + (f" (evidence: {first.evidence})" if first.evidence else ""))
    by_label: dict[str, list[dict[str, Any]]] = {}
    for f in group:
        request = orders[f.injection_index] if orders and f.injection_index is not None else None
        for sug in f.suggestions:
            actions = by_label.setdefault(sug.label, [])
            updated = _updated_request(request, sug.changes) if request is not None and sug.changes else None
            if updated is not None:
                actions.append({"type": "update", "description": f"{sug.label} (injection {f.injection_index})",
                                "resource": updated})
    if by_label:
        card["suggestions"] = [{"label": label, "uuid": str(uuid.uuid4()), "actions": actions}
                               for label, actions in by_label.items()]
        card["selectionBehavior"] = "at-most-one"
    return card


def grouped_cards(findings: Sequence[Finding], orders: list[dict[str, Any]] | None = None) -> list[Card]:
    """The cards an EHR shows: a rule that fires at several injections gives one card listing them (forty
    "sharp needle in a danger zone" cards would bury the one that matters); every other finding its own
    card. Cards keep the order of each rule's first finding. Validated against the card schema."""
    return _CARDS.validate_python(grouped_card_data(findings, orders))


def grouped_card_data(findings: Sequence[Finding], orders: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`grouped_cards` as plain data with no None values, ready to serialise. The order-sign service sends
    this: building a hundred amended ServiceRequests into models only to dump them again would double the
    cost of its largest responses. The tests hold it to the card schema (`grouped_cards` validates it)."""
    groups: dict[str, list[Finding]] = {}
    order: list[str | Finding] = []
    for f in findings:
        if f.injection_index is None:
            order.append(f)
            continue
        if f.rule not in groups:
            groups[f.rule] = []
            order.append(f.rule)
        groups[f.rule].append(f)
    data = []
    for item in order:
        if isinstance(item, str):
            group = groups[item]
            data.append(_card_data(group[0], orders) if len(group) == 1 else _group_card_data(group, orders))
        else:
            data.append(_card_data(item, orders))
    return data


def finding_to_card(finding: Finding, orders: list[dict[str, Any]] | None = None) -> Card:
    return findings_to_cards([finding], orders)[0]


def service_requests(draft_orders: dict[str, Any]) -> list[dict[str, Any]]:
    return [resource for _, resource, _ in _our_requests(draft_orders)]


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
