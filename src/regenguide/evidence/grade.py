"""GRADE summary-of-findings tables [guyatt-2008-grade].

The framework (levels, starting level by design, domains and how far each may move the rating) lives in
`evidence/data/grade.yaml`, validated at load. Certainty = starting level (randomised trials high,
observational studies low) − levels rated down + levels rated up, clamped to very low … high. Every
move carries a written reason, which the table shows. Flags computed from a meta-analysis (CI or
prediction interval crossing no effect, Egger's test) prompt the reviewer but never rate by themselves:
judging bias, directness or a "large" effect is the reviewer's call.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from jinja2 import Environment, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regenguide.evidence.meta import MetaResult
from regenguide.kb.references import EvidenceLabel, resolve

Design = Literal["rct", "observational"]


class GradeDataError(ValueError):
    """grade.yaml is malformed (raised at load)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    id: str
    label: str
    symbol: str
    meaning: str


class Domain(_Strict):
    id: str
    label: str
    max_steps: int = Field(ge=1, le=3)


class Flag(_Strict):
    value: float
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str = ""


class GradeFramework(_Strict):
    schema_: Literal["regenguide.grade/1"] = Field(alias="schema")
    citations: list[str] = Field(min_length=1)
    levels: list[Level] = Field(min_length=2)
    start_level: dict[str, str]
    rate_down: list[Domain]
    rate_up: list[Domain]
    flags: dict[str, Flag]

    @model_validator(mode="after")
    def _consistent(self) -> GradeFramework:
        ids = [lv.id for lv in self.levels]
        for design, level in self.start_level.items():
            if level not in ids:
                raise ValueError(f"start_level.{design}: unknown level {level!r}")
        for need in ("rct", "observational"):
            if need not in self.start_level:
                raise ValueError(f"start_level lacks {need!r}")
        domain_ids = [d.id for d in (*self.rate_down, *self.rate_up)]
        if len(set(domain_ids)) != len(domain_ids):
            raise ValueError("duplicate domain id")
        resolve(self.citations, "grade.yaml")
        for name, flag in self.flags.items():
            resolve(flag.citations, f"grade.yaml flags.{name}")
        return self

    def level_index(self, level_id: str) -> int:
        return [lv.id for lv in self.levels].index(level_id)


def parse_framework(data: object) -> GradeFramework:
    try:
        return GradeFramework.model_validate(data)
    except ValidationError as exc:
        raise GradeDataError(f"grade.yaml: {exc}") from exc


@cache
def load_framework() -> GradeFramework:
    text = (resources.files("regenguide.evidence") / "data" / "grade.yaml").read_text(encoding="utf-8")
    return parse_framework(yaml.safe_load(text))


class Rating(_Strict):
    """A move of the rating in one domain: `steps` levels (1 or 2), with the reviewer's reason."""

    steps: int = Field(ge=1, le=3)
    reason: str = Field(min_length=3)


class OutcomeAssessment(_Strict):
    outcome: str = Field(min_length=1)
    design: Design
    studies: int = Field(ge=1)
    participants: int | None = Field(default=None, ge=1)
    effect: str = Field(default="", description="e.g. 'RR 0.49 (0.34 to 0.70)'")
    rate_down: dict[str, Rating] = Field(default_factory=dict)
    rate_up: dict[str, Rating] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list, description="prompts from the analysis, not ratings")
    comment: str = ""

    @model_validator(mode="after")
    def _known_domains(self) -> OutcomeAssessment:
        fw = load_framework()
        for kind, given, domains in (
            ("rate_down", self.rate_down, fw.rate_down),
            ("rate_up", self.rate_up, fw.rate_up),
        ):
            allowed = {d.id: d for d in domains}
            for key, rating in given.items():
                if key not in allowed:
                    raise ValueError(f"{kind}: unknown domain {key!r} (valid: {', '.join(allowed)})")
                if rating.steps > allowed[key].max_steps:
                    raise ValueError(f"{kind}.{key}: at most {allowed[key].max_steps} level(s)")
        return self

    def certainty(self) -> Level:
        fw = load_framework()
        start = fw.level_index(fw.start_level[self.design])
        down = sum(r.steps for r in self.rate_down.values())
        up = sum(r.steps for r in self.rate_up.values())
        idx = min(max(start - down + up, 0), len(fw.levels) - 1)
        return fw.levels[idx]

    def start(self) -> Level:
        fw = load_framework()
        return fw.levels[fw.level_index(fw.start_level[self.design])]


