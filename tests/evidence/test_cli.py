"""`regenguide meta` and `regenguide survival` CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lifelines.datasets import load_leukemia
from typer.testing import CliRunner

from regenguide.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()

CONTRACT_KEYS = {"k", "estimate", "se", "ci_low", "ci_high", "tau2", "i2", "q", "q_p"}


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_meta_json_contract_binary(tmp_path: Path) -> None:
    forest, funnel = tmp_path / "forest.png", tmp_path / "funnel.png"
    out = _json(
        [
            "meta",
            str(DATA / "bcg.csv"),
            "--measure",
            "RR",
            "--method",
            "REML",
            "--json",
            "--plot",
            str(forest),
            "--funnel",
            str(funnel),
        ]
    )
    assert CONTRACT_KEYS | {"tau2_ci", "pi_low", "pi_high", "egger", "exp"} <= set(out)
    assert out["k"] == 13
    assert round(out["estimate"], 4) == -0.7145 and round(out["tau2"], 4) == 0.3132
    assert round(out["i2"], 2) == 92.22
    assert round(out["exp"]["estimate"], 4) == 0.4894
    assert set(out["exp"]) >= {"estimate", "ci_low", "ci_high"}
    assert len(out["tau2_ci"]) == 2 and set(out["egger"]) >= {"t", "p", "df", "intercept"}
    for png in (forest, funnel):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_meta_knha_and_fe() -> None:
    kh = _json(["meta", str(DATA / "bcg.csv"), "--measure", "RR", "--method", "DL", "--knha", "--json"])
    assert kh["knha"] is True and kh["df"] == 12
    fe = _json(["meta", str(DATA / "bcg.csv"), "--measure", "OR", "--method", "FE", "--json"])
    assert round(fe["estimate"], 4) == -0.4361 and fe["tau2"] == 0


def test_meta_smd_and_md_and_generic(tmp_path: Path) -> None:
    smd = _json(["meta", str(DATA / "chen_peace_smd.csv"), "--measure", "SMD", "--method", "DL", "--json"])
    assert smd["k"] == 6 and "exp" not in smd
    md = _json(["meta", str(DATA / "normand1999.csv"), "--measure", "MD", "--method", "FE", "--json"])
    assert md["k"] == 9
    gen = tmp_path / "gen.csv"
    gen.write_text("study,yi,vi\na,0.1,0.01\nb,0.3,0.02\n")
    out = _json(["meta", str(gen), "--measure", "MD", "--method", "PM", "--json"])
    assert out["k"] == 2 and "tau2_ci" not in out and "egger" not in out


def test_meta_text_output() -> None:
    result = runner.invoke(app, ["meta", str(DATA / "bcg.csv"), "--measure", "RR", "--method", "REML"])
    assert result.exit_code == 0
    assert "I² = 92.22%" in result.stdout and "Egger" in result.stdout


@pytest.mark.parametrize(
    ("csv", "measure", "message"),
    [
        ("study,treat_events,treat_total,ctrl_events\na,1,10,2\n", "RR", "missing column(s): ctrl_total"),
        (
            "study,treat_events,treat_total,ctrl_events,ctrl_total\na,1,10,2,10\nb,-3,10,2,10\n",
            "OR",
            "row 3 (study 'b'), column treat_events: count must not be negative",
        ),
        (
            "study,treat_events,treat_total,ctrl_events,ctrl_total\na,11,10,2,10\n",
            "RR",
            "row 2 (study 'a'), column treat_events: exceeds treat_total",
        ),
        (
            "study,treat_events,treat_total,ctrl_events,ctrl_total\na,1,10,x,10\n",
            "RD",
            "row 2 (study 'a'), column ctrl_events: is not a number ('x')",
        ),
        (
            "study,treat_mean,treat_sd,treat_n,ctrl_mean,ctrl_sd,ctrl_n\na,1,1,10,2,0,10\n",
            "SMD",
            "row 2 (study 'a'), column ctrl_sd: standard deviation must be > 0",
        ),
        ("study,yi,vi\na,0.1,-1\n", "RR", "row 2 (study 'a'), column vi: must be > 0"),
    ],
)
def test_meta_bad_csv_exit_2(tmp_path: Path, csv: str, measure: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    result = runner.invoke(app, ["meta", str(path), "--measure", measure, "--method", "REML", "--json"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_meta_bad_options(tmp_path: Path) -> None:
    r = runner.invoke(app, ["meta", str(DATA / "bcg.csv"), "--measure", "HR", "--method", "REML"])
    assert r.exit_code == 2 and "--measure must be one of" in r.stderr
    r = runner.invoke(app, ["meta", str(DATA / "bcg.csv"), "--measure", "RR", "--method", "XX"])
    assert r.exit_code == 2 and "--method must be one of" in r.stderr
    r = runner.invoke(app, ["meta", str(DATA / "bcg.csv"), "--measure", "RR", "--method", "FE", "--knha"])
    assert r.exit_code == 2 and "Knapp" in r.stderr
    r = runner.invoke(app, ["meta", str(tmp_path / "nope.csv"), "--measure", "RR"])
    assert r.exit_code == 2 and "file not found" in r.stderr


@pytest.fixture()
def leukemia_csv(tmp_path: Path) -> Path:
    path = tmp_path / "leukemia.csv"
    load_leukemia().to_csv(path, index=False)
    return path


def test_survival_json_contract(leukemia_csv: Path, tmp_path: Path) -> None:
    km = tmp_path / "km.png"
    out = _json(
        [
            "survival",
            str(leukemia_csv),
            "--time",
            "t",
            "--event",
            "status",
            "--group",
            "Rx",
            "--json",
            "--plot",
            str(km),
        ]
    )
    assert set(out["groups"]) == {"0", "1"}
    assert out["groups"]["1"] | {} == out["groups"]["1"]
    assert (out["groups"]["1"]["n"], out["groups"]["1"]["events"], out["groups"]["1"]["median"]) == (21, 21, 8.0)
    assert out["groups"]["0"]["median_ci_high"] is None  # not reached → null, never Infinity
    assert round(out["logrank"]["chi2"], 2) == 16.79 and out["logrank"]["df"] == 1
    assert km.read_bytes()[:4] == b"\x89PNG"
    ungrouped = _json(["survival", str(leukemia_csv), "--time", "t", "--event", "status", "--json"])
    assert "logrank" not in ungrouped and ungrouped["groups"]["all"]["n"] == 42


@pytest.mark.parametrize(
    ("csv", "args", "message"),
    [
        ("t,e\n1,1\n-2,0\n", ["--time", "t", "--event", "e"], "row 3, column t: is negative"),
        ("t,e\n1,1\n2,yes\n", ["--time", "t", "--event", "e"], "row 3, column e: must be 0"),
        ("t,e\n1,1\n", ["--time", "days", "--event", "e"], "missing column 'days'"),
        ("t,e,g\n1,1,a\n2,0,\n", ["--time", "t", "--event", "e", "--group", "g"], "row 3, column g: is missing"),
    ],
)
def test_survival_bad_csv_exit_2(tmp_path: Path, csv: str, args: list[str], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    result = runner.invoke(app, ["survival", str(path), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_meta_single_study_json_has_no_nan(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("study,yi,vi\nonly,0.2,0.04\n")
    result = runner.invoke(app, ["meta", str(one), "--measure", "OR", "--method", "REML", "--json"])
    assert result.exit_code == 0
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    out = json.loads(result.stdout)
    assert out["k"] == 1 and out["q_p"] is None and out["se"] == 0.2
