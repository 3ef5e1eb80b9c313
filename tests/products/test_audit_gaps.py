"""Gaps found in the QA audit of issue 4: DEPA/PAW boundaries by hand, evidence labels of every cut-off
and hold time, typos refused end to end, type-3 flags never printed, site-unique record numbers at the
bedside, unidentifiable scans refused (and recordable)."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import zxingcpp
from hypothesis import given, settings
from PIL import Image
from typer.testing import CliRunner

from din_strategies import DIN
from regenguide.cli import app
from regenguide.kb.references import EvidenceLabel, resolve
from regenguide.products.bedside import ConsentStatus, RefusalCode, refuse_unidentified, verify_bedside
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import MOD37_ALPHABET, IdentifierError, mod37_2_char, new_din, parse_identifier
from regenguide.products.labels import LabelData, printed_flags, render_label_pdf, render_label_png
from regenguide.products.metrics import grade, prp_metrics
from regenguide.products.preparation import PrpPreparation, parse_preparation
from regenguide.products.rules import load_hold_times, load_prp_rules

runner = CliRunner()
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


# --- DEPA: every band boundary (strictly above) and two records graded by hand ---
@pytest.mark.parametrize(
    ("axis", "cuts"),
    [("dose_billion", [5, 3, 1]), ("efficiency_percent", [90, 70, 30]), ("purity_percent", [90, 80, 70])],
)
def test_depa_band_boundaries(axis: str, cuts: list[float]) -> None:
    bands = getattr(load_prp_rules().depa, axis)
    assert [b.above for b in bands] == [*cuts, None]  # the cut-offs recorded in the research notes
    letters = "ABCD"
    for i, cut in enumerate(cuts):
        assert grade(cut + 1e-9, bands).grade == letters[i]
        assert grade(cut, bands).grade == letters[i + 1]  # at the cut-off: the lower grade
    assert grade(0, bands).grade == "D"


def _prp(**over: Any) -> PrpPreparation:
    rec = parse_preparation(
        {
            "product_type": "prp",
            "prepared_at": T0.isoformat(),
            "operator": "lab",
            "blood_volume_ml": 50,
            "anticoagulant": "acd_a",
            "spins": [{"g_force": 100, "minutes": 15}],
            "baseline": {"platelets_per_uL": 200_000, "leukocytes_per_uL": 6_000, "neutrophils_per_uL": 3_000},
            "product": {"platelets_per_uL": 400_000, "leukocytes_per_uL": 20_000, "rbc_per_uL": 100_000},
            "product_volume_ml": 2,
            **over,
        }
    )
    assert isinstance(rec, PrpPreparation)
    return rec


def test_depa_graded_by_hand() -> None:
    # dose 400e3/uL x 2 mL x 1000 = 0.8e9 -> D; efficiency 0.8e9 / (200e3 x 50 mL x 1000 = 1e10) = 8 % -> D;
    # purity 400 / (400 + 100 + 20) = 76.92 % -> C
    m = prp_metrics(_prp())
    assert m.platelet_dose == pytest.approx(0.8e9) and m.recovery_efficiency_percent == pytest.approx(8.0)
    assert m.purity_percent == pytest.approx(100 * 400 / 520)
    assert m.depa.code == "D-D-C-none" and m.paw.code == "P2-A"
    # dose 800e3 x 5 mL = 4e9 -> B; efficiency 4e9 / 1e10 = 40 % -> C; purity 800 / 806 = 99.26 % -> A (verified)
    rich = _prp(
        product={"platelets_per_uL": 800_000, "leukocytes_per_uL": 1_000, "rbc_per_uL": 5_000}, product_volume_ml=5
    )
    m = prp_metrics(rich)
    assert m.depa.code == "B-C-A-none" and m.paw.code == "P3-B"
    assert m.depa.purity is not None and m.depa.purity.evidence is EvidenceLabel.verified
    assert m.depa.dose.evidence is EvidenceLabel.unverified and m.depa.evidence is EvidenceLabel.unverified


def test_paw_and_dohan_ehrenfest_at_baseline_equality() -> None:
    # leukocytes and neutrophils equal to baseline are "at or below": B and beta; Dohan Ehrenfest P- family
    equal = {"platelets_per_uL": 1_300_000, "leukocytes_per_uL": 6_000, "neutrophils_per_uL": 3_000}
    m = prp_metrics(_prp(product=equal, activation="thrombin"))
    assert m.paw.code == "P4-x-Bβ" and m.paw.leukocytes == "B" and m.paw.neutrophils == "β"
    assert m.dohan_ehrenfest.family == "P-PRP"
    above = dict(equal, leukocytes_per_uL=6_001, neutrophils_per_uL=3_001)
    m = prp_metrics(_prp(product=above))
    assert m.paw.code == "P4-Aα" and m.dohan_ehrenfest.family == "L-PRP"
    assert m.leukocyte_factor == pytest.approx(6_001 / 6_000)


# --- every cut-off and hold time cites a source; unverified values say so ---
def test_every_cut_off_cites_a_source_and_unverified_ones_are_labelled() -> None:
    rules = load_prp_rules()
    assert resolve(rules.citation_ids())  # every id is in the reference registry
    for axis in ("dose_billion", "efficiency_percent", "purity_percent"):
        for band in getattr(rules.depa, axis):
            assert band.citations
            refs = resolve(band.citations)
            if "depa-lower-grades" in band.citations:
                # the B-D cut-offs were recalled, not read in Magalon 2016: they must say so
                assert band.evidence is EvidenceLabel.unverified
            # a grade is never labelled stronger than the weakest reference it cites
            rank = [EvidenceLabel.verified, EvidenceLabel.secondary, EvidenceLabel.expert_opinion,
                    EvidenceLabel.unverified].index
            assert rank(band.evidence) >= max(rank(r.evidence) for r in refs), (axis, band)
    assert rules.paw.citations and rules.paw.evidence is EvidenceLabel.secondary  # read through PMC8044532
    assert rules.dohan_ehrenfest.leukocyte_rule_evidence is EvidenceLabel.expert_opinion


def test_every_hold_time_cites_a_source_and_missing_numbers_are_unverified() -> None:
    for ptype, rule in load_hold_times().items():
        assert resolve(rule.citations), ptype
        if rule.hours is None:
            assert rule.evidence is EvidenceLabel.unverified
            assert rule.citations == ["regenguide-hold-time-unsourced"]
    prp = load_hold_times()["prp"]  # type: ignore[index]
    assert (prp.hours, prp.clock_starts, prp.citations) == (4, "processed", ["wilson-2018-prp-storage"])


# --- typos are refused end to end (parse, validate, CLI) ---


def _refused(text: str) -> bool:
    try:
        _, verified = parse_identifier(text)
    except IdentifierError:
        return True
    return not verified


@settings(max_examples=150, deadline=None)
@given(din=DIN)
def test_every_keyed_typo_is_refused_by_the_parser(din: str) -> None:
    keyed = din + mod37_2_char(din)
    assert not _refused(keyed)
    for i, original in enumerate(keyed):
        for ch in MOD37_ALPHABET:
            if ch != original:
                assert _refused(keyed[:i] + ch + keyed[i + 1 :]), (keyed, i, ch)
    for i in range(len(keyed) - 1):
        if keyed[i] != keyed[i + 1]:
            assert _refused(keyed[:i] + keyed[i + 1] + keyed[i] + keyed[i + 2 :]), (keyed, i)


@pytest.mark.parametrize(("fin", "year", "seq", "k"), [("A9999", "21", "123456", "3"), ("W4836", "26", "000011", "N")])
def test_din_vectors_through_the_cli(fin: str, year: str, seq: str, k: str) -> None:
    res = runner.invoke(app, ["din", "check-char", fin, year, seq])
    assert res.exit_code == 0 and res.stdout.strip() == k
    assert runner.invoke(app, ["din", "validate", f"{fin}{year}{seq}{k}"]).exit_code == 0
    wrong = next(c for c in MOD37_ALPHABET if c != k)
    res = runner.invoke(app, ["din", "validate", f"{fin}{year}{seq}{wrong}"])
    assert res.exit_code == 2 and "check_char_wrong" in res.stderr
    swapped = f"{fin}{year}{seq[:-2]}{seq[-1]}{seq[-2]}{k}"  # adjacent transposition of the last two digits
    if seq[-1] != seq[-2]:
        assert runner.invoke(app, ["din", "validate", swapped]).exit_code == 2


# --- labels: type-3 flags are in the barcode, never printed ---
def _label(flags: str) -> LabelData:
    return LabelData(
        identifier=new_din("A9999", 21, 123456, flags=flags),
        product_type="prp",
        patient_name="MOREAU, Lea",
        patient_dob=date(1975, 6, 1),
        patient_record_number="MRN-1",
        collected_at=T0,
        expires_at=T0 + timedelta(hours=4),
    )


def test_type3_flags_are_not_printed_but_encoded() -> None:
    assert printed_flags(new_din("A9999", 21, 123456)) == "00"
    assert printed_flags(new_din("A9999", 21, 123456, flags="01")) == "01"
    assert printed_flags(new_din("A9999", 21, 123456, flags="63")) is None
    pdf = render_label_pdf(_label("63"))
    assert b"(63) Tj" not in pdf and b"(3) Tj" in pdf  # the boxed K is printed, the flag value is not
    assert b"(00) Tj" in render_label_pdf(_label("00"))
    png = render_label_png(_label("63"))
    decoded = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    assert decoded == ["=A99992112345663"]
    ident, verified = parse_identifier(decoded[0])  # the scan itself carries the check
    assert verified and ident.value == "A999921123456"


def test_label_pdf_carries_every_required_field() -> None:
    pdf = render_label_pdf(_label("00"))
    texts = set(re.findall(rb"\((.*?)\) Tj", pdf))
    assert {b"A9999 21 123456", b"MOREAU, Lea", b"FOR AUTOLOGOUS USE ONLY"} <= texts
    assert any(b"1975-06-01" in t and b"MRN-1" in t for t in texts)
    assert b"2026-11-22 08:00 UTC" in texts and b"2026-11-22 12:00 UTC" in texts
    assert any(b"Platelet-rich plasma" in t for t in texts)


# --- bedside: site-unique record numbers, unidentifiable scans ---
def _snap(patient_key: str) -> ProductSnapshot:
    return ProductSnapshot(
        identifier=new_din("A9999", 21, 123456),
        product_type="prp",
        patient_id=patient_key,
        status=ProductStatus.released,
        expires_at=T0 + timedelta(hours=4),
    )


def test_same_record_number_with_another_patient_key_is_refused() -> None:
    signed = ConsentStatus(state="signed")
    args = ("MRN-1", "=A99992112345600")
    ok = verify_bedside(*args, _snap("17"), "MRN-1", True, signed, T0, patient_key="17")
    assert ok.ok
    twin = verify_bedside(*args, _snap("17"), "MRN-1", True, signed, T0, patient_key="42")
    assert twin.codes == [RefusalCode.wrong_patient]


@pytest.mark.parametrize(
    ("scan", "code"),
    [
        ("A9999 21 12345", RefusalCode.identifier_malformed),
        ("A9999211234564", RefusalCode.identifier_check_char_wrong),
        ("=A99992112345664", RefusalCode.identifier_check_char_wrong),  # type-3 flag disagrees
        ("A9999211234563", RefusalCode.unknown_product),
        ("SITE-26-000001/B0", RefusalCode.unknown_product),
    ],
)
def test_unidentifiable_scan_is_a_refusal(scan: str, code: RefusalCode) -> None:
    res = refuse_unidentified("MRN-1", scan, "MRN-1", T0)
    assert not res.ok and res.codes == [code] and res.refusals[0].message
    assert res.scanned_product_id == scan and res.product_key == ""
    with pytest.raises(ValueError, match="timezone"):
        refuse_unidentified("MRN-1", scan, "MRN-1", datetime(2026, 1, 1))
