"""Product identity: the ISBT 128 Donation Identification Number (DIN) and a local identifier mode.

ISBT 128 Data Structure 001 is ``=αppppyynnnnnnff`` (ICCBBA ST-001 §2.4.1, cited as ``iccbba-st001``):
the 13-character DIN is the facility identification number (FIN, ``αpppp``), a 2-digit nominal year and a
6-digit sequence; ``ff`` are flags, not part of the DIN. The keyboard-entry check character K is computed
with ISO/IEC 7064 MOD 37-2 (``iso-7064``) over the 13 DIN characters; it is printed in a box after the
eye-readable DIN and is never encoded in the barcode. A type-3 flag carries 60 + the MOD 37-2 value.

ISBT 128 is licensed: a FIN comes from ICCBBA. Facilities without a licence use the *local* mode, whose
identifiers (``SITE-26-000123``) can never be mistaken for a DIN (they contain hyphens) but get the same
MOD 37-2 check character, computed over their letters and digits.

Written by hand because no maintained Python library implements ISBT 128 (one declined over licensing,
see ``jodal/biip`` #82) and MOD 37-2 is ten lines; validated against ICCBBA's own worked example.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ISO/IEC 7064 MOD 37-2 alphabet: 0-9 -> 0..9, A-Z -> 10..35, '*' -> 36 (iccbba-st001 Appendix A).
MOD37_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_VALUE = {ch: i for i, ch in enumerate(MOD37_ALPHABET)}

# FIN: first char A-N, P-Z, 1-9; next two A-N, P-Z, 0-9; last two digits (iccbba-st001 §2.4.1).
_FIN_RE = re.compile(r"^[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}$")
_DIN_RE = re.compile(r"^([A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2})([0-9]{2})([0-9]{6})$")
# Flag characters allowed in ``ff`` (iccbba-st001 §2.4.1): 0-9, A-H, J-N, P, R-Y.
_FLAG_RE = re.compile(r"^[0-9A-HJ-NPR-Y]{2}$")
_LOCAL_RE = re.compile(r"^([A-Z0-9]{1,8})-([0-9]{2})-([0-9]{6})$")

DIN_SYSTEM_URI = "https://www.isbt128.org/uri/DonationIdentificationNumber"
LOCAL_SYSTEM_URI = "urn:regenguide:local-product-id"


class IdentifierError(ValueError):
    """An identifier is malformed or its check character is wrong; `code` says which."""

    def __init__(self, code: Literal["malformed", "check_char_wrong"], message: str) -> None:
        self.code = code
        super().__init__(message)


class IdScheme(StrEnum):
    isbt128 = "isbt128"
    local = "local"


def mod37_2_value(data: str) -> int:
    """ISO/IEC 7064 MOD 37-2 check *value* (0..36) of `data` (recursive method, iccbba-st001 App. A)."""
    s = 0
    for ch in data:
        try:
            v = _VALUE[ch]
        except KeyError:
            raise IdentifierError("malformed", f"character {ch!r} is not allowed in MOD 37-2 data") from None
        s = ((s + v) * 2) % 37
    return (38 - s) % 37


def mod37_2_char(data: str) -> str:
    """The MOD 37-2 check character of `data`, e.g. ``mod37_2_char("A999921123456") == "3"``."""
    return MOD37_ALPHABET[mod37_2_value(data)]


def type3_flag(din: str) -> str:
    """Type-3 flag value: 60 + the MOD 37-2 check value, as two digits (60..96), iccbba-st001 §2.4.1."""
    return f"{60 + mod37_2_value(normalize_din(din)):02d}"


def is_type3_flag(flags: str) -> bool:
    """Flags 60..96 are type 3 (60 + MOD 37-2 value), iccbba-st001 §2.4.1."""
    return flags.isdigit() and 60 <= int(flags) <= 96


def normalize_din(text: str) -> str:
    """Strip spaces and upper-case; validate the 13-character DIN structure (raises IdentifierError)."""
    din = re.sub(r"\s+", "", text).upper()
    if not _DIN_RE.match(din):
        raise IdentifierError(
            "malformed",
            f"{text!r} is not a DIN: expected 13 characters FIN(5) + year(2) + sequence(6), "
            "e.g. 'A9999 26 000123'; FIN = one of A-N,P-Z,1-9 then two of A-N,P-Z,0-9 then two digits",
        )
    return din


def validate_fin(fin: str) -> str:
    fin = fin.strip().upper()
    if not _FIN_RE.match(fin):
        raise IdentifierError(
            "malformed",
            f"facility identification number {fin!r} is malformed: expected 5 characters, first A-N,P-Z "
            "or 1-9 (no 'O', no '0'), next two A-N,P-Z or 0-9, last two digits (e.g. 'A9999')",
        )
    return fin


class ProductIdentifier(BaseModel):
    """A product's identity: a DIN (ISBT 128 licensed facility) or a local identifier, plus the division
    code that distinguishes aliquots of one collection (``"00"`` = not divided) and the parent's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: IdScheme
    value: str = Field(min_length=1, description="13-char DIN, or SITE-yy-nnnnnn in local mode")
    flags: str = Field(default="00", description="ISBT 128 flag characters ff (not part of the DIN)")
    division: str = Field(default="00", pattern=r"^([A-Z][0-9a-z]|00)$")
    parent_division: str | None = Field(default=None, pattern=r"^([A-Z][0-9a-z]|00)$")

    @model_validator(mode="after")
    def _check(self) -> ProductIdentifier:
        if self.scheme is IdScheme.isbt128:
            normalize_din(self.value)
            if normalize_din(self.value) != self.value:
                raise ValueError(f"DIN must be stored without spaces, upper case: {self.value!r}")
            if not _FLAG_RE.match(self.flags):
                raise ValueError(f"flags {self.flags!r}: two characters of 0-9, A-H, J-N, P, R-Y")
            if is_type3_flag(self.flags) and self.flags != type3_flag(self.value):
                raise ValueError(
                    f"type-3 flag {self.flags} does not match the DIN {self.value} (expected {type3_flag(self.value)})"
                )
        else:
            if not _LOCAL_RE.match(self.value):
                raise ValueError(f"local identifier {self.value!r}: expected SITE-yy-nnnnnn, SITE 1-8 of A-Z0-9")
            if self.flags != "00":
                raise ValueError("flags apply to ISBT 128 DINs only")
        if self.parent_division is not None and self.division == "00":
            raise ValueError("a product with a parent must have its own division code")
        return self

    @property
    def check_char(self) -> str:
        return mod37_2_char(self.value.replace("-", ""))

    @property
    def key(self) -> str:
        """Unique key of this product (aliquot): the identifier plus its division when divided."""
        return self.value if self.division == "00" else f"{self.value}/{self.division}"

    @property
    def parent_key(self) -> str | None:
        if self.parent_division is None:
            return None
        return self.value if self.parent_division == "00" else f"{self.value}/{self.parent_division}"

    @property
    def system(self) -> str:
        return DIN_SYSTEM_URI if self.scheme is IdScheme.isbt128 else LOCAL_SYSTEM_URI

    def eye_readable(self) -> str:
        """US eye-readable layout ``FIN yy nnnnnn`` (iccbba-st001); the boxed K is drawn by the label."""
        if self.scheme is IdScheme.isbt128:
            return f"{self.value[:5]} {self.value[5:7]} {self.value[7:]}"
        return self.value

    def barcode_data(self) -> str:
        """Barcode payload: ISBT 128 DS 001 ``=`` + DIN + flags; the local value as is. Never contains K."""
        if self.scheme is IdScheme.isbt128:
            return f"={self.value}{self.flags}"
        return self.value


