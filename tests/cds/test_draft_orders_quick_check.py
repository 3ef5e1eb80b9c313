"""`validate_draft_orders` checks draft orders twice over: a quick check (TypedDicts, no Python during
validation) on every call, and the reference models, which name the element at fault, only when the quick
check refuses. These tests hold the two to the same verdict, and the one-validation mapping of
`draft_orders_to_plan` to the injection-by-injection messages."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any, NotRequired, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

from regenguide.cds import hooks
from regenguide.cds.hooks import (
    EXT,
    MODALITY_SYSTEM,
    REGION_SYSTEM,
    DraftOrderError,
    draft_orders_to_plan,
    plan_to_draft_orders,
    service_requests,
    validate_draft_orders,
)
from regenguide.domain.plan import Injection, PlanDocument

PAIRS: list[tuple[type[BaseModel], type]] = [
    (hooks._Coding, hooks._QuickCoding),
    (hooks._CodeableConcept, hooks._QuickCodeableConcept),
    (hooks._Reference, hooks._QuickReference),
    (hooks._Extension, hooks._QuickExtension),
    (hooks._ServiceRequest, hooks._QuickServiceRequest),
    (hooks._Resource, hooks._QuickResource),
    (hooks._Entry, hooks._QuickEntry),
    (hooks._Bundle, hooks._QuickBundle),
]


def _orders(name: str = "glabella_microfat_risky") -> dict[str, Any]:
    text = (resources.files("regenguide.kb") / "data" / "examples" / f"{name}.json").read_text()
    return plan_to_draft_orders(PlanDocument.model_validate(json.loads(text)), "Patient/1")


@pytest.mark.parametrize(("model", "quick"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_quick_typeddicts_mirror_the_reference_models(model: type[BaseModel], quick: type) -> None:
    hints = get_type_hints(quick, include_extras=True)
    assert set(hints) == set(model.model_fields)
    for name, field in model.model_fields.items():
        assert (get_origin(hints[name]) is NotRequired) == (not field.is_required()), name
    assert quick.__pydantic_config__ == {"extra": "allow"}  # type: ignore[attr-defined]
    assert model.model_config.get("extra") == "allow"


BAD_VALUES: list[Any] = [None, 5, 1.5, True, "", "has space", [], {}, [1], [{}], {"x": 1}, ["x"],
                         [{"coding": [{"system": REGION_SYSTEM, "code": "x  y"}]}]]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj[:2]):
            yield from _paths(value, (*prefix, index))


def _at(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _mutants() -> Iterator[dict[str, Any]]:
    """Every element of a two-order Bundle replaced by bad values, removed, or given extra children."""
    base = _orders()
    base["entry"] = base["entry"][:2]
    yield base
    for path in _paths(base):
        for bad in BAD_VALUES:
            mutant = copy.deepcopy(base)
            _at(mutant, path[:-1])[path[-1]] = copy.deepcopy(bad)
            yield mutant
        mutant = copy.deepcopy(base)
        del _at(mutant, path[:-1])[path[-1]]
        yield mutant
        if isinstance(_at(base, path), dict):
            for key, value in [("valueString", "s"), ("valueCode", "c"), ("valueInteger", "3"), ("extension", []),
                               ("foo", 1), (5, 1), ("note", []), ("id", None), ("display", 3)]:
                mutant = copy.deepcopy(base)
                _at(mutant, path)[key] = value
                yield mutant
    for entry in [{"resource": {"id": "x"}}, {"resource": {"resourceType": ""}}, {}, {"fullUrl": 5},
                  {"resource": {"resourceType": "MedicationRequest", "status": "whatever"}}, 5]:
        mutant = copy.deepcopy(base)
        mutant["entry"].insert(1, entry)
        yield mutant


def _reference_verdict(draft_orders: Any) -> str | None:
    try:
        hooks._refuse(draft_orders)
    except DraftOrderError as exc:
        return str(exc)
    return None


def test_quick_check_and_reference_models_agree_on_every_mutant() -> None:
    accepted = refused = 0
    for mutant in _mutants():
        try:
            verdict = _reference_verdict(mutant)
        except (AttributeError, TypeError):  # a `code` that is no CodeableConcept: not the quick check's to judge
            assert hooks._quick_orders(mutant) is None
            continue
        orders = hooks._quick_orders(mutant)
        assert (orders is None) == (verdict is not None), (verdict, mutant)
        if orders is None:
            refused += 1
            with pytest.raises(DraftOrderError, match=re.escape(verdict or "")):
                validate_draft_orders(mutant)
        else:
            accepted += 1
            assert [o.resource for o in orders] == service_requests(mutant)
    assert accepted > 100 and refused > 300


def test_extensions_are_indexed_like_a_scan_of_the_list() -> None:
    orders = _orders()
    extensions = orders["entry"][0]["resource"]["extension"]
    extensions[:0] = [{"url": EXT + "gauge"}, {"url": EXT + "gauge", "valueString": "first with a value"},
                      {"url": EXT + "plane", "valueCode": None}]
    extensions.append({"url": EXT + "plane", "valueCode": "later"})
    (first, *_) = validate_draft_orders(orders)
    assert first.entry == 0 and first.modality == "microfat"
    assert first.ext("gauge") == "first with a value"
    assert first.ext("plane") is None and EXT + "plane" in first.extensions
    assert first.ext("unknown") is None


def _with(change: Callable[[list[dict[str, Any]]], None]) -> dict[str, Any]:
    orders = _orders()
    orders["entry"] = [copy.deepcopy(e) for e in orders["entry"] * 3]  # 3 × the example's orders
    for index, entry in enumerate(orders["entry"]):
        entry["resource"]["id"] = f"o{index}"
    change([e["resource"] for e in orders["entry"]])
    return orders


def _set(index: int, name: str, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    return lambda requests: requests[index]["extension"].insert(0, {"url": EXT + name, key: value})


def test_an_invalid_plan_names_the_first_order_at_fault_as_before() -> None:
    def gauge_and_region(requests: list[dict[str, Any]]) -> None:
        requests[2]["bodySite"] = []
        requests[1]["extension"].insert(0, {"url": EXT + "gauge", "valueInteger": 99})

    with pytest.raises(DraftOrderError) as caught:
        draft_orders_to_plan(_with(gauge_and_region))
    assert str(caught.value).startswith("ServiceRequest o1: ['1 validation error for Injection', 'gauge', ")

    def region_first(requests: list[dict[str, Any]]) -> None:
        requests[0]["bodySite"] = [{"coding": [{"system": "elsewhere", "code": "x"}]}]
        requests[1]["extension"].insert(0, {"url": EXT + "gauge", "valueInteger": 99})

    region_message = f"ServiceRequest o0: bodySite needs a coding in {REGION_SYSTEM}"
    with pytest.raises(DraftOrderError, match=re.escape(region_message)):
        draft_orders_to_plan(_with(region_first))
    with pytest.raises(DraftOrderError, match=r"^draft orders do not make a valid plan: \['1 validation error for "
                                              r"PlanDocument', 'guidance.imaging'"):
        draft_orders_to_plan(_with(_set(0, "guidance-imaging", "valueCode", "xray")))
    with pytest.raises(DraftOrderError, match=re.escape("draft orders mix modalities ['microfat', 'prp']")):
        draft_orders_to_plan(_with(lambda r: r[1]["code"]["coding"][0].update(code="prp")))


def test_the_plan_is_the_same_as_from_validated_injections() -> None:
    for name in ("glabella_microfat_risky", "scalp_prp_safe"):
        orders = _orders(name)
        plan = draft_orders_to_plan(orders, {"age": 50})
        assert plan is not None
        doc = plan.model_dump(by_alias=True, exclude_none=True)
        doc["injections"] = [Injection.model_validate(i).model_dump(exclude_none=True) for i in doc["injections"]]
        assert PlanDocument.model_validate(doc) == plan
        assert plan.patient.age == 50


def test_an_entry_without_a_resource_is_skipped() -> None:
    orders = _orders()
    orders["entry"].insert(0, {"resource": None})
    orders["entry"].append({"fullUrl": "urn:uuid:1"})
    assert draft_orders_to_plan(orders) == draft_orders_to_plan(_orders())
    assert service_requests(orders) == service_requests(_orders())
    assert [o.entry for o in validate_draft_orders(orders)] == list(range(1, len(orders["entry"]) - 1))


def test_bundle_without_our_orders_and_malformed_foreign_code() -> None:
    foreign = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                      "subject": {"reference": "Patient/1"}, "code": {"text": "chest x-ray"}}}]}
    assert draft_orders_to_plan(foreign) is None and validate_draft_orders(foreign) == []
    bad = _orders()
    bad["entry"][0]["resource"]["code"]["coding"][0]["code"] = 7
    with pytest.raises(DraftOrderError, match=re.escape("draftOrders.entry.0: ServiceRequest inj-0 is not valid "
                                                        "FHIR R4: code.coding.0.code: Input should be a valid string")):
        draft_orders_to_plan(bad)
    assert MODALITY_SYSTEM in json.dumps(bad)
