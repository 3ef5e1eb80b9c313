from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenguide.domain.plan import Consent
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError
from regenguide.products.bedside import ConsentStatus, RefusalCode, verify_bedside
from regenguide.products.custody import (
    CustodyError,
    CustodyEvent,
    EventType,
    IllegalTransition,
    ProductSnapshot,
    ProductStatus,
    append_event,
    apply_event,
    compute_expiry,
    is_expired,
    release_blockers,
    replay,
    snapshot_from_log,
)
from regenguide.products.din import divide, new_din, new_local_id
from regenguide.products.preparation import parse_preparation
from regenguide.products.rules import load_facility_hold_times

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
S, E = ProductStatus, EventType

# Written out independently of the implementation's table.
LEGAL = {
    (S.new, E.collected): S.collected,
    (S.collected, E.received): S.received,
    (S.collected, E.processed): S.processed,
    (S.collected, E.discarded): S.discarded,
    (S.received, E.processed): S.processed,
    (S.received, E.discarded): S.discarded,
    (S.processed, E.processed): S.processed,
    (S.processed, E.qc_passed): S.qc_passed,
    (S.processed, E.qc_failed): S.qc_failed,
    (S.processed, E.discarded): S.discarded,
    (S.qc_passed, E.released): S.released,
    (S.qc_passed, E.discarded): S.discarded,
    (S.qc_failed, E.discarded): S.discarded,
    (S.released, E.issued): S.issued,
    (S.released, E.administered): S.administered,
    (S.released, E.discarded): S.discarded,
    (S.issued, E.administered): S.administered,
    (S.issued, E.returned): S.returned,
    (S.issued, E.discarded): S.discarded,
    (S.returned, E.issued): S.issued,
    (S.returned, E.discarded): S.discarded,
    # A thaw keeps the status: a frozen product is thawed after receipt or processing, before it is given.
    (S.received, E.thawed): S.received,
    (S.processed, E.thawed): S.processed,
    (S.qc_passed, E.thawed): S.qc_passed,
    (S.released, E.thawed): S.released,
    (S.issued, E.thawed): S.issued,
}
ILLEGAL = [(s, e) for s in ProductStatus for e in EventType if (s, e) not in LEGAL]


@pytest.mark.parametrize(("status", "event"), list(LEGAL))
def test_legal_transitions(status: ProductStatus, event: EventType) -> None:
    assert apply_event(status, event) is LEGAL[(status, event)]


@pytest.mark.parametrize(("status", "event"), ILLEGAL)
def test_every_illegal_transition_is_refused(status: ProductStatus, event: EventType) -> None:
    with pytest.raises(IllegalTransition) as err:
        apply_event(status, event)
    message = str(err.value)
    assert f"'{event.value}'" in message and f"'{status.value}'" in message
    assert err.value.status is status and err.value.event is event


def test_illegal_count_and_message() -> None:
    assert len(ILLEGAL) == 11 * 11 - len(LEGAL)
    with pytest.raises(IllegalTransition, match="only a released"):
        apply_event(S.processed, E.administered)
    with pytest.raises(IllegalTransition, match="no further event"):
        apply_event(S.administered, E.administered)


def _ev(key: str, kind: EventType, minutes: float) -> CustodyEvent:
    return CustodyEvent(product_key=key, type=kind, at=T0 + timedelta(minutes=minutes), user="u1", place="room 2")


def _log(key: str, kinds: list[EventType]) -> tuple[CustodyEvent, ...]:
    log: tuple[CustodyEvent, ...] = ()
    for i, kind in enumerate(kinds):
        log = append_event(log, _ev(key, kind, 10 * i))
    return log


FLOW = [E.collected, E.processed, E.qc_passed, E.released]


def test_append_only_log() -> None:
    din = new_din("A9999", 26, 1)
    log = _log(din.key, FLOW)
    assert replay(log) is S.released and len(log) == 4
    longer = append_event(log, _ev(din.key, E.administered, 100))
    assert len(log) == 4 and replay(longer) is S.administered
    with pytest.raises(IllegalTransition):
        append_event(_log(din.key, [E.collected, E.processed]), _ev(din.key, E.administered, 50))
    with pytest.raises(CustodyError, match="before the last event"):
        append_event(log, _ev(din.key, E.issued, -5))
    with pytest.raises(CustodyError, match="appended to the log"):
        append_event(log, _ev("OTHER", E.issued, 100))


