"""Custom patient-reported instruments as FHIR R4 `Questionnaire` (fhir.resources.R4B models).

* ``load_questionnaire(source) -> Questionnaire`` - from a dict, JSON text or a file path;
* ``validate_response(questionnaire, response) -> list[ResponseIssue]`` - unknown or misplaced items,
  required items (when the response is completed), answer types against item types, allowed options,
  repeats, min/max value and maxLength, and `enableWhen` (a disabled item must not be answered and is
  not required);
* ``score_response(questionnaire, response) -> QuestionnaireScore | None`` - a total where the
  questionnaire defines one: answer options carrying an itemWeight / ordinalValue extension
  (`fhir-itemweight`), or the RegenGuide extension asking to sum numeric option codes;
* ``build_response(questionnaire, answers, ...) -> QuestionnaireResponse`` - a response built from
  submitted answers (what a patient-facing form posts), validated before it is returned.

The fhir.resources models check structure but not the Questionnaire semantics above, and no maintained
Python library validates a QuestionnaireResponse against its Questionnaire offline (the HL7 validator
is Java), so the rules are implemented here, limited to the FHIR R4 core elements listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.questionnaire import Questionnaire, QuestionnaireItem
from fhir.resources.R4B.questionnaireresponse import (
    QuestionnaireResponse,
    QuestionnaireResponseItem,
    QuestionnaireResponseItemAnswer,
)
from pydantic import BaseModel, ValidationError

WEIGHT_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/questionnaire-ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/iso21090-CO-value",
)
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
# RegenGuide extension on Questionnaire: valueCode "sum-option-codes" sums numeric answer codes.
SCORING_EXTENSION = "http://regenguide.org/fhir/StructureDefinition/questionnaire-scoring"

RESPONSE_STATUSES = {"in-progress", "completed", "amended", "entered-in-error", "stopped"}

# Questionnaire item type -> allowed QuestionnaireResponse answer value[x] fields.
ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime",),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding", "valueString", "valueInteger", "valueDate", "valueTime", "valueReference"),
    "open-choice": ("valueCoding", "valueString", "valueInteger", "valueDate", "valueTime", "valueReference"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}
_VALUE_FIELDS = (
    "valueBoolean",
    "valueDecimal",
    "valueInteger",
    "valueDate",
    "valueDateTime",
    "valueTime",
    "valueString",
    "valueUri",
    "valueAttachment",
    "valueCoding",
    "valueQuantity",
    "valueReference",
)


class QuestionnaireError(ValueError):
    def __init__(self, message: str, issues: Sequence[ResponseIssue] = ()) -> None:
        self.issues = list(issues)
        detail = "; ".join(str(i) for i in self.issues)
        super().__init__(message + (f": {detail}" if detail else ""))


class ResponseIssue(BaseModel):
    link_id: str | None
    severity: str = "error"  # error | warning
    message: str

    def __str__(self) -> str:
        return f"{self.link_id or '(response)'}: {self.message}"


class QuestionnaireScore(BaseModel):
    total: float
    maximum: float
    minimum: float
    method: str
    scored_items: int
    answered_items: int
    complete: bool
    item_scores: dict[str, float]


# --- loading -------------------------------------------------------------------------------------


def load_questionnaire(source: Questionnaire | Mapping[str, Any] | str | Path) -> Questionnaire:
    """Parse a FHIR R4 Questionnaire; raises `QuestionnaireError` with the reason."""
    if isinstance(source, Questionnaire):
        return source
    data: Any = source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise QuestionnaireError(f"cannot read questionnaire {path.name}: {exc}") from exc
    elif isinstance(source, str):
        try:
            data = json.loads(source)
        except json.JSONDecodeError as exc:
            raise QuestionnaireError(f"questionnaire is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping) or data.get("resourceType") != "Questionnaire":
        raise QuestionnaireError("not a FHIR Questionnaire (resourceType must be 'Questionnaire')")
    try:
        questionnaire = Questionnaire.model_validate(dict(data))
    except ValidationError as exc:
        raise QuestionnaireError(f"invalid Questionnaire: {exc}") from exc
    link_ids = [_lid(i) for i in _walk(questionnaire.item or [])]
    dupes = sorted({x for x in link_ids if link_ids.count(x) > 1})
    if dupes:
        raise QuestionnaireError(f"duplicate linkId in questionnaire: {', '.join(dupes)}")
    return questionnaire


def _load_response(response: QuestionnaireResponse | Mapping[str, Any]) -> QuestionnaireResponse:
    if isinstance(response, QuestionnaireResponse):
        return response
    if response.get("resourceType") != "QuestionnaireResponse":
        raise QuestionnaireError("not a FHIR QuestionnaireResponse")
    try:
        return QuestionnaireResponse.model_validate(dict(response))
    except ValidationError as exc:
        raise QuestionnaireError(f"invalid QuestionnaireResponse: {exc}") from exc


@cache
def _example_text() -> str:
    folder = resources.files("regenguide.kb") / "data" / "outcomes" / "questionnaires"
    return (folder / "regenguide-recovery-check.json").read_text(encoding="utf-8")


def example_questionnaire() -> Questionnaire:
    """The bundled example: a short recovery check written for RegenGuide (not a validated instrument)."""
    return load_questionnaire(_example_text())


def _lid(item: Any) -> str:
    """linkId is mandatory in FHIR (the models type it optional)."""
    return str(item.linkId or "")


def _walk(items: Iterable[QuestionnaireItem]) -> Iterable[QuestionnaireItem]:
    for item in items:
        yield item
        yield from _walk(item.item or [])


# --- helpers -------------------------------------------------------------------------------------


def _answer_field(answer: QuestionnaireResponseItemAnswer) -> tuple[str | None, Any]:
    for name in _VALUE_FIELDS:
        value = getattr(answer, name, None)
        if value is not None:
            return name, value
    return None, None


def _ext_value(extensions: Iterable[Any] | None, urls: Iterable[str]) -> Any:
    wanted = set(urls)
    for ext in extensions or []:
        if ext.url in wanted:
            for name in ("valueDecimal", "valueInteger", "valueDate", "valueDateTime", "valueString", "valueCode"):
                value = getattr(ext, name, None)
                if value is not None:
                    return value
    return None


def _option_matches(option: Any, field: str, value: Any) -> bool:
    if field == "valueCoding":
        coding = option.valueCoding
        if coding is None:
            return False
        if value.system and coding.system and value.system != coding.system:
            return False
        return bool(coding.code) and coding.code == value.code
    return getattr(option, field, None) is not None and getattr(option, field) == value


def _option_weight(option: Any) -> float | None:
    weight = _ext_value(option.extension, WEIGHT_EXTENSIONS)
    if weight is None and option.valueCoding is not None:
        weight = _ext_value(option.valueCoding.extension, WEIGHT_EXTENSIONS)
    return float(weight) if weight is not None else None


def _collect_answers(items: Iterable[QuestionnaireResponseItem], out: dict[str, list[Any]]) -> None:
    for item in items:
        for answer in item.answer or []:
            field, value = _answer_field(answer)
            if field:
                out.setdefault(_lid(item), []).append((field, value))
            _collect_answers(answer.item or [], out)
        _collect_answers(item.item or [], out)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    try:
        return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[op]
    except TypeError:
        return False


def _enabled(item: QuestionnaireItem, answers: Mapping[str, list[Any]]) -> bool:
    conditions = item.enableWhen or []
    if not conditions:
        return True
    results = []
    for cond in conditions:
        given = answers.get(str(cond.question), [])
        if cond.operator == "exists":
            results.append(bool(given) == bool(cond.answerBoolean))
            continue
        expected_field: str | None = None
        expected: Any = None
        for name in (
            "answerBoolean",
            "answerDecimal",
            "answerInteger",
            "answerDate",
            "answerDateTime",
            "answerTime",
            "answerString",
            "answerCoding",
            "answerQuantity",
            "answerReference",
        ):
            if getattr(cond, name, None) is not None:
                expected_field, expected = name, getattr(cond, name)
                break
        hit = False
        for field, value in given:
            if expected_field == "answerCoding" and field == "valueCoding":
                same = value.code == expected.code and (not expected.system or value.system == expected.system)
                hit = hit or (same if cond.operator == "=" else not same if cond.operator == "!=" else False)
            elif expected_field and field.replace("value", "") == expected_field.replace("answer", ""):
                left = value
                right = expected
                numeric = (Decimal, int, float)
                if (
                    isinstance(left, numeric)
                    and isinstance(right, numeric)
                    and not isinstance(left, bool)
                    and not isinstance(right, bool)
                ):
                    left, right = Decimal(str(left)), Decimal(str(right))
                hit = hit or _compare(str(cond.operator), left, right)
        results.append(hit)
    behavior = item.enableBehavior or "all"
    return all(results) if behavior == "all" else any(results)


# --- validation ----------------------------------------------------------------------------------


def validate_response(
    questionnaire: Questionnaire | Mapping[str, Any], response: QuestionnaireResponse | Mapping[str, Any]
) -> list[ResponseIssue]:
    """All problems of `response` against `questionnaire` (an empty list means valid). Warnings are
    returned too (severity 'warning'), e.g. answers to a value-set-bound item that cannot be checked
    offline."""
    q = load_questionnaire(questionnaire)
    r = _load_response(response)
    issues: list[ResponseIssue] = []
    if r.status not in RESPONSE_STATUSES:
        issues.append(
            ResponseIssue(
                link_id=None, message=f"status {r.status!r} is not one of {', '.join(sorted(RESPONSE_STATUSES))}"
            )
        )
    if q.url and r.questionnaire and r.questionnaire.split("|")[0] != q.url:
        issues.append(ResponseIssue(link_id=None, message=f"response is for {r.questionnaire!r}, not {q.url!r}"))
    answers: dict[str, list[Any]] = {}
    _collect_answers(r.item or [], answers)
    _check_level(q.item or [], r.item or [], answers, r.status == "completed", issues)
    return issues


def _check_level(
    q_items: Sequence[QuestionnaireItem],
    r_items: Sequence[QuestionnaireResponseItem],
    answers: Mapping[str, list[Any]],
    completed: bool,
    issues: list[ResponseIssue],
) -> None:
    by_link = {_lid(i): i for i in q_items}
    seen: dict[str, int] = {}
    for r_item in r_items:
        q_item = by_link.get(_lid(r_item))
        if q_item is None:
            valid = ", ".join(by_link) or "none"
            issues.append(ResponseIssue(link_id=_lid(r_item), message=f"unknown item here (expected one of: {valid})"))
            continue
        seen[_lid(r_item)] = seen.get(_lid(r_item), 0) + 1
        if seen[_lid(r_item)] > 1 and not (q_item.repeats and q_item.type == "group"):
            issues.append(ResponseIssue(link_id=_lid(r_item), message="appears more than once but does not repeat"))
        if not _enabled(q_item, answers):
            if r_item.answer or r_item.item:
                issues.append(
                    ResponseIssue(link_id=_lid(r_item), message="answered although it is disabled by enableWhen")
                )
            continue
        _check_item(q_item, r_item, answers, completed, issues)
    if completed:
        for q_item in q_items:
            if q_item.required and _lid(q_item) not in seen and _enabled(q_item, answers) and q_item.type != "display":
                issues.append(ResponseIssue(link_id=_lid(q_item), message="is required"))


def _check_item(
    q_item: QuestionnaireItem,
    r_item: QuestionnaireResponseItem,
    answers: Mapping[str, list[Any]],
    completed: bool,
    issues: list[ResponseIssue],
) -> None:
    link = _lid(q_item)
    if q_item.type in ("group", "display"):
        if r_item.answer:
            issues.append(ResponseIssue(link_id=link, message=f"a {q_item.type} item cannot have answers"))
        if q_item.type == "group":
            _check_level(q_item.item or [], r_item.item or [], answers, completed, issues)
        return
    given = r_item.answer or []
    if completed and q_item.required and not given:
        issues.append(ResponseIssue(link_id=link, message="is required"))
    if len(given) > 1 and not q_item.repeats:
        issues.append(ResponseIssue(link_id=link, message=f"has {len(given)} answers but does not repeat"))
    allowed = ANSWER_TYPES.get(str(q_item.type), ())
    for answer in given:
        field, value = _answer_field(answer)
        if field is None:
            issues.append(ResponseIssue(link_id=link, message="answer has no value"))
            continue
        if field not in allowed:
            issues.append(
                ResponseIssue(
                    link_id=link,
                    message=f"answer type {field} does not fit item type "
                    f"{q_item.type!r} (expected {' or '.join(allowed)})",
                )
            )
            continue
        if q_item.type in ("choice", "open-choice"):
            _check_option(q_item, field, value, issues)
        elif q_item.type in ("integer", "decimal"):
            low = _ext_value(q_item.extension, [MIN_VALUE])
            high = _ext_value(q_item.extension, [MAX_VALUE])
            if low is not None and Decimal(str(value)) < Decimal(str(low)):
                issues.append(ResponseIssue(link_id=link, message=f"{value} is below the minimum {low}"))
            if high is not None and Decimal(str(value)) > Decimal(str(high)):
                issues.append(ResponseIssue(link_id=link, message=f"{value} is above the maximum {high}"))
        elif q_item.type in ("string", "text") and q_item.maxLength and len(value) > q_item.maxLength:
            issues.append(ResponseIssue(link_id=link, message=f"answer longer than maxLength {q_item.maxLength}"))
        if answer.item:
            _check_level(q_item.item or [], answer.item, answers, completed, issues)
    if r_item.item and q_item.type not in ("group",):
        _check_level(q_item.item or [], r_item.item, answers, completed, issues)


def _check_option(q_item: QuestionnaireItem, field: str, value: Any, issues: list[ResponseIssue]) -> None:
    options = q_item.answerOption or []
    if not options:
        if q_item.answerValueSet:
            issues.append(
                ResponseIssue(
                    link_id=_lid(q_item),
                    severity="warning",
                    message=f"answer not checked against value set {q_item.answerValueSet}",
                )
            )
        return
    if q_item.type == "open-choice" and field == "valueString":
        return
    if not any(_option_matches(o, field, value) for o in options):
        shown = value.code if field == "valueCoding" else value
        valid = ", ".join(_option_label(o) for o in options)
        issues.append(ResponseIssue(link_id=_lid(q_item), message=f"{shown!r} is not an allowed option ({valid})"))


def _option_label(option: Any) -> str:
    if option.valueCoding is not None:
        return str(option.valueCoding.code)
    for name in ("valueString", "valueInteger", "valueDate", "valueTime"):
        if getattr(option, name, None) is not None:
            return str(getattr(option, name))
    return "?"


def errors_only(issues: Iterable[ResponseIssue]) -> list[ResponseIssue]:
    return [i for i in issues if i.severity == "error"]


def to_operation_outcome(issues: Sequence[ResponseIssue]) -> OperationOutcome:
    """FHIR OperationOutcome for an API answer (`informational` when there is nothing to report)."""
    rows = [
        {
            "severity": i.severity,
            "code": "invalid" if i.severity == "error" else "informational",
            "diagnostics": i.message,
            **({"expression": [f"item.where(linkId='{i.link_id}')"]} if i.link_id else {}),
        }
        for i in issues
    ]
    if not rows:
        rows = [{"severity": "information", "code": "informational", "diagnostics": "valid"}]
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": rows})


# --- scoring -------------------------------------------------------------------------------------


def score_response(
    questionnaire: Questionnaire | Mapping[str, Any], response: QuestionnaireResponse | Mapping[str, Any]
) -> QuestionnaireScore | None:
    """Total score where the questionnaire defines one, else None. Weighted options (itemWeight or
    ordinalValue) are summed; with the RegenGuide scoring extension 'sum-option-codes', numeric option
    codes are summed instead. `complete` is False when a scored item is unanswered."""
    q = load_questionnaire(questionnaire)
    r = _load_response(response)
    method = _ext_value(q.extension, [SCORING_EXTENSION])
    scored: dict[str, QuestionnaireItem] = {}
    for item in _walk(q.item or []):
        if item.type not in ("choice", "open-choice") or not item.answerOption:
            continue
        if method == "sum-option-codes":
            if all(o.valueCoding is not None and _is_number(o.valueCoding.code) for o in item.answerOption):
                scored[_lid(item)] = item
        elif any(_option_weight(o) is not None for o in item.answerOption):
            scored[_lid(item)] = item
    if not scored:
        return None
    answers: dict[str, list[Any]] = {}
    _collect_answers(r.item or [], answers)
    item_scores: dict[str, float] = {}
    lo = hi = 0.0
    for link, item in scored.items():
        weights = [_weight(o, method) for o in item.answerOption or []]
        known = [w for w in weights if w is not None]
        lo += min(known) if known else 0.0
        hi += max(known) if known else 0.0
        for field, value in answers.get(link, []):
            for option, weight in zip(item.answerOption or [], weights, strict=True):
                if weight is not None and _option_matches(option, field, value):
                    item_scores[link] = item_scores.get(link, 0.0) + weight
    return QuestionnaireScore(
        total=sum(item_scores.values()),
        maximum=hi,
        minimum=lo,
        method=str(method or "itemWeight"),
        scored_items=len(scored),
        answered_items=len(item_scores),
        complete=len(item_scores) == len(scored),
        item_scores=item_scores,
    )


def _is_number(text: str | None) -> bool:
    try:
        Decimal(str(text))
    except InvalidOperation:
        return False
    return text is not None


def _weight(option: Any, method: Any) -> float | None:
    if method == "sum-option-codes":
        return float(Decimal(option.valueCoding.code))
    return _option_weight(option)


# --- building a response -------------------------------------------------------------------------


def _to_answer(item: QuestionnaireItem, raw: Any) -> dict[str, Any]:
    link, kind = _lid(item), item.type

    def fail(msg: str) -> QuestionnaireError:
        return QuestionnaireError(f"answer to {link!r}: {msg}")

    if kind == "boolean":
        if isinstance(raw, bool):
            return {"valueBoolean": raw}
        text = str(raw).strip().lower()
        if text in ("true", "yes", "1"):
            return {"valueBoolean": True}
        if text in ("false", "no", "0"):
            return {"valueBoolean": False}
        raise fail(f"{raw!r} is not true or false")
    if kind == "integer":
        try:
            number = Decimal(str(raw).strip())
        except InvalidOperation:
            raise fail(f"{raw!r} is not a whole number") from None
        if number != number.to_integral_value() or isinstance(raw, bool):
            raise fail(f"{raw!r} is not a whole number")
        return {"valueInteger": int(number)}
    if kind == "decimal":
        try:
            return {"valueDecimal": Decimal(str(raw).strip())}
        except InvalidOperation:
            raise fail(f"{raw!r} is not a number") from None
    if kind in ("string", "text"):
        return {"valueString": str(raw)}
    if kind == "url":
        return {"valueUri": str(raw)}
    if kind == "date":
        return {"valueDate": raw.isoformat() if isinstance(raw, date) else str(raw)}
    if kind == "dateTime":
        return {"valueDateTime": raw.isoformat() if isinstance(raw, datetime) else str(raw)}
    if kind == "time":
        return {"valueTime": raw.isoformat() if isinstance(raw, time) else str(raw)}
    if kind in ("choice", "open-choice"):
        key = str(raw.get("code") if isinstance(raw, Mapping) else raw).strip()
        for option in item.answerOption or []:
            if option.valueCoding is not None:
                coding = option.valueCoding
                if key == coding.code or (coding.display and key.lower() == coding.display.lower()):
                    return {"valueCoding": coding.model_dump(mode="json", exclude_none=True)}
            for name in ("valueString", "valueInteger", "valueDate", "valueTime"):
                value = getattr(option, name, None)
                if value is not None and key == str(value):
                    return {name: value if name != "valueDate" else str(value)}
        if kind == "open-choice":
            return {"valueString": str(raw)}
        if not item.answerOption:
            return {"valueCoding": {"code": key}}
        valid = ", ".join(_option_label(o) for o in item.answerOption)
        raise fail(f"{raw!r} is not an allowed option ({valid})")
    raise fail(f"item type {kind!r} cannot be answered from a form value")


def build_response(
    questionnaire: Questionnaire | Mapping[str, Any],
    answers: Mapping[str, Any],
    *,
    subject: str | None = None,
    authored: datetime | None = None,
    status: str = "completed",
    response_id: str | None = None,
) -> QuestionnaireResponse:
    """Build a QuestionnaireResponse from `answers` (linkId -> value, or a list for repeating items);
    choice answers may be given by code or display. Groups are created as in the questionnaire.
    Raises `QuestionnaireError` for unknown linkIds, unconvertible values or a response that fails
    `validate_response` (errors only)."""
    q = load_questionnaire(questionnaire)
    if status not in RESPONSE_STATUSES:
        raise QuestionnaireError(f"status {status!r} is not one of {', '.join(sorted(RESPONSE_STATUSES))}")
    by_link = {_lid(i): i for i in _walk(q.item or [])}
    unknown = [k for k in answers if k not in by_link]
    if unknown:
        raise QuestionnaireError(f"unknown linkId {unknown[0]!r}; valid: {', '.join(by_link)}")
    for link, raw in answers.items():
        if by_link[link].type in ("group", "display"):
            raise QuestionnaireError(f"{link!r} is a {by_link[link].type} item and takes no answer")
        if isinstance(raw, list | tuple) and not by_link[link].repeats and len(raw) != 1:
            raise QuestionnaireError(f"answer to {link!r}: {len(raw)} values but the item does not repeat")

    def build(items: Sequence[QuestionnaireItem]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in items:
            if item.type == "display":
                continue
            if item.type == "group":
                children = build(item.item or [])
                if children:
                    out.append({"linkId": _lid(item), **({"text": item.text} if item.text else {}), "item": children})
                continue
            if _lid(item) not in answers or answers[_lid(item)] is None:
                continue
            raw = answers[_lid(item)]
            values = list(raw) if isinstance(raw, list | tuple) else [raw]
            if not values:
                continue
            answer_rows = [_to_answer(item, v) for v in values]
            children = build(item.item or [])
            if children:
                answer_rows[0]["item"] = children
            out.append({"linkId": _lid(item), **({"text": item.text} if item.text else {}), "answer": answer_rows})
        return out

    data: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "status": status, "item": build(q.item or [])}
    if response_id:
        data["id"] = response_id
    if q.url:
        data["questionnaire"] = f"{q.url}|{q.version}" if q.version else q.url
    if subject:
        data["subject"] = {"reference": subject}
    if authored:
        data["authored"] = authored.isoformat()
    if not data["item"]:
        del data["item"]
    try:
        response = QuestionnaireResponse.model_validate(data)
    except ValidationError as exc:
        raise QuestionnaireError(f"could not build a valid QuestionnaireResponse: {exc}") from exc
    errors = errors_only(validate_response(q, response))
    if errors:
        raise QuestionnaireError("response does not satisfy the questionnaire", errors)
    return response


__all__ = [
    "QuestionnaireError",
    "QuestionnaireScore",
    "ResponseIssue",
    "build_response",
    "errors_only",
    "example_questionnaire",
    "instrument_questionnaire",
    "score_instrument_response",
    "load_questionnaire",
    "score_response",
    "to_operation_outcome",
    "validate_response",
]


# --- bundled instruments as questionnaires -------------------------------------------------------

INSTRUMENT_BASE = "http://regenguide.org/fhir"


def instrument_questionnaire(code: str) -> Questionnaire:
    """A FHIR R4 Questionnaire for an instrument (bundled or licensee-loaded), so a patient-facing
    form can collect it: integer items carry minValue/maxValue, choice items their options (with
    itemWeight where the option has points). Score the answers with `score_instrument_response`."""
    from regenguide.outcomes.instruments import get_instrument

    definition = get_instrument(code)
    items: list[dict[str, Any]] = []
    for item in definition.items:
        row: dict[str, Any] = {"linkId": item.code, "text": item.label, "required": item.required}
        if item.type == "integer":
            row["type"] = "integer"
            row["extension"] = [
                {"url": MIN_VALUE, "valueInteger": int(item.min if item.min is not None else (item.gt or 0) + 1)},
                {"url": MAX_VALUE, "valueInteger": int(item.max or 0)},
            ]
        elif item.type == "number":
            row["type"] = "decimal"
            ext = [{"url": MAX_VALUE, "valueDecimal": item.max}]
            if item.min is not None:
                ext.insert(0, {"url": MIN_VALUE, "valueDecimal": item.min})
            row["extension"] = ext
        elif item.type == "choice":
            row["type"] = "choice"
            options = []
            for choice in item.choices or []:
                option: dict[str, Any] = {
                    "valueCoding": {
                        "system": f"{INSTRUMENT_BASE}/CodeSystem/{definition.code}-{item.code}",
                        "code": str(choice.value),
                        "display": choice.label,
                    }
                }
                points = choice.points()
                if points is not None and item.scored:
                    option["extension"] = [{"url": WEIGHT_EXTENSIONS[0], "valueDecimal": points}]
                options.append(option)
            row["answerOption"] = options
        elif item.type == "boolean":
            row["type"] = "boolean"
        else:
            row["type"] = "string"
        items.append(row)
    data = {
        "resourceType": "Questionnaire",
        "id": f"instrument-{definition.code}".replace("_", "-"),
        "url": f"{INSTRUMENT_BASE}/Questionnaire/instrument-{definition.code}",
        "version": definition.version,
        "name": "".join(part.capitalize() for part in definition.code.split("_")),
        "title": definition.name,
        "status": "active",
        "copyright": definition.licence,
        "item": items,
    }
    return Questionnaire.model_validate(data)


def score_instrument_response(code: str, response: QuestionnaireResponse | Mapping[str, Any]) -> Any:
    """Validate a QuestionnaireResponse against `instrument_questionnaire(code)` and score it with the
    instrument's own rules; returns an `InstrumentScore`. Raises `QuestionnaireError` (structure) or
    `InstrumentValidationError` (item values)."""
    from regenguide.outcomes.instruments import score

    q = instrument_questionnaire(code)
    r = _load_response(response)
    errors = errors_only(validate_response(q, r))
    if errors:
        raise QuestionnaireError(f"response does not satisfy instrument {code!r}", errors)
    answers: dict[str, list[Any]] = {}
    _collect_answers(r.item or [], answers)
    responses: dict[str, object] = {}
    for link, values in answers.items():
        field, value = values[0]
        responses[link] = value.code if field == "valueCoding" else value
    return score(code, responses)
