from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from din_strategies import DIN
from regenguide.cli import app
from regenguide.products.din import (
    MOD37_ALPHABET,
    IdentifierError,
    IdScheme,
    ProductIdentifier,
    allocate_sequence,
    divide,
    mod37_2_char,
    mod37_2_value,
    new_din,
    new_local_id,
    parse_identifier,
    type3_flag,
    validate_keyed,
)

runner = CliRunner()


# --- published vectors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("din", "k"),
    [("A999921123456", "3"), ("W483626000011", "N")],  # ICCBBA ST-001 Fig. 2; third-party fixture
)
def test_check_character_vectors(din: str, k: str) -> None:
    assert mod37_2_char(din) == k


def test_off_by_one_variant_seen_in_the_wild_differs() -> None:
    # (37 - s) % 37 gives 'M' for the W4836 vector; ours must give 'N'.
    s = 0
    for ch in "W483626000011":
        s = ((s + MOD37_ALPHABET.index(ch)) * 2) % 37
    assert MOD37_ALPHABET[(37 - s) % 37] == "M"
    assert mod37_2_char("W483626000011") == "N"


def _weighted(data: str) -> int:
    # Equivalent weighted form: sum v_i * 2^n, n = position from the right (1..len).
    total = sum(MOD37_ALPHABET.index(ch) * pow(2, len(data) - i, 37) for i, ch in enumerate(data))
    return (38 - total % 37) % 37


def test_recursive_equals_weighted_form() -> None:
    for din in ["A999921123456", "W483626000011", "Z1Z9900000000", "1AB12999999999"[:13]]:
        assert mod37_2_value(din) == _weighted(din)


def test_type3_flag_is_60_plus_check_value() -> None:
    assert type3_flag("A999921123456") == "63"
    assert type3_flag("W4836 26 000011") == f"{60 + 23}"  # N = 23


# --- structure ----------------------------------------------------------------------------------
def test_new_din_and_layouts() -> None:
    d = new_din("a9999", 21, 123456)
    assert d.value == "A999921123456"
    assert d.eye_readable() == "A9999 21 123456"
    assert d.check_char == "3"
    assert d.barcode_data() == "=A99992112345600"
    assert "3" not in d.barcode_data()[-2:]


@pytest.mark.parametrize("fin", ["O9999", "09999", "AO999", "A99X9", "A999", "A99999"])
def test_bad_fin_rejected(fin: str) -> None:
    with pytest.raises(IdentifierError) as err:
        new_din(fin, 26, 1)
    assert err.value.code == "malformed"


@pytest.mark.parametrize(("year", "seq"), [(100, 1), (-1, 1), (26, 1_000_000), (26, -5)])
def test_bad_year_or_sequence(year: int, seq: int) -> None:
    with pytest.raises(IdentifierError):
        new_din("A9999", year, seq)


def test_parse_forms() -> None:
    ident, verified = parse_identifier("=A99992112345600")
    assert ident.value == "A999921123456" and not verified
    ident, verified = parse_identifier("A9999 21 123456 3")
    assert verified and ident.value == "A999921123456"
    ident, verified = parse_identifier("w4836 26 000011 n")
    assert verified
    with pytest.raises(IdentifierError) as err:
        parse_identifier("A9999211234564")
    assert err.value.code == "check_char_wrong"
    for bad in ["", "A99992112345", "=A999921123456", "=A999921123456IO", "hello world"]:
        with pytest.raises(IdentifierError) as err:
            parse_identifier(bad)
        assert err.value.code == "malformed"
    with pytest.raises(IdentifierError):
        validate_keyed("A999921123456")  # no check character


def test_local_mode() -> None:
    ident = new_local_id("clinic1", 26, 42)
    assert ident.value == "CLINIC1-26-000042"
    assert ident.scheme is IdScheme.local
    assert ident.check_char == mod37_2_char("CLINIC126000042")
    parsed, verified = parse_identifier(f"CLINIC1-26-000042 {ident.check_char}")
    assert parsed == ident and verified
    with pytest.raises(ValueError):
        ProductIdentifier(scheme=IdScheme.local, value="A999921123456")
    with pytest.raises(ValueError):
        ProductIdentifier(scheme=IdScheme.isbt128, value="CLINIC1-26-000042")


def test_divisions_link_to_parent() -> None:
    parent = new_din("A9999", 26, 7)
    kids = divide(parent, 3)
    assert [k.division for k in kids] == ["A0", "B0", "C0"]
    assert all(k.parent_key == parent.key == "A999926000007" for k in kids)
    assert kids[1].key == "A999926000007/B0"
    grandkids = divide(kids[0], 2)
    assert [g.key for g in grandkids] == ["A999926000007/Aa", "A999926000007/Ab"]
    assert grandkids[0].parent_key == kids[0].key
    with pytest.raises(IdentifierError):
        divide(grandkids[0], 2)
    with pytest.raises(IdentifierError):
        divide(parent, 0)