def test_a_product_is_thawed_once_and_the_thaw_starts_its_clock(tmp_path: Path) -> None:
    din = new_din("A9999", 26, 4)
    log = append_event(_log(din.key, FLOW), _ev(din.key, E.thawed, 100))
    assert replay(log) is S.released  # the thaw does not change the status
    with pytest.raises(CustodyError, match="already thawed"):
        append_event(log, _ev(din.key, E.thawed, 120))
    # No sourced post-thaw hold for CAR-T: the clock starts at the logged thaw, but no expiry is computed …
    cart = compute_expiry("car_t", log, thawed_at=T0)
    assert cart.clock_started_at == T0 + timedelta(minutes=100) and cart.expires_at is None
    # … until the facility sets one (its SOP, here a made-up test value).
    path = tmp_path / "holds.yaml"
    path.write_text("- {product_type: car_t, hours: 3, clock_starts: thawed, evidence: expert_opinion,"
                    " citations: ['facility-sop:CART-01']}\n", encoding="utf-8")
    table = load_facility_hold_times(path)
    assert compute_expiry("car_t", log, hold_times=table).expires_at == T0 + timedelta(minutes=100, hours=3)
    # Without a logged thaw, the preparation record's thaw time is used.
    unthawed = _log(din.key, FLOW)
    assert compute_expiry("car_t", unthawed, thawed_at=T0, hold_times=table).expires_at == T0 + timedelta(hours=3)


def test_prp_expiry_from_hold_time() -> None:
    din = new_din("A9999", 26, 2)
    log = _log(din.key, FLOW)  # processed at T0 + 10 min
    exp = compute_expiry("prp", log)
    assert exp.expires_at == T0 + timedelta(minutes=10, hours=4)  # wilson-2018-prp-storage
    assert exp.evidence is EvidenceLabel.verified and "wilson-2018-prp-storage" in exp.citations
    assert compute_expiry("prp", log[:1]).expires_at is None  # not processed yet
    fat = compute_expiry("microfat", log)
    assert fat.expires_at is None and "facility must set" in fat.reason
    cart = compute_expiry("car_t", log, thawed_at=T0)
    assert cart.expires_at is None and cart.clock_started_at == T0


def test_facility_hold_time_override(tmp_path: Path) -> None:
    path = tmp_path / "holds.yaml"
    path.write_text(
        "- {product_type: microfat, hours: 2, clock_starts: processed, evidence: expert_opinion,"
        " citations: ['facility-sop:FAT-01']}\n",
        encoding="utf-8",
    )
    table = load_facility_hold_times(path)
    din = new_din("A9999", 26, 3)
    exp = compute_expiry("microfat", _log(din.key, FLOW), hold_times=table)
    assert exp.expires_at == T0 + timedelta(minutes=10, hours=2)
    assert table["prp"].hours == 4  # type: ignore[index]
    path.write_text("- {product_type: microfat, hours: -2}\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError):
        load_facility_hold_times(path)


def test_snapshot_from_log() -> None:
    din = new_din("A9999", 26, 4)
    log = _log(din.key, FLOW)
    snap = snapshot_from_log(din, "prp", "MRN-1", log)
    assert snap.status is S.released and snap.collected_at == T0
    assert snap.expires_at == T0 + timedelta(minutes=10, hours=4)
    earlier = snapshot_from_log(din, "prp", "MRN-1", log, expires_at=T0 + timedelta(hours=1))
    assert earlier.expires_at == T0 + timedelta(hours=1)
    with pytest.raises(CustodyError):
        snapshot_from_log(new_din("A9999", 26, 5), "prp", "MRN-1", log)


# --- bedside ------------------------------------------------------------------------------------
PATIENT = "MRN-0001"
NOW = T0 + timedelta(hours=1)
SIGNED = ConsentStatus(state="signed", signed_on=date(2026, 11, 1), expires_on=date(2027, 11, 1))


def _product(**over: object) -> ProductSnapshot:
    base: dict[str, object] = {
        "identifier": new_din("A9999", 21, 123456),
        "product_type": "prp",
        "patient_id": PATIENT,
        "status": S.released,
        "expires_at": T0 + timedelta(hours=4),
    }
    base.update(over)
    return ProductSnapshot.model_validate(base)


def _verify(**over: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "scanned_patient_id": PATIENT,
        "scanned_product_id": "=A99992112345600",
        "product": _product(),
        "patient_id": PATIENT,
        "plan_signed": True,
        "consent": SIGNED,
        "now": NOW,
    }
    args.update(over)
    return verify_bedside(**args)  # type: ignore[arg-type]


def test_bedside_ok_variants() -> None:
    res = _verify()
    assert res.ok and res.refusals == [] and not res.check_char_verified
    keyed = _verify(scanned_product_id="A9999 21 123456 3")
    assert keyed.ok and keyed.check_char_verified
    assert _verify(product=_product(status=S.issued)).ok
    local = new_local_id("SITE", 26, 9)
    assert _verify(product=_product(identifier=local), scanned_product_id="SITE-26-000009").ok


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"scanned_product_id": "A9999 21 12345"}, RefusalCode.identifier_malformed),
        ({"scanned_product_id": "A9999211234564"}, RefusalCode.identifier_check_char_wrong),
        ({"scanned_product_id": "=A99992112345700"}, RefusalCode.wrong_product),
        ({"scanned_patient_id": "MRN-0002"}, RefusalCode.patient_mismatch),
        ({"scanned_patient_id": ""}, RefusalCode.patient_mismatch),
        ({"product": _product(patient_id="MRN-0002")}, RefusalCode.wrong_patient),
        ({"product": _product(status=S.processed)}, RefusalCode.not_released),
        ({"product": _product(status=S.qc_passed)}, RefusalCode.not_released),
        ({"product": _product(status=S.returned)}, RefusalCode.not_released),
        ({"product": _product(status=S.qc_failed)}, RefusalCode.quarantined),
        ({"product": _product(status=S.discarded)}, RefusalCode.discarded),
        ({"product": _product(status=S.administered)}, RefusalCode.already_administered),
        ({"now": T0 + timedelta(hours=4)}, RefusalCode.expired),
        ({"product": _product(expires_at=None)}, RefusalCode.expiry_unknown),
        ({"plan_signed": False}, RefusalCode.plan_not_signed),
        ({"consent": ConsentStatus(state="missing")}, RefusalCode.consent_missing),
        ({"consent": ConsentStatus(state="declined")}, RefusalCode.consent_declined),
        ({"consent": ConsentStatus(state="withdrawn")}, RefusalCode.consent_withdrawn),
        ({"consent": ConsentStatus(state="signed", expires_on=date(2026, 11, 21))}, RefusalCode.consent_expired),
    ],
)
def test_each_refusal_reason(over: dict[str, object], code: RefusalCode) -> None:
    res = _verify(**over)
    assert not res.ok
    assert res.codes == [code], res.refusals
    assert res.refusals[0].message