class SummaryOfFindings(_Strict):
    title: str = Field(min_length=1)
    population: str = ""
    intervention: str = ""
    comparison: str = ""
    outcomes: list[OutcomeAssessment] = Field(min_length=1)

    def rows(self) -> list[dict[str, str]]:
        fw = load_framework()
        labels = {d.id: d.label for d in (*fw.rate_down, *fw.rate_up)}
        out = []
        for o in self.outcomes:
            level = o.certainty()
            downs = "; ".join(f"{labels[k]} (−{r.steps}): {r.reason}" for k, r in o.rate_down.items())
            ups = "; ".join(f"{labels[k]} (+{r.steps}): {r.reason}" for k, r in o.rate_up.items())
            out.append(
                {
                    "outcome": o.outcome,
                    "design": "randomised trials" if o.design == "rct" else "observational studies",
                    "studies": str(o.studies),
                    "participants": "" if o.participants is None else str(o.participants),
                    "effect": o.effect,
                    "start": o.start().label,
                    "rated_down": downs or "none",
                    "rated_up": ups or "none",
                    "certainty": f"{level.symbol} {level.label}",
                    "meaning": level.meaning,
                    "flags": "; ".join(o.flags),
                    "comment": o.comment,
                }
            )
        return out

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        head = ["Outcome", "Studies (design)", "Participants", "Effect", "Rated down", "Rated up", "Certainty"]
        lines = [f"## {self.title}", ""]
        for name, val in (
            ("Population", self.population),
            ("Intervention", self.intervention),
            ("Comparison", self.comparison),
        ):
            if val:
                lines.append(f"- **{name}:** {cell(val)}")
        if len(lines) > 2:
            lines.append("")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows():
            lines.append(
                "| "
                + " | ".join(
                    cell(x)
                    for x in (
                        r["outcome"],
                        f"{r['studies']} ({r['design']}, start {r['start']})",
                        r["participants"],
                        r["effect"],
                        r["rated_down"],
                        r["rated_up"],
                        r["certainty"],
                    )
                )
                + " |"
            )
        flagged = [r for r in self.rows() if r["flags"]]
        if flagged:
            lines += ["", "Flags from the analysis (for the reviewer; they do not rate by themselves):"]
            lines += [f"- {cell(r['outcome'])}: {cell(r['flags'])}" for r in flagged]
        fw = load_framework()
        lines += [
            "",
            "Certainty: "
            + "; ".join(f"{lv.symbol} {lv.label}: {lv.meaning}" for lv in reversed(fw.levels))
            + f" [{', '.join(fw.citations)}].",
        ]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
        template = env.from_string(_HTML)
        fw = load_framework()
        return template.render(
            sof=self, rows=self.rows(), levels=list(reversed(fw.levels)), citations=", ".join(fw.citations)
        )


_HTML = """<section class="grade-sof">
<h2>{{ sof.title }}</h2>
{% if sof.population or sof.intervention or sof.comparison %}<dl>
{% if sof.population %}<dt>Population</dt><dd>{{ sof.population }}</dd>{% endif %}
{% if sof.intervention %}<dt>Intervention</dt><dd>{{ sof.intervention }}</dd>{% endif %}
{% if sof.comparison %}<dt>Comparison</dt><dd>{{ sof.comparison }}</dd>{% endif %}
</dl>{% endif %}
<table>
<thead><tr><th>Outcome</th><th>Studies (design)</th><th>Participants</th><th>Effect</th>
<th>Rated down</th><th>Rated up</th><th>Certainty</th></tr></thead>
<tbody>
{% for r in rows %}<tr><td>{{ r.outcome }}</td><td>{{ r.studies }} ({{ r.design }}, start {{ r.start }})</td>
<td>{{ r.participants }}</td><td>{{ r.effect }}</td><td>{{ r.rated_down }}</td><td>{{ r.rated_up }}</td>
<td title="{{ r.meaning }}">{{ r.certainty }}</td></tr>
{% if r.flags %}<tr class="flags"><td colspan="7">Flags (for the reviewer): {{ r.flags }}</td></tr>{% endif %}
{% endfor %}</tbody>
</table>
<p class="legend">{% for lv in levels %}{{ lv.symbol }} {{ lv.label }}: {{ lv.meaning }}. {% endfor -%}
[{{ citations }}]</p>
</section>
"""


def effect_text(result: MetaResult) -> str:
    """'RR 0.49 (0.34 to 0.70)' (ratio measures exponentiated) with the model used."""
    level = int(round(result.level * 100))
    if result.exp is not None:
        e = result.exp
        text = f"{result.measure.value} {e.estimate:.2f} ({e.ci_low:.2f} to {e.ci_high:.2f})"
    else:
        text = f"{result.measure.value} {result.estimate:.3g} ({result.ci_low:.3g} to {result.ci_high:.3g})"
    return f"{text}, {level}% CI, {result.method.value}{' + Knapp–Hartung' if result.knha else ''}"


def analysis_flags(result: MetaResult) -> list[str]:
    """Prompts for the reviewer drawn from a meta-analysis (never ratings)."""
    fw = load_framework()
    null = 0.0
    flags: list[str] = []
    if result.ci_low <= null <= result.ci_high:
        flags.append("imprecision? the confidence interval includes no effect")
    if result.k >= 2 and result.tau2 > 0 and result.pi_low is not None and result.pi_high is not None:
        if result.pi_low <= null <= result.pi_high and not (result.ci_low <= null <= result.ci_high):
            flags.append("inconsistency? the prediction interval includes no effect although the CI does not")
        flags.append(f"heterogeneity I² = {result.i2:.0f}%, τ² = {result.tau2:.3g}")
    alpha = fw.flags["egger_alpha"].value
    if result.egger is not None and result.egger.p < alpha:
        cites = ", ".join(fw.flags["egger_alpha"].citations)
        flags.append(f"publication bias? Egger p = {result.egger.p:.3g} < {alpha:g} [{cites}]")
    if result.k < 10 and result.egger is not None:
        flags.append(f"only {result.k} studies: funnel-plot tests have little power")
    return flags


def outcome_from_meta(
    outcome: str,
    result: MetaResult,
    design: Design,
    participants: int | None = None,
    rate_down: dict[str, Rating] | None = None,
    rate_up: dict[str, Rating] | None = None,
    comment: str = "",
) -> OutcomeAssessment:
    """An outcome row filled from a meta-analysis: number of studies, effect text and flags; the
    ratings are the reviewer's."""
    if not math.isfinite(result.estimate):
        raise ValueError("meta-analysis estimate is not finite")
    return OutcomeAssessment(
        outcome=outcome,
        design=design,
        studies=result.k,
        participants=participants,
        effect=effect_text(result),
        rate_down=rate_down or {},
        rate_up=rate_up or {},
        flags=analysis_flags(result),
        comment=comment,
    )