def test_allocate_sequence_is_pure() -> None:
    counter: dict[str, int] = {}
    n1, c1 = allocate_sequence(counter, "a9999", 26)
    n2, c2 = allocate_sequence(c1, "A9999", 26)
    assert (n1, n2) == (1, 2) and counter == {} and c2 == {"A9999/26": 2}
    with pytest.raises(IdentifierError):
        allocate_sequence({"A9999/26": 999_999}, "A9999", 26)


# --- property tests: every single substitution and adjacent transposition is detected ------------


@settings(max_examples=300, deadline=None)
@given(din=DIN)
def test_every_single_substitution_detected(din: str) -> None:
    keyed = din + mod37_2_char(din)
    for i, original in enumerate(keyed):
        for ch in MOD37_ALPHABET:
            if ch == original:
                continue
            typo = keyed[:i] + ch + keyed[i + 1 :]
            assert mod37_2_char(typo[:13]) != typo[13], typo


@settings(max_examples=300, deadline=None)
@given(din=DIN)
def test_every_adjacent_transposition_detected(din: str) -> None:
    keyed = din + mod37_2_char(din)
    for i in range(len(keyed) - 1):
        if keyed[i] == keyed[i + 1]:
            continue
        typo = keyed[:i] + keyed[i + 1] + keyed[i] + keyed[i + 2 :]
        assert mod37_2_char(typo[:13]) != typo[13], typo


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_check_char() -> None:
    res = runner.invoke(app, ["din", "check-char", "A9999", "21", "123456"])
    assert res.exit_code == 0 and res.stdout.strip() == "3"
    res = runner.invoke(app, ["din", "check-char", "A9999", "21", "123456", "--json"])
    data = json.loads(res.stdout)
    assert data["check_char"] == "3" and data["type3_flag"] == "63" and data["check_value"] == 3
    res = runner.invoke(app, ["din", "check-char", "O9999", "21", "123456"])
    assert res.exit_code == 2 and "is not a DIN" in res.stderr


def test_cli_validate() -> None:
    assert runner.invoke(app, ["din", "validate", "A9999211234563"]).exit_code == 0
    res = runner.invoke(app, ["din", "validate", "A9999211234564"])
    assert res.exit_code == 2 and "check_char_wrong" in res.stderr
    res = runner.invoke(app, ["din", "validate", "A999921123456"])
    assert res.exit_code == 2 and "no check character" in res.stderr
    res = runner.invoke(app, ["din", "validate", "W4836 26 000011 N", "--json"])
    assert json.loads(res.stdout)["valid"] is True


def test_cli_new(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = runner.invoke(app, ["din", "new", "--facility", "A9999", "--year", "21", "--sequence", "123456"])
    assert res.exit_code == 0 and res.stdout.strip() == "A9999 21 123456 [3]"
    counter = tmp_path / "c.json"
    first = runner.invoke(
        app, ["din", "new", "--facility", "A9999", "--year", "26", "--counter", str(counter), "--json"]
    )
    second = runner.invoke(
        app, ["din", "new", "--facility", "A9999", "--year", "26", "--counter", str(counter), "--json"]
    )
    assert json.loads(first.stdout)["identifier"] == "A999926000001"
    assert json.loads(second.stdout)["identifier"] == "A999926000002"
    res = runner.invoke(app, ["din", "new", "--local", "SITE", "--year", "26", "--sequence", "5"])
    assert res.exit_code == 0 and res.stdout.startswith("SITE-26-000005 [")
    res = runner.invoke(app, ["din", "new", "--year", "26", "--sequence", "5"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["din", "new", "--facility", "O0000", "--year", "26", "--sequence", "5"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_type3_flag_in_barcode_is_verified() -> None:
    ident, verified = parse_identifier("=A99992112345663")
    assert verified and ident.flags == "63"
    with pytest.raises(IdentifierError) as err:
        parse_identifier("=A99992112345664")
    assert err.value.code == "check_char_wrong"
    # type 1 / type 2 flags are not checks
    assert _flags_of("=A99992112345601") == ("01", False)
    with pytest.raises(ValueError, match="type-3 flag"):
        new_din("A9999", 21, 123456, flags="70")
    assert new_din("A9999", 21, 123456, flags="63").barcode_data() == "=A99992112345663"


def _flags_of(text: str) -> tuple[str, bool]:
    ident, verified = parse_identifier(text)
    return ident.flags, verified


_LOCAL = st.tuples(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8),
    st.integers(0, 99),
    st.integers(0, 999_999),
)


@settings(max_examples=200, deadline=None)
@given(parts=_LOCAL)
def test_local_identifier_typos_detected(parts: tuple[str, int, int]) -> None:
    ident = new_local_id(*parts)
    data = ident.value.replace("-", "")
    keyed = data + ident.check_char
    n = len(data)
    for i, original in enumerate(keyed):
        for ch in MOD37_ALPHABET:
            if ch != original:
                typo = keyed[:i] + ch + keyed[i + 1 :]
                assert mod37_2_char(typo[:n]) != typo[n]
    for i in range(len(keyed) - 1):
        if keyed[i] != keyed[i + 1]:
            typo = keyed[:i] + keyed[i + 1] + keyed[i] + keyed[i + 2 :]
            assert mod37_2_char(typo[:n]) != typo[n]
