from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import divide, new_din, new_local_id
from regenguide.products.labels import (
    AUTOLOGOUS_TEXT,
    LabelData,
    code128_modules,
    label_from_snapshot,
    render_label_pdf,
    render_label_png,
)

runner = CliRunner()
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _label(**over: Any) -> LabelData:
    base: dict[str, Any] = {
        "identifier": new_din("A9999", 21, 123456),
        "product_type": "prp",
        "patient_name": "Jane Example",
        "patient_dob": date(1980, 5, 17),
        "patient_record_number": "MRN-0001",
        "collected_at": T0,
        "expires_at": T0 + timedelta(hours=4),
        "volume_ml": 5,
    }
    base.update(over)
    return LabelData.model_validate(base)


def _decode(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


@pytest.mark.parametrize(
    "ident",
    [
        new_din("A9999", 21, 123456),
        new_din("W4836", 26, 11),
        divide(new_din("A9999", 26, 1), 2)[1],
        new_local_id("CLINIC1", 26, 42),
    ],
)
def test_png_barcode_decodes_to_identifier(ident: Any) -> None:
    png = render_label_png(_label(identifier=ident))
    decoded = sorted(_decode(png))
    expected = [ident.barcode_data()] + ([ident.key] if ident.division != "00" else [])
    assert decoded == sorted(expected)
    # the check character is never in the barcode
    if ident.scheme.value == "isbt128":
        assert decoded[0] == f"={ident.value}{ident.flags}" and len(decoded[0]) == 16


def test_code128_modules_sum() -> None:
    runs = code128_modules("=A99992112345600")
    # start + 7 data/code-set symbols... every symbol is 11 modules, the stop pattern 13
    total = sum(n for _, n in runs)
    assert (total - 13) % 11 == 0 and runs[0][0] is True


def test_pdf_contains_the_readable_fields() -> None:
    pdf = render_label_pdf(_label())
    assert pdf.startswith(b"%PDF")
    for text in [b"A9999 21 123456", b"(3)", b"Jane Example", b"MRN-0001", AUTOLOGOUS_TEXT.encode(), b"1980-05-17"]:
        assert text in pdf, text
    assert AUTOLOGOUS_TEXT.encode() not in render_label_pdf(_label(autologous=False))


def test_label_from_snapshot() -> None:
    snap = ProductSnapshot(
        identifier=new_din("A9999", 26, 3),
        product_type="car_t",
        patient_id="P1",
        status=ProductStatus.released,
        expires_at=T0,
        volume_ml=50,
    )
    lab = label_from_snapshot(snap, "John Doe", date(1970, 1, 1), "MRN-9")
    assert lab.product_line == "CAR-T cells  50 mL" and lab.autologous
    assert _decode(render_label_png(lab)) == ["=A99992600000300"]


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_label(tmp_path: Path) -> None:
    pdf, png = tmp_path / "l.pdf", tmp_path / "l.png"
    res = runner.invoke(
        app,
        [
            "product",
            "label",
            "--id",
            "A9999 21 123456",
            "--product-type",
            "prp",
            "--patient-name",
            "Jane",
            "--dob",
            "1980-05-17",
            "--mrn",
            "MRN-1",
            "--collected",
            "2026-11-22T08:00+00:00",
            "--expires",
            "2026-11-22T12:00+00:00",
            "--pdf",
            str(pdf),
            "--png",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.output
    assert pdf.read_bytes().startswith(b"%PDF")
    assert _decode(png.read_bytes()) == ["=A99992112345600"]
    bad = runner.invoke(
        app,
        [
            "product",
            "label",
            "--id",
            "A9999 21 123456 4",
            "--product-type",
            "prp",
            "--patient-name",
            "J",
            "--dob",
            "1980-05-17",
            "--mrn",
            "M",
            "--png",
            str(png),
        ],
    )
    assert bad.exit_code == 2 and "check character" in bad.stderr
    bad = runner.invoke(
        app,
        [
            "product",
            "label",
            "--id",
            "A999921123456",
            "--product-type",
            "prp",
            "--patient-name",
            "J",
            "--dob",
            "17/05/1980",
            "--mrn",
            "M",
            "--png",
            str(png),
        ],
    )
    assert bad.exit_code == 2 and "--dob" in bad.stderr
    bad = runner.invoke(
        app,
        [
            "product",
            "label",
            "--id",
            "A999921123456",
            "--product-type",
            "prp",
            "--patient-name",
            "J",
            "--dob",
            "1980-05-17",
            "--mrn",
            "M",
            "--png",
            str(png),
            "--expires",
            "2026-11-22T12:00",
        ],
    )
    assert bad.exit_code == 2 and "has no UTC offset" in bad.stderr


def test_cli_metrics(tmp_path: Path, f: Any) -> None:
    path = tmp_path / "prp.json"
    path.write_text(json.dumps(f.prp()), encoding="utf-8")
    res = runner.invoke(app, ["product", "metrics", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["concentration_factor"] == pytest.approx(5.0) and data["paw"]["code"] == "P3-Bβ"
    res = runner.invoke(app, ["product", "metrics", str(path)])
    assert "PAW" in res.stdout and "P3-Bβ" in res.stdout and "unverified" in res.stdout
    svf = tmp_path / "svf.json"
    svf.write_text(json.dumps(f.svf()), encoding="utf-8")
    data = json.loads(runner.invoke(app, ["product", "metrics", str(svf), "--json"]).stdout)
    assert data["cells_per_ml"] == pytest.approx(4e6)
    path.write_text(json.dumps(f.prp(product_volume_ml=400)), encoding="utf-8")
    res = runner.invoke(app, ["product", "metrics", str(path)])
    assert res.exit_code == 2 and "exceeds the blood" in res.stderr and "Traceback" not in res.output
    path.write_text("{not json", encoding="utf-8")
    assert runner.invoke(app, ["product", "metrics", str(path)]).exit_code == 2
    assert runner.invoke(app, ["product", "metrics", str(tmp_path / "missing.json")]).exit_code == 2


def test_cli_transition() -> None:
    res = runner.invoke(app, ["product", "transition", "--status", "released", "--event", "administered"])
    assert res.exit_code == 0 and res.stdout.strip() == "administered"
    res = runner.invoke(app, ["product", "transition", "--status", "processed", "--event", "administered"])
    assert res.exit_code == 2 and "only a released" in res.stderr


def _snap_file(tmp_path: Path, **over: Any) -> Path:
    snap = {
        "identifier": {"scheme": "isbt128", "value": "A999921123456"},
        "product_type": "prp",
        "patient_id": "MRN-1",
        "status": "released",
        "expires_at": "2026-11-22T12:00:00+00:00",
    }
    snap.update(over)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(snap), encoding="utf-8")
    return path


def test_cli_verify(tmp_path: Path) -> None:
    snap = _snap_file(tmp_path)
    args = [
        "product",
        "verify",
        "--snapshot",
        str(snap),
        "--scan-patient",
        "MRN-1",
        "--scan-product",
        "A9999211234563",
        "--patient",
        "MRN-1",
        "--plan-signed",
        "--consent",
        "signed",
        "--now",
        "2026-11-22T09:00+00:00",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and res.stdout.startswith("OK")
    res = runner.invoke(app, [*args[:-2], "--now", "2026-11-22T13:00+00:00", "--json"])
    assert res.exit_code == 1 and [r["code"] for r in json.loads(res.stdout)["refusals"]] == ["expired"]
    res = runner.invoke(app, [*args, "--plan-not-signed"])
    assert res.exit_code == 1 and "plan_not_signed" in res.stdout
    res = runner.invoke(app, [*args[:-4], "--consent", "maybe"])
    assert res.exit_code == 2
    bad = _snap_file(tmp_path, status="sideways")
    assert (
        runner.invoke(
            app,
            [
                "product",
                "verify",
                "--snapshot",
                str(bad),
                "--scan-patient",
                "a",
                "--scan-product",
                "b",
                "--patient",
                "a",
            ],
        ).exit_code
        == 2
    )


def test_cli_recall_and_fhir(tmp_path: Path, f: Any) -> None:
    admins = [
        {
            "administration_id": "A1",
            "product_key": "A999921123456",
            "product_type": "prp",
            "patient_id": "MRN-1",
            "administered_at": "2026-11-22T09:00:00+00:00",
            "performer": "dr",
            "lots": [{"kind": "kit", "name": "Kit", "lot": "K1"}],
        },
        {
            "administration_id": "A2",
            "product_key": "A999921123457",
            "product_type": "prp",
            "patient_id": "MRN-2",
            "administered_at": "2026-11-22T10:00:00+00:00",
            "performer": "dr",
            "lots": [{"kind": "kit", "name": "Kit", "lot": "K2"}],
        },
    ]
    path = tmp_path / "adm.json"
    path.write_text(json.dumps(admins), encoding="utf-8")
    res = runner.invoke(app, ["product", "recall", str(path), "--kit-lot", "K2"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.exit_code == 0 and [r["administration_id"] for r in rows] == ["A2"]
    assert runner.invoke(app, ["product", "recall", str(path)]).exit_code == 2
    snap = _snap_file(tmp_path)
    prep = tmp_path / "prep.json"
    prep.write_text(json.dumps(f.prp()), encoding="utf-8")
    res = runner.invoke(app, ["product", "fhir", str(snap), "--preparation", str(prep)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["resourceType"] == "BiologicallyDerivedProduct" and data["identifier"][0]["value"] == "A999921123456"
    res = runner.invoke(app, ["product", "schema"])
    assert res.exit_code == 0 and "PrpPreparation" in res.stdout


def _decode_pdf_barcode(pdf: bytes) -> list[str]:
    """Rasterise the barcode bars of the (uncompressed) PDF page with Pillow and decode them.

    No PDF rasteriser is installed, so the test reads the bar rectangles ('x y w h re f*') that
    reportlab wrote for the Code 128 widget and paints them; the symbol decoded is the PDF's own."""
    out: list[str] = []
    # each barcode widget is drawn in its own translated block: 'q 1 0 0 1 x y cm … Q'
    for block in re.split(rb"\nq\n1 0 0 1 [-\d.]+ [-\d.]+ cm\n", pdf)[1:]:
        bars = [
            tuple(float(v) for v in m.groups())
            for m in re.finditer(rb"n ([-\d.]+) ([-\d.]+) ([-\d.]+) ([-\d.]+) re f\*", block.split(b"\nQ")[0])
        ]
        if bars:
            out.extend(_paint_and_decode(bars))
    return sorted(out)


def _paint_and_decode(bars: list[tuple[float, ...]]) -> list[str]:
    module_pt = min(w for _, _, w, _ in bars)
    scale = 4 / module_pt  # 4 px per module
    right = max(x + w for x, _, w, _ in bars)
    img = Image.new("L", (round((right + 20 * module_pt) * scale), 200), 255)

    draw = ImageDraw.Draw(img)
    for x, _, w, _ in bars:
        x0 = round(x * scale) + round(10 * module_pt * scale)
        draw.rectangle([x0, 20, x0 + round(w * scale) - 1, 180], fill=0)
    return [r.text for r in zxingcpp.read_barcodes(img)]


@pytest.mark.parametrize(
    "ident",
    [new_din("A9999", 21, 123456), new_local_id("CLINIC1", 26, 42), divide(new_din("A9999", 26, 1), 3)[2]],
)
def test_pdf_barcode_decodes_to_identifier(ident: Any) -> None:
    expected = [ident.barcode_data()] + ([ident.key] if ident.division != "00" else [])
    assert _decode_pdf_barcode(render_label_pdf(_label(identifier=ident))) == sorted(expected)