def test_refusals_accumulate_and_all_codes_covered() -> None:
    res = _verify(
        scanned_patient_id="MRN-0002",
        product=_product(status=S.qc_failed, expires_at=T0, patient_id="MRN-0003"),
        plan_signed=False,
        consent=ConsentStatus(state="missing"),
    )
    assert set(res.codes) == {
        RefusalCode.patient_mismatch,
        RefusalCode.wrong_patient,
        RefusalCode.quarantined,
        RefusalCode.expired,
        RefusalCode.plan_not_signed,
        RefusalCode.consent_missing,
    }
    # consent valid through its last day
    assert _verify(consent=ConsentStatus(state="signed", expires_on=NOW.date())).ok
    with pytest.raises(ValueError, match="timezone"):
        _verify(now=datetime(2026, 11, 22, 9, 0))


def test_aliquot_division_scan() -> None:
    kids = divide(new_din("A9999", 21, 123456), 2)
    prod = _product(identifier=kids[1])
    assert _verify(product=prod, scanned_product_id="=A99992112345600").codes == [RefusalCode.division_unconfirmed]
    assert _verify(product=prod, scanned_product_id="A999921123456/B0").ok
    assert _verify(product=prod, scanned_product_id="A999921123456/A0").codes == [RefusalCode.wrong_product]


def test_consent_from_plan() -> None:
    c = ConsentStatus.from_plan(Consent(status="signed", signed_on="2026-01-01", expires_on="2026-06-30"))
    assert c.expires_on == date(2026, 6, 30)
    assert ConsentStatus.from_plan(None).state == "missing"
    assert _verify(consent=c).codes == [RefusalCode.consent_expired]


# --- properties of the state machine ---------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(EventType)), max_size=12))
def test_any_accepted_history_is_safe(events: list[EventType]) -> None:
    status = ProductStatus.new
    seen: list[EventType] = []
    for ev in events:
        try:
            status = apply_event(status, ev)
        except IllegalTransition:
            continue  # refused events are not recorded
        seen.append(ev)
    if EventType.administered in seen:
        first = seen.index(EventType.administered)
        assert EventType.released in seen[:first] and EventType.qc_passed in seen[:first]
        assert EventType.qc_failed not in seen
        assert seen.count(EventType.administered) == 1 and seen[-1] is EventType.administered
    if seen:
        assert seen[0] is EventType.collected


def test_release_blockers_and_is_expired(f: Any) -> None:
    import copy

    cart = copy.deepcopy(f.cart())
    assert release_blockers(parse_preparation(cart)) == []
    cart["release_tests"][0]["result"] = "fail"
    cart["release_tests"][2]["result"] = "pending"
    assert release_blockers(parse_preparation(cart)) == [
        "release test sterility failed",
        "release test endotoxin is pending",
    ]
    assert release_blockers(parse_preparation(f.prp())) == []
    snap = _product()
    assert is_expired(snap, T0) is False and is_expired(snap, T0 + timedelta(hours=4)) is True
    assert is_expired(_product(expires_at=None), T0) is None
