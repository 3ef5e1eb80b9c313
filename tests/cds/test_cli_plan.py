"""`regenguide plan check|example` and `regenguide kb show|cite|validate|topics`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from regenguide.cli import app

runner = CliRunner()


def _write_example(tmp_path: Path, name: str) -> Path:
    result = runner.invoke(app, ["plan", "example", name])
    assert result.exit_code == 0, result.output
    path = tmp_path / f"{name}.json"
    path.write_text(result.stdout, encoding="utf-8")
    return path


def test_example_list_and_print() -> None:
    listed = runner.invoke(app, ["plan", "example"])
    assert listed.exit_code == 0
    assert {"glabella_microfat_risky", "scalp_prp_safe"} <= set(listed.stdout.split())
    doc = json.loads(runner.invoke(app, ["plan", "example", "scalp_prp_safe"]).stdout)
    assert doc["schema"] == "regenguide.plan/1" and doc["modality"] == "prp"
    bad = runner.invoke(app, ["plan", "example", "nope"])
    assert bad.exit_code == 2 and "scalp_prp_safe" in bad.stderr


def test_check_json_exit_zero_even_with_critical_findings(tmp_path: Path) -> None:
    path = _write_example(tmp_path, "glabella_microfat_risky")
    result = runner.invoke(app, ["plan", "check", str(path), "--json", "--today", "2026-11-22"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["signable"] is False
    assert doc["findings"][0]["indicator"] == "critical"
    assert doc["regulatory"]["class"] == "exempt_same_surgical_procedure"


def test_check_human_table(tmp_path: Path) -> None:
    path = _write_example(tmp_path, "scalp_prp_safe")
    result = runner.invoke(app, ["plan", "check", str(path)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "signable" in result.stdout and "not_hctp" in result.stdout
    risky = runner.invoke(
        app, ["plan", "check", str(_write_example(tmp_path, "glabella_microfat_risky"))], env={"COLUMNS": "160"}
    )
    assert "NOT signable" in risky.stdout and "danger_zone.sharp_needle" in risky.stdout


def test_overrides_from_the_command_line(tmp_path: Path) -> None:
    path = _write_example(tmp_path, "glabella_microfat_risky")
    first = json.loads(runner.invoke(app, ["plan", "check", str(path), "--json"]).stdout)
    crit = [f for f in first["findings"] if f["indicator"] == "critical"]
    args = []
    for f in crit:
        target = f["rule"] + (f"@{f['injection_index']}" if "injection_index" in f else "")
        args += ["--override", f"{target}=accepted after discussion"]
    result = runner.invoke(app, ["plan", "check", str(path), "--json", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["signable"] is True and len(doc["overrides"]) == len(crit)
    bad = runner.invoke(app, ["plan", "check", str(path), "--override", "volume.subunit_over_range@0=why"])
    assert bad.exit_code == 2 and "not critical" in bad.stderr
    empty = runner.invoke(app, ["plan", "check", str(path), "--override", "consent.missing="])
    assert empty.exit_code == 2 and "RULE[@INDEX]=REASON with a non-empty reason" in " ".join(empty.stderr.split())


def test_invalid_documents_exit_2_naming_the_field(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["plan", "check", str(tmp_path / "absent.json")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    res = runner.invoke(app, ["plan", "check", str(broken)])
    assert res.exit_code == 2 and "not valid JSON" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"indication": "acne_scars", "modality": "laser", "injections": [{"region": "midface", "gauge": 99}]}
        ),
        encoding="utf-8",
    )
    res = runner.invoke(app, ["plan", "check", str(bad)])
    assert res.exit_code == 2
    assert "modality" in res.stderr and "injections.0.gauge" in res.stderr
    assert "Traceback" not in res.output
    arr = tmp_path / "arr.json"
    arr.write_text("[]", encoding="utf-8")
    assert runner.invoke(app, ["plan", "check", str(arr)]).exit_code == 2
    assert runner.invoke(app, ["plan", "check", str(tmp_path)]).exit_code == 2
    path = _write_example(tmp_path, "scalp_prp_safe")
    res = runner.invoke(app, ["plan", "check", str(path), "--today", "yesterday"])
    assert res.exit_code == 2 and "--today" in res.stderr


def test_kb_show_json_and_table() -> None:
    res = runner.invoke(app, ["kb", "show", "regions", "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    codes = {e["code"] for e in doc["entries"]}
    assert {"glabella", "nose", "scalp", "nasolabial_fold"} <= codes
    table = runner.invoke(app, ["kb", "show", "danger-zones", "--citations"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "0.085 mL" in table.stdout and "kb.scheuer-2017" in table.stdout
    mods = json.loads(runner.invoke(app, ["kb", "show", "modalities", "--json"]).stdout)
    assert len(mods["entries"]) == 11
    bad = runner.invoke(app, ["kb", "show", "unicorns"])
    assert bad.exit_code == 2 and "valid topics" in bad.stderr


def test_kb_topics_cite_validate() -> None:
    topics = runner.invoke(app, ["kb", "topics"]).stdout.split()
    assert "danger_zones" in topics and "protocols" in topics
    cite = runner.invoke(app, ["kb", "cite", "kb.shue-2018", "--json"])
    assert cite.exit_code == 0 and json.loads(cite.stdout)["doi"] == "10.1007/s00266-017-0936-6"
    human = runner.invoke(app, ["kb", "cite", "kb.khan-2017"])
    assert "Supratrochlear" in human.stdout
    unknown = runner.invoke(app, ["kb", "cite", "nobody-2099"])
    assert unknown.exit_code == 2 and "unknown citation" in unknown.stderr
    valid = runner.invoke(app, ["kb", "validate", "--json"])
    assert valid.exit_code == 0 and json.loads(valid.stdout)["valid"] is True


def test_kb_show_every_topic_renders() -> None:
    from regenguide.kb import TOPICS

    for topic in TOPICS:
        res = runner.invoke(app, ["kb", "show", topic], env={"COLUMNS": "160"})
        assert res.exit_code == 0, (topic, res.output)
        assert topic in res.stdout
        doc = json.loads(runner.invoke(app, ["kb", "show", topic, "--json"]).stdout)
        assert doc["entries"] and all(e["citations"] for e in doc["entries"])


def test_check_reads_stdin() -> None:
    doc = runner.invoke(app, ["plan", "example", "scalp_prp_safe"]).stdout
    result = runner.invoke(app, ["plan", "check", "-", "--json"], input=doc)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signable"] is True


def test_check_details(tmp_path: Path) -> None:
    path = _write_example(tmp_path, "glabella_microfat_risky")
    result = runner.invoke(app, ["plan", "check", str(path), "--details"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Critical volume: 0.085 mL" in result.stdout
    assert "kb.khan-2017: Khan TT 2017" in result.stdout


def test_kb_show_one_entry() -> None:
    res = runner.invoke(app, ["kb", "show", "danger_zones", "glabella"])
    assert res.exit_code == 0 and "volume_ml: 0.085" in res.stdout
    doc = json.loads(runner.invoke(app, ["kb", "show", "modalities", "prp", "--json"]).stdout)
    assert doc["grade"] == "low" and doc["grade_upper"] == "moderate"
    bad = runner.invoke(app, ["kb", "show", "regions", "elbow"])
    assert bad.exit_code == 2 and "glabella" in bad.stderr
