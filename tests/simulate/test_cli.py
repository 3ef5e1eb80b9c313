"""`regenguide graft …` command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from regenguide.cli import app

runner = CliRunner()


def test_simulate_json_keys(tmp_path: Path) -> None:
    png = tmp_path / "o2.png"
    res = runner.invoke(
        app,
        [
            "graft",
            "simulate",
            "--geometry",
            "cylinder",
            "--diameter-mm",
            "5",
            "--draws",
            "200",
            "--plot",
            str(png),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in (
        "critical_size_mm",
        "anoxic_core_diameter_mm",
        "zones",
        "predicted_retention",
        "retention_interval",
        "unverified_parameters",
    ):
        assert key in out
    assert out["anoxic_core_diameter_mm"] > 0
    assert out["critical_size_mm"] < 5
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_simulate_no_core_reports_zero_and_overrides() -> None:
    res = runner.invoke(
        app,
        [
            "graft",
            "simulate",
            "--geometry",
            "slab",
            "--diameter-mm",
            "0.5",
            "--kinetics",
            "zero",
            "--boundary-po2-mmhg",
            "50",
            "--consumption-mol-cm3-s",
            "2e-10",
            "--diffusivity-cm2-s",
            "2e-5",
            "--solubility-mol-cm3-mmhg",
            "1.34e-9",
            "--draws",
            "100",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["anoxic_core_diameter_mm"] == 0
    assert out["critical_size_mm"] == __import__("pytest").approx(
        20 * (2 * 2e-5 * 1.34e-9 * 50 / 2e-10) ** 0.5
    )


def test_simulate_text_mentions_unverified() -> None:
    res = runner.invoke(
        app, ["graft", "simulate", "--geometry", "sphere", "--diameter-mm", "3", "--draws", "100"]
    )
    assert res.exit_code == 0
    assert "unverified" in res.stdout and "critical size" in res.stdout


def test_simulate_bad_input_exit_2() -> None:
    for args in (
        ["--geometry", "cube", "--diameter-mm", "3"],
        ["--geometry", "slab", "--diameter-mm", "-1"],
        ["--geometry", "slab", "--diameter-mm", "1", "--kinetics", "first"],
        ["--geometry", "slab", "--diameter-mm", "1", "--processing", "blender"],
    ):
        res = runner.invoke(app, ["graft", "simulate", *args])
        assert res.exit_code == 2, args
        assert "error:" in res.stderr
        assert "Traceback" not in res.output


def test_plan_command(tmp_path: Path) -> None:
    plan = {
        "schema": "regenguide.plan/1",
        "indication": "facial volume",
        "modality": "microfat",
        "injections": [
            {"region": "temple", "volume_ml": 3, "passes": 30, "tunnel_length_mm": 40},
            {"region": "chin", "volume_ml": 2, "bolus_ml": 0.5},
        ],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    res = runner.invoke(app, ["graft", "plan", str(path), "--json", "--draws", "200", "--target-ml", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["injections"]) == 2
    assert 0 < out["predicted_retention"] < 1
    assert any(f["rule"] == "graft.necrotic_core" for f in out["findings"])
    text = runner.invoke(app, ["graft", "plan", str(path), "--draws", "100"])
    assert text.exit_code == 0 and "retention" in text.stdout


def test_plan_command_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["graft", "plan", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "not found" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = runner.invoke(app, ["graft", "plan", str(bad)])
    assert res.exit_code == 2 and "not valid JSON" in res.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"indication": "x", "modality": "prp"}))
    res = runner.invoke(app, ["graft", "plan", str(wrong)])
    assert res.exit_code == 2 and "fat grafts" in res.stderr
    invalid = tmp_path / "invalid.json"
    invalid.write_text(
        json.dumps({"indication": "x", "modality": "microfat", "injections": [{"volume_ml": 1}]})
    )
    res = runner.invoke(app, ["graft", "plan", str(invalid)])
    assert res.exit_code == 2 and "region" in res.stderr


def test_parameters_command() -> None:
    res = runner.invoke(app, ["graft", "parameters", "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.stdout)
    assert {r["name"] for r in rows} >= {"consumption_mol_cm3_s", "take_survival"}


def test_section_days_and_calibrate_commands(tmp_path: Path) -> None:
    png = tmp_path / "bed.png"
    res = runner.invoke(
        app,
        [
            "graft",
            "section",
            "--strands",
            "2",
            "--diameter-mm",
            "2",
            "--bed-thickness-mm",
            "5",
            "--plot",
            str(png),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["strands"]) == 2 and 0 < out["predicted_retention"] <= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["graft", "section", "--diameter-mm", "6", "--bed-thickness-mm", "5"])
    assert bad.exit_code == 2 and "bed thickness" in bad.stderr
    days = runner.invoke(
        app, ["graft", "days", "--geometry", "sphere", "--diameter-mm", "4", "--hours", "80", "--json"]
    )
    assert days.exit_code == 0, days.output
    assert json.loads(days.stdout)["necrotic_fraction"] > 0
    obs = [{"geometry": "cylinder", "diameter_mm": d, "observed_retention": 0.5} for d in (1, 1.5, 2, 3)]
    path = tmp_path / "obs.json"
    path.write_text(json.dumps(obs))
    cal = runner.invoke(app, ["graft", "calibrate", str(path), "--fit", "take_survival", "--json"])
    assert cal.exit_code == 0, cal.output
    assert json.loads(cal.stdout)["fitted"]["take_survival"] > 0.45
    wrong = runner.invoke(app, ["graft", "calibrate", str(path), "--fit", "nonsense"])
    assert wrong.exit_code == 2 and "cannot fit" in wrong.stderr
