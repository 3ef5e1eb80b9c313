"""`regenguide consent render` through Typer's CliRunner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from regenguide.cli.consent import app

runner = CliRunner()

PLAN = {
    "schema": "regenguide.plan/1",
    "jurisdiction": "IN",
    "indication": "facial_volume_loss",
    "modality": "svf_enzymatic",
    "guidance": {"imaging": "ultrasound", "doppler": True},
    "injections": [{"region": "nasolabial_fold", "side": "left", "volume_ml": 1.0}],
}


def write_plan(tmp_path: Path, data: object = PLAN) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_render_html_pdf_json(tmp_path: Path) -> None:
    html, pdf = tmp_path / "c.html", tmp_path / "c.pdf"
    result = runner.invoke(
        app,
        [
            "render",
            str(write_plan(tmp_path)),
            "--html",
            str(html),
            "--pdf",
            str(pdf),
            "--json",
            "--patient-name",
            "A. Patient",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["investigational"] is True and summary["regulatory_class"] == "clinical_trial_only"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert summary["text_digest"] in html.read_text(encoding="utf-8")


def test_render_prints_canonical_text_whose_digest_matches(tmp_path: Path) -> None:
    path = write_plan(tmp_path)
    text = runner.invoke(app, ["render", str(path)])
    assert text.exit_code == 0
    meta = json.loads(runner.invoke(app, ["render", str(path), "--json"]).stdout)
    assert hashlib.sha256(text.stdout.encode("utf-8")).hexdigest() == meta["text_digest"]
    assert "INVESTIGATIONAL TREATMENT" in text.stdout


def test_bad_input_exits_2(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["render", str(write_plan(tmp_path, {**PLAN, "modality": "botox"}))])
    assert bad.exit_code == 2 and "modality" in bad.stderr
    lang = runner.invoke(app, ["render", str(write_plan(tmp_path)), "--language", "xx"])
    assert lang.exit_code == 2 and "not available" in lang.stderr
    out = runner.invoke(app, ["render", str(write_plan(tmp_path)), "--pdf", str(tmp_path / "no" / "x.pdf")])
    assert out.exit_code == 2 and "cannot write" in out.stderr
    assert "Traceback" not in bad.output + lang.output + out.output