def new_din(facility: str, year: int, sequence: int, flags: str = "00") -> ProductIdentifier:
    """A DIN for a licensed facility (FIN from ICCBBA), nominal 2-digit year and sequence 0..999999."""
    fin = validate_fin(facility)
    if not 0 <= year <= 99:
        raise IdentifierError("malformed", f"year {year} must be the 2-digit nominal year 00..99")
    if not 0 <= sequence <= 999_999:
        raise IdentifierError("malformed", f"sequence {sequence} must be 0..999999 (6 digits)")
    return ProductIdentifier(scheme=IdScheme.isbt128, value=f"{fin}{year:02d}{sequence:06d}", flags=flags)


def new_local_id(site: str, year: int, sequence: int) -> ProductIdentifier:
    """A local identifier ``SITE-yy-nnnnnn`` for a facility without an ICCBBA licence."""
    site = site.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{1,8}", site):
        raise IdentifierError("malformed", f"site code {site!r}: 1-8 characters of A-Z, 0-9")
    if not 0 <= year <= 99 or not 0 <= sequence <= 999_999:
        raise IdentifierError("malformed", "year must be 00..99 and sequence 0..999999")
    return ProductIdentifier(scheme=IdScheme.local, value=f"{site}-{year:02d}-{sequence:06d}")


