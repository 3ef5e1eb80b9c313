"""`regenguide din …`: ISBT 128 Donation Identification Numbers and local identifiers (thin CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from regenguide.products.din import (
    IdentifierError,
    IdScheme,
    ProductIdentifier,
    allocate_sequence,
    mod37_2_value,
    new_din,
    new_local_id,
    normalize_din,
    parse_identifier,
    type3_flag,
)

app = typer.Typer(
    help="ISBT 128 DINs: generate, check character (ISO/IEC 7064 MOD 37-2), validate.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _describe(ident: ProductIdentifier) -> dict[str, object]:
    out: dict[str, object] = {
        "scheme": ident.scheme.value,
        "identifier": ident.value,
        "check_char": ident.check_char,
        "eye_readable": ident.eye_readable(),
        "barcode_data": ident.barcode_data(),
    }
    if ident.scheme is IdScheme.isbt128:
        out["type3_flag"] = type3_flag(ident.value)
    return out


def _default_counter() -> Path:
    env = os.environ.get("REGENGUIDE_DIN_COUNTER")
    return Path(env) if env else Path.home() / ".local" / "state" / "regenguide" / "din-counter.json"


@app.command("new")
def new(
    facility: str = typer.Option(None, "--facility", help="ICCBBA facility identification number, e.g. A9999"),
    local: str = typer.Option(None, "--local", help="local site code (facilities without an ICCBBA licence)"),
    year: int = typer.Option(..., "--year", help="2-digit nominal year, e.g. 26"),
    sequence: int = typer.Option(None, "--sequence", help="6-digit sequence; default: next from the counter"),
    counter: Path = typer.Option(None, "--counter", help="JSON counter file used when --sequence is absent"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate a DIN (or a local identifier) and print it with its check character."""
    if (facility is None) == (local is None):
        raise _fail("give exactly one of --facility (ISBT 128 FIN) or --local (site code)")
    try:
        prefix = facility or local
        key_fin = prefix.strip().upper()
        if sequence is None:
            path = counter or _default_counter()
            state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            if not isinstance(state, dict):
                raise _fail(f"counter file {path} must hold a JSON object")
            sequence, state = allocate_sequence(state, key_fin, year)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        ident = new_din(key_fin, year, sequence) if facility else new_local_id(key_fin, year, sequence)
    except (IdentifierError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(_describe(ident)))
    else:
        typer.echo(f"{ident.eye_readable()} [{ident.check_char}]")


@app.command("check-char")
def check_char(
    fin: str = typer.Argument(..., help="facility identification number, e.g. A9999"),
    year: str = typer.Argument(..., help="2-digit year"),
    sequence: str = typer.Argument(..., help="6-digit sequence"),
    as_json: bool = typer.Option(False, "--json", help="JSON with the check value and type-3 flag"),
) -> None:
    """Print the keyboard-entry check character of a DIN given as FIN, year and sequence."""
    try:
        din = normalize_din(f"{fin}{year}{sequence}")
    except IdentifierError as exc:
        raise _fail(str(exc)) from None
    ident = ProductIdentifier(scheme=IdScheme.isbt128, value=din)
    if as_json:
        out = _describe(ident)
        out["check_value"] = mod37_2_value(din)
        typer.echo(json.dumps(out))
    else:
        typer.echo(ident.check_char)


@app.command("validate")
def validate(
    text: str = typer.Argument(..., help="DIN followed by its check character, e.g. A9999211234563"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Validate a keyed DIN (or local identifier) with its check character; exit 2 when invalid."""
    try:
        ident, verified = parse_identifier(text)
    except IdentifierError as exc:
        if as_json:
            typer.echo(json.dumps({"valid": False, "code": exc.code, "message": str(exc)}))
        raise _fail(f"{exc.code}: {exc}") from None
    if not verified:
        message = "no check character given: append the boxed character to validate a keyed entry"
        if as_json:
            typer.echo(json.dumps({"valid": False, "code": "check_char_missing", "message": message}))
        raise _fail(message)
    if as_json:
        typer.echo(json.dumps({"valid": True, **_describe(ident)}))
    else:
        typer.echo(f"valid: {ident.eye_readable()} [{ident.check_char}]")
