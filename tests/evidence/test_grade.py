"""GRADE summary of findings: start level by design, rating down/up, rendering, data validation."""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from regenguide.evidence.effects import binary_effects
from regenguide.evidence.grade import (
    GradeDataError,
    OutcomeAssessment,
    Rating,
    SummaryOfFindings,
    load_framework,
    outcome_from_meta,
    parse_framework,
)
from regenguide.evidence.meta import meta_analysis
from regenguide.kb.references import resolve

DATA = Path(__file__).parent / "data"


def _o(design: str, down: dict[str, int] | None = None, up: dict[str, int] | None = None) -> OutcomeAssessment:
    return OutcomeAssessment(
        outcome="x",
        design=design,  # type: ignore[arg-type]
        studies=3,
        rate_down={k: Rating(steps=v, reason="because") for k, v in (down or {}).items()},
        rate_up={k: Rating(steps=v, reason="because") for k, v in (up or {}).items()},
    )


@pytest.mark.parametrize(
    ("design", "down", "up", "expected"),
    [
        ("rct", {}, {}, "High"),
        ("observational", {}, {}, "Low"),
        ("rct", {"risk_of_bias": 1}, {}, "Moderate"),
        ("rct", {"risk_of_bias": 1, "imprecision": 2}, {}, "Very low"),
        ("rct", {"risk_of_bias": 2, "imprecision": 2, "indirectness": 2}, {}, "Very low"),  # floor
        ("observational", {}, {"large_effect": 2}, "High"),
        ("observational", {}, {"large_effect": 2, "dose_response": 1}, "High"),  # ceiling
        ("observational", {"inconsistency": 1}, {"dose_response": 1}, "Low"),
        ("observational", {"publication_bias": 1}, {}, "Very low"),
    ],
)
def test_certainty(design: str, down: dict[str, int], up: dict[str, int], expected: str) -> None:
    assert _o(design, down, up).certainty().label == expected


def test_unknown_domain_and_too_many_steps_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown domain 'funding'"):
        _o("rct", {"funding": 1})
    with pytest.raises(ValidationError, match="at most 1 level"):
        _o("observational", None, {"dose_response": 2})


def test_sof_from_meta_renders_markdown_and_html() -> None:
    df = pd.read_csv(DATA / "bcg.csv")
    es = binary_effects(df.treat_events, df.treat_total, df.ctrl_events, df.ctrl_total, "RR", list(df.study))
    res = meta_analysis(es, "REML")
    row = outcome_from_meta(
        "Tuberculosis <infection>",
        res,
        "rct",
        participants=int(df.treat_total.sum() + df.ctrl_total.sum()),
        rate_down={"inconsistency": Rating(steps=1, reason="I² 92%, effects range from 0.2 to 1.6")},
    )
    assert row.studies == 13
    assert row.effect.startswith("RR 0.49 (0.34 to 0.70), 95% CI, REML")
    assert any("heterogeneity I² = 92%" in f for f in row.flags)
    sof = SummaryOfFindings(title="BCG vs no vaccine", population="general", outcomes=[row])
    md = sof.to_markdown()
    assert "| Tuberculosis <infection> | 13 (randomised trials, start High)" in md
    assert "⊕⊕⊕○ Moderate" in md and "Inconsistency (−1): I² 92%" in md
    html = sof.to_html()
    assert "Tuberculosis &lt;infection&gt;" in html and "<infection>" not in html
    assert "⊕⊕⊕○ Moderate" in html


def test_flags_for_imprecision_and_small_k() -> None:
    from regenguide.evidence.effects import generic_effects

    res = meta_analysis(generic_effects([0.1, -0.2, 0.3], [0.04, 0.05, 0.06]), "DL")
    row = outcome_from_meta("pain", res, "observational")
    assert any(f.startswith("imprecision?") for f in row.flags)
    assert any("only 3 studies" in f for f in row.flags)
    assert row.certainty().label == "Low"


def test_framework_file_is_valid_and_cited() -> None:
    fw = load_framework()
    assert [lv.label for lv in fw.levels] == ["Very low", "Low", "Moderate", "High"]
    assert fw.start_level == {"rct": "high", "observational": "low"}
    assert {d.id for d in fw.rate_down} == {
        "risk_of_bias",
        "inconsistency",
        "indirectness",
        "imprecision",
        "publication_bias",
    }
    assert {d.id for d in fw.rate_up} == {"large_effect", "dose_response", "plausible_confounding"}


def test_malformed_framework_fails_loudly() -> None:
    raw = yaml.safe_load((resources.files("regenguide.evidence") / "data" / "grade.yaml").read_text("utf-8"))
    bad = copy.deepcopy(raw)
    bad["start_level"]["rct"] = "excellent"
    with pytest.raises(GradeDataError, match="unknown level 'excellent'"):
        parse_framework(bad)
    bad = copy.deepcopy(raw)
    bad["citations"] = ["no-such-paper"]
    with pytest.raises(GradeDataError, match="no-such-paper"):
        parse_framework(bad)
    bad = copy.deepcopy(raw)
    bad["surprise"] = 1
    with pytest.raises(GradeDataError):
        parse_framework(bad)


def test_every_citation_in_the_evidence_package_resolves() -> None:
    pkg = resources.files("regenguide.evidence")
    ids: set[str] = set()
    for entry in pkg.iterdir():
        if entry.name.endswith(".py"):
            ids |= set(re.findall(r"\[([a-z0-9][a-z0-9_.\-]*-\d{4}[a-z0-9_.\-]*)\]", entry.read_text("utf-8")))
    assert len(ids) >= 15
    resolve(sorted(ids), "regenguide.evidence")
