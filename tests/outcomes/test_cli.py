from __future__ import annotations

import json

import typer
import yaml
from typer.testing import CliRunner

from regenguide.cli.instrument import register
from regenguide.outcomes.instruments import unregister_instrument

runner = CliRunner()


def _app() -> typer.Typer:
    # Mount our topic on a fresh root so the test does not depend on the other topics.
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        pass

    register(root)
    return root


APP = _app()


def test_instrument_list_json():
    result = runner.invoke(APP, ["instrument", "list", "--json"])
    assert result.exit_code == 0, result.output
    codes = {row["code"] for row in json.loads(result.stdout)}
    assert {"posas_observer", "crs_astct", "icans_astct", "gais_subject"} <= codes


def test_instrument_score_json_and_text():
    result = runner.invoke(
        APP,
        ["instrument", "score", "crs_astct", "--item", "temperature_c=38.6", "--item", "oxygen=high_flow", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["value"] == 3 and data["grade"] == "3" and data["citations"] == ["lee-2019-astct"]
    text = runner.invoke(APP, ["instrument", "score", "icans_astct", "-i", "ice_score=5"])
    assert text.exit_code == 0 and "Grade 2 ICANS" in text.stdout


def test_instrument_score_errors_exit_2_with_item_names():
    result = runner.invoke(APP, ["instrument", "score", "vss", "--item", "vascularity=4", "--item", "height=1"])
    assert result.exit_code == 2
    assert "'vascularity': '4' is out of range" in result.stderr
    assert "'pigmentation': is required" in result.stderr
    assert "Traceback" not in result.output
    bad_json = runner.invoke(APP, ["instrument", "score", "wsrs", "--item", "grade=9", "--json"])
    assert bad_json.exit_code == 2
    assert json.loads(bad_json.stderr)["errors"][0]["item"] == "grade"
    unknown = runner.invoke(APP, ["instrument", "score", "face_q", "--item", "a=1"])
    assert unknown.exit_code == 2 and "unknown instrument 'face_q'" in unknown.stderr
    malformed = runner.invoke(APP, ["instrument", "score", "wsrs", "--item", "grade"])
    assert malformed.exit_code == 2 and "expected KEY=VALUE" in malformed.stderr


def test_instrument_show_and_licensee_definition(tmp_path):
    shown = runner.invoke(APP, ["instrument", "show", "posas_patient"])
    assert shown.exit_code == 0 and "integer 1-10" in shown.stdout and "licence:" in shown.stdout
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "code": "clinic_scale",
                "name": "Clinic scale",
                "kind": "patient_reported",
                "source": "licensee",
                "licence": "licensed",
                "items": [{"code": "a", "label": "A", "type": "integer", "min": 0, "max": 4}],
                "scoring": {"method": "sum"},
            }
        ),
        encoding="utf-8",
    )
    try:
        result = runner.invoke(
            APP, ["instrument", "score", "clinic_scale", "--definition", str(path), "-i", "a=3", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["value"] == 3
    finally:
        unregister_instrument("clinic_scale")
    broken = tmp_path / "broken.yaml"
    broken.write_text("code: x\n", encoding="utf-8")
    result = runner.invoke(APP, ["instrument", "list", "--definition", str(broken)])
    assert result.exit_code == 2 and "broken.yaml" in result.stderr


def test_schedule_show_json():
    result = runner.invoke(APP, ["schedule", "show", "microfat", "--from", "2026-03-02", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["template"] == "fat_grafting"
    assert [(v["code"], v["target_date"]) for v in data["visits"]] == [
        ("w1", "2026-03-09"),
        ("m1", "2026-04-02"),
        ("m3", "2026-06-02"),
        ("m6", "2026-09-02"),
        ("m12", "2027-03-02"),
    ]
    assert data["visits"][0]["window_evidence"] == "expert_opinion"


def test_schedule_show_states_and_lost_to_follow_up():
    result = runner.invoke(
        APP, ["schedule", "show", "microfat", "--from", "2026-03-02", "--today", "2026-04-24", "--json"]
    )
    data = json.loads(result.stdout)
    assert [v["state"] for v in data["visits"][:3]] == ["missed", "missed", "upcoming"]
    assert data["follow_up"]["lost_to_follow_up"] is True
    done = runner.invoke(
        APP,
        [
            "schedule",
            "show",
            "microfat",
            "--from",
            "2026-03-02",
            "--today",
            "2026-04-24",
            "--done",
            "w1=2026-03-15",
            "--json",
        ],
    )
    first = json.loads(done.stdout)["visits"][0]
    assert (first["state"], first["timing"], first["completed_on"]) == ("completed", "late", "2026-03-15")
    text = runner.invoke(APP, ["schedule", "show", "car_t", "--from", "2026-01-01"])
    assert text.exit_code == 0 and "y15" in text.stdout


def test_schedule_sessions_and_errors():
    prp = runner.invoke(APP, ["schedule", "show", "prp", "--from", "2026-01-05", "--sessions", "4", "--json"])
    assert [v["code"] for v in json.loads(prp.stdout)["visits"]] == ["s1", "s2", "s3", "s4", "m3", "m6"]
    for args, message in [
        (["schedule", "show", "botox", "--from", "2026-01-01"], "unknown modality 'botox'"),
        (["schedule", "show", "prp", "--from", "2026-13-01"], "expected a date YYYY-MM-DD"),
        (["schedule", "show", "microfat", "--from", "2026-01-01", "--sessions", "2"], "no session series"),
        (["schedule", "show", "microfat", "--from", "2026-01-01", "--done", "w1=2026-01-08"], "--done needs --today"),
        (
            [
                "schedule",
                "show",
                "microfat",
                "--from",
                "2026-01-01",
                "--today",
                "2026-02-01",
                "--done",
                "w9=2026-01-08",
            ],
            "'w9' is not in the schedule",
        ),
    ]:
        result = runner.invoke(APP, args)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)
