"""`regenguide regulatory assess|packs` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from regenguide.cli.regulatory import app

runner = CliRunner()


def write(tmp_path: Path, data: object, name: str = "plan.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_assess_json(tmp_path: Path) -> None:
    plan = {
        "schema": "regenguide.plan/1",
        "jurisdiction": "US",
        "indication": "facial_volume_loss",
        "modality": "microfat",
        "same_surgical_procedure": True,
        "homologous_use": True,
    }
    result = runner.invoke(app, ["assess", str(write(tmp_path, plan)), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["class"] == "exempt_same_surgical_procedure"
    assert data["allowed_outside_trial"] is True
    assert "reg.us.cfr1271.15" in data["citations"]


def test_assess_human_readable_lists_sources(tmp_path: Path) -> None:
    plan = {"jurisdiction": "IN", "indication": "facial_volume_loss", "modality": "svf_enzymatic"}
    result = runner.invoke(app, ["assess", str(write(tmp_path, plan))])
    assert result.exit_code == 0, result.output
    assert "clinical_trial_only" in result.stdout
    assert "[reg.in.ngscr-2017]" in result.stdout


def test_invalid_documents_exit_2_with_message(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["assess", str(write(tmp_path, {"modality": "botox"}))])
    assert bad.exit_code == 2
    assert "not a valid regenguide.plan/1 document" in bad.stderr and "indication" in bad.stderr
    broken = runner.invoke(app, ["assess", str(write(tmp_path, "{not json", "b.json"))])
    assert broken.exit_code == 2 and "not valid JSON" in broken.stderr
    missing = runner.invoke(app, ["assess", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert "Traceback" not in bad.output + broken.output + missing.output


def test_packs_json() -> None:
    result = runner.invoke(app, ["packs", "--json"])
    assert result.exit_code == 0
    codes = {p["jurisdiction"] for p in json.loads(result.stdout)}
    assert codes == {"US", "EU", "IN", "JP", "KR", "GB", "AU", "CA", "BR"}


def test_context_flags_reach_the_gate(tmp_path: Path) -> None:
    plan = {"jurisdiction": "AU", "indication": "facial_volume_loss", "modality": "svf_enzymatic"}
    path = write(tmp_path, plan)
    default = json.loads(runner.invoke(app, ["assess", str(path), "--json"]).stdout)
    assert default["class"] == "regulated_biological"
    hospital = runner.invoke(app, ["assess", str(path), "--json", "--hospital", "--not-advertised"])
    assert hospital.exit_code == 0, hospital.output
    assert json.loads(hospital.stdout)["class"] == "excluded"