def parse_identifier(text: str) -> tuple[ProductIdentifier, bool]:
    """Parse what was scanned or typed into an identifier.

    Accepts the ISBT 128 DS 001 barcode payload (``=A99992112345600``: data identifier, DIN, flags), a
    keyboard entry of the DIN with its check character (``A9999 21 123456 3`` or ``A9999211234563``), a
    bare DIN, or a local identifier with or without its check character (``SITE-26-000123 K``).
    Returns ``(identifier, check_char_verified)``; raises IdentifierError ``malformed`` for a wrong shape
    and ``check_char_wrong`` when a keyed check character does not match.
    """
    raw = text.strip().upper()
    if not raw:
        raise IdentifierError("malformed", "empty identifier")
    local = re.fullmatch(r"([A-Z0-9]{1,8}-[0-9]{2}-[0-9]{6})(?:\s*([0-9A-Z*]))?", raw)
    if local:
        ident = ProductIdentifier(scheme=IdScheme.local, value=local.group(1))
        return ident, _check_keyed(ident, local.group(2))
    compact = re.sub(r"\s+", "", raw)
    if compact.startswith("="):
        body = compact[1:]
        if len(body) != 15:
            raise IdentifierError(
                "malformed", f"ISBT 128 DIN barcode data must be '=' + 13-char DIN + 2 flag characters: {text!r}"
            )
        din, flags = normalize_din(body[:13]), body[13:]
        if not _FLAG_RE.match(flags):
            raise IdentifierError("malformed", f"flag characters {flags!r} are not allowed")
        if is_type3_flag(flags):
            # A type-3 flag carries the check value: a scan with one is verified like a keyed entry.
            if flags != type3_flag(din):
                raise IdentifierError(
                    "check_char_wrong", f"type-3 flag {flags} does not match DIN {din} (misread or altered label)"
                )
            return ProductIdentifier(scheme=IdScheme.isbt128, value=din, flags=flags), True
        return ProductIdentifier(scheme=IdScheme.isbt128, value=din, flags=flags), False
    if len(compact) == 13:
        return ProductIdentifier(scheme=IdScheme.isbt128, value=normalize_din(compact)), False
    if len(compact) == 14:
        ident = ProductIdentifier(scheme=IdScheme.isbt128, value=normalize_din(compact[:13]))
        return ident, _check_keyed(ident, compact[13])
    raise IdentifierError(
        "malformed",
        f"{text!r} is neither a DIN (13 characters, optionally + check character), an ISBT 128 barcode "
        "('=' + DIN + flags) nor a local identifier (SITE-yy-nnnnnn)",
    )


def _check_keyed(ident: ProductIdentifier, keyed: str | None) -> bool:
    if keyed is None:
        return False
    if keyed != ident.check_char:
        raise IdentifierError(
            "check_char_wrong",
            f"check character {keyed!r} does not match {ident.eye_readable()} (typing error?): re-enter or scan",
        )
    return True


def validate_keyed(text: str) -> ProductIdentifier:
    """Validate a keyboard entry that must include its check character (``A9999211234563``)."""
    ident, verified = parse_identifier(text)
    if not verified:
        raise IdentifierError(
            "malformed", f"{text!r}: a keyboard entry must end with its check character (the boxed one)"
        )
    return ident


def divide(parent: ProductIdentifier, count: int) -> list[ProductIdentifier]:
    """Split a product into `count` aliquots linked to their parent.

    Division codes follow the two-character ``ds`` layout of ISBT 128 Product Code DS 003 (iccbba-st001):
    first-level divisions ``A0``, ``B0`` … ``Z0``; dividing a first-level division gives ``Aa``, ``Ab`` ….
    (The product-code tables themselves are licensed and not shipped.)
    """
    if not 1 <= count <= 26:
        raise IdentifierError("malformed", f"division count {count} must be 1..26")
    if parent.division == "00":
        codes = [f"{chr(ord('A') + i)}0" for i in range(count)]
    elif parent.division[1] == "0":
        codes = [f"{parent.division[0]}{chr(ord('a') + i)}" for i in range(count)]
    else:
        raise IdentifierError("malformed", f"division {parent.division} cannot be divided further (two levels)")
    return [
        ProductIdentifier(
            scheme=parent.scheme,
            value=parent.value,
            flags=parent.flags,
            division=code,
            parent_division=parent.division,
        )
        for code in codes
    ]


def allocate_sequence(counter: dict[str, int], prefix: str, year: int) -> tuple[int, dict[str, int]]:
    """Next sequence number for (facility or site, year) from a counter mapping ``"A9999/26" -> last``.

    Pure: returns the allocated number and a new mapping; the caller persists it (the store does this
    in a transaction; the CLI in a small JSON file).
    """
    key = f"{prefix.strip().upper()}/{year:02d}"
    last = counter.get(key, 0)
    if not isinstance(last, int) or last < 0:
        raise IdentifierError("malformed", f"counter entry {key!r} must be a non-negative integer")
    nxt = last + 1
    if nxt > 999_999:
        raise IdentifierError("malformed", f"sequence numbers for {key} are exhausted (999999)")
    return nxt, {**counter, key: nxt}
